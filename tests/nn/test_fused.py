"""The fused Triton kernels of the stencil convolution (dinet._triton, dinet.nn.fused) held to
the sparse path: outputs and every gradient, on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1``) and on the GPU where one is present."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:  # read by triton.jit when dinet._triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip("triton", reason="Triton is installed by `make setup`")

from dinet import points as P  # noqa: E402
from dinet.nn import DIConv  # noqa: E402
from dinet.nn.functional import stencil_conv  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"


def _compare(conv: DIConv, x: torch.Tensor, pts_in, pts_out, rtol: float, atol: float):
    """The layer's sparse path and its fused path: outputs and the gradients of x, of the
    coefficients and (learned kernels) of the basis parameters."""
    results = []
    for backend in ("sparse", "triton"):
        conv.zero_grad(set_to_none=True)
        xi = x.detach().clone().requires_grad_(True)
        stencil = conv.stencil(pts_in, pts_out)
        k, g = conv.n_basis, conv.groups
        weight = conv.weight.reshape(g, conv.out_channels // g, conv.in_channels // g,
                                     k).permute(3, 0, 2, 1)
        values = conv.family.values(conv, stencil, xi.device, xi.dtype)
        y = stencil_conv(xi, weight, stencil, values, backend=backend)
        probe = torch.randn_like(y, generator=torch.Generator(y.device).manual_seed(1))
        (y * probe).sum().backward()
        grads = [xi.grad] + [p.grad for p in conv.parameters() if p.grad is not None]
        results.append((y.detach(), grads))
    (y_ref, g_ref), (y_fused, g_fused) = results
    torch.testing.assert_close(y_fused, y_ref, rtol=rtol, atol=atol)
    assert len(g_fused) == len(g_ref) >= 2
    for a, b in zip(g_fused, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_spline_conv_equals_the_sparse_path(dtype):
    """Fixed (spline) values, a stencil in its own spatial order, ragged rows, channels
    that are not block multiples; float64 to rounding, float32 to float32 accuracy."""
    torch.manual_seed(0)
    conv = DIConv(3, 5, 3, spacing=0.15).to(DEVICE, dtype)
    pts_in, pts_out = P.sobol(300, seed=0), P.random(70, seed=1)
    x = torch.randn(2, 300, 3, device=DEVICE, dtype=dtype)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    _compare(conv, x, pts_in, pts_out, rtol=tol, atol=tol)


def test_fused_mlp_conv_equals_the_sparse_path_values_gradient_included():
    """Learned (MLP) values: the value-gradient kernel feeds the basis network's gradient."""
    torch.manual_seed(0)
    conv = DIConv(2, 4, 3, spacing=0.2, kernel="mlp", n_basis=4, hidden=8).to(
        DEVICE, torch.float64)
    pts = P.sobol(200, seed=3)
    x = torch.randn(3, 200, 2, device=DEVICE, dtype=torch.float64)
    _compare(conv, x, pts, pts, rtol=1e-10, atol=1e-10)


def test_fused_conv_on_a_grid_with_many_channels_equals_conv2d():
    """More channels than one block (the channel loops), on a grid where conv2d is exact."""
    torch.manual_seed(0)
    conv2d = torch.nn.Conv2d(70, 20, 3, padding=1).double()
    layer, out_points = DIConv.from_conv(conv2d, (8, 8))
    layer = layer.to(DEVICE)
    grid = P.grid((8, 8))
    image = torch.randn(2, 70, 8, 8, dtype=torch.float64)
    x = P.image_to_values(image, grid).to(DEVICE)
    stencil = layer.stencil(grid, out_points)
    weight = layer.weight.reshape(1, 20, 70, 9).permute(3, 0, 2, 1)
    y = stencil_conv(x, weight, stencil, backend="triton") + layer.bias
    expected = P.image_to_values(conv2d(image), out_points)
    torch.testing.assert_close(y.cpu(), expected, rtol=1e-10, atol=1e-10)


def test_fused_path_refuses_groups_and_unknown_backends():
    conv = DIConv(4, 4, 3, spacing=0.2, groups=2)
    pts = P.sobol(64, seed=0)
    stencil = conv.stencil(pts, pts)
    weight = conv.weight.reshape(2, 2, 2, 9).permute(3, 0, 2, 1)
    with pytest.raises(ValueError, match="one group"):
        stencil_conv(torch.randn(1, 64, 4), weight, stencil, backend="triton")
    with pytest.raises(ValueError, match="valid: auto, sparse, triton"):
        stencil_conv(torch.randn(1, 64, 4), weight, stencil, backend="cuda")


def test_every_kernel_compiles_for_the_h100_and_h200(tmp_path):
    """Triton's own compiler (with its bundled ptxas) builds every kernel for sm_90 in
    float32, bfloat16 and float64, no GPU needed — the interpreter above checks what they
    compute, this that the GPU can run them. In a fresh process: the interpreter is off
    there and the cache empty."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    code = "from dinet._triton import compile_for; print('\\n'.join(compile_for(90)))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 9 and all("sm_90 cubin" in line for line in lines)


def test_the_fused_ops_pass_torch_opcheck():
    """Each op's schema, fake (meta) kernel, autograd registration and AOT dispatch (what
    torch.compile traces) agree with what it computes: torch.library.opcheck."""
    conv = DIConv(2, 3, 3, spacing=0.3).to(DEVICE, torch.float64)
    pts = P.sobol(64, seed=0)
    stencil = conv.stencil(pts, pts)
    x = torch.randn(2, 64, 2, device=DEVICE, dtype=torch.float64, requires_grad=True)
    w = conv.weight.detach().reshape(3, 2, 9).permute(2, 1, 0).contiguous().requires_grad_(True)
    v = stencil.value_tensor(DEVICE, torch.float64)
    g = torch.randn(2, 64, 3, device=DEVICE, dtype=torch.float64)
    f = stencil.gather_structure(DEVICE)
    b = stencil.gather_structure(DEVICE, transpose=True)
    fwd, bwd = (f["indptr"], f["cols"], f["dst"]), (b["indptr"], b["cols"], b["dst"])
    ops = torch.ops.dinet
    for op, args in ((ops.gather_conv, (x, w, v, *fwd, *bwd, b["perm"])),
                     (ops.gather_conv_input_grad, (g, w.detach(), v, *bwd, b["perm"])),
                     (ops.gather_conv_weight_grad, (x.detach(), g, v, *fwd, 9)),
                     (ops.gather_conv_values_grad, (x.detach(), g, w.detach(), *fwd))):
        result = torch.library.opcheck(op.default, args)
        assert set(result.values()) == {"SUCCESS"}, (op, result)
