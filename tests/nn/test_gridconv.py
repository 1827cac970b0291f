"""The grid fast path of the spline and MLP DIConv is held to the sparse stencil (the
reference).

Both paths compute the same sums in float32 in a different order, so values agree to a few
float32 ulps of the output's scale (tolerance 1e-5 relative); on a grid whose spacing is the
kernel's h the fast path is ``F.conv2d`` itself, compared exactly.
"""

from __future__ import annotations

import pytest
import torch

import dinet.points as P
from dinet.nn import DIConv
from dinet.nn._gridconv import grid_plan
from dinet.points import image_to_values, values_to_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _both_paths(conv: DIConv, x, points_in, points_out=None):
    """Outputs and gradients (x, weight, bias) of the fast and the sparse path."""
    results = []
    for fast in (True, False):
        conv.grid_fast_path = fast
        conv.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_(True)
        y = conv(xi, points_in, points_out)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        (y * g).sum().backward()
        grads = [xi.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else [])
        results.append((y.detach(), grads))
    return results


def _assert_close(a, b):
    scale = b.abs().max().clamp(min=1e-12)
    assert a.shape == b.shape
    assert ((a - b).abs().max() / scale) < 1e-5, float((a - b).abs().max() / scale)


CASES = [
    # (grid shape, kernel size, spacing, stride, dilation, groups, bias)
    ((16, 16), 3, 2 / 16, 1, 1, 1, True),      # g = h: the raster is W
    ((16, 16), 3, 2 / 8, 1, 1, 1, True),       # g = h/2: a 7x7 raster
    ((16, 16), 3, 2 / 12, 1, 1, 1, True),      # h not a multiple of g
    ((16, 16), 5, 2 / 16, 2, 1, 2, False),     # stride 2 onto the coarser prefix, groups
    ((16, 16), 1, 2 / 16, 2, 1, 1, True),      # 1x1 stride 2 (a torch channels-last bug)
    ((16, 16), 3, 2 / 16, 1, 2, 1, True),      # dilation
    ((8, 12), (3, 5), (2 / 8, 2 / 12), 1, 1, 1, True),  # rectangular, per-axis
    ((6, 6, 6), 3, 2 / 6, 1, 1, 1, True),      # 3-D
    ((6, 6, 6), 3, 2 / 6, 2, 1, 1, True),      # 3-D, stride 2
    ((20,), 3, 2 / 10, 1, 1, 1, True),         # 1-D
]


@pytest.mark.parametrize("shape,k,h,stride,dilation,groups,bias", CASES)
def test_fast_path_matches_stencil(shape, k, h, stride, dilation, groups, bias):
    torch.manual_seed(0)
    dim = len(shape)
    conv = DIConv(4, 6, k, spacing=h, dim=dim, stride=stride, dilation=dilation,
                  groups=groups, bias=bias)
    points = P.grid(shape)
    assert grid_plan(points, conv.output_points(points), conv.kernel_size, conv.spacing,
                     conv.dilation) is not None
    x = torch.randn(3, len(points), 4)
    (y_fast, g_fast), (y_ref, g_ref) = _both_paths(conv, x, points)
    _assert_close(y_fast, y_ref)
    for a, b in zip(g_fast, g_ref, strict=True):
        _assert_close(a, b)


def test_fast_path_is_conv2d_on_its_grid():
    torch.manual_seed(0)
    conv2d = torch.nn.Conv2d(3, 5, 3, padding=1)
    conv, points = DIConv.from_conv(conv2d, (12, 12))
    conv.grid_fast_path = True
    img = torch.randn(2, 3, 12, 12)
    y = conv(image_to_values(img, points), points)
    torch.testing.assert_close(values_to_image(y, points), conv2d(img), rtol=0, atol=1e-6)


@pytest.mark.parametrize("first,last", [(1, 15), (0, 12)])
def test_explicit_sub_lattice_output(first, last):
    """Output lattices of every 2nd node: from an offset of one node (asymmetric padding),
    and stopping short of the grid's end (the conv computes outputs that are dropped)."""
    torch.manual_seed(0)
    conv = DIConv(2, 3, 3, spacing=2 / 16, grid_fast_path=True)
    points = P.grid((16, 16))
    axis = -1 + (2 * torch.arange(first, last + 1, 2, dtype=torch.float64) + 1) / 16
    out = P.lattice([axis.tolist(), axis.tolist()])
    assert grid_plan(points, out, conv.kernel_size, conv.spacing, conv.dilation) is not None
    x = torch.randn(2, len(points), 2)
    (y_fast, g_fast), (y_ref, g_ref) = _both_paths(conv, x, points, out)
    _assert_close(y_fast, y_ref)
    for a, b in zip(g_fast, g_ref, strict=True):
        _assert_close(a, b)


