"""The fused stencil convolution as one torch op, ``dinet::gather_conv`` (Triton kernels of
:mod:`dinet._triton`): autograd, ``torch.compile`` and bf16 autocast see a single op.

:func:`~dinet.nn.functional.stencil_conv` takes this path on CUDA when Triton is installed
(``backend="auto"``); ``backend="triton"`` forces it anywhere Triton can launch — the CPU
under ``TRITON_INTERPRET=1`` included, which is how the tests compare it with the CPU
kernels. Each of the forward, input-, weight- and value-gradient kernels is its own op.
Under autocast the values and weights are cast to the autocast type while the stencil's
values and every sum stay in float32.
"""

from __future__ import annotations

import importlib.util

import torch

from ..neighbors import Stencil

__all__ = ["AVAILABLE", "fused_stencil_conv"]

#: Whether Triton is installed (the fused path exists).
AVAILABLE = importlib.util.find_spec("triton") is not None
_STRUCTURE = ("indptr", "cols", "dst")


def _kernels():
    from .. import _triton

    return _triton


def _structure(indptr, cols, dst) -> dict[str, torch.Tensor]:
    return {"indptr": indptr, "cols": cols, "dst": dst}


@torch.library.custom_op("dinet::gather_conv", mutates_args=())
def _gather_conv(src: torch.Tensor, weight: torch.Tensor, values: torch.Tensor,
                 indptr: torch.Tensor, cols: torch.Tensor, dst: torch.Tensor,
                 indptr_t: torch.Tensor, cols_t: torch.Tensor, dst_t: torch.Tensor,
                 perm_t: torch.Tensor) -> torch.Tensor:
    """Forward; the transposed structure rides along for the backward."""
    return _kernels().gather_conv(src, weight, values, _structure(indptr, cols, dst), len(dst))


@_gather_conv.register_fake
def _(src, weight, values, indptr, cols, dst, indptr_t, cols_t, dst_t, perm_t):
    return src.new_empty(src.shape[0], dst.shape[0], weight.shape[2])


@torch.library.custom_op("dinet::gather_conv_input_grad", mutates_args=())
def _input_grad(grad_out: torch.Tensor, weight: torch.Tensor, values: torch.Tensor,
                indptr_t: torch.Tensor, cols_t: torch.Tensor, dst_t: torch.Tensor,
                perm_t: torch.Tensor) -> torch.Tensor:
    weight_t = weight.transpose(1, 2).contiguous()  # (K, O, C)
    return _kernels().gather_conv(grad_out, weight_t, values[perm_t].contiguous(),
                                  _structure(indptr_t, cols_t, dst_t), len(dst_t))


@_input_grad.register_fake
def _(grad_out, weight, values, indptr_t, cols_t, dst_t, perm_t):
    return grad_out.new_empty(grad_out.shape[0], dst_t.shape[0], weight.shape[1])


@torch.library.custom_op("dinet::gather_conv_weight_grad", mutates_args=())
def _weight_grad(src: torch.Tensor, grad_out: torch.Tensor, values: torch.Tensor,
                 indptr: torch.Tensor, cols: torch.Tensor, dst: torch.Tensor,
                 n_basis: int) -> torch.Tensor:
    return _kernels().gather_conv_weight_grad(src, grad_out, values,
                                              _structure(indptr, cols, dst), n_basis)


@_weight_grad.register_fake
def _(src, grad_out, values, indptr, cols, dst, n_basis):
    return src.new_empty(n_basis, src.shape[2], grad_out.shape[2])


@torch.library.custom_op("dinet::gather_conv_values_grad", mutates_args=())
def _values_grad(src: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor,
                 indptr: torch.Tensor, cols: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    return _kernels().gather_conv_values_grad(src, grad_out, weight,
                                              _structure(indptr, cols, dst), len(cols))


@_values_grad.register_fake
def _(src, grad_out, weight, indptr, cols, dst):
    return src.new_empty(cols.shape[0])


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_out):
    (src, weight, values, indptr, cols, dst, indptr_t, cols_t, dst_t,
     perm_t) = ctx.saved_tensors
    need_x, need_w, need_v = ctx.needs_input_grad[:3]
    grad_out = grad_out.contiguous()
    grad_x = (_input_grad(grad_out, weight, values, indptr_t, cols_t, dst_t, perm_t)
              if need_x else None)
    grad_w = (_weight_grad(src, grad_out, values, indptr, cols, dst, weight.shape[0])
              if need_w else None)
    grad_v = (_values_grad(src, grad_out, weight, indptr, cols, dst).to(values.dtype)
              if need_v else None)
    return grad_x, grad_w, grad_v, None, None, None, None, None, None, None


_gather_conv.register_autograd(_backward, setup_context=_setup)


def fused_stencil_conv(x: torch.Tensor, weight: torch.Tensor, stencil: Stencil,
                       values: torch.Tensor) -> torch.Tensor:
    """The stencil convolution of :func:`~dinet.nn.functional.stencil_conv` (one group:
    ``weight`` is ``(K, 1, C_in, C_out)``) by the fused kernels."""
    if weight.shape[1] != 1:
        raise ValueError("the fused stencil convolution takes one group; use the sparse path")
    if not AVAILABLE:
        raise ValueError("the fused stencil convolution needs Triton (pip install triton)")
    if torch.is_autocast_enabled(x.device.type):  # values and sums stay in float32
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    forward = stencil.gather_structure(x.device)
    backward = stencil.gather_structure(x.device, transpose=True)
    return _gather_conv(x.contiguous(), weight[:, 0].contiguous(), values.contiguous(),
                        *(forward[k] for k in _STRUCTURE), *(backward[k] for k in _STRUCTURE),
                        backward["perm"])
