"""Functional forms of DI convolution: the sparse fast path and a readable reference.

Both compute, for every output point x_i,

    y_i = Σ_j w_j K(y_j − x_i) f(y_j),   K(δ) = Σ_b φ_b(δ) W_b,

the fast one as ``Z = S @ X`` (one sparse matmul, :class:`~dinet.neighbors.Stencil`) followed
by a dense product with the weights, inside an autograd Function with a hand-written
backward (torch's autograd through sparse values is 100–400× slower than the forward).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import _compiled
from ..neighbors import Stencil
from ..points import PointSet

__all__ = ["stencil_conv", "reference_conv"]


def _basis_product(z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_b Z_b W_b for ``z (K, N, G, Cg)`` and ``weight (K, G, Cg, Og)`` → ``(N, G·Og)``."""
    n_basis, n, groups, _ = z.shape
    if groups == 1:
        # One GEMM per basis function, accumulated in place; as fast as a single im2col GEMM
        # and needs no permuted copy of Z.
        out = z.new_zeros(n, weight.shape[-1])
        for b in range(n_basis):
            out.addmm_(z[b, :, 0], weight[b, 0])
        return out
    return torch.einsum("kngc,kgco->ngo", z, weight).reshape(n, -1)


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _spmm(stencil: Stencil, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``S @ x`` (or ``S^T @ x``) for a contiguous 2-D ``x``: the compiled CPU kernel when
    available, torch's sparse CSR product otherwise (GPU, other dtypes, no numba)."""
    if x.device.type == "cpu" and _compiled.AVAILABLE and x.dtype in _NUMPY_DTYPES:
        indptr, indices, values = stencil.arrays(_NUMPY_DTYPES[x.dtype], transpose)
        return torch.from_numpy(_compiled.spmm(indptr, indices, values, x.detach().numpy()))
    return stencil.tensors(x.device, x.dtype, transpose) @ x


def _gather(values: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """Rows of ``values`` in the stencil's internal order."""
    return values.contiguous() if order is None else values.index_select(0, order)


def _scatter(dest: torch.Tensor, order: torch.Tensor | None, values: torch.Tensor) -> None:
    """Write internal-order rows back to the point set's order."""
    if order is None:
        dest.copy_(values)
    else:
        dest.index_copy_(0, order, values)


class _StencilConv(torch.autograd.Function):
    """y[t] = Σ_b (S @ x[t])_b W_b for every batch element t; backward by hand."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stencil: Stencil) -> torch.Tensor:
        n_basis, groups, cg, og = weight.shape
        in_order, out_order = stencil.order("in", x.device), stencil.order("out", x.device)
        out = x.new_empty(x.shape[0], stencil.n_out, groups * og)
        for t in range(x.shape[0]):  # one batch element at a time bounds the size of Z
            z = _spmm(stencil, _gather(x[t], in_order)).view(n_basis, stencil.n_out, groups, cg)
            _scatter(out[t], out_order, _basis_product(z, weight))
        ctx.save_for_backward(x, weight)
        ctx.stencil = stencil
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        stencil: Stencil = ctx.stencil
        n_basis, groups, cg, og = weight.shape
        n_out = stencil.n_out
        in_order, out_order = stencil.order("in", x.device), stencil.order("out", x.device)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        for t in range(x.shape[0]):
            g = _gather(grad_out[t], out_order).view(n_out, groups, og)
            if need_w:
                z = _spmm(stencil, _gather(x[t], in_order))  # recomputed, not stored
                z = z.view(n_basis, n_out, groups, cg)
                if groups == 1:
                    for b in range(n_basis):
                        grad_w[b, 0].addmm_(z[b, :, 0].t(), g[:, 0])
                else:
                    grad_w += torch.einsum("kngc,ngo->kgco", z, g)
            if need_x:
                if groups == 1:  # one GEMM per basis function into its slice of dZ
                    dz = x.new_empty(n_basis, n_out, cg)
                    for b in range(n_basis):
                        torch.mm(g[:, 0], weight[b, 0].t(), out=dz[b])
                else:
                    dz = torch.einsum("ngo,kgco->kngc", g, weight)
                dz = dz.reshape(n_basis * n_out, groups * cg)
                _scatter(grad_x[t], in_order, _spmm(stencil, dz, transpose=True))
        return grad_x, grad_w, None


def stencil_conv(x: torch.Tensor, weight: torch.Tensor, stencil: Stencil) -> torch.Tensor:
    """Sparse DI convolution without bias.

    Args:
        x: ``(B, N_in, C_in)`` values on the stencil's input points.
        weight: ``(K, G, C_in/G, C_out/G)`` one coefficient matrix per basis function and group.
        stencil: the sparse integration matrix from the input to the output points.

    Returns:
        ``(B, N_out, C_out)``.
    """
    return _StencilConv.apply(x.contiguous(), weight.contiguous(), stencil)


def reference_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    points_in: PointSet,
    points_out: PointSet,
    spacing,
    dilation=1,
) -> torch.Tensor:
    """The spline DI convolution written for reading and testing — not for speed.

    Every pair of points is considered (memory O(N_out · N_in · K)); the hat basis is
    evaluated directly from its definition, φ_b(δ) = Π_k max(0, 1 − |δ_k − c_bk| / h_k), the
    kernel matrix K_p = Σ_b φ_b(δ_p) W_b / Π_k h_k is built for every pair p = (i, j) with a
    non-zero basis value, multiplied with w_j f(y_j) and added into output i with
    ``index_add``. It shares no code with the fast path.

    Args:
        x: ``(B, N_in, C_in)``.
        weight: ``(C_out, C_in/G, k_0, …, k_{d-1})``, the conv layout.
        points_in, points_out: the point sets.
        spacing, dilation: floats or one value per axis.

    Returns:
        ``(B, N_out, C_out)``.
    """
    dim = points_in.dim
    kernel_size = weight.shape[2:]
    h = torch.as_tensor(spacing, dtype=x.dtype).expand(dim)
    dil = torch.as_tensor(dilation, dtype=x.dtype).expand(dim)
    axes = [(torch.arange(k, dtype=x.dtype) - (k - 1) / 2) * dil[a] * h[a]
            for a, k in enumerate(kernel_size)]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, dim)
    delta = points_in.coords.to(x.dtype)[None] - points_out.coords.to(x.dtype)[:, None]
    phi = torch.ones(delta.shape[:2] + (len(centres),), dtype=x.dtype)
    for a in range(dim):
        phi = phi * (1 - (delta[..., a, None] - centres[:, a]).abs() / h[a]).clamp(min=0)
    rows, cols = torch.nonzero(phi.sum(-1) > 0, as_tuple=True)
    basis = phi[rows, cols]  # (P, K)

    c_out, cg = weight.shape[:2]
    groups = x.shape[-1] // cg
    og = c_out // groups
    kernel = torch.einsum("pk,ock->poc", basis, weight.flatten(2)) / h.prod()
    kernel = kernel.view(-1, groups, og, cg)
    w = points_in.weights.to(x.dtype)[cols]
    gathered = x[:, cols].view(x.shape[0], -1, groups, cg) * w[:, None, None]
    contrib = torch.einsum("pgoc,bpgc->bpgo", kernel, gathered).reshape(x.shape[0], -1, c_out)
    return x.new_zeros(x.shape[0], len(points_out), c_out).index_add(1, rows, contrib)
