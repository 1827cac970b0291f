"""Kernel families for DI convolutions: basis functions φ_b evaluated on stencil offsets.

A DI kernel is K(δ) = Σ_b φ_b(δ) W_b. This module evaluates the basis φ_b on the offsets
δ = y_j − x_i of a neighbour list and turns them into a cached :class:`Stencil`.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from ..neighbors import Stencil, box_neighbors, stencil_cache
from ..points import PointSet

__all__ = ["spline_support", "spline_basis", "spline_stencil"]

# Float32 coordinates carry an absolute rounding error of at most 2^-25 each, so an offset
# between two of them is off by at most 2^-24. Offsets that land within a few such errors of
# a hat's node or edge are snapped onto it: on a grid this makes the hats hit lattice points
# exactly (values exactly 1 and 0), which is what makes conversion from conv2d exact and
# keeps near-zero entries out of the sparse matrix.
_SNAP = 4.0 * 2.0**-24


def spline_support(kernel_size, spacing, dilation) -> np.ndarray:
    """Half-widths r_k = ((k_k − 1)/2 · dilation_k + 1) · h_k of the spline kernel's box."""
    k = np.asarray(kernel_size, dtype=np.float64)
    return ((k - 1.0) / 2.0 * np.asarray(dilation, dtype=np.float64) + 1.0) * np.asarray(
        spacing, dtype=np.float64
    )


def spline_basis(offsets: np.ndarray, kernel_size, spacing, dilation):
    """Evaluate the tensor-product linear-spline basis on offsets.

    Hat b = (t_0, …, t_{d-1}) (row-major over the kernel's axes) is centred at
    c_b = ((t_k − (k_k − 1)/2) · dilation_k · h_k)_k with half-width h_k on each axis:
    φ_b(δ) = Π_k max(0, 1 − |δ_k − c_bk| / h_k). A point touches at most 2^d hats.

    Args:
        offsets: ``(P, d)`` float64 offsets δ = y_j − x_i.

    Returns:
        ``(pair, basis, value)``: for every non-zero φ_b(δ_p), the pair index p, the basis
        index b and the value, grouped by pair in increasing p.
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    n_pairs, d = offsets.shape
    ks = np.asarray(kernel_size, dtype=np.int64)
    h = np.asarray(spacing, dtype=np.float64)
    dil = np.asarray(dilation, dtype=np.int64)
    strides = np.cumprod(np.concatenate([[1], ks[:0:-1]]))[::-1]
    taps, vals = [], []
    for k in range(d):
        pixels = offsets[:, k] / h[k]  # offset in units of h
        centre = (ks[k] - 1) / 2.0
        t0 = np.floor(pixels / dil[k] + centre).astype(np.int64)
        axis_taps = np.stack([t0, t0 + 1], axis=1)  # (P, 2): the two nearest hat centres
        e = pixels[:, None] - (axis_taps - centre) * dil[k]
        nearest = np.rint(e)
        e = np.where(np.abs(e - nearest) < _SNAP / h[k], nearest, e)
        v = np.clip(1.0 - np.abs(e), 0.0, None)
        v[(axis_taps < 0) | (axis_taps >= ks[k])] = 0.0
        taps.append(axis_taps)
        vals.append(v)
    combos = np.array(list(product((0, 1), repeat=d)), dtype=np.int64)  # (2^d, d)
    basis = np.zeros((n_pairs, len(combos)), dtype=np.int64)
    value = np.ones((n_pairs, len(combos)), dtype=np.float64)
    for k in range(d):
        basis += taps[k][:, combos[:, k]] * strides[k]
        value *= vals[k][:, combos[:, k]]
    keep = value.reshape(-1) > 0.0
    pair = np.repeat(np.arange(n_pairs, dtype=np.int64), len(combos))[keep]
    return pair, basis.reshape(-1)[keep], value.reshape(-1)[keep]


def _build_spline_stencil(points_in: PointSet, points_out: PointSet, kernel_size, spacing,
                          dilation) -> Stencil:
    neighbors = box_neighbors(
        points_out.coords, points_in.coords, spline_support(kernel_size, spacing, dilation)
    )
    pair, basis, value = spline_basis(neighbors.offsets, kernel_size, spacing, dilation)
    cols = neighbors.cols[pair]
    # Quadrature weight of the input point, and the 1/h^d that makes W_b a conv2d weight.
    weights = points_in.weights.double().cpu().numpy()
    value *= weights[cols] / float(np.prod(spacing))
    return Stencil.from_entries(
        neighbors.rows[pair], basis, cols, value,
        n_out=len(points_out), n_in=len(points_in), n_basis=int(np.prod(kernel_size)),
    )


def spline_stencil(points_in: PointSet, points_out: PointSet, kernel_size, spacing,
                   dilation) -> Stencil:
    """The cached spline stencil from ``points_in`` to ``points_out``.

    ``S[b·N_out + i, j] = w_j φ_b(y_j − x_i) / Π_k h_k``; see :func:`spline_basis`.
    """
    key = (
        "spline",
        points_in.digest,
        points_out.digest,
        tuple(int(k) for k in kernel_size),
        tuple(float(h) for h in spacing),
        tuple(int(r) for r in dilation),
    )
    return stencil_cache.get_or_build(
        key,
        lambda: _build_spline_stencil(points_in, points_out, kernel_size, spacing, dilation),
    )
