"""Voronoi quadrature weights: cell measures against closed forms, exact sums, degenerate
sets, regions, caching and errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import dinet.points.voronoi as V
from dinet.points import from_coords, grid, masked, sobol, voronoi_weights


def mesh(*axes) -> np.ndarray:
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))


# --- closed forms --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64), (17, 40), (5, 1), (12, 10, 8), (1, 3, 7)])
def test_pixel_centre_grids_get_the_pixel_volume(shape):
    w = voronoi_weights(grid(shape).coords.double().numpy())
    volume = math.prod(2.0 / s for s in shape)
    # exact for the float32 coordinates the grid stores, which are evenly spaced to ~1e-7
    np.testing.assert_allclose(w, volume, rtol=1e-6)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_grids_through_the_boundary_get_trapezoid_weights(dim):
    # Points on the faces own half a cell, on edges a quarter, at corners 1/2^d: the
    # trapezoid rule. These cells are the ones clipped as half-spaces (their mirror across
    # the face would be the point itself).
    x = np.linspace(-1.0, 1.0, 9)
    w = voronoi_weights(mesh(*[x] * dim))
    axis = np.full(9, 0.25)
    axis[[0, -1]] = 0.125
    expected = np.prod(mesh(*[axis] * dim), axis=1)
    np.testing.assert_allclose(w, expected, rtol=1e-9)


def hexagonal_lattice(spacing: float, offset=(0.0, 0.0)) -> np.ndarray:
    rows = np.arange(-40, 41)
    a, b = np.meshgrid(rows, rows, indexing="ij")
    x = spacing * (a + 0.5 * b) + offset[0]
    y = spacing * (math.sqrt(3) / 2) * b + offset[1]
    pts = np.stack([x.ravel(), y.ravel()], axis=1)
    return pts[(np.abs(pts) <= 1.0).all(axis=1)]


def test_hexagonal_lattice_interior_cells_are_regular_hexagons():
    s = 0.05
    pts = hexagonal_lattice(s, offset=(0.013, -0.007))
    w = voronoi_weights(pts)
    assert math.isclose(w.sum(), 4.0, rel_tol=1e-12)
    # a cell is a hexagon of area (√3/2) s² unless it reaches the boundary
    interior = (np.abs(pts) < 1.0 - s).all(axis=1)
    np.testing.assert_allclose(w[interior], math.sqrt(3) / 2 * s * s, rtol=1e-9)
    # k-NN volumes get the same lattice badly wrong (ties at one distance)
    knn = from_coords(pts, weights="knn").weights.double().numpy()
    assert abs(knn[interior].mean() / (math.sqrt(3) / 2 * s * s) - 1) > 0.2


@pytest.mark.parametrize("angle", [0.1, 0.5, math.pi / 6])
def test_rotated_lattice_interior_cells_are_the_lattice_cell(angle):
    s = 2.0 / 50
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    k = np.arange(-40, 41)
    pts = (mesh(k, k) * s + 0.003) @ rot.T
    pts = pts[(np.abs(pts) <= 1.0).all(axis=1)]
    w = voronoi_weights(pts)
    interior = (np.abs(pts) < 1.0 - s).all(axis=1)
    np.testing.assert_allclose(w[interior], s * s, rtol=1e-9)
    assert math.isclose(w.sum(), 4.0, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("coords", "expected"),
    [
        # two points: the bisector x0 = 0 halves the square
        ([[-0.5, 0.0], [0.5, 0.0]], [2.0, 2.0]),
        # bisector x0 + x1 = 0.5 cuts off a right triangle with legs 1.5
        ([[0.0, 0.0], [0.5, 0.5]], [4.0 - 1.125, 1.125]),
        # four corners and the centre: the diamond |x0| + |x1| <= 1 and four triangles
        ([[-1, -1], [-1, 1], [1, -1], [1, 1], [0, 0]], [0.5, 0.5, 0.5, 0.5, 2.0]),
        # one point at a corner owns the whole domain
        ([[1.0, 1.0]], [4.0]),
        # 1-D: cells between the midpoints
        ([[-1.0], [0.0], [0.5]], [0.5, 0.75, 0.75]),
        # 3-D: a point at a face centre and one at the centre: the plane x2 = 0.5
        ([[0, 0, 0], [0, 0, 1.0]], [6.0, 2.0]),
        # 3-D: centre and a corner: the corner's cell is the tetrahedron x0+x1+x2 >= 1.5
        ([[0, 0, 0], [1.0, 1.0, 1.0]], [8.0 - 1.5**3 / 6, 1.5**3 / 6]),
    ],
)
def test_hand_computed_configurations(coords, expected):
    np.testing.assert_allclose(voronoi_weights(np.array(coords, float)), expected, rtol=1e-9)


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 100, 2000])
def test_weights_sum_to_the_domain_measure(dim, n):
    rng = np.random.default_rng(n + 10 * dim)
    w = voronoi_weights(rng.uniform(-1, 1, (n, dim)))
    assert (w > 0).all()
    assert math.isclose(w.sum(), 2.0**dim, rel_tol=1e-10)


def test_duplicates_share_their_cell():
    rng = np.random.default_rng(0)
    c = rng.uniform(-1, 1, (50, 2))
    w = voronoi_weights(c)
    dup = voronoi_weights(np.concatenate([c, c[:5], c[:1]]))
    np.testing.assert_allclose(dup[5:50], w[5:50], rtol=1e-9)
    np.testing.assert_allclose(dup[0], w[0] / 3, rtol=1e-9)
    np.testing.assert_allclose(dup[[1, 51]], w[1] / 2, rtol=1e-9)
    assert math.isclose(dup.sum(), 4.0, rel_tol=1e-12)


def test_collinear_and_coplanar_sets():
    # points on a line: vertical strips between the midpoints (height 2)
    x = np.array([-0.9, -0.2, 0.1, 0.7])
    for y in (0.3, 1.0):  # inside, and on the boundary
        w = voronoi_weights(np.stack([x, np.full(4, y)], axis=1))
        np.testing.assert_allclose(w, 2.0 * np.diff([-1.0, -0.55, -0.05, 0.4, 1.0]), rtol=1e-9)
    # a plane in 3-D: prisms of height 2 over the 2-D cells
    rng = np.random.default_rng(1)
    c2 = rng.uniform(-1, 1, (40, 2))
    w3 = voronoi_weights(np.concatenate([c2, np.full((40, 1), -0.4)], axis=1))
    np.testing.assert_allclose(w3, 2.0 * voronoi_weights(c2), rtol=1e-9)
    # fewer than d + 2 points
    w = voronoi_weights(np.array([[0.1, 0.2, 0.3], [-0.4, 0.5, 0.0], [0.9, -0.9, 0.2]]))
    assert math.isclose(w.sum(), 8.0, rel_tol=1e-12)


def test_default_from_coords_and_prefix_are_voronoi():
    rng = np.random.default_rng(3)
    ps = from_coords(rng.uniform(-1, 1, (1000, 2)))
    assert ps.weight_method == "voronoi"
    # the weights are those of the float32 coordinates the point set stores
    np.testing.assert_allclose(ps.weights.double().numpy(),
                               voronoi_weights(ps.coords.double().numpy()), rtol=1e-6)
    p = ps.prefix(250)
    assert p.weight_method == "voronoi"
    np.testing.assert_allclose(p.weights.double().numpy(),
                               voronoi_weights(ps.coords[:250].double().numpy()), rtol=1e-6)
    assert math.isclose(float(p.weights.double().sum()), 4.0, rel_tol=1e-6)


# --- regions -----------------------------------------------------------------------------


def disk_points(n: int, radius: float, seed: int) -> np.ndarray:
    c = sobol(4 * n, seed=seed).coords.double().numpy()
    return c[np.einsum("nd,nd->n", c, c) <= radius * radius][:n]


def test_ball_region_weights_integrate_over_the_disk():
    c = disk_points(4096, 1.0, seed=0)
    ps = from_coords(c, region="ball")
    assert ps.region == "ball"
    assert math.isclose(float(ps.weights.double().sum()), math.pi, rel_tol=1e-3)
    # a smooth function over the disk: ∫ exp(-|x|²) = π (1 − e^{-1})
    f = np.exp(-np.einsum("nd,nd->n", c, c))
    assert math.isclose(float(ps.weights.double().numpy() @ f), math.pi * (1 - math.exp(-1)),
                        rel_tol=2e-3)
    # without the region, the cells reach into the corners of the box
    assert float(from_coords(c).weights.double().sum()) > 3.99


def test_callable_and_mask_regions():
    half = from_coords(sobol(2048, seed=1).coords[sobol(2048, seed=1).coords[:, 0] < 0],
                       region=lambda x: x[:, 0] < 0)
    # a straight cut along x0 = 0: every boundary cell is exact up to the sampling of its part
    assert math.isclose(float(half.weights.double().sum()), 2.0, rel_tol=1e-3)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 4:20] = True  # rows [-0.5, 0.5), columns [-0.75, 0.25): area 1
    c = sobol(4096, seed=2).coords.double().numpy()
    inside = (np.abs(c[:, 0]) < 0.5) & (c[:, 1] >= -0.75) & (c[:, 1] < 0.25)
    w = voronoi_weights(c[inside], region=mask)
    assert math.isclose(w.sum(), 1.0, rel_tol=2e-3)


def test_masked_voronoi_set_recomputes_its_cells_on_the_region():
    ps = from_coords(sobol(2048, seed=4).coords)
    disk = masked(ps, lambda x: (x * x).sum(-1) <= 0.64)
    assert disk.weight_method == "voronoi"
    assert math.isclose(float(disk.weights.double().sum()), math.pi * 0.64, rel_tol=2e-3)
    # its prefixes keep the region
    assert math.isclose(float(disk.prefix(len(disk) // 2).weights.double().sum()),
                        math.pi * 0.64, rel_tol=4e-3)


def test_region_errors():
    c = np.array([[0.0, 0.0], [0.9, 0.9]])
    with pytest.raises(ValueError, match=r"1 of 2 points lie outside the region \(first at "
                                         r"row 1\)"):
        voronoi_weights(c, region="ball")
    with pytest.raises(ValueError, match="needs weights='voronoi'"):
        from_coords(c, weights="knn", region="ball")
    with pytest.raises(ValueError, match="unknown region 'disk'"):
        voronoi_weights(c, region="disk")
    with pytest.raises(ValueError, match="boolean array with 2 axes"):
        voronoi_weights(c, region=np.ones((4, 4, 4), bool))
    with pytest.raises(ValueError, match=re.escape("one boolean per point (2)")):
        voronoi_weights(c, region=lambda x: torch.ones(3, dtype=torch.bool))


# --- limits, errors and the cache --------------------------------------------------------


def test_too_many_points_and_too_many_dimensions(monkeypatch):
    monkeypatch.setitem(V.VORONOI_MAX_POINTS, 3, 100)
    with pytest.raises(ValueError, match="too costly.*weights='knn'"):
        voronoi_weights(np.zeros((101, 3)))
    with pytest.raises(ValueError, match="d <= 3.*weights='knn'"):
        voronoi_weights(np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        voronoi_weights(np.array([[0.0, 1.5]]))
    with pytest.raises(ValueError, match="NaN"):
        voronoi_weights(np.array([[0.0, np.nan]]))


def test_weights_are_cached_by_content(monkeypatch):
    rng = np.random.default_rng(7)
    c = rng.uniform(-1, 1, (300, 2))
    first = voronoi_weights(c)
    calls = []
    monkeypatch.setattr(V, "_weights", lambda *a: calls.append(a) or np.zeros(300))
    again = voronoi_weights(c.copy())
    assert not calls
    np.testing.assert_array_equal(again, first)
    again[:] = 0  # callers get a copy
    np.testing.assert_array_equal(voronoi_weights(c), first)
    voronoi_weights(c[:-1])
    assert len(calls) == 1
