"""Exact Voronoi quadrature weights: each point's weight is the measure of its Voronoi cell
clipped to the domain [-1, 1]^d (optionally to a region inside it).

For any point set this is the quadrature rule that integrates a function as if it were
constant on each point's cell: exact for constants, and for regular sets (grids, rotated or
hexagonal lattices) it gives every interior point the lattice cell volume — where k-NN
density estimates fail (they count ties at one distance and undershoot by ~2×).

How the cells are clipped exactly. Mirror the points across a face of the box: within the
box a mirrored point is never nearer than its original (both sit on the same side of the
face as any point inside), so adding mirrors leaves every clipped cell unchanged, and a
point's own mirror puts the face itself into its cell's boundary. Only points within a few
spacings of a face are mirrored (their cells are the ones that reach it). Then for every
original point, the cell C' computed with the mirrors satisfies C ⊆ C' ∩ box ⊆ Vor(p) ∩ box
= C, so a cell whose vertices all lie in the box *is* the clipped cell; the few that stick
out (points on a face, sparse sets) are intersected with the box as half-spaces.

Cell measures: in 2-D from the Delaunay triangulation (signed quadrilaterals point –
edge midpoint – circumcentre – edge midpoint per triangle), in 3-D from Qhull's Voronoi
ridges (a cell is the union of pyramids from its point over its ridges,
vol = Σ_r area(r) · |p − q_r| / 2 / d). Points closer than ~1e-12 share one cell; docs/design.md
has the fallbacks for layouts Qhull cannot resolve.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.spatial import (
    ConvexHull,
    Delaunay,
    HalfspaceIntersection,
    QhullError,
    Voronoi,
    cKDTree,
)
from scipy.stats import qmc

from .._cache import LRUCache

__all__ = ["VORONOI_MAX_POINTS", "voronoi_weights", "region_mask"]

#: The largest sets whose exact cells are computed, per dimension (Qhull's time and memory
#: grow as ~N in 2-D and ~N^1.2 in 3-D: 16k points take ~0.2 s / ~1.5 s on a 2-core CPU).
VORONOI_MAX_POINTS = {1: 2**26, 2: 2**22, 3: 2**18}
_MIRROR_SPACINGS = 1.5  # mirror the points within this many mean spacings of a face
# Cells that straddle a region's boundary are measured by sampling (see _region_measure).
_REGION_FIND, _REGION_SAMPLES, _REGION_GROW = 1024, 1024, 3.0

_QUANTA = (2.0**40, 2.0**30, 2.0**20, 2.0**10)  # resolutions ~1e-12 ... 1e-3 (see _weights)
_CACHE = LRUCache(16)


def voronoi_weights(coords, region=None) -> np.ndarray:
    """The measure of each point's Voronoi cell clipped to [-1, 1]^d (and to ``region``).

    Exact (to float64 rounding) in 1-, 2- and 3-D; the weights sum to 2^d. Duplicate points
    share their cell equally. Results are cached by content (the last 16 sets).

    Args:
        coords: ``(N, d)`` coordinates in [-1, 1]^d, d ≤ 3.
        region: the part of the domain the points cover, when it is not the whole box: a
            callable mapping an ``(M, d)`` float64 tensor of coordinates to ``(M,)`` bools,
            ``"ball"`` (the unit ball |x| ≤ 1) or a boolean mask array of shape ``(H, W)`` /
            ``(D, H, W)`` read at pixel centres (an image's valid region). Each weight is
            then the measure of cell ∩ region: a cell whose vertices are all in the region
            is exact (the region is taken to be smooth at the scale of the cells); one that
            straddles its boundary is measured by scrambled-Sobol sampling (a few % on that
            cell; measured ≤ 1e-4 relative on the total of a disk or a half-plane at
            1k–4k points). Every point must lie inside the region.

    Returns:
        ``(N,)`` float64 weights.

    Raises:
        ValueError: d > 3, more points than :data:`VORONOI_MAX_POINTS` allows (use
            ``weights="knn"``), coordinates outside the box, or points outside ``region``.
    """
    c = np.ascontiguousarray(np.asarray(coords, dtype=np.float64))
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"coords must have shape (N, d) with N >= 1; got {c.shape}")
    n, d = c.shape
    if d > 3:
        raise ValueError(f"Voronoi weights are implemented for d <= 3; got d = {d} — use "
                         "weights='knn'")
    if not np.isfinite(c).all():
        raise ValueError("coords contain NaN or inf — drop or fix those points")
    if np.abs(c).max() > 1.0:
        raise ValueError("coords must lie in [-1, 1]^d — rescale your coordinates")
    if n > VORONOI_MAX_POINTS[d]:
        raise ValueError(
            f"exact Voronoi cells of {n:,} points in {d}-D are too costly here (limit "
            f"{VORONOI_MAX_POINTS[d]:,}); pass weights='knn' (approximate: ~1-3% per weight on "
            "irregular sets, wrong by up to 2x on regular lattices) or explicit weights")
    mask = region_mask(region, d)
    key = (c.tobytes(), _region_key(region))
    return _CACHE.get_or_build(key, lambda: _weights(c, mask)).copy()


def _region_key(region):
    if region is None or isinstance(region, str):
        return region
    if callable(region):  # by identity; the key holds it, so its id is not reused
        return ("callable", region)
    arr = np.asarray(region)
    return ("mask", arr.shape, arr.tobytes())


def region_mask(region, dim: int | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """``region`` (see :func:`voronoi_weights`) as a function of ``(M, d)`` float64 arrays
    returning ``(M,)`` bools; ``dim`` checks a mask array's axes (``None``: any)."""
    if region is None:
        return None
    if isinstance(region, str):
        if region == "ball":
            return lambda x: np.einsum("md,md->m", x, x) <= 1.0
        raise ValueError(f"unknown region {region!r}; valid: 'ball', a callable or a mask")
    if callable(region):
        def call(x: np.ndarray) -> np.ndarray:
            out = region(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)))
            out = np.asarray(out.cpu() if isinstance(out, torch.Tensor) else out).reshape(-1)
            if out.shape[0] != x.shape[0]:
                raise ValueError(f"region must return one boolean per point ({x.shape[0]}); "
                                 f"got {out.shape[0]}")
            return out.astype(bool)
        return call
    arr = np.asarray(region)
    if arr.dtype != bool or arr.ndim != (arr.ndim if dim is None else dim):
        raise ValueError(f"a region mask must be a boolean array with {dim} axes (pixel "
                         f"centres of the domain); got {arr.dtype} with shape {arr.shape}")
    shape = np.asarray(arr.shape)

    def lookup(x: np.ndarray) -> np.ndarray:  # the pixel whose cell holds x
        idx = np.clip(np.floor((x + 1.0) / 2.0 * shape).astype(np.int64), 0, shape - 1)
        return arr[tuple(idx.T)]
    return lookup


