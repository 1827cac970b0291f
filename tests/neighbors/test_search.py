"""box_neighbors / ball_neighbors against a brute-force all-pairs search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dinet.neighbors import Neighbors, ball_neighbors, box_neighbors
from dinet.points import grid, sobol

SEARCH = {"box": box_neighbors, "ball": ball_neighbors}


def brute_force(x, y, r, metric):
    """Every (i, j) with y_j − x_i in the support, by testing all pairs in float64."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    r = np.broadcast_to(np.asarray(r, dtype=np.float64), (x.shape[1],))
    scaled = np.abs(y[None, :, :] - x[:, None, :]) / r
    if metric == "box":
        inside = (scaled <= 1.0).all(axis=2)
    else:
        inside = (scaled * scaled).sum(axis=2) <= 1.0
    return set(zip(*(a.tolist() for a in np.nonzero(inside)), strict=True))


def check(x, y, r, metric):
    """Compare one search with brute force; check the CSR structure. Returns the result."""
    x64 = np.asarray(x, dtype=np.float64)
    y64 = np.asarray(y, dtype=np.float64)
    nb = SEARCH[metric](x, y, r)
    assert isinstance(nb, Neighbors)
    n_out, d = x64.shape
    # CSR structure: one row per output point, grouped by output
    assert nb.indptr.dtype == np.int64 and nb.cols.dtype == np.int64
    assert nb.indptr.shape == (n_out + 1,)
    assert nb.indptr[0] == 0 and nb.indptr[-1] == len(nb.cols) == len(nb)
    assert np.all(np.diff(nb.indptr) >= 0)
    rows = nb.rows
    assert rows.shape == nb.cols.shape
    np.testing.assert_array_equal(rows, np.repeat(np.arange(n_out), np.diff(nb.indptr)))
    for i in range(n_out):
        assert np.all(rows[nb.indptr[i]:nb.indptr[i + 1]] == i)
    if len(nb.cols):
        assert nb.cols.min() >= 0 and nb.cols.max() < len(y64)
    # the same set of pairs, each once
    pairs = list(zip(rows.tolist(), nb.cols.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs), "a pair is listed twice"
    expected = brute_force(x64, y64, r, metric)
    missing, extra = expected - set(pairs), set(pairs) - expected
    assert not missing and not extra, (
        f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(extra)} extra"
    )
    # offsets are y_j − x_i in float64, exactly
    assert nb.offsets.dtype == np.float64 and nb.offsets.shape == (len(nb), d)
    np.testing.assert_array_equal(nb.offsets, y64[nb.cols] - x64[rows])
    return nb


def uniform(rng, n, d):
    return rng.uniform(-1.0, 1.0, (n, d))


@pytest.mark.parametrize("metric", ["box", "ball"])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("r", [0.05, 0.2, 0.7])
def test_random_sets_match_brute_force(metric, d, r):
    rng = np.random.default_rng(d * 100 + int(r * 100))
    x, y = uniform(rng, 300, d), uniform(rng, 400, d)
    nb = check(x, y, r, metric)
    assert len(nb) > 0
    check(y, x, r, metric)  # sizes the other way round
    check(x, x, r, metric)  # a set against itself


@pytest.mark.parametrize("metric", ["box", "ball"])
@pytest.mark.parametrize(
    "r", [(0.1, 0.3), (0.3, 0.02), (0.05, 0.2, 0.4), (0.4, 0.05, 0.1), (1.5, 0.01, 0.3)]
)
def test_per_axis_half_widths(metric, r):
    rng = np.random.default_rng(len(r))
    d = len(r)
    x, y = uniform(rng, 250, d), uniform(rng, 350, d)
    nb = check(x, y, r, metric)
    assert len(nb) > 0
    # anisotropic: the offsets respect each axis's own half-width
    assert np.all(np.abs(nb.offsets) <= np.asarray(r) + 1e-15)
    check(x, y, np.asarray(r), metric)  # an array of half-widths works the same


