"""Fuzzing every DI layer with strange point sets (hypothesis).

Point sets are built the way users build them — ``from_coords`` on their own coordinates
(Voronoi, k-NN, uniform or explicit weights) and the generators — from coordinates with duplicates,
collinear or coplanar points, all points in one corner, a single point, points exactly on the
boundary ±1, clusters from 1e-6 wide to the whole domain, in 2-D and 3-D. Layers get
spacings and supports from 1e-6 to 10 (far larger than the domain).

Every layer must either return finite values of the right shape, with finite gradients of a
sum of its outputs, or raise ``ValueError`` with a message; never another exception, never
NaN or inf. Quadrature weights must stay positive and finite.

The example count comes from the hypothesis profile (``tests/conftest.py``): ``ci`` (the
default) keeps this file near a minute on 2 cores; for a long run::

    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_fuzz.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import event, given, note
from hypothesis import strategies as st

import dinet.points as P
from dinet.nn import (
    Coarsened,
    DIAttention,
    DIAvgPool,
    DIBatchNorm,
    DIConv,
    DIInstanceNorm,
    DILayerNorm,
    DIMaxPool,
    DISequential,
    GlobalAvgPool,
    GlobalMaxPool,
    PointwiseLinear,
    PointwiseMLP,
    PositionalEncoding,
    Resample,
    Residual,
    SkipConcat,
)
from dinet.points import PointSet

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUTS = ("uniform", "duplicates", "collinear", "coplanar", "corner", "boundary", "single")
EXTENTS = (1e-30, 1e-15, 1e-9, 1e-6, 1e-3, 0.05, 0.5, 2.0)
#: Spacings (and supports) from far below any point spacing to far beyond the domain.
SCALES = (1e-6, 1e-3, 0.03, 0.2, 1.0, 3.0, 10.0)


# --- point sets ------------------------------------------------------------------------------


@st.composite
def raw_coords(draw, dim: int | None = None) -> np.ndarray:
    """``(N, d)`` float64 coordinates in [-1, 1]^d with a degenerate structure."""
    d = draw(st.sampled_from((2, 3))) if dim is None else dim
    layout = draw(st.sampled_from(LAYOUTS))
    n = 1 if layout == "single" else draw(st.integers(1, 48))
    extent = draw(st.sampled_from(EXTENTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    centre = rng.uniform(-1, 1, d) if draw(st.booleans()) else np.zeros(d)
    if layout == "corner":
        centre = rng.choice([-1.0, 1.0], d)
    if layout == "collinear":
        t = rng.uniform(-0.5, 0.5, (n, 1))
        coords = centre + extent * t * rng.normal(size=d)
    elif layout == "coplanar":
        basis = rng.normal(size=(min(2, d - 1), d))
        coords = centre + extent * rng.uniform(-0.5, 0.5, (n, len(basis))) @ basis
    else:
        coords = centre + extent * rng.uniform(-0.5, 0.5, (n, d))
    if layout == "duplicates":
        coords = coords[rng.integers(0, max(1, n // 3), n)]
    coords = np.clip(coords, -1.0, 1.0)
    if layout == "boundary":  # some coordinates exactly on the faces ±1
        hit = rng.random((n, d)) < 0.4
        coords[hit] = rng.choice([-1.0, 1.0], hit.sum())
    return coords


@st.composite
def point_sets(draw, dim: int | None = None) -> PointSet:
    """A PointSet as a user would make it: from raw coordinates, or from a generator."""
    d = draw(st.sampled_from((2, 3))) if dim is None else dim
    how = draw(st.sampled_from(
        ("voronoi", "voronoi", "knn", "knn", "uniform", "explicit", "sobol", "grid", "shrunk",
         "jittered", "masked", "prefix", "new-kind")
    ))
    note(f"point set: {how}, d={d}")
    seed = draw(st.integers(0, 2**16))
    if how in ("voronoi", "knn", "uniform"):
        return P.from_coords(draw(raw_coords(d)), weights=how)
    if how == "new-kind":
        make = draw(st.sampled_from((P.hexagonal, P.rotated_grid, P.poisson, P.foveated,
                                     P.clustered, P.halton)))
        return make(draw(st.integers(1, 64)), d, seed=seed)
    if how == "explicit":
        coords = draw(raw_coords(d))
        magnitude = draw(st.sampled_from((1e-12, 1e-3, 1.0, 1e3)))
        skew = draw(st.sampled_from((1.0, 1e3, 1e8)))  # ratio of the largest to the smallest
        weights = magnitude * skew ** -np.random.default_rng(seed).random(len(coords))
        return P.from_coords(coords, weights=weights)
    n = draw(st.integers(1, 64))
    if how == "sobol":
        return P.sobol(n, d, seed=seed)
    if how == "shrunk":
        return P.shrunk(n, d, seed=seed)
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=d, max_size=d)))
    if how == "grid":
        return P.grid(shape)
    if how == "jittered":
        return P.jittered_grid(shape, seed=seed)
    if how == "masked":
        base = P.sobol(max(n, 8), d, seed=seed)
        return P.masked(base, lambda c: c[:, 0] <= c[0, 0])  # keeps at least the first point
    points = P.from_coords(draw(raw_coords(d)))
    return points.prefix(draw(st.integers(1, len(points))))


#: A spacing: one of SCALES, any float in their range, or one per axis (anisotropic).
spacings = st.one_of(st.sampled_from(SCALES), st.floats(1e-6, 10.0),
                     st.lists(st.sampled_from(SCALES), min_size=3, max_size=3))


def per_axis(h, d: int):
    return tuple(h[:d]) if isinstance(h, list) else h


def values(points: PointSet, channels: int, seed: int, batch: int = 2,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = (1e-3, 1.0, 100.0)[seed % 3]
    x = scale * torch.randn(batch, len(points), channels, generator=gen, dtype=torch.float64)
    return x.to(dtype).requires_grad_()


def check_layer(layer, x: torch.Tensor, *args, shape: tuple[int, ...] | None = None, **kwargs):
    """Finite outputs of ``shape`` and finite gradients, or a ValueError with a message."""
    try:
        y = layer(x, *args, **kwargs)
    except ValueError as error:
        assert str(error).strip(), f"{type(layer).__name__} raised a ValueError without a message"
        note(f"ValueError: {error}")
        event(f"ValueError: {str(error)[:40]}")
        return None
    if isinstance(y, tuple):  # composite layers return (values, points)
        y = y[0]
    if shape is not None:
        assert tuple(y.shape) == shape
    assert torch.isfinite(y).all(), f"{type(layer).__name__} returned NaN/inf"
    gen = torch.Generator().manual_seed(0)
    (y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), "non-finite input gradient"
    for name, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"non-finite gradient of {name}"
    event("finite output")
    return y


def out_len(layer, points: PointSet) -> int:
    try:
        return len(layer.output_points(points))
    except ValueError:
        return -1


# --- tests -----------------------------------------------------------------------------------


@given(coords=raw_coords(), weights=st.sampled_from(("voronoi", "knn", "uniform")))
def test_quadrature_weights_positive_and_finite(coords, weights):
    points = P.from_coords(coords, weights=weights)
    for ps in (points, points.prefix(max(1, len(points) // 2)), points.coarsen(2)):
        w = ps.weights
        assert w.shape == (len(ps),)
        assert torch.isfinite(w).all() and (w > 0).all(), w
        assert torch.isfinite(ps.coords).all() and ps.coords.abs().max() <= 1.0


@given(points=point_sets())
def test_generated_point_sets_have_positive_weights(points):
    for ps in (points, points.coarsen(2), points.prefix(points.levels()[-1])):
        assert torch.isfinite(ps.weights).all() and (ps.weights > 0).all(), ps.weights


@given(points=point_sets(), kernel=st.sampled_from((1, 2, 3, 5)), h=spacings,
       stride=st.sampled_from((1, 2, 3)), dilation=st.sampled_from((1, 2)),
       groups=st.sampled_from((1, 2)), dtype=st.sampled_from((torch.float32, torch.float64)),
       fast=st.sampled_from((None, True)), seed=st.integers(0, 99))
def test_conv_spline(points, kernel, h, stride, dilation, groups, dtype, fast, seed):
    """Sparse stencils, and the grid fast path (F.conv on the rasterised kernel) on grids."""
    d = points.dim
    layer = DIConv(2, 4, kernel, spacing=per_axis(h, d), dim=d, stride=stride,
                   dilation=dilation, groups=groups, grid_fast_path=fast).to(dtype)
    check_layer(layer, values(points, 2, seed, dtype=dtype), points,
                shape=(2, out_len(layer, points), 4))


@given(points=point_sets(), kernel=st.sampled_from((1, 3)), h=spacings,
       stride=st.sampled_from((1, 2)), seed=st.integers(0, 99))
def test_conv_mlp(points, kernel, h, stride, seed):
    layer = DIConv(2, 3, kernel, spacing=per_axis(h, points.dim), dim=points.dim,
                   stride=stride, kernel="mlp", n_basis=4, hidden=8)
    check_layer(layer, values(points, 2, seed), points, shape=(2, out_len(layer, points), 3))


@given(points=point_sets(), targets=st.data(), kernel=st.sampled_from((1, 2, 3)),
       h=spacings, family=st.sampled_from(("spline", "mlp")), seed=st.integers(0, 99))
def test_conv_to_other_points(points, targets, kernel, h, family, seed):
    """A convolution evaluated at arbitrary query points (a field out)."""
    out = targets.draw(point_sets(points.dim))
    layer = DIConv(2, 3, kernel, spacing=per_axis(h, points.dim), dim=points.dim,
                   kernel=family, n_basis=4, hidden=8)
    check_layer(layer, values(points, 2, seed), points, out, shape=(2, len(out), 3))


@given(points=point_sets(), kernel=st.sampled_from((1, 2, 3)), h=spacings,
       stride=st.sampled_from((1, 2)), pool=st.sampled_from(("avg", "avg_pad", "max")),
       dtype=st.sampled_from((torch.float32, torch.float64)), seed=st.integers(0, 99))
def test_box_pools(points, kernel, h, stride, pool, dtype, seed):
    h = per_axis(h, points.dim)
    if pool == "max":
        layer = DIMaxPool(kernel, spacing=h, dim=points.dim, stride=stride)
    else:
        layer = DIAvgPool(kernel, spacing=h, dim=points.dim, stride=stride,
                          count_include_pad=pool == "avg_pad")
    check_layer(layer, values(points, 3, seed, dtype=dtype), points,
                shape=(2, out_len(layer, points), 3))


@given(points=point_sets(), seed=st.integers(0, 99))
def test_global_pools(points, seed):
    for layer in (GlobalAvgPool(), GlobalMaxPool()):
        check_layer(layer, values(points, 3, seed), points, shape=(2, 3))


@given(points=point_sets(), norm=st.sampled_from(("batch", "batch_eval", "instance", "layer")),
       batch=st.sampled_from((1, 2)), seed=st.integers(0, 99))
def test_norms(points, norm, batch, seed):
    layer = {"instance": DIInstanceNorm(3, affine=True), "layer": DILayerNorm(3)}.get(
        norm, DIBatchNorm(3)
    )
    x = values(points, 3, seed, batch=batch)
    if norm == "batch_eval":
        with torch.no_grad():  # running statistics from one training batch first
            try:
                layer(x.detach(), points)
            except ValueError as error:  # a batch of one value per channel
                assert str(error).strip()
        layer.eval()
    check_layer(layer, x, points, shape=(batch, len(points), 3))
    if norm.startswith("batch"):
        assert torch.isfinite(layer.running_mean).all() and torch.isfinite(layer.running_var).all()


@given(points=point_sets(), seed=st.integers(0, 99), frequencies=st.integers(0, 12))
def test_pointwise(points, seed, frequencies):
    n = len(points)
    check_layer(PointwiseLinear(3, 4), values(points, 3, seed), points, shape=(2, n, 4))
    check_layer(PointwiseMLP(3, 8, 4), values(points, 3, seed), points, shape=(2, n, 4))
    encoding = PositionalEncoding(points.dim, frequencies)
    check_layer(encoding, values(points, 3, seed), points,
                shape=(2, n, 3 + encoding.extra_channels))


@given(points=point_sets(), targets=st.data(), method=st.sampled_from(("linear", "delaunay",
       "idw", "nearest")), support=st.sampled_from(SCALES), k=st.integers(1, 6),
       power=st.sampled_from((0.5, 2.0, 60.0, 500.0)),
       direction=st.sampled_from(("other", "down", "up", "same")), seed=st.integers(0, 99))
def test_resample(points, targets, method, support, k, power, direction, seed):
    source, out = points, points
    if direction == "other":
        out = targets.draw(point_sets(points.dim))
    elif direction == "down":
        out = points.coarsen(2)
    elif direction == "up":
        source = points.coarsen(2)
    layer = Resample(method, support=support if method == "linear" else None, k=k,
                     power=power, dim=points.dim)
    check_layer(layer, values(source, 3, seed), source, out, shape=(2, len(out), 3))


@given(points=point_sets(), support=st.sampled_from((None,) + SCALES), heads=st.sampled_from(
       (1, 2)), queries=st.sampled_from(("self", "prefix", "other")), data=st.data(),
       seed=st.integers(0, 99))
def test_attention(points, support, heads, queries, data, seed):
    layer = DIAttention(4, heads, support=support, dim=points.dim)
    x = values(points, 4, seed)
    if queries == "self":
        check_layer(layer, x, points, shape=(2, len(points), 4))
    elif queries == "prefix":
        out = points.coarsen(2)
        check_layer(layer, x, points, out, shape=(2, len(out), 4))
    else:
        out = data.draw(point_sets(points.dim))
        query = values(out, 4, seed + 1)
        check_layer(layer, x, points, out, query=query, shape=(2, len(out), 4))


@given(points=point_sets(), h=st.sampled_from(SCALES), seed=st.integers(0, 99))
def test_small_network(points, h, seed):
    """Layers chained: conv down, norm, pool, conv back up (a U-Net-like coarsening)."""
    d = points.dim
    body = DISequential(DIConv(3, 4, 3, spacing=2 * h, dim=d), DIBatchNorm(4),
                        DIMaxPool(2, spacing=2 * h, dim=d))
    net = DISequential(
        DIConv(2, 3, 3, spacing=h, dim=d),
        Coarsened(body, upsample=Resample("linear", support=2 * h, dim=d)),
        PointwiseLinear(4, 2),
    )
    check_layer(net, values(points, 2, seed), points, shape=(2, len(points), 2))
    skips = DISequential(
        Residual(DISequential(DIConv(2, 2, 3, spacing=h, dim=d), DILayerNorm(2))),
        SkipConcat(DIAttention(2, support=3 * h, dim=d)),
        GlobalAvgPool(),
    )
    check_layer(skips, values(points, 2, seed), points, shape=(2, 4))


# --- regressions: cases the fuzzing found ----------------------------------------------------


def test_regression_conv_spacing_far_below_point_spacing_is_refused():
    """A kernel cell h^d ~1e-18 under points of weight ~1e-2 scaled values by 1e16 per layer;
    two convolutions and a batch norm then returned NaN. Now a ValueError says why."""
    points = P.shrunk(1, 3, seed=0)
    for kernel in ("spline", "mlp"):
        layer = DIConv(2, 3, 3, spacing=1e-6, dim=3, kernel=kernel)
        with pytest.raises(ValueError, match="far finer than the input points"):
            layer(torch.randn(2, 1, 2), points)
    with pytest.raises(ValueError, match="spacing near the point spacing"):
        DIConv(1, 1, 3, spacing=1e-20)(torch.randn(1, 64, 1), P.sobol(64, 2, seed=0))
    # A model evaluated on points much sparser than its kernel lattice still runs.
    sparse = P.sobol(64, 3, seed=0)
    y = DIConv(1, 1, 3, spacing=2 / 64, dim=3)(torch.randn(1, 64, 1), sparse)
    assert torch.isfinite(y).all()


def test_regression_avg_pool_with_tiny_box_counting_padding_is_refused():
    points = P.sobol(16, 2, seed=0)
    layer = DIAvgPool(1, spacing=1e-20, count_include_pad=True)
    with pytest.raises(ValueError, match="count_include_pad=False"):
        layer(torch.randn(1, 16, 1), points)


def test_regression_idw_with_a_large_power_stays_finite():
    """1 / d^p overflowed to inf for p = 400 (inf / inf = NaN in the normalisation)."""
    source, target = P.sobol(64, 2, seed=0), P.sobol(50, 2, seed=5)
    x = torch.randn(1, 64, 2)
    for power in (400.0, 1e4):
        y = Resample("idw", k=4, power=power)(x, source, target)
        assert torch.isfinite(y).all()
    nearest = Resample("nearest")(x, source, target)
    assert torch.allclose(Resample("idw", k=4, power=1e4)(x, source, target), nearest)


def test_regression_knn_weights_of_a_tiny_cluster_stay_positive():
    """k-NN volumes of a cluster 1e-15 wide in 3-D (~1e-46) underflowed float32 to 0, and
    from_coords then refused its own weights ("use weights='knn'")."""
    rng = np.random.default_rng(0)
    for extent, d in ((1e-15, 3), (1e-30, 2), (1e-30, 3)):
        for weights in ("knn", "voronoi"):  # Voronoi: points within ~1e-12 share a cell
            points = P.from_coords(rng.uniform(-0.5, 0.5, (20, d)) * extent, weights=weights)
            assert (points.weights > 0).all() and torch.isfinite(points.weights).all()
            assert (points.prefix(10).weights > 0).all()


def test_regression_batch_norm_running_var_with_one_dominant_weight():
    """One sample whose weight sits on one point (weights 1 and 1e-30) has Kish effective
    sample size exactly 1.0 in float64: n / (n − 1) = inf made running_var inf (NaN for a
    constant field), and every eval output after it NaN."""
    points = P.from_coords([[0.0, 0.0], [0.5, 0.5]], weights=[1.0, 1e-30])
    layer = DIBatchNorm(2)
    layer(torch.ones(1, 2, 2), points)
    assert torch.isfinite(layer.running_var).all()
    layer.eval()
    assert torch.isfinite(layer(torch.ones(1, 2, 2), points)).all()