def _weights(c: np.ndarray, mask) -> np.ndarray:
    n, d = c.shape
    if mask is not None:
        outside = ~mask(c)
        if outside.any():
            raise ValueError(f"{int(outside.sum())} of {n} points lie outside the region "
                             "(first at row {}) — drop them, e.g. coords[region(coords)]"
                             .format(int(np.flatnonzero(outside)[0])))
    # Points closer than the resolution share one cell. Qhull resolves ~1e-12 beside the
    # mirrors 2 apart; a tiny cluster beside far points can defeat it, and then the
    # resolution coarsens (each step exact to its resolution: a cluster that narrow gets its
    # total measure right and shares it equally).
    for quantum in _QUANTA:
        key, inverse, counts = np.unique(np.round(c * quantum), axis=0, return_inverse=True,
                                         return_counts=True)
        unique, inverse = key / quantum, inverse.reshape(-1)
        try:
            volume, vertices = _cells(unique, quantum)
            break
        except ValueError:
            if quantum == _QUANTA[-1]:
                raise
    if mask is not None:
        volume = volume * _inside_fraction(unique, volume, vertices, mask)
    return volume[inverse] / counts[inverse]


def _box_corners(d: int) -> np.ndarray:
    return np.array(np.meshgrid(*[[-1.0, 1.0]] * d, indexing="ij")).reshape(d, -1).T


def _cells_1d(x: np.ndarray) -> np.ndarray:
    """Sorted unique 1-D points: the cell of x_i is between the midpoints to its neighbours."""
    mid = (x[1:] + x[:-1]) / 2.0
    edges = np.concatenate([[-1.0], mid, [1.0]])
    return np.diff(edges)


