"""DIConv: exact on grids, equal to the reference elsewhere, invariant across discretizations."""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import dinet.points as P
from dinet import _compiled
from dinet.neighbors import stencil_cache
from dinet.nn import DIConv, reference_conv, stencil_conv
from dinet.nn.functional import spline_reference_basis

TOL = 1e-5  # max abs error relative to max |output|, as the issue asks


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _conv2d_cases():
    for k, stride, pad, dil, groups, bias in itertools.product(
        [1, 2, 3, 4, 5, 7], [1, 2], ["0", "k//2", "same"], [1, 2], [1, 2, "dw"], [True, False]
    ):
        if pad == "same" and (k % 2 == 0 or stride != 1):
            continue  # torch allows "same" only with stride 1; the issue asks for odd k
        yield k, stride, pad, dil, groups, bias


def _make_conv(cls, k, stride, pad, dil, groups, bias, c_in=4, c_out=8):
    padding = {"0": 0, "k//2": k // 2, "same": "same"}[pad]
    g = c_in if groups == "dw" else groups
    return cls(c_in, c_out if groups != "dw" else c_in * 2, k, stride=stride, padding=padding,
               dilation=dil, groups=g, bias=bias)


def _check_against_conv(conv: nn.Module, shape, batch=2):
    """Forward and gradients (input, weight, bias) of from_conv equal the torch conv."""
    torch.manual_seed(0)
    layer, points_out = DIConv.from_conv(conv, shape)
    points_in = P.grid(shape)
    x = torch.randn(batch, conv.in_channels, *shape, requires_grad=True)
    ref = conv(x)
    values = P.image_to_values(x.detach(), points_in).requires_grad_(True)
    out = layer(values, points_in, points_out)
    image = P.values_to_image(out, points_out)
    assert image.shape == ref.shape
    assert _rel_err(image, ref) <= TOL

    upstream = torch.randn_like(ref)
    (ref * upstream).sum().backward()
    (image * upstream).sum().backward()
    grad_x = P.values_to_image(values.grad, points_in)
    assert _rel_err(grad_x, x.grad) <= TOL
    assert _rel_err(layer.weight.grad, conv.weight.grad) <= TOL
    if conv.bias is not None:
        assert _rel_err(layer.bias.grad, conv.bias.grad) <= TOL


@pytest.mark.parametrize("shape", [(16, 16), (24, 40), (33, 17)])
def test_from_conv2d_exact_on_grids(shape):
    cases = list(_conv2d_cases())
    assert len(cases) == 336  # every combination the issue lists
    for case in cases:
        conv = _make_conv(nn.Conv2d, *case)
        try:
            _check_against_conv(conv, shape)
        except AssertionError as err:  # say which configuration failed
            raise AssertionError(f"case (k, stride, pad, dil, groups, bias) = {case}") from err


@pytest.mark.parametrize(
    "k, stride, pad, dil, groups",
    [(3, 1, "k//2", 1, 1), (3, 2, "k//2", 1, 2), (2, 2, "0", 1, 1), (3, 1, "same", 2, "dw"),
     (1, 1, "0", 1, 1), (5, 2, "0", 1, 1), (4, 1, "k//2", 2, 1)],
)
def test_from_conv3d_exact_on_grid(k, stride, pad, dil, groups):
    conv = _make_conv(nn.Conv3d, k, stride, pad, dil, groups, True)
    _check_against_conv(conv, (12, 10, 8))


def test_from_conv_output_points():
    shape = (16, 16)
    same, pts = DIConv.from_conv(nn.Conv2d(1, 1, 3, padding=1), shape)
    assert pts == P.grid(shape)
    _, pts = DIConv.from_conv(nn.Conv2d(1, 1, 3, stride=2, padding=1), shape)
    assert pts == P.grid(shape).prefix(64)  # indices ≡ 0 mod 2: the coarser prefix
    _, pts = DIConv.from_conv(nn.Conv2d(1, 1, 2, stride=2), shape)
    assert pts == P.grid((8, 8))  # coarse pixel centres
    _, pts = DIConv.from_conv(nn.Conv2d(1, 1, 3, stride=3), shape)
    assert pts.shape == (5, 5) and pts.kind == "grid"
    assert same.spacing == (2 / 16, 2 / 16)


def test_from_conv_chains_on_its_own_output_points():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Conv2d(4, 3, 3, padding=1),
                        nn.Conv2d(3, 2, 3, stride=2, padding=1))
    shape = (24, 40)
    points = P.grid(shape)
    x = torch.randn(1, 2, *shape)
    values = P.image_to_values(x, points)
    for conv in net:
        layer, out_points = DIConv.from_conv(conv, points)
        values, points = layer(values, points, out_points), out_points
    ref = net(x)
    assert _rel_err(P.values_to_image(values, points), ref) <= TOL


