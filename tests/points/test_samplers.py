"""Lattice, blue-noise, foveated and clustered point sets: counts, seeds, structure, order."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from dinet.points.generators import random, sobol
from dinet.points.samplers import clustered, foveated, hexagonal, poisson, rotated_grid

GENERATORS = [hexagonal, rotated_grid, poisson, foveated, clustered]
NEIGHBOURS = {2: 6, 3: 12}  # nearest neighbours of a hexagonal / FCC lattice point
HEX_BASIS = {
    2: np.array([[1.0, 0.0], [0.5, math.sqrt(3.0) / 2.0]]),
    3: np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]) / math.sqrt(2.0),
}


def _coords(ps) -> np.ndarray:
    return ps.coords.double().numpy()


def _knn(c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the k nearest other points."""
    dist, idx = cKDTree(c).query(c, k + 1)
    return dist[:, 1:], idx[:, 1:]


def _interior(c: np.ndarray, margin: float) -> np.ndarray:
    """Points at least ``margin`` inside the L∞ extent of the set (whose neighbours all exist)."""
    norm = np.abs(c).max(axis=1)
    return norm < norm.max() - margin


def _check_lattice_shell(c: np.ndarray, shell: int) -> float:
    """Interior points have exactly ``shell`` nearest neighbours, all at one distance."""
    dist, _ = _knn(c, shell + 1)
    spacing = float(np.median(dist[:, 0]))
    inner = _interior(c, 1.6 * spacing)
    assert inner.sum() >= 20
    np.testing.assert_allclose(dist[inner, :shell], spacing, rtol=0, atol=1e-6)
    assert (dist[inner, shell] > 1.3 * spacing).all()
    return spacing


def _nn_cv(c: np.ndarray) -> float:
    d = _knn(c, 1)[0][:, 0]
    return float(d.std() / d.mean())


def _dispersion(c: np.ndarray, cells: int) -> float:
    """Variance / mean of the point counts in a cells^d grid (≈ 1 for a uniform random set)."""
    idx = np.clip(((c + 1.0) / 2.0 * cells).astype(np.int64), 0, cells - 1)
    shape = (cells,) * c.shape[1]
    counts = np.bincount(np.ravel_multi_index(idx.T, shape), minlength=int(np.prod(shape)))
    return float(counts.var() / counts.mean())


def _min_over_mean_nn(c: np.ndarray) -> float:
    d = _knn(c, 1)[0][:, 0]
    return float(d.min() / d.mean())


# --- every generator -------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("gen", GENERATORS, ids=lambda g: g.__name__)
def test_exact_count_in_box_distinct_voronoi_weights(gen, dim):
    for n in (1, 2, 7, 50, 1000):
        ps = gen(n, dim, seed=n)
        assert len(ps) == n and ps.dim == dim and ps.kind == gen.__name__
        c = ps.coords.numpy()
        assert np.abs(c).max() <= 1.0
        assert len(np.unique(c, axis=0)) == n, "points coincide in float32"
        w = ps.weights.double().numpy()
        assert (w > 0).all()
        if ps.weight_method == "voronoi":  # exact cells: they tile the box
            assert math.isclose(w.sum(), 2.0**dim, rel_tol=1e-5)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("gen", GENERATORS, ids=lambda g: g.__name__)