def _cells(p: np.ndarray, quantum: float) -> tuple[np.ndarray, Callable]:
    """Clipped cell measures of distinct points ``p`` on a lattice of step 1 / ``quantum``,
    and a function giving every cell's vertices."""
    n, d = p.shape
    if d == 1:
        return _cells_1d(p[:, 0]), None
    if n == 1:
        corners = _box_corners(d)
        return np.array([2.0**d]), lambda: (np.zeros(len(corners), np.int64), corners)
    spacing = (2.0**d / n) ** (1.0 / d)
    # Mirror the points near the faces; if Qhull fails (too few points to span d dimensions)
    # or a cell comes out wrong, mirror all of them; last, let Qhull joggle the input
    # (exact to ~1e-10 of the domain).
    for reach, options in ((_MIRROR_SPACINGS * spacing, None), (np.inf, None), (np.inf, "QJ")):
        mirrors = []
        for k in range(d):
            for side in (-1.0, 1.0):
                gap = side - p[:, k] if side > 0 else p[:, k] + 1.0
                near = p[(gap > 0.5 / quantum) & (gap < reach)]  # a copy
                near[:, k] = 2.0 * side - near[:, k]
                mirrors.append(near)
        points = np.concatenate([p, *mirrors])
        try:
            volume, vertices = (_measure_2d(points, n, options) if d == 2 else
                                _measure(Voronoi(points, qhull_options=options), n, options))
        except QhullError:
            continue
        if np.isfinite(volume).all() and (volume > 0).all() and abs(
                volume.sum() / 2.0**d - 1.0) < 1e-6:
            return volume, vertices
    raise ValueError("Qhull could not build the Voronoi cells of these points (a degenerate "
                     "layout); pass weights='knn' or explicit weights")


def _measure_2d(points: np.ndarray, n: int, options: str | None) -> tuple[np.ndarray, Callable]:
    """2-D cells from the Delaunay triangulation (3x faster than Qhull's Voronoi output):
    a cell is the polygon of the circumcentres of the triangles around its point, and the
    part of it inside triangle (a, b, c) is the quadrilateral a, m_ab, cc, m_ca, whose signed
    area is right for obtuse triangles too (circumcentre outside)."""
    tri = Delaunay(points, qhull_options=options)
    simp = tri.simplices
    a, b, c = (points[simp[:, i]] for i in range(3))
    ab, ac = b - a, c - a
    det = ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]  # twice the signed area
    with np.errstate(divide="ignore", invalid="ignore"):
        ab2, ac2 = np.einsum("td,td->t", ab, ab), np.einsum("td,td->t", ac, ac)
        cc = a + np.stack([ac[:, 1] * ab2 - ab[:, 1] * ac2,
                           ab[:, 0] * ac2 - ac[:, 0] * ab2], axis=1) / (2.0 * det[:, None])
    orient = np.sign(det)
    volume = np.zeros(n)
    bad = np.zeros(n, bool)
    flag = ~np.isfinite(cc).all(axis=1) | (np.abs(cc) > 1.0 + 1e-9).any(axis=1)
    cc = np.where(flag[:, None], 0.0, cc)  # flagged (flat) triangles: their cells are clipped
    for i in range(3):
        v, nxt, prv = simp[:, i], points[simp[:, (i + 1) % 3]], points[simp[:, (i + 2) % 3]]
        mine = v < n
        x = points[v]
        m1, m2 = (x + nxt) / 2.0 - x, (x + prv) / 2.0 - x
        rel = cc - x
        piece = 0.5 * orient * (m1[:, 0] * rel[:, 1] - m1[:, 1] * rel[:, 0]
                                + rel[:, 0] * m2[:, 1] - rel[:, 1] * m2[:, 0])
        np.add.at(volume, v[mine], np.where(flag[mine], 0.0, piece[mine]))
        np.logical_or.at(bad, v[mine], flag[mine])
    hull = np.unique(tri.convex_hull)
    bad[hull[hull < n]] = True  # on the hull: an unbounded cell
    seen = np.zeros(n, bool)
    seen[simp[simp < n]] = True
    bad |= ~seen  # left out by Qhull (a near-duplicate)
    indptr, indices = tri.vertex_neighbor_vertices
    clipped: dict[int, np.ndarray] = {}
    for j in np.flatnonzero(bad):
        volume[j], clipped[j] = _clipped_cell(points, j, indices[indptr[j]:indptr[j + 1]],
                                              options)

    def vertices() -> tuple[np.ndarray, np.ndarray]:
        cells = [simp[:, i] for i in range(3)]
        cells = np.concatenate(cells)
        coords = np.concatenate([cc] * 3)
        keep = (cells < n) & ~np.isin(cells, list(clipped))
        return _with_clipped(cells[keep], coords[keep], clipped)
    return volume, vertices