def test_from_conv_rejects_what_it_cannot_convert():
    with pytest.raises(ValueError, match="padding_mode"):
        DIConv.from_conv(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), (8, 8))
    with pytest.raises(ValueError, match="Conv"):
        DIConv.from_conv(nn.ConvTranspose2d(1, 1, 3), (8, 8))
    with pytest.raises(ValueError, match="outside the domain"):
        DIConv.from_conv(nn.Conv2d(1, 1, 3, padding=3), (8, 8))
    with pytest.raises(ValueError, match="axes"):
        DIConv.from_conv(nn.Conv2d(1, 1, 3), (8, 8, 8))


def _random_case(dim, n_in, n_out, dtype, groups=1, c_in=4, c_out=6, seed=0):
    torch.manual_seed(seed)
    pin = P.random(n_in, dim, seed=seed)
    pout = P.sobol(n_out, dim, seed=seed + 1)
    conv = DIConv(c_in, c_out, 3, spacing=0.3, dim=dim, groups=groups, dilation=(1, 2, 1)[:dim])
    conv = conv.to(dtype)
    x = torch.randn(2, n_in, c_in, dtype=dtype)
    return conv, x, pin, pout


@pytest.mark.parametrize("dim, groups", [(2, 1), (2, 2), (3, 1)])
def test_sparse_equals_reference_on_random_points(dim, groups):
    conv, x, pin, pout = _random_case(dim, 300, 120, torch.float64, groups=groups)
    x.requires_grad_(True)
    out = conv(x, pin, pout)
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = conv.weight.detach().clone().requires_grad_(True)
    basis = spline_reference_basis(conv.kernel_size, conv.spacing, conv.dilation)
    ref = reference_conv(x_ref, w_ref, pin, pout, basis, conv.support,
                         1 / math.prod(conv.spacing)) + conv.bias
    assert _rel_err(out, ref) < 1e-12
    upstream = torch.randn_like(ref)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    assert _rel_err(x.grad, x_ref.grad) < 1e-12
    assert _rel_err(conv.weight.grad, w_ref.grad) < 1e-12


