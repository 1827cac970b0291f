"""Resample: prefixes are free and exact, linear MLS and Delaunay interpolation reproduce
linear functions."""

from __future__ import annotations

import pytest
import torch

import dinet.points as P
from dinet.nn import Resample


def _linear(coords):
    c = coords.double()
    return torch.stack([0.3 + 1.5 * c[:, 0] - 0.7 * c[:, 1], -2 + 0.25 * c[:, 1]], dim=1)[None]


@pytest.mark.parametrize("source", ["sobol", "grid", "shrunk", "random"])
def test_linear_reproduces_linear_functions(source):
    points_in = {"sobol": P.sobol(2048, 2, seed=0), "grid": P.grid((40, 40)),
                 "shrunk": P.shrunk(2048, 2, seed=1), "random": P.random(2048, 2, seed=2)}[source]
    # Queries everywhere, corners and edges included.
    corners = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, 0.0], [0.0, -1.0]])
    query = P.from_coords(torch.cat([P.sobol(500, 2, seed=9).coords, corners]),
                          weights="uniform")
    layer = Resample("linear", support=0.15)
    out = layer(_linear(points_in.coords), points_in, query)
    torch.testing.assert_close(out, _linear(query.coords), rtol=0, atol=1e-9)


def test_prefix_is_taken_not_interpolated():
    points = P.sobol(1024, 2, seed=0)
    x = torch.randn(2, 1024, 3)
    out = Resample("linear", support=0.1)(x, points, points.prefix(256))
    assert torch.equal(out, x[:, :256])
    grid = P.grid((16, 16))
    xg = torch.randn(1, 256, 2)
    assert torch.equal(Resample("nearest")(xg, grid, grid.coarsen(2)), xg[:, :64])


def test_nearest_and_idw_at_points_and_at_the_boundary():
    points = P.sobol(512, 2, seed=0)
    x = torch.randn(2, 512, 3, dtype=torch.float64)
    # On the input points themselves both return the input.
    same = P.from_coords(points.coords[:50], weights="uniform")
    for method in ("nearest", "idw"):
        torch.testing.assert_close(Resample(method)(x, points, same), x[:, :50])
    # At the corners and edges: finite convex combinations of the input values.
    edge = P.from_coords(torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -0.3], [0.0, 1.0]]),
                         weights="uniform")
    for method in ("nearest", "idw"):
        out = Resample(method, k=6)(x, points, edge)
        assert torch.isfinite(out).all()
        assert (out <= x.amax(dim=1, keepdim=True) + 1e-12).all()
        assert (out >= x.amin(dim=1, keepdim=True) - 1e-12).all()
    # nearest picks the closest input point
    d = torch.cdist(edge.coords, points.coords)
    torch.testing.assert_close(Resample("nearest")(x, points, edge), x[:, d.argmin(dim=1)])


def test_linear_falls_back_where_the_box_is_empty_or_flat():
    points = P.from_coords(torch.tensor([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.5]]), weights="uniform")
    query = P.from_coords(torch.tensor([[0.9, 0.2], [-0.45, 0.0]]), weights="uniform")
    x = torch.tensor([[[1.0], [2.0], [3.0]]])
    out = Resample("linear", support=0.2)(x, points, query)
    # (0.9, 0.2): no point under the hat -> the nearest, (0.5, 0.0) with value 2
    # (-0.45, 0): one point only -> its value
    torch.testing.assert_close(out, torch.tensor([[[2.0], [1.0]]]))