@pytest.mark.parametrize("metric", ["box", "ball"])
@pytest.mark.parametrize("d", [2, 3])
def test_tiny_support_gives_empty_rows(metric, d):
    rng = np.random.default_rng(7)
    x, y = uniform(rng, 200, d), uniform(rng, 300, d)
    for r in (1e-6, 1e-12):
        nb = check(x, y, r, metric)
        assert len(nb) == 0 and np.all(nb.indptr == 0)
        assert nb.offsets.shape == (0, d)
        # against itself each point finds exactly itself, at offset 0
        nb = check(x, x, r, metric)
        np.testing.assert_array_equal(nb.cols, np.arange(len(x)))
        assert np.all(nb.offsets == 0.0)
    # few neighbours: some rows empty, some not
    nb = check(x, y, 0.05, metric)
    counts = np.diff(nb.indptr)
    assert (counts == 0).any() and (counts > 0).any()


@pytest.mark.parametrize("metric", ["box", "ball"])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("r", [2.5, 3.0, 3.5, 100.0])
def test_support_larger_than_domain_gives_all_pairs(metric, d, r):
    rng = np.random.default_rng(d)
    x, y = uniform(rng, 40, d), uniform(rng, 70, d)
    x[0] = -1.0  # opposite corners: the farthest pair spans the domain's diagonal, 2√d
    y[0] = 1.0
    nb = check(x, y, r, metric)
    if metric == "box" or r > 2.0 * d**0.5:
        assert len(nb) == 40 * 70
        assert np.all(np.diff(nb.indptr) == 70)
    else:  # a ball of radius ≤ 2√d misses at least the corner-to-corner pair
        assert 0 < len(nb) < 40 * 70


@pytest.mark.parametrize("metric", ["box", "ball"])
def test_box_of_half_width_2_covers_the_domain(metric):
    corners = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    nb = check(corners, corners, 2.0, metric)
    # box: everything (offsets of exactly ±2 are on the edge); ball: the diagonal is 2√2 > 2
    assert len(nb) == (16 if metric == "box" else 12)


@pytest.mark.parametrize("metric", ["box", "ball"])
@pytest.mark.parametrize("d", [2, 3])
def test_duplicate_points(metric, d):
    rng = np.random.default_rng(11)
    base = uniform(rng, 30, d)
    y = np.concatenate([base, base, base[:10]])  # every point at least twice
    x = np.concatenate([base[:15], base[:15]])
    nb = check(x, y, 0.3, metric)
    # every copy is found: each output sees each of its own copies
    for i in range(len(x)):
        found = set(nb.cols[nb.indptr[i]:nb.indptr[i + 1]].tolist())
        copies = set(np.flatnonzero((y == x[i]).all(axis=1)).tolist())
        assert len(copies) >= 2 and copies <= found
    # all points identical
    same = np.tile(base[:1], (25, 1))
    nb = check(same, same, 0.01, metric)
    assert len(nb) == 25 * 25


@pytest.mark.parametrize("metric", ["box", "ball"])
def test_points_on_domain_boundary(metric):
    rng = np.random.default_rng(3)
    edges = np.array(
        [[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0],
         [-1.0, 0.0], [1.0, 0.25], [0.5, -1.0], [-0.75, 1.0], [0.0, 0.0]]
    )
    on_edge = uniform(rng, 40, 2)  # one coordinate on the boundary, the other anywhere
    on_edge[np.arange(40), rng.integers(0, 2, 40)] = rng.choice([-1.0, 1.0], 40)
    edge_x = np.concatenate([edges, on_edge, uniform(rng, 60, 2)])
    edge_y = np.concatenate([edges, uniform(rng, 60, 2)])
    edge_y[-20:, 0] = 1.0  # a whole column of inputs on the right edge
    for r in (0.25, 0.5, 1.0, (0.75, 0.25), 2.0):
        check(edge_x, edge_y, r, metric)
        check(edge_y, edge_x, r, metric)
    corners3 = np.array(np.meshgrid(*[[-1.0, 0.0, 1.0]] * 3, indexing="ij")).reshape(3, -1).T
    for r in (0.5, 1.0, 2.0):
        check(corners3, corners3, r, metric)


@pytest.mark.parametrize("metric", ["box", "ball"])
@pytest.mark.parametrize("shape", [(16, 16), (24, 40), (33, 17), (12, 10, 8)])
def test_grid_offsets_exactly_on_the_support_edge(metric, shape):
    """Grid stencils put many offsets exactly at ±r: none may be dropped."""
    g = grid(shape).coords.double().numpy()
    sub = grid(shape).prefix(grid(shape).levels()[1]).coords.double().numpy()
    spacing = 2.0 / np.asarray(shape, dtype=np.float64)
    for m in (1, 2, 3):
        for r in (m * spacing, m * spacing / 2, float(m * spacing[0])):
            check(g, g, r, metric)
            check(sub, g, r, metric)  # strided output points, like a stride-2 conv


