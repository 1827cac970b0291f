"""Lattices stored coarse to fine, and quadrature weights of every kind of point set.

Kept apart from the generators so that :class:`~dinet.points.PointSet` can re-weight its
prefixes without importing them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree

__all__ = [
    "axis_spacing",
    "coarse_to_fine_order",
    "knn_weights",
    "lattice_weights",
    "prefix_shape",
    "shrunk_weights",
]


def coarse_to_fine_order(shape: tuple[int, ...]) -> np.ndarray:
    """Flat (row-major) indices of a lattice, coarse levels first.

    A multi-index belongs to level k when every index is ≡ 0 mod 2^k; sorting by level
    (descending, stable) makes each prefix of Π⌈s/2^k⌉ points the sub-grid of level ≥ k.
    """
    idx = np.indices(shape).reshape(len(shape), -1)
    max_level = int(np.ceil(np.log2(max(shape)))) + 1
    level = np.full(idx.shape[1], max_level, dtype=np.int64)
    for axis_idx in idx:
        v2 = np.full(axis_idx.shape, max_level, dtype=np.int64)
        nz = axis_idx > 0
        # 2-adic valuation: index of the lowest set bit
        v2[nz] = np.log2(axis_idx[nz] & -axis_idx[nz]).astype(np.int64)
        level = np.minimum(level, v2)
    return np.argsort(-level, kind="stable")


def prefix_shape(shape: tuple[int, ...], m: int) -> tuple[int, ...] | None:
    """The coarser-level shape holding ``m`` points, or ``None`` if no level has ``m``."""
    while True:
        if int(np.prod(shape)) == m:
            return shape
        if all(s == 1 for s in shape):
            return None
        shape = tuple((s + 1) // 2 for s in shape)


def axis_spacing(axis_coords: np.ndarray, size: int) -> float:
    """Spacing of one lattice axis; a single row covers the whole axis (spacing 2)."""
    if size == 1:
        return 2.0
    return float((axis_coords.max() - axis_coords.min()) / (size - 1))


def lattice_weights(coords, shape: Sequence[int]) -> torch.Tensor:
    """Cell volume Π_k spacing_k of an axis-aligned lattice, one weight per point.

    For pixel-centre grids this is exactly 2^d / N.
    """
    c = coords.double().cpu().numpy() if isinstance(coords, torch.Tensor) else np.asarray(coords)
    volume = np.prod([axis_spacing(c[:, k], s) for k, s in enumerate(shape)])
    device = coords.device if isinstance(coords, torch.Tensor) else None
    return torch.full((len(c),), volume, dtype=torch.float32, device=device)


def shrunk_weights(coords: np.ndarray) -> np.ndarray:
    """Inverse density weights of :func:`shrunk` points (float64), Π_k 4√|t_k| / N."""
    coords = np.asarray(coords, dtype=np.float64)
    weights = np.prod(4.0 * np.sqrt(np.abs(coords)), axis=1) / len(coords)
    # A coordinate of exactly 0 has zero weight in the limit; keep weights positive.
    return np.maximum(weights, np.finfo(np.float32).tiny)


def knn_weights(coords, k: int = 8) -> torch.Tensor:
    """k-nearest-neighbour volume estimate of quadrature weights, correct at the boundary.

    Each point's weight is V / k where V is the volume of the smallest cube (L∞ ball) centred
    on it that holds its k nearest neighbours, clipped to the domain [-1, 1]^d: clipping is
    what keeps points near the boundary from being over-weighted. E[V / k] is the inverse of
    the sampling density times 1/N, the weight of a point in an importance-sampling sum.
    """
    tensor_in = isinstance(coords, torch.Tensor)
    c = coords.detach().double().cpu().numpy() if tensor_in else np.asarray(coords, np.float64)
    n, d = c.shape
    if n == 1:
        weights = np.full(1, 2.0**d)
    else:
        k = min(k, n - 1)
        dist, _ = cKDTree(c).query(c, k=k + 1, p=np.inf)
        radius = dist[:, -1]
        # Duplicated points would give zero volume: fall back to the smallest positive radius.
        positive = radius[radius > 0]
        floor = positive.min() if positive.size else 1.0
        radius = np.maximum(radius, floor)[:, None]
        extent = np.minimum(c + radius, 1.0) - np.maximum(c - radius, -1.0)
        weights = np.prod(extent, axis=1) / k
    # A cluster narrower than ~1e-13 (3-D) has volumes below float32's range: keep every
    # weight a positive normal float32 (such a cluster is then weighted uniformly).
    weights = np.maximum(weights, np.finfo(np.float32).tiny)
    out = torch.as_tensor(weights, dtype=torch.float32)
    return out.to(coords.device) if tensor_in else out