def _with_clipped(cells, coords, clipped):
    if not clipped:
        return cells, coords
    ids = list(clipped)
    return (np.concatenate([cells, *[np.full(len(clipped[j]), j) for j in ids]]),
            np.concatenate([coords, *[clipped[j] for j in ids]]))


def _measure(vor: Voronoi, n: int, options: str | None) -> tuple[np.ndarray, Callable]:
    """Cells from Qhull's Voronoi ridges (used in 3-D): each ridge between points p and q
    adds the pyramid area(ridge) · |p − q| / 2 / d to both cells."""
    p = vor.points
    d = p.shape[1]
    pairs = vor.ridge_points
    lens = np.fromiter(map(len, vor.ridge_vertices), np.int64, len(vor.ridge_vertices))
    flat = np.fromiter((v for r in vor.ridge_vertices for v in r), np.int64, int(lens.sum()))
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    ridge_of = np.repeat(np.arange(len(lens)), lens)
    # A ridge with a vertex at infinity, or beyond the box, marks its originals for clipping.
    vpos = vor.vertices[flat]  # index -1 (infinity) reads the last vertex: flagged below
    outside_vertex = (flat < 0) | (np.abs(vpos) > 1.0 + 1e-9).any(axis=1)
    bad_ridge = np.zeros(len(lens), bool)
    np.logical_or.at(bad_ridge, ridge_of, outside_vertex)
    # Polygon areas by a fan from the first vertex (Qhull lists a 3-D ridge's vertices in
    # order around it).
    first = np.repeat(vpos[starts], lens, axis=0)
    rel = vpos - first
    pos = np.arange(len(flat)) - np.repeat(starts, lens)
    i = np.flatnonzero((pos >= 1) & (pos < np.repeat(lens, lens) - 1))  # triangle (0, i, i+1)
    total = np.zeros((len(lens), 3))
    np.add.at(total, ridge_of[i], np.cross(rel[i], rel[i + 1]))
    area = 0.5 * np.sqrt(np.einsum("rd,rd->r", total, total))
    area[bad_ridge] = 0.0
    half = 0.5 * np.linalg.norm(p[pairs[:, 0]] - p[pairs[:, 1]], axis=1)
    pyramid = area * half / d
    volume = np.zeros(n)
    bad = np.zeros(n, bool)
    seen = np.zeros(n, bool)
    for side in (0, 1):
        mine = pairs[:, side] < n
        np.add.at(volume, pairs[mine, side], pyramid[mine])
        np.logical_or.at(bad, pairs[mine, side], bad_ridge[mine])
        seen[pairs[mine, side]] = True
    bad |= ~seen  # left out by Qhull (a near-duplicate)
    clipped: dict[int, np.ndarray] = {}
    for j in np.flatnonzero(bad):
        volume[j], clipped[j] = _clipped_cell(p, j, _neighbours(pairs, j), options)

    def vertices() -> tuple[np.ndarray, np.ndarray]:
        cells = np.concatenate([np.repeat(pairs[:, s], lens) for s in (0, 1)])
        idx = np.concatenate([flat, flat])
        keep = (cells < n) & ~np.isin(cells, list(clipped))
        return _with_clipped(cells[keep], vor.vertices[idx[keep]], clipped)
    return volume, vertices


def _neighbours(pairs: np.ndarray, j: int) -> np.ndarray:
    rows = (pairs == j).any(axis=1)
    other = pairs[rows]
    return np.where(other[:, 0] == j, other[:, 1], other[:, 0])


