"""Functional forms of the sparse DI operators, and a readable reference convolution.

A DI convolution computes, for every output point x_i,

    y_i = Σ_j w_j K(y_j − x_i) f(y_j),   K(δ) = Σ_b φ_b(δ) W_b,

as ``Z = S @ X`` (one sparse matmul with a :class:`~dinet.neighbors.Stencil`) followed by a
dense product with the weights, inside an autograd Function with a hand-written backward
(torch's autograd through sparse values is 100–400× slower than the forward). The stencil's
values may be fixed (spline kernels, pooling, resampling) or a tensor computed at every call
(learned MLP kernels), whose gradient is a sampled dense-dense product (SDDMM).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import _compiled
from ..neighbors import Stencil
from ..points import PointSet
from . import fused

__all__ = [
    "BACKENDS",
    "clear_scratch",
    "reference_conv",
    "scratch",
    "scratch_bytes",
    "sparse_matmul",
    "stencil_conv",
]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_SDDMM_CHUNK = 1 << 18  # entries per chunk in the torch fallback, to bound its memory
#: Elements of Z = S @ X computed at once (4 Mi floats, 16 MB in float32); larger batches
#: are processed in chunks of batch elements.
_Z_BUDGET = 1 << 22


#: Largest scratch buffer (bytes) kept for reuse per role and thread; larger ones are
#: allocated per call.
_WORKSPACE_MAX = 1 << 30
_workspace_local = threading.local()


def _use_compiled(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and _compiled.AVAILABLE and x.dtype in _NUMPY_DTYPES


def scratch(role: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor for a temporary that dies within one chunk of a sparse op.

    On CPU the memory is kept per thread and role and reused by the next call: a fresh
    buffer of tens of MB costs a page fault per 4 KiB on first touch, which measured as long
    as the sparse product that fills it. Callers must be done with a role's buffer before
    asking for it again. Other devices (with caching allocators) get ``new_empty``.
    """
    numel = math.prod(shape)
    if like.device.type != "cpu" or numel * like.element_size() > _WORKSPACE_MAX:
        return like.new_empty(shape)
    buffers = _workspace_local.__dict__.setdefault("buffers", {})
    key = (role, like.dtype)
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        buf = buffers[key] = torch.empty(numel, dtype=like.dtype)
    return buf[:numel].view(shape)


def scratch_bytes() -> int:
    """Bytes of scratch memory this thread keeps for the sparse ops (see :func:`scratch`)."""
    buffers = _workspace_local.__dict__.get("buffers", {})
    return sum(b.numel() * b.element_size() for b in buffers.values())


def clear_scratch() -> None:
    """Free this thread's scratch buffers (they are rebuilt on the next sparse op)."""
    _workspace_local.__dict__.get("buffers", {}).clear()


def _spmm(stencil: Stencil, values: torch.Tensor, x: torch.Tensor,
          transpose: bool = False, role: str | None = None) -> torch.Tensor:
    """``S @ x`` (or ``S^T @ x``) for a contiguous 2-D ``x`` and S's ``values`` (in S's entry
    order): the compiled CPU kernel when available, torch's sparse CSR product otherwise.
    ``role`` names a scratch buffer (:func:`scratch`) to write the result into."""
    if _use_compiled(x):
        indptr, indices = stencil.structure(transpose)
        v = values.detach()
        if transpose:
            v = v[stencil.index_tensor("perm_t", v.device)]
        out = None
        if role is not None:
            out = scratch(role, (len(indptr) - 1, x.shape[1]), x).numpy()
        return torch.from_numpy(
            _compiled.spmm(indptr, indices, v.numpy(), x.detach().numpy(), out))
    return stencil.tensors(x.device, x.dtype, transpose, values=values.detach()) @ x


