"""Box and global pools: equal to torch's pools on grids, sane elsewhere."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dinet.points as P
from dinet import _compiled
from dinet.nn import DIAvgPool, DIMaxPool, GlobalAvgPool, GlobalMaxPool


def _rel(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max())


def _on_grid(layer, points_out, x, shape):
    grid = P.grid(shape)
    values = P.image_to_values(x, grid).requires_grad_(True)
    out = layer(values, grid, points_out)
    return P.values_to_image(out, points_out), values


CASES = [(k, s, p) for k, s, p in itertools.product([2, 3, 5], [1, 2], [0, 1, 2]) if p <= k // 2]


@pytest.mark.parametrize("shape", [(16, 16), (24, 40), (33, 17)])
@pytest.mark.parametrize("kind", ["max", "avg", "avg_include_pad"])
def test_box_pools_equal_torch_on_grids(shape, kind):
    torch.manual_seed(0)
    for k, s, p in CASES:
        if kind == "max":
            pool = nn.MaxPool2d(k, stride=s, padding=p)
            layer, points_out = DIMaxPool.from_pool(pool, shape)
        else:
            pool = nn.AvgPool2d(k, stride=s, padding=p,
                                count_include_pad=kind == "avg_include_pad")
            layer, points_out = DIAvgPool.from_pool(pool, shape)
        x = torch.randn(2, 3, *shape, requires_grad=True)
        ref = pool(x)
        out, values = _on_grid(layer, points_out, x.detach(), shape)
        assert out.shape == ref.shape, (k, s, p)
        assert _rel(out, ref) <= 1e-5, (k, s, p)
        upstream = torch.randn_like(ref)
        (ref * upstream).sum().backward()
        (out * upstream).sum().backward()
        assert _rel(P.values_to_image(values.grad, P.grid(shape)), x.grad) <= 1e-5, (k, s, p)


def test_pool_3d_equals_torch():
    torch.manual_seed(0)
    shape = (12, 10, 8)
    for pool, cls in ((nn.MaxPool3d(2, stride=2), DIMaxPool), (nn.AvgPool3d(3, 1, 1), DIAvgPool)):
        layer, points_out = cls.from_pool(pool, shape)
        x = torch.randn(2, 3, *shape)
        out, _ = _on_grid(layer, points_out, x, shape)
        assert _rel(out, pool(x)) <= 1e-5


def test_global_pools_equal_torch():
    torch.manual_seed(0)
    shape = (24, 40)
    grid = P.grid(shape)
    x = torch.randn(3, 5, *shape)
    values = P.image_to_values(x, grid)
    avg = GlobalAvgPool()(values, grid)
    assert _rel(avg, F.adaptive_avg_pool2d(x, 1).flatten(1)) <= 1e-5
    assert torch.equal(GlobalMaxPool()(values, grid), F.adaptive_max_pool2d(x, 1).flatten(1))


def test_global_avg_is_the_integral_mean_on_nonuniform_points():
    points = P.shrunk(8192, 2, seed=0)
    r2 = (points.coords**2).sum(dim=1, keepdim=True)[None]
    mean = GlobalAvgPool()(r2, points)
    assert abs(float(mean) - 2 / 3) < 0.01  # ∫ (x² + y²) / 4 over [-1, 1]²
    assert abs(float(r2.mean()) - 2 / 3) > 0.1  # the unweighted mean is far off


def test_stride_coarsens_and_empty_windows_give_zero():
    points = P.sobol(1024, 2, seed=0)
    pool = DIAvgPool(2, spacing=2 / 32, stride=2)
    out = pool(torch.randn(2, 1024, 4), points)
    assert out.shape == (2, 256, 4)
    assert pool.output_points(points) == points.prefix(256)
    lonely = P.from_coords(torch.tensor([[0.9, 0.9]]), weights="uniform")
    for layer in (DIAvgPool(2, spacing=0.01), DIMaxPool(2, spacing=0.01)):
        y = layer(torch.ones(1, 1024, 2), points, lonely)
        assert torch.isfinite(y).all()
        if not (y == 1).all():
            assert (y == 0).all()


def test_pools_do_not_mutate_and_reject_bad_input():
    points = P.sobol(256, 2, seed=0)
    x = torch.randn(1, 256, 3)
    before = x.clone()
    DIMaxPool(3, spacing=0.1)(x, points)
    DIAvgPool(3, spacing=0.1)(x, points)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="spacing"):
        DIAvgPool(3, spacing=0.0)
    with pytest.raises(ValueError, match="N=255"):
        DIMaxPool(3, spacing=0.1)(torch.randn(1, 255, 3), points)
    with pytest.raises(ValueError, match="3-D"):
        DIAvgPool(3, spacing=0.1)(x, points, P.sobol(8, 3, seed=0))
    with pytest.raises(ValueError, match="ceil_mode"):
        DIMaxPool.from_pool(nn.MaxPool2d(2, ceil_mode=True), (8, 8))


@pytest.mark.skipif(not _compiled.AVAILABLE, reason="numba is not installed")
def test_max_pool_fallback_equals_compiled(monkeypatch):
    points, query = P.sobol(600, 2, seed=0), P.random(200, 2, seed=1)
    x = torch.randn(2, 600, 5, requires_grad=True)
    pool = DIMaxPool(3, spacing=0.08)
    upstream = torch.randn(2, 200, 5)
    fast = pool(x, points, query)
    (grad_fast,) = torch.autograd.grad((fast * upstream).sum(), x)
    monkeypatch.setattr(_compiled, "AVAILABLE", False)
    slow = pool(x, points, query)
    (grad_slow,) = torch.autograd.grad((slow * upstream).sum(), x)
    assert torch.equal(fast, slow)
    assert torch.equal(grad_fast, grad_slow)