@pytest.mark.parametrize("groups", [1, 2])
def test_gradcheck_float64(groups):
    conv, x, pin, pout = _random_case(2, 40, 25, torch.float64, groups=groups, c_in=2, c_out=2)
    weight = conv.weight.detach().clone().requires_grad_(True)
    x.requires_grad_(True)

    stencil = conv.stencil(pin, pout)
    k, g = conv.n_basis, conv.groups

    def fn(x, weight):
        return stencil_conv(x, weight.reshape(g, 2 // g, 2 // g, k).permute(3, 0, 2, 1), stencil)

    assert torch.autograd.gradcheck(fn, (x, weight))


def test_float32_close_to_float64():
    conv, x, pin, pout = _random_case(2, 500, 200, torch.float64)
    ref = conv(x, pin, pout)
    out = conv.float()(x.float(), pin, pout)
    assert _rel_err(out.double(), ref) < 1e-5


def _smooth_field(coords: torch.Tensor) -> torch.Tensor:
    x, y = coords[:, 0:1].double(), coords[:, 1:2].double()
    return torch.cat([torch.sin(2 * x) * torch.cos(3 * y), torch.exp(-(x**2 + 2 * y**2))], dim=1)


def test_invariance_across_discretizations():
    """One DIConv, one smooth field, fixed query points: the output barely depends on which
    ≈16k points the field was sampled on (integrals, not sums), and less so as N grows."""
    torch.manual_seed(0)
    conv = DIConv(2, 4, 3, spacing=0.1).double()
    query = P.sobol(256, 2, seed=7)

    @torch.no_grad()
    def output(points):
        return conv(_smooth_field(points.coords)[None], points, query)[0]

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    gaps = {}
    for n_side in (32, 64, 128):
        n = n_side * n_side
        sets = {
            "sobol": P.sobol(n, 2, seed=1),
            "grid": P.grid((n_side, n_side)),
            "jittered": P.jittered_grid((n_side, n_side), seed=2),
            "shrunk": P.shrunk(n, 2, seed=3),
        }
        outs = {name: output(pts) for name, pts in sets.items()}
        gaps[n] = max(rel(outs[a], outs["grid"]) for a in outs if a != "grid")
    print("relative L2 gap to the grid, by N:", gaps)
    assert gaps[128 * 128] < 0.02, gaps
    assert gaps[128 * 128] < gaps[64 * 64] < gaps[32 * 32], gaps


def test_no_neighbours_gives_zeros_not_nan():
    pin = P.from_coords(torch.tensor([[-0.9, -0.9], [-0.8, -0.9]]), weights="uniform")
    pout = P.from_coords(torch.tensor([[0.9, 0.9], [-0.85, -0.9]]), weights="uniform")
    conv = DIConv(1, 1, 3, spacing=0.05, bias=False)
    out = conv(torch.ones(1, 2, 1), pin, pout)
    assert torch.isfinite(out).all()
    assert out[0, 0, 0] == 0
    assert out[0, 1, 0] != 0


def test_bad_input_messages():
    pts = P.sobol(64, 2, seed=0)
    conv = DIConv(3, 4, 3, spacing=0.2)
    with pytest.raises(ValueError, match=r"N=63.*64"):
        conv(torch.randn(1, 63, 3), pts)
    with pytest.raises(ValueError, match="C=2"):
        conv(torch.randn(1, 64, 2), pts)
    with pytest.raises(ValueError, match="unsqueeze"):
        conv(torch.randn(64, 3), pts)
    with pytest.raises(ValueError, match="3-D"):
        conv(torch.randn(1, 64, 3), P.sobol(64, 3, seed=0))
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="spacing"):
            DIConv(1, 1, 3, spacing=bad)
    with pytest.raises(ValueError, match="spacing needs"):
        DIConv(1, 1, 3, spacing=(0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="divisible by groups"):
        DIConv(3, 4, 3, spacing=0.1, groups=2)
    with pytest.raises(ValueError, match="kernel family.*spline, mlp"):
        DIConv(1, 1, 3, spacing=0.1, kernel="gaussian")
    with pytest.raises(ValueError, match="kernel_size"):
        DIConv(1, 1, 0, spacing=0.1)


def test_stencil_is_cached_and_geometry_fixed_in_domain_units():
    stencil_cache.clear()
    conv = DIConv(1, 1, 3, spacing=0.1)
    pts = P.sobol(256, 2, seed=0)
    x = torch.randn(1, 256, 1)
    conv(x, pts)
    conv(x, pts)
    assert stencil_cache.info()["misses"] == 1 and stencil_cache.info()["hits"] == 1
    # The support does not depend on how many points arrive.
    assert conv.support == pytest.approx((0.2, 0.2))
    conv(torch.randn(1, 1024, 1), P.sobol(1024, 2, seed=0))
    assert conv.support == pytest.approx((0.2, 0.2))
    assert "spacing=(0.1, 0.1)" in repr(conv)


def test_extra_repr_and_parameter_count():
    conv = DIConv(4, 8, (3, 5), spacing=(0.1, 0.2), groups=2, bias=False)
    assert conv.weight.shape == (8, 2, 3, 5)
    text = repr(conv)
    assert "groups=2" in text and "bias=False" in text
    assert math.isclose(conv.support[1], (2 * 1 + 1) * 0.2)


needs_numba = pytest.mark.skipif(not _compiled.AVAILABLE, reason="numba is not installed")


@needs_numba
@pytest.mark.parametrize(
    "dim, kernel_size, dilation, kinds",
    [(2, (3, 3), (1, 1), ("sobol", "sobol")), (2, (4, 2), (2, 1), ("random", "sobol")),
     (2, (3, 3), (1, 1), ("grid", "grid")), (3, (3, 3, 3), (1, 2, 1), ("random", "random")),
     (2, (5, 5), (2, 2), ("grid", "prefix"))],
)
def test_compiled_stencil_equals_numpy_path(dim, kernel_size, dilation, kinds):
    from dinet.neighbors.stencils import _build_spline_stencil

    def make(kind, n, seed):
        if kind == "grid" or kind == "prefix":
            g = P.grid((16,) * dim)
            return g if kind == "grid" else g.prefix(8**dim)
        return P.sobol(n, dim, seed=seed) if kind == "sobol" else P.random(n, dim, seed=seed)

    pin, pout = make(kinds[0], 700, 0), make(kinds[1], 300, 1)
    spacing = (2 / 16,) * dim
    fast = _build_spline_stencil(pin, pout, kernel_size, spacing, dilation, compiled=True)
    slow = _build_spline_stencil(pin, pout, kernel_size, spacing, dilation, compiled=False)
    assert fast.nnz == slow.nnz > 0
    np.testing.assert_array_equal(fast.indptr, slow.indptr)
    diff = abs(fast.scipy() - slow.scipy()).max()
    assert diff < 1e-12


@needs_numba
@pytest.mark.parametrize("dim", [2, 3])
def test_compiled_stencil_two_pass_equals_one_pass(monkeypatch, dim):
    """Builds too large for the reusable entry buffer count first, then write in place."""
    from dinet.neighbors.stencils import _build_spline_stencil

    pin, pout = P.sobol(900, dim, seed=3), P.random(400, dim, seed=4)
    args = (pin, pout, (3,) * dim, (2 / 10,) * dim, (1,) * dim)
    one = _build_spline_stencil(*args, compiled=True)
    monkeypatch.setattr(_compiled, "_BUFFER_ENTRIES", 0)
    two = _build_spline_stencil(*args, compiled=True)
    assert one.nnz > 0
    np.testing.assert_array_equal(one.indptr, two.indptr)
    np.testing.assert_array_equal(one.indices, two.indices)
    np.testing.assert_array_equal(one.values, two.values)


@needs_numba
def test_torch_sparse_fallback_equals_compiled(monkeypatch):
    conv, x, pin, pout = _random_case(2, 400, 150, torch.float32)
    x.requires_grad_(True)
    out = conv(x, pin, pout)
    out.backward(torch.ones_like(out))
    grads = x.grad.clone(), conv.weight.grad.clone()
    x.grad = None
    conv.weight.grad = None
    monkeypatch.setattr(_compiled, "AVAILABLE", False)
    out2 = conv(x, pin, pout)
    out2.backward(torch.ones_like(out2))
    assert _rel_err(out2, out) < 1e-5
    assert _rel_err(x.grad, grads[0]) < 1e-5
    assert _rel_err(conv.weight.grad, grads[1]) < 1e-5


def _mlp_case(dtype, groups=1, seed=0):
    torch.manual_seed(seed)
    pin, pout = P.random(60, 2, seed=seed), P.sobol(30, 2, seed=seed + 1)
    conv = DIConv(2, 4, 3, spacing=0.25, kernel="mlp", n_basis=3, hidden=8, groups=groups)
    return conv.to(dtype), torch.randn(2, 60, 2, dtype=dtype), pin, pout


@pytest.mark.parametrize("groups", [1, 2])
def test_mlp_kernel_matches_reference(groups):
    conv, x, pin, pout = _mlp_case(torch.float64, groups)
    x.requires_grad_(True)
    out = conv(x, pin, pout)
    radius = torch.tensor(conv.support, dtype=torch.float64)
    x_ref = x.detach().clone().requires_grad_(True)
    ref = reference_conv(x_ref, conv.weight, pin, pout, lambda d: conv.basis(d / radius),
                         conv.support, 1 / math.prod(conv.spacing)) + conv.bias
    assert _rel_err(out, ref) < 1e-12
    upstream = torch.randn_like(ref)
    grads = torch.autograd.grad((out * upstream).sum(), [x, *conv.parameters()])
    ref_grads = torch.autograd.grad((ref * upstream).sum(), [x_ref, *conv.parameters()])
    for g, r in zip(grads, ref_grads, strict=True):
        assert _rel_err(g, r) < 1e-10


def test_mlp_kernel_gradcheck_float64():
    """Gradients reach x, the weights and the basis MLP through the sparse values."""
    conv, x, pin, pout = _mlp_case(torch.float64)
    names = [name for name, _ in conv.named_parameters()]

    def fn(x, *params):
        return functional_call(conv, dict(zip(names, params, strict=True)), (x, pin, pout))

    inputs = (x.requires_grad_(True),
              *[p.detach().clone().requires_grad_(True) for p in conv.parameters()])
    assert torch.autograd.gradcheck(fn, inputs)


def test_mlp_kernel_weight_shape_and_repr():
    conv = DIConv(4, 8, 3, spacing=0.1, kernel="mlp", n_basis=16)
    assert conv.weight.shape == (8, 4, 16) and conv.n_basis == 16
    assert "kernel='mlp'" in repr(conv) and "n_basis=16" in repr(conv)


@needs_numba
def test_compiled_kernels_use_torchs_thread_count():
    import numba

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        indptr, indices = np.array([0, 1, 2]), np.array([1, 0])
        out = _compiled.spmm(indptr, indices, np.array([2.0, 3.0]), np.eye(2))
        np.testing.assert_array_equal(out, [[0.0, 2.0], [3.0, 0.0]])
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


@needs_numba
def test_launching_numbas_threads_leaves_torchs_thread_count_alone():
    """numba's OpenMP pool, launched at the first compiled kernel of a process, resets the
    OpenMP thread count torch shares; a user's torch.set_num_threads(1) must survive it (it
    did not: the next forward ran on two threads). A fresh process, for a fresh pool."""
    import subprocess
    import sys

    code = ("import numpy as np, torch\n"
            "torch.set_num_threads(1)\n"
            "from dinet import _compiled\n"
            "_compiled.spmm(np.array([0, 1]), np.array([0]), np.array([2.0]), np.eye(1))\n"
            "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "2",
                                          "NUMBA_NUM_THREADS": "2"})
    assert out.stdout.split()[-1] == "1", out.stdout + out.stderr


def test_mlp_kernel_chunked_recompute_equals_whole(monkeypatch):
    """Above PAIR_CHUNK pairs the MLP basis runs chunk by chunk and is recomputed in backward;
    values and every gradient must be those of the one-shot evaluation. In float64, since the
    parameter gradients sum over the pairs in another order (chunk by chunk)."""
    from dinet.nn import families

    torch.manual_seed(0)
    conv = DIConv(3, 4, 3, spacing=2 / 12, kernel="mlp", n_basis=5).double()
    pts = P.sobol(300, 2, seed=0)
    x = torch.randn(2, 300, 3, dtype=torch.float64, requires_grad=True)

    def run():
        conv.zero_grad()
        x.grad = None
        out = conv(x, pts)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum(
        ).backward()
        return out.detach(), x.grad.clone(), [p.grad.clone() for p in conv.parameters()]

    whole = run()
    assert conv.stencil(pts).n_pairs > 4 * 97
    monkeypatch.setattr(families, "PAIR_CHUNK", 97)
    chunked = run()
    for a, b in zip([chunked[0], chunked[1], *chunked[2]], [whole[0], whole[1], *whole[2]],
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(conv(x, pts), whole[0], rtol=1e-10, atol=1e-12)


def test_a_kernel_family_registered_from_outside(monkeypatch):
    """A family written outside dinet plugs into DIConv, the CLI's choices and checkpoints
    without touching the layer: here a box-filter family (one basis function, constant on
    the support), checked against the plain quadrature sum it stands for."""
    from dinet.neighbors.stencils import pair_stencil
    from dinet.nn import KernelFamily, families, kernel_families, register_kernel_family

    class BoxFamily(KernelFamily):
        @classmethod
        def build(cls, conv, n_basis, hidden):
            return None, (1,)

        @classmethod
        def stencil(cls, conv, points_in, points_out):
            return pair_stencil(points_in, points_out, cls.support(conv), 1)

        @classmethod
        def values(cls, conv, stencil, device, dtype):
            w = stencil.pair_tensor("pair_weights", device, dtype)
            return w / math.prod(conv.spacing)

    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    register_kernel_family("box", BoxFamily)
    assert "box" in kernel_families()
    conv = DIConv(2, 3, 3, spacing=0.2, kernel="box").double()
    assert conv.weight.shape == (3, 2, 1) and "kernel='box'" in repr(conv)
    pts_in, pts_out = P.sobol(400, seed=0), P.sobol(20, seed=1)
    x = torch.randn(1, 400, 2, dtype=torch.float64)
    y = conv(x, pts_in, pts_out)
    # by hand: Σ_{j in the box around x_i} w_j f(y_j) W / h² + b
    r = conv.support
    c_in, c_out = pts_in.coords.double(), pts_out.coords.double()
    inside = ((c_in[None] - c_out[:, None]).abs() <= torch.tensor(r).double()).all(-1)
    integral = (inside.double() * pts_in.weights.double()) @ x[0] / 0.04
    expected = integral @ conv.weight[:, :, 0].t() + conv.bias
    torch.testing.assert_close(y[0], expected)
    with pytest.raises(ValueError, match="subclass of KernelFamily"):
        register_kernel_family("bad", object)