def _sddmm_add(stencil: Stencil, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """``out[e] += a[row(e)] · b[col(e)]`` over the entries of S (the gradient of S's
    values for ``S @ b`` when ``a`` is the gradient of the product)."""
    if _use_compiled(a):
        _compiled.sddmm_add(stencil.indptr, stencil.indices, a.detach().numpy(),
                            b.detach().numpy(), out.numpy())
        return
    rows = stencil.index_tensor("rows", a.device)
    cols = stencil.index_tensor("indices", a.device)
    for start in range(0, stencil.nnz, _SDDMM_CHUNK):
        part = slice(start, start + _SDDMM_CHUNK)
        out[part] += (a[rows[part]] * b[cols[part]]).sum(dim=1)


def _gather(x: torch.Tensor, order: torch.Tensor | None, role: str) -> torch.Tensor:
    """``(b, N, C)`` batch values → ``(N, b·C)`` rows in the stencil's internal order, in
    the scratch buffer ``role``."""
    b, n, c = x.shape
    rows = x.transpose(0, 1)
    out = scratch(role, (n, b, c), x)
    if order is None:
        out.copy_(rows)
    else:
        torch.index_select(rows, 0, order, out=out)
    return out.view(n, b * c)


def _scatter(dest: torch.Tensor, order: torch.Tensor | None, rows: torch.Tensor) -> None:
    """Write internal-order rows ``(N, b, C)`` back to ``dest (b, N, C)`` in point order."""
    view = dest.transpose(0, 1)
    if order is None:
        view.copy_(rows)
    else:
        view.index_copy_(0, order, rows)


def _batch_chunks(batch: int, row_elems: int) -> list[slice]:
    """Slices of the batch whose ``Z = S @ X`` (``row_elems`` floats per batch element)
    stays under :data:`_Z_BUDGET` elements — one slice when the whole batch fits."""
    size = max(1, min(batch, _Z_BUDGET // max(row_elems, 1)))
    return [slice(s, min(s + size, batch)) for s in range(0, batch, size)]


def _basis_product(z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_k Z_k W_k for ``z (K, M, G, Cg)`` and ``weight (K, G, Cg, Og)`` → ``(M, G·Og)``."""
    n_basis, m, groups, _ = z.shape
    if groups == 1:
        # One GEMM per basis function, accumulated in place; as fast as a single im2col GEMM
        # and needs no permuted copy of Z.
        out = scratch("y", (m, weight.shape[-1]), z)
        torch.mm(z[0, :, 0], weight[0, 0], out=out)
        for k in range(1, n_basis):
            out.addmm_(z[k, :, 0], weight[k, 0])
        return out
    return torch.einsum("kmgc,kgco->mgo", z, weight).reshape(m, -1)


class _StencilConv(torch.autograd.Function):
    """y[t] = Σ_k (S @ x[t])_k W_k for every batch element t; backward by hand.

    A chunk of b batch elements is one sparse product with a wide dense matrix: X is laid
    out as ``(N_in, b·C)``, so Z = S @ X is ``(K, N_out, b, C)`` and the basis product is K
    GEMMs with ``N_out·b`` rows. Chunks bound the memory of Z (:data:`_Z_BUDGET`).
    """

    @staticmethod
    def forward(ctx, x, weight, values, stencil: Stencil):
        n_basis, groups, cg, og = weight.shape
        n_out = stencil.n_out
        in_order, out_order = stencil.order("in", x.device), stencil.order("out", x.device)
        out = x.new_empty(x.shape[0], n_out, groups * og)
        for part in _batch_chunks(x.shape[0], n_basis * n_out * x.shape[2]):
            b = part.stop - part.start
            z = _spmm(stencil, values, _gather(x[part], in_order, "x"), role="z")
            y = _basis_product(z.view(n_basis, n_out * b, groups, cg), weight)
            _scatter(out[part], out_order, y.view(n_out, b, groups * og))
        ctx.save_for_backward(x, weight, values)
        ctx.stencil = stencil
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight, values = ctx.saved_tensors
        stencil: Stencil = ctx.stencil
        n_basis, groups, cg, og = weight.shape
        n_out, n_in = stencil.n_out, stencil.n_in
        in_order, out_order = stencil.order("in", x.device), stencil.order("out", x.device)
        need_x, need_w, need_v = ctx.needs_input_grad[:3]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_v = torch.zeros_like(values) if need_v else None
        for part in _batch_chunks(x.shape[0], n_basis * n_out * x.shape[2]):
            b = part.stop - part.start
            m = n_out * b
            g = _gather(grad_out[part], out_order, "g").view(m, groups, og)
            x_p = _gather(x[part], in_order, "x") if (need_w or need_v) else None
            if need_w:
                z = _spmm(stencil, values, x_p, role="z").view(n_basis, m, groups, cg)
                if groups == 1:
                    for k in range(n_basis):
                        grad_w[k, 0].addmm_(z[k, :, 0].t(), g[:, 0])
                else:
                    grad_w += torch.einsum("kmgc,mgo->kgco", z, g)
            if need_x or need_v:
                if groups == 1:  # one GEMM per basis function into its slice of dZ
                    dz = scratch("dz", (n_basis, m, cg), x)
                    for k in range(n_basis):
                        torch.mm(g[:, 0], weight[k, 0].t(), out=dz[k])
                else:
                    dz = torch.einsum("mgo,kgco->kmgc", g, weight)
                dz = dz.reshape(n_basis * n_out, b * groups * cg)
                if need_x:
                    dx = _spmm(stencil, values, dz, transpose=True, role="dx")
                    _scatter(grad_x[part], in_order, dx.view(n_in, b, -1))
                if need_v:
                    _sddmm_add(stencil, dz, x_p, grad_v)
        return grad_x, grad_w, grad_v, None


#: Backends of :func:`stencil_conv`.
BACKENDS = ("auto", "sparse", "triton")


def stencil_conv(x: torch.Tensor, weight: torch.Tensor, stencil: Stencil,
                 values: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Sparse DI convolution without bias.

    Args:
        x: ``(B, N_in, C_in)`` values on the stencil's input points.
        weight: ``(K, G, C_in/G, C_out/G)`` one coefficient matrix per basis function and group.
        stencil: the sparse integration matrix from the input to the output points.
        values: ``(nnz,)`` values of S in its entry order, when they are computed (and
            learned) rather than fixed in the stencil; gradients flow into them.
        backend: ``"sparse"`` (``Z = S @ X`` by the compiled CPU kernels or torch's sparse
            product, then the basis GEMMs), ``"triton"`` (the fused kernels of
            :mod:`dinet.nn.fused`: one group only), or ``"auto"``: the fused kernels for one
            group on CUDA when Triton is installed, the sparse path otherwise.

    Returns:
        ``(B, N_out, C_out)``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if values is None:
        values = stencil.value_tensor(x.device, x.dtype)
    if backend == "auto":
        backend = "triton" if (x.is_cuda and weight.shape[1] == 1 and fused.AVAILABLE) else (
            "sparse")
    if backend == "triton":
        return fused.fused_stencil_conv(x, weight, stencil, values)
    return _StencilConv.apply(x.contiguous(), weight.contiguous(), values, stencil)


class _SparseMatmul(torch.autograd.Function):
    """y[t] = S @ x[t] with fixed values (pooling, resampling); backward S^T @ dy."""

    @staticmethod
    def forward(ctx, x, stencil: Stencil):
        values = stencil.value_tensor(x.device, x.dtype)
        in_order, out_order = stencil.order("in", x.device), stencil.order("out", x.device)
        out = x.new_empty(x.shape[0], stencil.n_out, x.shape[2])
        for part in _batch_chunks(x.shape[0], stencil.n_out * x.shape[2]):
            y = _spmm(stencil, values, _gather(x[part], in_order, "x"), role="z")
            _scatter(out[part], out_order, y.view(stencil.n_out, part.stop - part.start, -1))
        ctx.stencil = stencil
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        stencil: Stencil = ctx.stencil
        values = stencil.value_tensor(grad_out.device, grad_out.dtype)
        in_order, out_order = (stencil.order("in", grad_out.device),
                               stencil.order("out", grad_out.device))
        grad_x = grad_out.new_empty(grad_out.shape[0], stencil.n_in, grad_out.shape[2])
        for part in _batch_chunks(grad_out.shape[0], stencil.n_in * grad_out.shape[2]):
            dx = _spmm(stencil, values, _gather(grad_out[part], out_order, "g"), transpose=True,
                       role="dx")
            _scatter(grad_x[part], in_order, dx.view(stencil.n_in, part.stop - part.start, -1))
        return grad_x, None


def sparse_matmul(x: torch.Tensor, stencil: Stencil) -> torch.Tensor:
    """``y[t] = S @ x[t]`` for a one-basis stencil with fixed values, ``(B, N_out, C)``."""
    if stencil.n_basis != 1:
        raise ValueError(f"sparse_matmul needs a one-basis stencil; got {stencil.n_basis}")
    return _SparseMatmul.apply(x.contiguous(), stencil)


def reference_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    points_in: PointSet,
    points_out: PointSet,
    basis: Callable[[torch.Tensor], torch.Tensor],
    support,
    scale: float = 1.0,
) -> torch.Tensor:
    """A DI convolution written for reading and testing — not for speed.

    Every pair of points is considered (memory O(N_out · N_in · K)); pairs with
    |δ_k| ≤ r_k on every axis form the support; the kernel matrix
    K_p = scale · Σ_b φ_b(δ_p) W_b is built for each such pair p = (i, j), multiplied with
    w_j f(y_j) and added into output i with ``index_add``. It shares no code with the fast
    path.

    Args:
        x: ``(B, N_in, C_in)``.
        weight: ``(C_out, C_in/G, K…)``, the conv layout (kernel dims flattened to K).
        points_in, points_out: the point sets.
        basis: maps offsets ``(P, d)`` to basis values ``(P, K)``.
        support: box half-widths r (float or one per axis).
        scale: a constant factor of the kernel (1/Π h for the spline family).

    Returns:
        ``(B, N_out, C_out)``.
    """
    r = torch.as_tensor(support, dtype=x.dtype).expand(points_in.dim)
    delta = points_in.coords.to(x.dtype)[None] - points_out.coords.to(x.dtype)[:, None]
    rows, cols = torch.nonzero((delta.abs() <= r).all(dim=-1), as_tuple=True)
    phi = basis(delta[rows, cols])  # (P, K)
    c_out, cg = weight.shape[:2]
    groups = x.shape[-1] // cg
    og = c_out // groups
    kernel = scale * torch.einsum("pk,ock->poc", phi, weight.flatten(2))
    kernel = kernel.view(-1, groups, og, cg)
    w = points_in.weights.to(x.dtype)[cols]
    gathered = x[:, cols].view(x.shape[0], -1, groups, cg) * w[:, None, None]
    contrib = torch.einsum("pgoc,bpgc->bpgo", kernel, gathered).reshape(x.shape[0], -1, c_out)
    return x.new_zeros(x.shape[0], len(points_out), c_out).index_add(1, rows, contrib)


def spline_reference_basis(kernel_size, spacing, dilation) -> Callable:
    """φ_b(δ) = Π_k max(0, 1 − |δ_k − c_bk| / h_k) straight from the definition, for
    :func:`reference_conv`."""
    def basis(delta: torch.Tensor) -> torch.Tensor:
        dim = delta.shape[1]
        h = torch.as_tensor(spacing, dtype=delta.dtype).expand(dim)
        dil = torch.as_tensor(dilation, dtype=delta.dtype).expand(dim)
        axes = [(torch.arange(k, dtype=delta.dtype) - (k - 1) / 2) * dil[a] * h[a]
                for a, k in enumerate(kernel_size)]
        centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, dim)
        phi = torch.ones(len(delta), len(centres), dtype=delta.dtype)
        for a in range(dim):
            phi = phi * (1 - (delta[:, a, None] - centres[:, a]).abs() / h[a]).clamp(min=0)
        return phi

    return basis
