"""Structured and non-uniform point sets on [-1, 1]^d: lattices, blue noise, fovea, clusters.

Each generator returns exactly ``n`` distinct points (distinct after rounding to float32, the
precision a :class:`PointSet` stores) in [-1, 1]^dim, dim 2 or 3, with quadrature weights
equal to the measure of each point's Voronoi cell clipped to the box (they sum to 2^d). The
same ``seed`` gives the same set; ``seed=None`` draws a fresh one. Each orders its points so
that a prefix is a sensible discretization on its own (see the docstrings).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from scipy.special import ndtr, ndtri

from .generators import _check_count, _check_dim, _seed_int, _voronoi, sobol
from .pointset import PointSet

__all__ = ["hexagonal", "rotated_grid", "poisson", "foveated", "clustered"]

# A maximal greedy (random sequential adsorption) set with exclusion distance r, thinned from
# 8n uniform candidates in [-1, 1]^d, holds about C · 2^d / r^d points with
# C = a + b · n^(-1/d) (measured for n = 10^3 … 6.5·10^4; the n-term is points crowding the
# boundary).
_RSA_DENSITY = {2: (0.5438, 0.29), 3: (0.4765, 0.505)}
_POISSON_OVERSHOOT = 1.03  # aim a little above n so one pass almost always suffices


# --- shared helpers --------------------------------------------------------------------------
def _check_space_dim(dim) -> int:
    dim = _check_dim(dim)
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 (images) or 3 (volumes) for this generator; got {dim}")
    return dim


def _check_real(value, name: str, unit: bool = False) -> float:
    """A finite positive number, or one in [0, 1] when ``unit``; else a ValueError."""
    want = "lie in [0, 1]" if unit else "be a positive finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must {want}; got {value!r}")
    value = float(value)
    if not (0.0 <= value <= 1.0 if unit else math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must {want}; got {value!r}")
    return value


def _round(coords: np.ndarray) -> np.ndarray:
    """Coordinates as a PointSet will store them (float32), back in float64, clipped to Ω."""
    return np.clip(coords.astype(np.float32).astype(np.float64), -1.0, 1.0)


def _repeated_rows(coords: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows equal to an earlier row."""
    _, first = np.unique(coords, axis=0, return_index=True)
    repeated = np.ones(len(coords), dtype=bool)
    repeated[first] = False
    return repeated


def _redraw_repeated(
    coords: np.ndarray, redraw: Callable[[np.ndarray], np.ndarray], what: str
) -> np.ndarray:
    """Replace rows that coincide (after float32 rounding) with fresh draws until none do."""
    coords = _round(coords)
    for _ in range(64):
        rows = np.flatnonzero(_repeated_rows(coords))
        if rows.size == 0:
            return coords
        coords[rows] = _round(redraw(rows))
    raise ValueError(
        f"could not draw distinct float32 points: {what} is too narrow for this many points — "
        "use a larger sigma or fewer points"
    )


def _pointset(coords: np.ndarray, kind: str) -> PointSet:
    """A PointSet of float32-rounded, distinct coords with clipped-Voronoi weights."""
    coords = _round(coords)
    if _repeated_rows(coords).any():  # every generator guarantees this; a bug if it fails
        raise RuntimeError(f"{kind} generated coinciding points; please report this")
    return _voronoi(coords, kind)


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


# --- lattices --------------------------------------------------------------------------------
def _two_adic_level(index: np.ndarray) -> np.ndarray:
    """Per row, the largest k with every (non-negative) entry ≡ 0 mod 2^k."""
    max_level = int(np.ceil(np.log2(max(int(index.max()), 1) + 1))) + 1
    level = np.full(len(index), max_level, dtype=np.int64)
    for column in index.T:
        v2 = np.full(column.shape, max_level, dtype=np.int64)
        nz = column > 0
        v2[nz] = np.log2(column[nz] & -column[nz]).astype(np.int64)
        level = np.minimum(level, v2)
    return level


