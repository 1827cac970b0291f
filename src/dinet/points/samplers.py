"""Structured and non-uniform point sets on [-1, 1]^d: lattices, blue noise, fovea, clusters.

Each generator returns exactly ``n`` distinct points (distinct after rounding to float32, the
precision a :class:`PointSet` stores) in [-1, 1]^dim, dim 2 or 3, with quadrature weights
equal to the measure of each point's Voronoi cell clipped to the box (they sum to 2^d). The
same ``seed`` gives the same set; ``seed=None`` draws a fresh one. Each orders its points so
that a prefix is a sensible discretization on its own (see the docstrings).

The random sets (blue noise, fovea, clusters) are defined here; the lattices (hexagonal,
rotated grid) live in :mod:`dinet.points.lattices` and are re-exported from this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import ndtr, ndtri

from .checks import check_count, check_real, check_space_dim, seed_int
from .generators import distinct_voronoi_pointset, float32_coords, repeated_rows, sobol
from .lattices import hexagonal, rotated_grid
from .pointset import PointSet

__all__ = ["hexagonal", "rotated_grid", "poisson", "foveated", "clustered"]

# A maximal greedy (random sequential adsorption) set with exclusion distance r, thinned from
# 8n uniform candidates in [-1, 1]^d, holds about C · 2^d / r^d points with
# C = a + b · n^(-1/d) (measured for n = 10^3 … 6.5·10^4; the n-term is points crowding the
# boundary).
_RSA_DENSITY = {2: (0.5438, 0.29), 3: (0.4765, 0.505)}
_POISSON_OVERSHOOT = 1.03  # aim a little above n so one pass almost always suffices


# --- shared helpers --------------------------------------------------------------------------
def _redraw_repeated(
    coords: np.ndarray, redraw: Callable[[np.ndarray], np.ndarray], what: str
) -> np.ndarray:
    """Replace rows that coincide (after float32 rounding) with fresh draws until none do."""
    coords = float32_coords(coords)
    for _ in range(64):
        rows = np.flatnonzero(repeated_rows(coords))
        if rows.size == 0:
            return coords
        coords[rows] = float32_coords(redraw(rows))
    raise ValueError(
        f"could not draw distinct float32 points: {what} is too narrow for this many points — "
        "use a larger sigma or fewer points"
    )


def _truncated_normal(rng: np.random.Generator, mean: np.ndarray, sigma: float) -> np.ndarray:
    """Normal(mean, sigma²·I) conditioned on [-1, 1]^d, one row per row of ``mean``.

    The box is a product and the covariance diagonal, so this is a truncated normal per
    coordinate (inverse CDF) — the same distribution as resampling the points outside the box,
    without a rejection loop.
    """
    lo = ndtr((-1.0 - mean) / sigma)
    hi = ndtr((1.0 - mean) / sigma)
    u = lo + (hi - lo) * rng.random(mean.shape)
    return np.clip(mean + sigma * ndtri(u), -1.0, 1.0)


# --- blue noise ------------------------------------------------------------------------------
def _greedy_independent_set(pairs: np.ndarray, m: int) -> np.ndarray:
    """Greedy maximal independent set of the graph ``pairs`` on nodes 0..m-1, in index order.

    Equal to visiting the nodes in index order and keeping each one no kept node conflicts
    with (dart throwing), but computed in parallel rounds: an undecided node with no
    undecided lower-index neighbour is kept, and its neighbours are discarded. A random order
    needs only a few rounds. Returns the kept indices, increasing.
    """
    if pairs.size == 0:
        return np.arange(m)
    a, b = pairs[:, 0], pairs[:, 1]
    swap = a > b
    a, b = np.where(swap, b, a), np.where(swap, a, b)  # a < b: a has priority
    undecided = np.ones(m, dtype=bool)
    kept = np.zeros(m, dtype=bool)
    while a.size:
        live = undecided[a] & undecided[b]
        a, b = a[live], b[live]
        blocked = np.zeros(m, dtype=bool)
        blocked[b] = True
        new = undecided & ~blocked
        kept |= new
        undecided &= ~new
        undecided[b[new[a]]] = False
    kept |= undecided  # nodes whose every conflict was resolved in their favour
    return np.flatnonzero(kept)


def poisson(n: int, dim: int = 2, seed: int | None = None) -> PointSet:
    """``n`` blue-noise (Poisson-disk) points: random, but no two closer than a radius r.

    Dart throwing, vectorized: ~8n uniform candidates (in a random priority order) are
    thinned to the greedy independent set of the graph joining candidates closer than r
    (``cKDTree.query_pairs``), computed in parallel rounds — identical to throwing the darts
    one by one and keeping each that lands farther than r from every kept one. r is chosen
    from n so that the set holds slightly more than n points (if it holds fewer, r shrinks a
    few percent and the thinning is redone); the first n kept points in priority order are
    returned. The minimum distance between points is about 0.9 of the mean nearest-neighbour
    spacing (a uniform random set's is a few percent of it).

    Weights: the measure of each point's Voronoi cell clipped to [-1, 1]^dim. Order: the
    priority (dart) order, so a prefix is the dart-throwing set of fewer darts — a thinned set
    with the same exclusion radius (for short prefixes, close to uniform random).

    Args:
        n: number of points.
        dim: 2 or 3.
        seed: seed of the candidates; ``None`` draws fresh ones.
    """
    n, dim = check_count(n), check_space_dim(dim)
    rng = np.random.default_rng(seed_int(seed))
    m = max(8 * n, 64)
    # Rounded first, so the exclusion holds for the float32 coordinates actually stored.
    candidates = float32_coords(rng.uniform(-1.0, 1.0, (m, dim)))
    tree = cKDTree(candidates)
    a, b = _RSA_DENSITY[dim]
    density = a + b * n ** (-1.0 / dim)
    radius = (density * 2.0**dim / (_POISSON_OVERSHOOT * n)) ** (1.0 / dim)
    for _ in range(100):
        kept = _greedy_independent_set(tree.query_pairs(radius, output_type="ndarray"), m)
        if len(kept) >= n:
            return distinct_voronoi_pointset(candidates[kept[:n]], "poisson")
        shrink = (len(kept) / (_POISSON_OVERSHOOT * n)) ** (1.0 / dim)
        radius *= min(0.97, shrink)
    raise RuntimeError(f"poisson could not place {n} points; please report this")


# --- non-uniform sets ------------------------------------------------------------------------
def foveated(
    n: int,
    dim: int = 2,
    seed: int | None = None,
    fovea: Sequence[float] | None = None,
    fraction: float = 0.5,
    sigma: float = 0.25,
) -> PointSet:
    """A dense fovea and a sparse periphery, like the sampling of a retina.

    ``round(fraction · n)`` points are Gaussian (std ``sigma`` per axis) around the fovea
    centre, conditioned on the box (equivalent to resampling the points that fall outside);
    the rest are a scrambled Sobol' draw over the whole box (seed derived from ``seed``), so
    the periphery is covered evenly.

    Weights: the measure of each point's Voronoi cell clipped to [-1, 1]^dim — the inverse of
    the local density, small in the fovea. Order: a seeded random permutation, so every
    prefix keeps the same fovea/periphery mixture.

    Args:
        n: number of points.
        dim: 2 or 3.
        seed: seed of every random choice; ``None`` draws fresh ones.
        fovea: centre of the fovea, ``dim`` numbers in [-1, 1]; ``None`` draws one uniformly
            in [-0.5, 0.5]^dim.
        fraction: share of points in the fovea, in [0, 1].
        sigma: standard deviation of the fovea per axis (> 0).
    """
    n, dim = check_count(n), check_space_dim(dim)
    fraction = check_real(fraction, "fraction", unit=True)
    sigma = check_real(sigma, "sigma")
    rng = np.random.default_rng(seed_int(seed))
    if fovea is None:
        centre = rng.uniform(-0.5, 0.5, dim)
    else:
        try:
            centre = np.asarray(fovea, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            centre = np.full(0, np.nan)
        if centre.shape != (dim,) or not np.all(np.abs(centre) <= 1.0):
            raise ValueError(f"fovea must be {dim} numbers in [-1, 1] (the centre); got {fovea!r}")
    n_fovea = int(round(fraction * n))
    sobol_seed = int(rng.integers(2**63))
    periphery = np.empty((0, dim))
    if n_fovea < n:
        periphery = sobol(n - n_fovea, dim, seed=sobol_seed).coords.double().numpy()
    centres = np.broadcast_to(centre, (n_fovea, dim))
    coords = np.concatenate([_truncated_normal(rng, centres, sigma), periphery])

    def redraw(rows: np.ndarray) -> np.ndarray:
        new = _truncated_normal(rng, np.broadcast_to(centre, (len(rows), dim)), sigma)
        outer = rows >= n_fovea  # a Sobol' point hit another one: replace it by a uniform one
        new[outer] = rng.uniform(-1.0, 1.0, (int(outer.sum()), dim))
        return new

    coords = _redraw_repeated(coords, redraw, f"the fovea (sigma={sigma:g})")
    return distinct_voronoi_pointset(coords[rng.permutation(n)], "foveated")


def clustered(
    n: int,
    dim: int = 2,
    seed: int | None = None,
    clusters: int | None = None,
    sigma: float | None = None,
    background: float = 0.2,
) -> PointSet:
    """A Thomas cluster process: Gaussian clumps of points over a uniform background.

    ``clusters`` centres are uniform in the box; each of ``n - round(background · n)`` points
    picks a centre at random and is Gaussian around it (std ``sigma`` per axis), conditioned
    on the box (equivalent to resampling points outside it). The other points are uniform over
    the box, so no region of the domain is left empty.

    Weights: the measure of each point's Voronoi cell clipped to [-1, 1]^dim. Order: a seeded
    random permutation, so every prefix is a thinned clustered set with the same mixture.

    Args:
        n: number of points.
        dim: 2 or 3.
        seed: seed of every random choice; ``None`` draws fresh ones.
        clusters: number of cluster centres (default ``max(4, n // 128)``).
        sigma: cluster std per axis (default 0.35 × the mean centre spacing
            (2^dim / clusters)^(1/dim)).
        background: share of uniform background points, in [0, 1].
    """
    n, dim = check_count(n), check_space_dim(dim)
    if clusters is None:
        clusters = max(4, n // 128)
    clusters = check_count(clusters, "clusters")
    if sigma is None:
        sigma = 0.35 * (2.0**dim / clusters) ** (1.0 / dim)
    sigma = check_real(sigma, "sigma")
    background = check_real(background, "background", unit=True)
    rng = np.random.default_rng(seed_int(seed))
    centres = rng.uniform(-1.0, 1.0, (clusters, dim))
    n_background = int(round(background * n))
    owner = rng.integers(clusters, size=n - n_background)
    coords = np.concatenate(
        [_truncated_normal(rng, centres[owner], sigma), rng.uniform(-1.0, 1.0, (n_background, dim))]
    )

    def redraw(rows: np.ndarray) -> np.ndarray:
        new = rng.uniform(-1.0, 1.0, (len(rows), dim))
        near = rows < len(owner)
        new[near] = _truncated_normal(rng, centres[owner[rows[near]]], sigma)
        return new

    coords = _redraw_repeated(coords, redraw, f"the clusters (sigma={sigma:g})")
    return distinct_voronoi_pointset(coords[rng.permutation(n)], "clustered")
