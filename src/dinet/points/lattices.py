"""Lattices on [-1, 1]^d: hexagonal (FCC in 3-D) and rotated square (cubic) lattices.

Each returns exactly ``n`` distinct points (distinct after rounding to float32, the precision
a :class:`PointSet` stores) in [-1, 1]^dim, dim 2 or 3, with a seeded random offset,
quadrature weights equal to the measure of each point's Voronoi cell clipped to the box
(they sum to 2^d), and points stored coarse to fine, so a prefix is a coarser lattice of the
same shape. Re-exported by :mod:`dinet.points.samplers` and :mod:`dinet.points`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from .checks import check_count, check_space_dim, seed_int
from .generators import distinct_voronoi_pointset
from .pointset import PointSet

__all__ = ["hexagonal", "rotated_grid"]


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
    n, dim = check_count(n), check_space_dim(dim)
    rng = np.random.default_rng(seed_int(seed))
    if dim == 2:
        basis = np.array([[1.0, 0.0], [0.5, math.sqrt(3.0) / 2.0]])
    else:
        basis = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]) / math.sqrt(2.0)
    return distinct_voronoi_pointset(_lattice_in_box(basis, n, rng), "hexagonal")


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
    n, dim = check_count(n), check_space_dim(dim)
    rng = np.random.default_rng(seed_int(seed))
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
    return distinct_voronoi_pointset(_lattice_in_box(matrix, n, rng), "rotated_grid")


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