def _lattice_in_box(basis: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of the lattice {s·(k + u)·basis : k ∈ Z^d} in [-1, 1]^d, coarse to fine.

    ``basis`` rows are the lattice vectors at unit spacing; ``u`` is a random offset uniform
    over one cell. Scaling about the origin, the point with unit-spacing position p lies in the
    box iff s ≤ 1 / ‖p‖∞, so the count in the box falls monotonically with s. The spacing s is
    chosen so that the count is the smallest one ≥ n (s halfway between the levels where it
    changes, so no point touches the boundary); points tied on the outermost L∞ level beyond n
    are dropped. Returned rows are sorted by 2-adic level of their integer coordinates (shifted
    to start at 0), descending and stable: each prefix of level ≥ k points is the coarser
    lattice 2^k·s of the same shape.
    """
    d = basis.shape[0]
    det = abs(float(np.linalg.det(basis)))
    inv = np.linalg.inv(basis)
    u = rng.random(d)
    reach = np.abs(inv).sum(axis=0)  # |k_i + u_i| ≤ R · reach_i whenever ‖p‖∞ ≤ R
    radius = 0.55 * (n * det) ** (1.0 / d) + 2.0  # L∞ radius holding ~1.3 n points, plus slack
    tol = 1e-9
    while True:
        ranges = [
            np.arange(
                math.floor(-radius * reach[i] - u[i]), math.ceil(radius * reach[i] - u[i]) + 1
            )
            for i in range(d)
        ]
        k = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, d)
        p = (k + u) @ basis
        norm = np.abs(p).max(axis=1)
        inside = norm <= radius
        k, p, norm = k[inside], p[inside], norm[inside]
        order = np.argsort(norm, kind="stable")
        if len(order) > n:
            r_n = norm[order[n - 1]]
            beyond = norm[order[n:]]
            beyond = beyond[beyond > r_n * (1.0 + tol) + tol]
            if beyond.size:
                break
        radius *= 2.0
    spacing = 2.0 / (r_n + beyond[0])  # count at this spacing: the n points, plus ties at r_n
    keep = np.sort(order[:n])  # enumeration (lexicographic) order, ties beyond n dropped
    k, coords = k[keep], spacing * p[keep]
    level = _two_adic_level(k - k.min(axis=0))
    return coords[np.argsort(-level, kind="stable")]


def hexagonal(n: int, dim: int = 2, seed: int | None = None) -> PointSet:
    """``n`` points of a hexagonal lattice (2-D) or face-centred cubic lattice (3-D).

    The densest packings: every interior point has 6 (2-D) or 12 (3-D) nearest neighbours at
    the same distance. 2-D basis rows are (1, 0) and (1/2, √3/2) times a spacing s; 3-D rows
    are (1, 1, 0), (1, 0, 1), (0, 1, 1) times s/√2. The lattice gets a seeded random offset
    (uniform over one cell); s is the largest spacing whose lattice puts at least ``n`` points
    in the box with the smallest excess, and excess points are dropped from the outermost L∞
    shell, so exactly ``n`` remain.

    Weights: the measure of each point's Voronoi cell clipped to [-1, 1]^dim (they sum to
    2^dim). Order: coarse to fine — a point is at level k when its integer lattice coordinates
    (shifted to start at 0) are all ≡ 0 mod 2^k, sorted by level descending (stably), so the
    prefix of level-≥k points is the same lattice with spacing 2^k·s.

    Args:
        n: number of points.
        dim: 2 or 3.
        seed: offset seed; ``None`` draws a fresh one.
    """
    n, dim = _check_count(n), _check_space_dim(dim)
    rng = np.random.default_rng(_seed_int(seed))
    if dim == 2:
        basis = np.array([[1.0, 0.0], [0.5, math.sqrt(3.0) / 2.0]])
    else:
        basis = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]) / math.sqrt(2.0)
    return _pointset(_lattice_in_box(basis, n, rng), "hexagonal")


def rotated_grid(
    n: int, dim: int = 2, seed: int | None = None, angle: float | Sequence | None = None
) -> PointSet:
    """``n`` points of a square (cubic) lattice rotated against the axes of the box.

    A rotated lattice keeps the uniform spacing of a grid but does not line up with the image
    axes, which tests how well a model generalizes off the pixel grid. The rotation, a seeded
    random offset (uniform over one cell), the spacing (at least ``n`` points in the box, the
    smallest excess), dropping of the outermost excess and the coarse-to-fine order are those
    of :func:`hexagonal`.

    Weights: the measure of each point's Voronoi cell clipped to [-1, 1]^dim. Order: coarse
    to fine — the prefix of points whose integer lattice coordinates (shifted to start at 0)
    are ≡ 0 mod 2^k is the same rotated lattice with spacing 2^k·s.

    Args:
        n: number of points.
        dim: 2 or 3.
        seed: seed of the offset (and of the rotation when ``angle`` is None).
        angle: 2-D: rotation in radians; ``None`` draws one uniformly in [0, π/2). 3-D: a
            number rotates by that angle in the plane of axes 0 and 1; a 3×3 rotation matrix
            is used as given (rows are the rotated lattice vectors); ``None`` draws a uniformly
            random rotation.
    """
    n, dim = _check_count(n), _check_space_dim(dim)
    rng = np.random.default_rng(_seed_int(seed))
    if angle is None:
        if dim == 2:
            matrix = _plane_rotation(float(rng.uniform(0.0, math.pi / 2.0)), dim)
        else:
            matrix = Rotation.random(None, rng).as_matrix()
    elif isinstance(angle, (int, float, np.integer, np.floating)) and not isinstance(angle, bool):
        if not math.isfinite(float(angle)):
            raise ValueError(f"angle must be a finite number of radians; got {angle!r}")
        matrix = _plane_rotation(float(angle), dim)
    else:
        matrix = _check_rotation(angle, dim)
    return _pointset(_lattice_in_box(matrix, n, rng), "rotated_grid")


def _plane_rotation(angle: float, dim: int) -> np.ndarray:
    """Rows: the axis unit vectors rotated by ``angle`` in the plane of axes 0 and 1."""
    matrix = np.eye(dim)
    c, s = math.cos(angle), math.sin(angle)
    matrix[:2, :2] = [[c, s], [-s, c]]
    return matrix


def _check_rotation(angle, dim: int) -> np.ndarray:
    try:
        matrix = np.asarray(angle, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = None
    if dim == 2 or matrix is None or matrix.shape != (dim, dim):
        want = "a number of radians" if dim == 2 else "a number of radians or a 3×3 rotation"
        raise ValueError(f"angle must be None or {want}; got {angle!r}")
    if not np.allclose(matrix @ matrix.T, np.eye(dim), atol=1e-6) or np.linalg.det(matrix) < 0:
        raise ValueError(
            "angle must be a proper rotation matrix (orthonormal rows, determinant +1); "
            "build one with scipy.spatial.transform.Rotation(...).as_matrix()"
        )
    return matrix


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
    n, dim = _check_count(n), _check_space_dim(dim)
    rng = np.random.default_rng(_seed_int(seed))
    m = max(8 * n, 64)
    # Rounded first, so the exclusion holds for the float32 coordinates actually stored.
    candidates = _round(rng.uniform(-1.0, 1.0, (m, dim)))
    tree = cKDTree(candidates)
    a, b = _RSA_DENSITY[dim]
    density = a + b * n ** (-1.0 / dim)
    radius = (density * 2.0**dim / (_POISSON_OVERSHOOT * n)) ** (1.0 / dim)
    for _ in range(100):
        kept = _greedy_independent_set(tree.query_pairs(radius, output_type="ndarray"), m)
        if len(kept) >= n:
            return _pointset(candidates[kept[:n]], "poisson")
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
    n, dim = _check_count(n), _check_space_dim(dim)
    fraction = _check_real(fraction, "fraction", unit=True)
    sigma = _check_real(sigma, "sigma")
    rng = np.random.default_rng(_seed_int(seed))
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
    return _pointset(coords[rng.permutation(n)], "foveated")


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
    n, dim = _check_count(n), _check_space_dim(dim)
    if clusters is None:
        clusters = max(4, n // 128)
    clusters = _check_count(clusters, "clusters")
    if sigma is None:
        sigma = 0.35 * (2.0**dim / clusters) ** (1.0 / dim)
    sigma = _check_real(sigma, "sigma")
    background = _check_real(background, "background", unit=True)
    rng = np.random.default_rng(_seed_int(seed))
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
    return _pointset(coords[rng.permutation(n)], "clustered")
