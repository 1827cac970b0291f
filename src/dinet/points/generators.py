"""Generators of point sets on [-1, 1]^d and their quadrature weights.

Every generator orders its points so that a prefix is a good discretization on its own:
Sobol and Halton prefixes are the same low-discrepancy sequence, grids are stored coarse to
fine. ``seed=None`` draws a fresh scramble or sample; an integer seed reproduces it.

Also holds the builders of Voronoi-weighted sets that the samplers (:mod:`.samplers`,
:mod:`.lattices`) share: :func:`voronoi_pointset`, :func:`distinct_voronoi_pointset`,
:func:`float32_coords` and :func:`repeated_rows` (internal, not in ``__all__``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import qmc

from .checks import check_count, check_dim, check_shape, seed_int
from .pointset import PointSet
from .voronoi import region_mask, voronoi_weights
from .weights import (
    axis_spacing,
    coarse_to_fine_order,
    knn_weights,
    shrunk_weights,
)

__all__ = [
    "sobol",
    "halton",
    "grid",
    "lattice",
    "shrunk",
    "random",
    "jittered_grid",
    "masked",
    "from_coords",
    "grid_axes",
]


def _to_domain(unit: np.ndarray) -> np.ndarray:
    """Map [0, 1) to [-1, 1) in float64, clipped so float32 rounding stays in the domain."""
    return np.clip(2.0 * unit - 1.0, -1.0, 1.0)


def sobol(n: int, dim: int = 2, seed: int | None = None, scramble: bool = True) -> PointSet:
    """The first ``n`` points of a (scrambled) Sobol' sequence, scaled to [-1, 1]^dim.

    A prefix of 2^k points is a balanced (t, k, d)-net, so ``sobol(n).prefix(m)`` is itself
    a good quasi-Monte-Carlo set. Weights are uniform, 2^d / n.

    Args:
        n: number of points (powers of two keep the net property).
        dim: spatial dimension.
        seed: scramble seed; ``None`` draws a fresh scramble (randomised QMC).
        scramble: ``False`` gives the plain Sobol' sequence (its first point is the corner).
    """
    n, dim = check_count(n), check_dim(dim)
    engine = torch.quasirandom.SobolEngine(
        dim, scramble=scramble, seed=seed_int(seed) if scramble else None
    )
    unit = engine.draw(n, dtype=torch.float64).numpy()
    return _uniform("sobol", _to_domain(unit))


def halton(n: int, dim: int = 2, seed: int | None = None) -> PointSet:
    """The first ``n`` points of a scrambled Halton sequence on [-1, 1]^dim (uniform weights).

    ``seed=None`` draws a fresh scramble.
    """
    n, dim = check_count(n), check_dim(dim)
    engine = qmc.Halton(d=dim, scramble=True, seed=np.random.default_rng(seed_int(seed)))
    return _uniform("halton", _to_domain(engine.random(n)))


def random(n: int, dim: int = 2, seed: int | None = None) -> PointSet:
    """``n`` independent uniform points on [-1, 1]^dim (plain Monte Carlo, uniform weights)."""
    n, dim = check_count(n), check_dim(dim)
    rng = np.random.default_rng(seed_int(seed))
    return _uniform("random", _to_domain(rng.random((n, dim))))


def shrunk(n: int, dim: int = 2, seed: int | None = None) -> PointSet:
    """Scrambled Sobol' points pushed toward the centre: s ↦ s·|s| per coordinate.

    Deliberately non-uniform (the paper's "Shrunk" discretization). The quadrature weights
    are the exact inverse sampling density: per axis the density of t = s|s| is
    1 / (4 √|t|) when s is uniform on [-1, 1], so w_j = Π_k 4 √|t_jk| / n.
    """
    n, dim = check_count(n), check_dim(dim)
    s = sobol(n, dim, seed=seed).coords.double().numpy()
    coords = s * np.abs(s)
    return PointSet(coords, shrunk_weights(coords), "shrunk", weight_method="density")


def lattice(axes: Sequence[Sequence[float]], kind: str = "grid") -> PointSet:
    """An axis-aligned lattice with the given per-axis coordinates, stored coarse to fine.

    ``axes[k]`` are the (increasing, evenly spaced) coordinates along array axis k. Weights are
    the lattice cell volume. :func:`grid` is the pixel-centre case.
    """
    axes = [np.asarray(a, dtype=np.float64) for a in axes]
    shape = tuple(len(a) for a in axes)
    for k, a in enumerate(axes):
        if len(a) == 0:
            raise ValueError(f"lattice axis {k} is empty")
        if len(a) > 2 and not np.allclose(np.diff(a), a[1] - a[0], rtol=1e-6, atol=1e-9):
            raise ValueError(f"lattice axis {k} is not evenly spaced: {a}")
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    coords = mesh[coarse_to_fine_order(shape)]
    volume = np.prod([axis_spacing(a, len(a)) for a in axes])
    return PointSet(coords, np.full(len(coords), volume), kind, shape, weight_method="lattice")


def grid(shape: int | Sequence[int]) -> PointSet:
    """Pixel (voxel) centres of an H×W (D×H×W) grid, stored coarse to fine.

    Pixel (i, j) sits at (−1 + (2i+1)/H, −1 + (2j+1)/W) — the ``align_corners=False``
    convention. The prefix of ⌈H/2^k⌉·⌈W/2^k⌉ points is the sub-grid of indices ≡ 0 mod 2^k.
    Weights are uniform, 2^d / N (the pixel area).
    """
    shape = check_shape(shape)
    return lattice([-1.0 + (2.0 * np.arange(s) + 1.0) / s for s in shape])


def grid_axes(points: PointSet) -> list[np.ndarray]:
    """The per-axis coordinates (float64, increasing) of a lattice point set."""
    if points.shape is None:
        raise ValueError(f"{points.kind} point set has no grid shape; pass a grid or lattice")
    c = points.coords.double().cpu().numpy()
    axes = []
    for k, size in enumerate(points.shape):
        lo, hi = c[:, k].min(), c[:, k].max()
        axes.append(np.linspace(lo, hi, size) if size > 1 else np.array([lo]))
    return axes


def jittered_grid(shape: int | Sequence[int], seed: int | None = None) -> PointSet:
    """A grid whose every point is moved uniformly within its own pixel (stratified sampling).

    Same coarse-to-fine order as :func:`grid`; uniform weights 2^d / N.
    """
    shape = check_shape(shape)
    base = grid(shape).coords.double().numpy()
    rng = np.random.default_rng(seed_int(seed))
    half = 1.0 / np.asarray(shape, dtype=np.float64)  # half a pixel, per axis
    coords = np.clip(base + rng.uniform(-1.0, 1.0, base.shape) * half, -1.0, 1.0)
    weights = np.full(len(coords), 2.0 ** len(shape) / len(coords))
    return PointSet(coords, weights, "jittered", shape, weight_method="uniform")


def masked(points: PointSet, mask_fn: Callable[[torch.Tensor], torch.Tensor]) -> PointSet:
    """The points of ``points`` where ``mask_fn(coords)`` is true, in their original order.

    The weights then integrate over the masked region: Voronoi-weighted sets get the exact
    cells of the kept points clipped to the region (``mask_fn`` becomes their ``region``);
    other sets keep each point's weight (the volume it stands for), which sums to the
    masked region's measure up to the boundary cells. ``mask_fn`` maps ``(N, d)`` float
    coordinates (a tensor) to ``(N,)`` bools.
    """
    keep = torch.as_tensor(mask_fn(points.coords)).to(torch.bool).reshape(-1)
    if keep.shape[0] != len(points):
        raise ValueError(
            f"mask_fn must return one boolean per point ({len(points)}); got {keep.shape[0]}"
        )
    if not bool(keep.any()):
        raise ValueError("mask_fn removed every point — the masked region must contain points")
    kind = f"masked({points.kind})"
    if points.weight_method == "voronoi":
        region = mask_fn if points.region is None else _both(points.region, mask_fn)
        return voronoi_pointset(points.coords[keep].double().numpy(), kind, region)
    method = "density" if points.weight_method in ("uniform", "lattice") else points.weight_method
    return PointSet(points.coords[keep], points.weights[keep], kind, weight_method=method)


def _both(first, second):
    first, second = region_mask(first, None), region_mask(second, None)
    return lambda x: first(x) & second(x)


def from_coords(coords, weights: str | Sequence[float] | torch.Tensor = "voronoi",
                region=None) -> PointSet:
    """A point set from your own coordinates in [-1, 1]^d.

    Args:
        coords: ``(N, d)`` array or tensor.
        weights: how to weight the points in integrals:

            - ``"voronoi"`` (default): the measure of each point's Voronoi cell clipped to
              the domain (:func:`voronoi_weights`) — exact cells in 1-, 2- and 3-D, right
              for any layout: regular (grids, rotated or hexagonal lattices), blue noise,
              clustered or foveated clouds. 16k points take ~0.2 s in 2-D and ~2 s in 3-D
              (cached per point set); beyond 2^22 (2-D) / 2^18 (3-D) points it refuses.
            - ``"knn"``: a k-nearest-neighbour density estimate (:func:`knn_weights`), fast
              at any size and any d, but approximate (~1–3% per weight on i.i.d. points) and
              wrong on regular sets, where ties at one distance make it undershoot ~2×.
            - ``"uniform"``: 2^d / N, for points known to be uniform (QMC, i.i.d., grids).
            - an explicit ``(N,)`` array of positive weights.
        region: where the points live when it is not the whole box — a callable
            ``(M, d) tensor → (M,) bools``, ``"ball"``, or a boolean pixel mask (see
            :func:`voronoi_weights`); the weights then sum to the region's measure. Needs
            ``weights="voronoi"``.
    """
    if isinstance(coords, torch.Tensor):
        coords = coords.detach().cpu()
    c = torch.as_tensor(np.asarray(coords, dtype=np.float64))
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"coords must have shape (N, d) with N >= 1; got {tuple(c.shape)}")
    if region is not None and not (isinstance(weights, str) and weights == "voronoi"):
        raise ValueError("region= needs weights='voronoi' (the other methods cannot clip to a "
                         "region)")
    if isinstance(weights, str):
        if not torch.isfinite(c).all():
            raise ValueError("coords contain NaN or inf — drop or fix those points")
        if weights == "voronoi":
            return voronoi_pointset(c.numpy(), "points", region)
        if weights == "knn":
            return PointSet(c, knn_weights(c.clamp(-1, 1)), "points", weight_method="knn")
        if weights == "uniform":
            w = torch.full((c.shape[0],), 2.0 ** c.shape[1] / c.shape[0])
            return PointSet(c, w, "points", weight_method="uniform")
        raise ValueError(
            f"unknown weights {weights!r}; valid: 'voronoi', 'knn', 'uniform' or an array")
    return PointSet(c, torch.as_tensor(np.asarray(weights)), "points", weight_method="density")


def voronoi_pointset(coords: np.ndarray, kind: str, region=None) -> PointSet:
    """A point set weighted by its Voronoi cells, computed on the float32 coordinates the
    point set stores (so the weights are those of the points the layers see)."""
    c = np.asarray(coords, dtype=np.float64)
    if c.size and np.abs(c).max() > 1.0:  # let PointSet name the column that is outside
        return PointSet(c, np.ones(len(c)), kind)
    c = c.astype(np.float32).astype(np.float64)
    return PointSet(c, voronoi_weights(c, region), kind, weight_method="voronoi", region=region)


def _uniform(kind: str, coords: np.ndarray) -> PointSet:
    weights = np.full(len(coords), 2.0 ** coords.shape[1] / len(coords))
    return PointSet(coords, weights, kind, weight_method="uniform")


def float32_coords(coords: np.ndarray) -> np.ndarray:
    """Coordinates as a PointSet will store them (float32), back in float64, clipped to Ω."""
    return np.clip(coords.astype(np.float32).astype(np.float64), -1.0, 1.0)


def repeated_rows(coords: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows equal to an earlier row."""
    _, first = np.unique(coords, axis=0, return_index=True)
    repeated = np.ones(len(coords), dtype=bool)
    repeated[first] = False
    return repeated


def distinct_voronoi_pointset(coords: np.ndarray, kind: str) -> PointSet:
    """A PointSet of float32-rounded, distinct coords with clipped-Voronoi weights."""
    coords = float32_coords(coords)
    if repeated_rows(coords).any():  # every generator guarantees this; a bug if it fails
        raise RuntimeError(f"{kind} generated coinciding points; please report this")
    return voronoi_pointset(coords, kind)