def test_seeds(gen, dim):
    a, b, other = gen(150, dim, seed=3), gen(150, dim, seed=3), gen(150, dim, seed=4)
    assert a == b and np.array_equal(a.coords.numpy(), b.coords.numpy())
    assert a != other
    assert gen(150, dim) != gen(150, dim)  # seed=None draws a fresh set


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: hexagonal(0), "n must be a positive integer"),
        (lambda: hexagonal(10, dim=4), "dim must be 2"),
        (lambda: poisson(10, dim=1), "dim must be 2"),
        (lambda: rotated_grid(10, angle=float("nan")), "finite"),
        (lambda: rotated_grid(10, angle=np.eye(2)), "number of radians"),
        (lambda: rotated_grid(10, 3, angle=2 * np.eye(3)), "proper rotation"),
        (lambda: rotated_grid(10, 3, angle=np.ones(2)), "3×3 rotation"),
        (lambda: foveated(10, fovea=(0.0, 2.0)), "fovea must be 2 numbers in"),
        (lambda: foveated(10, fovea=(0.0, 0.0, 0.0)), "fovea must be 2 numbers in"),
        (lambda: foveated(10, fraction=1.5), "fraction must lie in"),
        (lambda: foveated(10, sigma=0), "sigma must be a positive"),
        (lambda: foveated(10, fraction=1, sigma=1e-30), "larger sigma"),
        (lambda: clustered(10, clusters=0), "clusters must be a positive integer"),
        (lambda: clustered(10, sigma=-1.0), "sigma must be a positive"),
        (lambda: clustered(10, background=-0.1), "background must lie in"),
    ],
)
def test_invalid_options(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- lattices --------------------------------------------------------------------------------
@pytest.mark.parametrize("dim, n", [(2, 1500), (3, 2000)])
def test_hexagonal_is_a_densest_lattice(dim, n):
    c = _coords(hexagonal(n, dim, seed=5))
    spacing = _check_lattice_shell(c, NEIGHBOURS[dim])
    if dim == 2:  # basis (1, 0), (1/2, √3/2): neighbour directions are multiples of 60°
        dist, idx = _knn(c, 6)
        inner = _interior(c, 1.6 * spacing)
        v = c[idx[inner]] - c[inner][:, None, :]
        angle = np.mod(np.arctan2(v[..., 1], v[..., 0]), math.pi / 3)
        assert np.minimum(angle, math.pi / 3 - angle).max() < 1e-5


@pytest.mark.parametrize("dim, n", [(2, 2000), (3, 4000)])
def test_hexagonal_prefix_is_the_coarser_lattice(dim, n):
    ps = hexagonal(n, dim, seed=11)
    c = _coords(ps)
    spacing = _check_lattice_shell(c, NEIGHBOURS[dim])
    k = (c - c[0]) @ np.linalg.inv(spacing * HEX_BASIS[dim])
    index = np.rint(k).astype(np.int64)
    assert np.abs(k - index).max() < 1e-4, "not a lattice of the documented basis"
    index -= index.min(axis=0)
    coarse = (index % 2 == 0).all(axis=1)
    m = int(coarse.sum())
    assert 0 < m < n and coarse[:m].all(), "level-1 points must come first"
    prefix = ps.prefix(m)
    assert math.isclose(
        _check_lattice_shell(_coords(prefix), NEIGHBOURS[dim]), 2 * spacing, rel_tol=1e-5
    )


@pytest.mark.parametrize("dim", [2, 3])
def test_rotated_grid_angle_zero_is_axis_aligned(dim):
    c = _coords(rotated_grid(700, dim, seed=2, angle=0.0))
    spacing = _check_lattice_shell(c, 2 * dim)
    k = (c - c[0]) / spacing
    assert np.abs(k - np.rint(k)).max() < 1e-4


def test_rotated_grid_has_the_given_angle():
    angle = 0.3
    c = _coords(rotated_grid(1200, 2, seed=2, angle=angle))
    spacing = _check_lattice_shell(c, 4)
    _, idx = _knn(c, 4)
    inner = _interior(c, 1.6 * spacing)
    v = c[idx[inner]] - c[inner][:, None, :]
    got = np.mod(np.arctan2(v[..., 1], v[..., 0]), math.pi / 2)
    np.testing.assert_allclose(got, angle, atol=1e-5)


def test_rotated_grid_3d_rotation_matrix_and_prefix():
    matrix = Rotation.from_euler("zyx", [0.4, -0.7, 1.1]).as_matrix()
    ps = rotated_grid(3000, 3, seed=8, angle=matrix)
    c = _coords(ps)
    spacing = _check_lattice_shell(c, 6)
    k = (c - c[0]) @ matrix.T / spacing  # rows of the matrix are the lattice vectors
    index = np.rint(k).astype(np.int64)
    assert np.abs(k - index).max() < 1e-4
    index -= index.min(axis=0)
    coarse = (index % 2 == 0).all(axis=1)
    m = int(coarse.sum())
    assert coarse[:m].all()
    assert math.isclose(_check_lattice_shell(_coords(ps.prefix(m)), 6), 2 * spacing, rel_tol=1e-5)
    assert _check_lattice_shell(_coords(rotated_grid(1000, 3, seed=8)), 6) > 0  # random rotation


# --- blue noise ------------------------------------------------------------------------------
@pytest.mark.parametrize("dim, n", [(2, 3000), (3, 1500)])
def test_poisson_is_blue_noise(dim, n):
    ratio = _min_over_mean_nn(_coords(poisson(n, dim, seed=1)))
    assert ratio >= 0.7
    assert _min_over_mean_nn(_coords(random(n, dim, seed=1))) < 0.25 * ratio
    assert _min_over_mean_nn(_coords(sobol(n, dim, seed=1))) < 0.5 * ratio


def test_poisson_prefix_keeps_the_exclusion_and_is_fast():
    start = time.perf_counter()
    ps = poisson(16384, 2, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"poisson(16384) took {elapsed:.2f} s; it should take well under 1 s"
    c = _coords(ps)
    radius = _knn(c, 1)[0].min()
    half = _coords(ps.prefix(4096))
    assert _knn(half, 1)[0].min() >= radius
    dist, _ = cKDTree(c[:4096]).query(c[4096:])  # later darts land in gaps of the earlier ones
    assert dist.min() >= radius - 1e-7


# --- non-uniform sets ------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 3])
def test_foveated_is_dense_at_the_fovea(dim):
    n, sigma = 2000, 0.25
    fovea = np.array([0.2, -0.1, 0.3][:dim])
    ps = foveated(n, dim, seed=4, fovea=fovea, sigma=sigma)
    near = np.linalg.norm(_coords(ps) - fovea, axis=1) < sigma
    ball = math.pi * sigma**2 if dim == 2 else 4.0 / 3.0 * math.pi * sigma**3
    uniform = n * ball / 2.0**dim  # the ball lies inside the box
    assert near.sum() > 2 * uniform
    assert abs(near[: n // 4].mean() - near.mean()) < 0.06  # a prefix keeps the mixture
    w = ps.weights.double().numpy()
    assert np.median(w[near]) < 0.5 * np.median(w[~near])  # weights = inverse density


def test_foveated_extremes():
    all_fovea = foveated(300, 2, seed=1, fovea=(0.5, 0.5), fraction=1.0, sigma=0.05)
    assert np.linalg.norm(_coords(all_fovea) - 0.5, axis=1).mean() < 0.1
    no_fovea = foveated(256, 2, seed=1, fraction=0.0)
    assert _nn_cv(_coords(no_fovea)) < 0.4  # all Sobol': evenly spread


@pytest.mark.parametrize("dim", [2, 3])
def test_clustered_is_clumpier_than_sobol(dim):
    n = 2000
    ps = clustered(n, dim, seed=6)
    assert _nn_cv(_coords(ps)) > 1.5 * _nn_cv(_coords(sobol(n, dim, seed=6)))
    cells = 8 if dim == 2 else 4
    assert _dispersion(_coords(ps), cells) > 4.0  # clumps: counts vary far more than Poisson
    assert _dispersion(_coords(random(n, dim, seed=6)), cells) < 2.0


def test_clustered_options():
    tight = clustered(1000, 2, seed=2, clusters=5, sigma=0.02, background=0.0)
    c = _coords(tight)
    spread = _knn(c, 10)[0][:, -1]
    assert np.median(spread) < 0.02  # all points in five tight clumps
    uniform = clustered(1000, 2, seed=2, background=1.0)
    assert _nn_cv(_coords(uniform)) < 0.6