def test_gradients_flow_and_input_is_not_mutated():
    points, query = P.sobol(300, 2, seed=0), P.random(40, 2, seed=1)
    x = torch.randn(2, 300, 3, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    layer = Resample("linear", support=0.3)
    assert torch.autograd.gradcheck(lambda v: layer(v, points, query), (x,))
    assert torch.equal(x.detach(), before)


def test_bad_input():
    points = P.sobol(64, 2, seed=0)
    with pytest.raises(ValueError, match="support="):
        Resample("linear")
    with pytest.raises(ValueError, match="valid: linear, delaunay, idw, nearest"):
        Resample("cubic")
    with pytest.raises(ValueError, match="support must be positive"):
        Resample("linear", support=-1.0)
    with pytest.raises(ValueError, match="points_out"):
        Resample("idw")(torch.randn(1, 64, 1), points)
    with pytest.raises(ValueError, match="3-D"):
        Resample("idw")(torch.randn(1, 64, 1), points, P.sobol(8, 3, seed=0))


@pytest.mark.parametrize("source", ["sobol", "jittered", "shrunk", "random"])
def test_delaunay_reproduces_linear_functions_inside_the_hull(source):
    from scipy.spatial import Delaunay

    points_in = {"sobol": P.sobol(256, 2, seed=0), "jittered": P.jittered_grid((16, 16), seed=1),
                 "shrunk": P.shrunk(256, 2, seed=1), "random": P.random(256, 2, seed=2)}[source]
    query = P.grid((64, 64))
    out = Resample("delaunay")(_linear(points_in.coords), points_in, query)
    inside = torch.as_tensor(Delaunay(points_in.coords.double().numpy()).find_simplex(
        query.coords.double().numpy()) >= 0)
    assert inside.float().mean() > 0.9  # most of the grid lies inside the hull
    torch.testing.assert_close(out[:, inside], _linear(query.coords)[:, inside], rtol=0,
                               atol=1e-9)
    # Outside the hull: the value of the nearest input point.
    nearest = torch.cdist(query.coords.double(), points_in.coords.double()).argmin(dim=1)
    torch.testing.assert_close(out[:, ~inside], _linear(points_in.coords)[:, nearest[~inside]])


def test_delaunay_is_exact_at_the_input_points_and_convex():
    points = P.sobol(300, 2, seed=3)
    x = torch.randn(2, 300, 3, dtype=torch.float64)
    same = P.from_coords(points.coords[100:160], weights="uniform")
    torch.testing.assert_close(Resample("delaunay")(x, points, same), x[:, 100:160])
    layer = Resample("delaunay")
    matrix = layer._build(points, P.random(500, 2, seed=4))
    assert (matrix.values >= -1e-12).all()
    rows = torch.repeat_interleave(torch.arange(500), torch.as_tensor(
        matrix.indptr).diff().long())
    torch.testing.assert_close(torch.zeros(500, dtype=torch.float64).index_add_(
        0, rows, torch.as_tensor(matrix.values).double()), torch.ones(500, dtype=torch.float64))


def test_delaunay_in_one_and_three_dimensions_and_degenerate_sets():
    # 1-D: piecewise linear between sorted points, repeated coordinates included.
    line = P.from_coords(torch.tensor([[0.3], [-0.5], [0.3], [0.9]]), weights="uniform")
    query = P.from_coords(torch.tensor([[-0.9], [0.0], [0.3], [0.6], [0.95]]),
                          weights="uniform")
    out = Resample("delaunay", dim=1)(torch.tensor([[[1.0], [2.0], [3.0], [4.0]]]), line, query)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([2.0, 1.375, 3.0, 3.5, 4.0]))
    # 3-D: linear functions reproduced inside the hull of scattered points.
    cloud, inner = P.sobol(512, 3, seed=0), P.from_coords(0.5 * P.random(50, 3, seed=1).coords,
                                                         weights="uniform")
    slope = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    f = lambda c: (1 + c.double() @ slope)[None, :, None]  # noqa: E731
    torch.testing.assert_close(Resample("delaunay", dim=3)(f(cloud.coords), cloud, inner),
                               f(inner.coords), rtol=0, atol=1e-9)
    # Points on one line span no triangle: every query takes its nearest point.
    flat = P.from_coords(torch.tensor([[-0.5, 0.0], [0.0, 0.0], [0.5, 0.0]]), weights="uniform")
    q = P.from_coords(torch.tensor([[0.4, 0.6], [-0.2, -0.1]]), weights="uniform")
    out = Resample("delaunay")(torch.tensor([[[1.0], [2.0], [3.0]]]), flat, q)
    torch.testing.assert_close(out, torch.tensor([[[3.0], [2.0]]]))