@pytest.mark.parametrize("metric", ["box", "ball"])
def test_half_width_equal_to_an_exact_offset(metric):
    """r taken from an actual pair offset, so that pair sits exactly on the support's edge."""
    rng = np.random.default_rng(2024)
    for _ in range(150):
        d = int(rng.integers(2, 4))
        h = int(rng.integers(2, 30))
        x = -1.0 + (2.0 * rng.integers(0, h, (int(rng.integers(1, 40)), d)) + 1.0) / h
        y = -1.0 + (2.0 * rng.integers(0, h, (int(rng.integers(1, 40)), d)) + 1.0) / h
        r = np.abs(y[rng.integers(len(y))] - x[rng.integers(len(x))])
        r[r == 0] = 0.5
        if rng.random() < 0.3:
            r = float(r.max())
        check(x, y, r, metric)


@pytest.mark.parametrize("metric", ["box", "ball"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_single_points(metric, d):
    rng = np.random.default_rng(5)
    one = uniform(rng, 1, d)
    many = uniform(rng, 50, d)
    check(one, many, 0.5, metric)
    check(many, one, 0.5, metric)
    nb = check(one, one, 0.1, metric)
    assert len(nb) == 1 and nb.cols.tolist() == [0]
    far = -np.sign(one) * 0.99
    nb = check(one, far, 0.01, metric)
    assert len(nb) == 0 and nb.indptr.tolist() == [0, 0]


def test_torch_float32_input_matches_numpy():
    x = sobol(300, 2, seed=0).coords
    y = sobol(500, 2, seed=1).coords
    a = box_neighbors(x, y, 0.15)
    b = box_neighbors(x.double().numpy(), y.double().numpy(), 0.15)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.cols, b.cols)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    check(x.numpy(), y.numpy(), 0.15, "box")
    assert isinstance(box_neighbors(x, torch.zeros(1, 2), 0.5).offsets, np.ndarray)


def test_ball_is_subset_of_box():
    rng = np.random.default_rng(0)
    x, y = uniform(rng, 200, 2), uniform(rng, 200, 2)
    box = box_neighbors(x, y, 0.3)
    ball = ball_neighbors(x, y, 0.3)
    box_pairs = set(zip(box.rows.tolist(), box.cols.tolist(), strict=True))
    ball_pairs = set(zip(ball.rows.tolist(), ball.cols.tolist(), strict=True))
    assert ball_pairs < box_pairs
    assert np.all(np.linalg.norm(ball.offsets, axis=1) <= 0.3 + 1e-15)


def test_bad_arguments():
    x = np.zeros((4, 2))
    for r in (0.0, -0.1, np.nan, np.inf, (0.1, 0.0)):
        with pytest.raises(ValueError, match="half-widths"):
            box_neighbors(x, x, r)
    with pytest.raises(ValueError, match="same d"):
        box_neighbors(x, np.zeros((4, 3)), 0.1)
    with pytest.raises(ValueError, match="same d"):
        ball_neighbors(np.zeros(4), x, 0.1)
    with pytest.raises(ValueError):
        box_neighbors(x, x, (0.1, 0.2, 0.3))  # one half-width per axis, not three


coords_2d = st.integers(1, 40).flatmap(
    lambda n: arrays(
        np.float64,
        (n, 2),
        # a coarse lattice of values makes exact ties and duplicates common
        elements=st.one_of(
            st.floats(-1.0, 1.0, allow_nan=False),
            st.integers(-8, 8).map(lambda k: k / 8.0),
        ),
    )
)


@settings(max_examples=30, deadline=None)
@given(
    x=coords_2d,
    y=coords_2d,
    r=st.one_of(
        st.floats(1e-3, 3.0),
        st.tuples(st.floats(1e-3, 3.0), st.floats(1e-3, 3.0)),
        st.integers(1, 16).map(lambda k: k / 8.0),
    ),
    metric=st.sampled_from(["box", "ball"]),
)
def test_property_matches_brute_force(x, y, r, metric):
    check(x, y, r, metric)