def _clipped_cell(p: np.ndarray, j: int, neighbours: np.ndarray,
                  options: str | None) -> tuple[float, np.ndarray]:
    """The exact measure and vertices of {x in box : x nearer p_j than its neighbours}."""
    d = p.shape[1]
    if len(neighbours) == 0:  # Qhull left the point out (a near-duplicate): its k nearest
        neighbours = cKDTree(p).query(p[j], k=min(65, len(p)))[1][1:]
    x = p[j]
    q = p[neighbours]
    # (q - x)·y <= (|q|² - |x|²)/2 for y in the cell; box: ±y_k <= 1.
    normals = np.vstack([q - x, np.eye(d), -np.eye(d)])
    offsets = np.concatenate([-(np.einsum("nd,nd->n", q, q) - x @ x) / 2.0, -np.ones(2 * d)])
    # An interior point: x moved off any face it lies on, by less than half the distance to
    # its nearest neighbour (so it stays inside the cell).
    step = min(0.25 * float(np.min(np.linalg.norm(q - x, axis=1))), 0.5)
    inner = x - np.sign(x) * step * (np.abs(x) > 1.0 - step)
    hs = HalfspaceIntersection(np.hstack([normals, offsets[:, None]]), inner,
                               qhull_options=options)
    pts = hs.intersections
    return float(ConvexHull(pts, qhull_options=options).volume), pts


def _inside_fraction(p: np.ndarray, volume: np.ndarray, vertices, mask) -> np.ndarray:
    """Per cell, the fraction of its measure inside the region: 1 where the region's test
    holds at all its vertices, else estimated by sampling (see :func:`_region_measure`)."""
    n, d = p.shape
    frac = np.ones(n)
    if d == 1:
        edges = np.concatenate([[-1.0], (p[1:, 0] + p[:-1, 0]) / 2.0, [1.0]])
        lo, hi = edges[:-1, None], edges[1:, None]
        straddle = ~(mask(lo) & mask(hi))
        boxes = np.stack([lo, hi], axis=1)[straddle]
    else:
        cells, coords = vertices()
        straddle = np.zeros(n, bool)
        np.logical_or.at(straddle, cells, ~mask(coords))
        sel = straddle[cells]
        lo = np.full((n, d), np.inf)
        hi = np.full((n, d), -np.inf)
        np.minimum.at(lo, cells[sel], coords[sel])
        np.maximum.at(hi, cells[sel], coords[sel])
        boxes = np.stack([lo, hi], axis=1)[straddle]
    ids = np.flatnonzero(straddle)
    if len(ids):
        measure = _region_measure(p, ids, boxes, mask)
        frac[ids] = np.minimum(measure / volume[ids], 1.0)
    return frac


def _region_measure(p: np.ndarray, ids: np.ndarray, boxes: np.ndarray, mask) -> np.ndarray:
    """|cell ∩ region| for the cells ``ids`` (their bounding boxes ``(m, 2, d)``) from two
    rounds of scrambled-Sobol samples. A cell that reaches far out of the region holds only
    a sliver of it, so the first round (``_REGION_FIND`` samples of the cell's box) finds the
    part in the cell and the region, and the second (``_REGION_SAMPLES``) measures it within
    the bounding box of those hits grown by ``_REGION_GROW`` sample strides."""
    d = p.shape[1]
    tree = cKDTree(p)

    def hits(boxes: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        unit = qmc.Sobol(d, scramble=True, seed=0).random(m)
        samples = boxes[:, None, 0] + unit[None] * (boxes[:, None, 1] - boxes[:, None, 0])
        flat = samples.reshape(-1, d)
        good = tree.query(flat)[1] == np.repeat(ids, m)
        good[good] = mask(flat[good])
        return samples, good.reshape(len(ids), m)

    samples, good = hits(boxes, _REGION_FIND)
    stride = _REGION_GROW * (boxes[:, 1] - boxes[:, 0]) / _REGION_FIND ** (1.0 / d)
    found, where = good.any(axis=1)[:, None], good[..., None]
    lo = np.where(found, np.min(samples, axis=1, initial=np.inf, where=where), p[ids])
    hi = np.where(found, np.max(samples, axis=1, initial=-np.inf, where=where), p[ids])
    zoom = np.stack([np.maximum(lo - stride, boxes[:, 0]), np.minimum(hi + stride, boxes[:, 1])],
                    axis=1)
    _, good = hits(zoom, _REGION_SAMPLES)
    # A cell whose samples all missed the region still holds its point: half a sample.
    share = np.maximum(good.sum(axis=1), 0.5) / _REGION_SAMPLES
    return share * np.prod(zoom[:, 1] - zoom[:, 0], axis=1)