@pytest.mark.parametrize("make_out", [
    lambda p: P.grid((8, 8)),                     # pixel centres of a coarser grid: between nodes
    lambda p: P.sobol(64, 2, seed=0),             # scattered outputs
])
def test_no_plan_off_the_lattice(make_out):
    points = P.grid((16, 16))
    assert grid_plan(points, make_out(points), (3, 3), (0.1, 0.1), (1, 1)) is None


def test_no_plan_for_jittered_or_scattered_inputs():
    for points in (P.jittered_grid((16, 16), seed=0), P.sobol(256, 2, seed=0)):
        assert grid_plan(points, points, (3, 3), (0.1, 0.1), (1, 1)) is None


@pytest.mark.parametrize("shape_in,shape_out,k,h", [
    ((48, 48), (16, 16), 5, 2 / 32),   # dinet-res's linear stem: stride 3 from offset 1
    ((16, 16), (16, 16), 3, 2 / 16),   # the same lattice, g = h
    ((12, 12), (12, 12), 3, 2 / 20),   # h not a multiple of g
    ((6, 6, 6), (6, 6, 6), 3, 2 / 6),  # 3-D
])
def test_mlp_fast_path_matches_stencil(shape_in, shape_out, k, h):
    """The MLP basis evaluated once per lattice offset (the raster) gives the stencil's
    outputs and gradients, the basis MLP's included."""
    torch.manual_seed(0)
    dim = len(shape_in)
    conv = DIConv(3, 5, k, spacing=h, dim=dim, kernel="mlp", n_basis=8)
    points_in, points_out = P.grid(shape_in), P.grid(shape_out)
    x = torch.randn(2, len(points_in), 3)
    results = []
    for fast in (True, False):
        conv.grid_fast_path = fast
        conv.zero_grad(set_to_none=True)
        y = conv(x, points_in, points_out)
        (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
        results.append((y.detach(), [p.grad for p in conv.parameters()]))
    (y_fast, g_fast), (y_ref, g_ref) = results
    _assert_close(y_fast, y_ref)
    for a, b in zip(g_fast, g_ref, strict=True):
        _assert_close(a, b)


def test_switch_and_default_use_the_stencil(monkeypatch):
    """The fast path is taken with the switch on, for the spline and MLP families; by
    default only off the CPU (where the compiled stencil product is as fast)."""
    import dinet.nn.conv as conv_module

    calls = []
    monkeypatch.setattr(conv_module, "grid_conv", lambda *a: calls.append(a) or 1 / 0)
    points = P.grid((8, 8))
    x = torch.randn(1, 64, 2)
    DIConv(2, 2, 3, spacing=0.25, grid_fast_path=False)(x, points)
    DIConv(2, 2, 3, spacing=0.25)(x, points)  # default on CPU: the stencil
    DIConv(2, 2, 3, spacing=0.25, kernel="mlp")(x, points)
    DIConv(2, 2, 3, spacing=0.25, kernel="cubic", grid_fast_path=True)(x, points)  # no plan
    assert calls == []
    for kernel in ("spline", "mlp"):
        with pytest.raises(ZeroDivisionError):
            DIConv(2, 2, 3, spacing=0.25, kernel=kernel, grid_fast_path=True)(x, points)
    with pytest.raises(ValueError, match="grid_fast_path"):
        DIConv(2, 2, 3, spacing=0.25, grid_fast_path="yes")


def test_rasterised_kernel_width():
    """g = h/2 doubles the reach: a 3-tap kernel becomes 7 taps (offsets −3g…3g)."""
    points = P.grid((16, 16))
    plan = grid_plan(points, points, (3, 3), (2 / 8, 2 / 8), (1, 1))
    assert [t.shape for t in plan.taps] == [(7, 3), (7, 3)]
    assert plan.identity is False
    same = grid_plan(points, points, (3, 3), (2 / 16, 2 / 16), (1, 1))
    assert same.identity is True


def test_scratch_is_reused_and_can_be_freed():
    """The sparse conv's temporaries live in per-thread scratch buffers: a second call of
    the same size allocates nothing new, and clear_scratch() frees them."""
    from dinet.nn.functional import clear_scratch, scratch_bytes

    conv = DIConv(3, 4, 3, spacing=0.2)
    points = P.sobol(256, 2, seed=0)
    x = torch.randn(2, 256, 3, requires_grad=True)
    conv(x, points).sum().backward()
    held = scratch_bytes()
    assert held > 0
    y = conv(x, points)
    y.sum().backward()
    assert scratch_bytes() == held
    clear_scratch()
    assert scratch_bytes() == 0
    torch.testing.assert_close(conv(x, points), y)  # results do not depend on the buffers
