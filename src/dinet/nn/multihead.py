"""Conversion of ``torch.nn.MultiheadAttention`` to :class:`~dinet.nn.attention.DIAttention`.

What has no integral counterpart (``add_bias_kv``, ``add_zero_attn``) is refused, and the
input and output projections' weights are copied. Used by
:meth:`DIAttention.from_multihead <dinet.nn.attention.DIAttention.from_multihead>`; the
layer itself lives in :mod:`dinet.nn.attention`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .attention import DIAttention

__all__: list[str] = []


def check_multihead(mha) -> None:
    """A ValueError unless ``mha`` is an ``nn.MultiheadAttention`` with a DI equivalent."""
    if not isinstance(mha, nn.MultiheadAttention):
        raise ValueError(
            f"from_multihead converts nn.MultiheadAttention; got {type(mha).__name__}"
        )
    if mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError(
            "add_bias_kv / add_zero_attn append keys that sit at no point of the domain, "
            "so they have no DI equivalent — convert an nn.MultiheadAttention without them"
        )


def copy_multihead_weights(mha: nn.MultiheadAttention, layer: DIAttention) -> DIAttention:
    """``layer`` with the weights of ``mha``, on ``mha``'s device and dtype."""
    has_bias = mha.in_proj_bias is not None
    e = mha.embed_dim
    if mha._qkv_same_embed_dim:
        weights = mha.in_proj_weight.detach().split(e)
    else:
        weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
    biases = mha.in_proj_bias.detach().split(e) if has_bias else (None,) * 3
    with torch.no_grad():
        for proj, w, b in zip((layer.q_proj, layer.k_proj, layer.v_proj), weights, biases,
                              strict=True):
            proj.weight.copy_(w)
            if b is not None:
                proj.bias.copy_(b)
        layer.out_proj.weight.copy_(mha.out_proj.weight)
        if has_bias:  # nn.MultiheadAttention(bias=...) sets both biases or neither
            layer.out_proj.bias.copy_(mha.out_proj.bias)
    return layer.to(device=mha.out_proj.weight.device, dtype=mha.out_proj.weight.dtype)
