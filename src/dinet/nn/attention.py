"""``DIAttention``: multi-head attention with respect to the measure, global or over a box.

Holds the attention kernels (:func:`global_attention`, :func:`local_attention`) and the
layer; its conversion from ``nn.MultiheadAttention`` (:meth:`DIAttention.from_multihead`)
checks and copies weights with the helpers in :mod:`dinet.nn.multihead`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..neighbors.stencils import BoxPairs, box_pairs
from ..points import PointSet
from .base import DIModule, check_points, check_values, upcast_on_cpu
from .multihead import check_multihead, copy_multihead_weights

__all__ = ["DIAttention", "global_attention", "local_attention"]

# Elements (pairs x batch x channels) gathered at once by the local path: bounds its working
# memory (a few tensors of this size, 16 MiB each in float32) whatever the number of pairs.
_CHUNK_ELEMENTS = 1 << 22


def _support_half_widths(support, dim: int) -> tuple[float, ...] | None:
    if support is None:
        return None
    values = (
        tuple(support) if isinstance(support, (Sequence, np.ndarray, torch.Tensor)) else (support,)
    )
    if len(values) == 1:
        values = values * dim
    if len(values) != dim:
        raise ValueError(
            f"support needs 1 or {dim} half-widths (one per axis); got {len(values)} — "
            "pass a float, or None for global attention"
        )
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"support must be numbers (half-widths); got {support!r}")
        if not math.isfinite(float(v)) or v <= 0:
            raise ValueError(
                f"support half-widths must be positive and finite; got {support!r} — pass a "
                "box half-width in domain units (e.g. 0.25), or support=None for global "
                "attention"
            )
        out.append(float(v))
    return tuple(out)


# --- global attention ------------------------------------------------------------------------


def global_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor
) -> torch.Tensor:
    r"""Softmax attention over all input points, each score shifted by its log weight.

    :math:`o_i = \sum_j \operatorname{softmax}_j(q_i^\top k_j / \sqrt{d} + \log w_j)\, v_j`,
    by :func:`torch.nn.functional.scaled_dot_product_attention` with an additive mask that
    is the log weights broadcast over queries (a stride-0 view, so no N_out × N_in tensor is
    made and the fused kernels keep memory O(N·C)).

    Args:
        q: ``(B, H, N_out, d)``; k, v: ``(B, H, N_in, d)``; log_w: ``(N_in,)``.

    Returns:
        ``(B, H, N_out, d)``.
    """
    mask = log_w.to(q.dtype).view(1, 1, 1, -1).expand(1, 1, q.shape[-2], k.shape[-2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# --- local attention -------------------------------------------------------------------------


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return t.index_select(0, index)  # several times faster than t[index] on CPU


def _scores(q, k, log_w, rows, cols, scale):
    """Scores of a run of pairs, ``(p, B, H)``."""
    s = (_gather(q, rows) * _gather(k, cols)).sum(-1).mul_(scale)
    return s.add_(_gather(log_w, cols)[:, None, None])


class _LocalAttention(torch.autograd.Function):
    """Segment-softmax attention over neighbour pairs, recomputed chunk by chunk in backward
    (as flash attention does), so neither pass stores anything per pair."""

    @staticmethod
    def forward(ctx, q, k, v, log_w, pairs: BoxPairs, n_batch_channels: int):
        # q: (N_out, B, H, d), k/v: (N_in, B, H, d), point-major so gathers copy whole rows.
        n_out, batch, heads, d = q.shape
        scale = 1.0 / math.sqrt(d)
        all_rows, all_cols = pairs.to(q.device)
        out = q.new_zeros(n_out, batch, heads, d)
        lse = q.new_full((n_out, batch, heads), -math.inf)  # log Σ_j e^{s_ij}; -inf: no pairs
        chunks = pairs.chunks(n_batch_channels, _CHUNK_ELEMENTS)
        for r0, r1, p0, p1 in chunks:
            rows, cols = all_rows[p0:p1], all_cols[p0:p1]
            local = rows - r0
            s = _scores(q, k, log_w, rows, cols, scale)
            row_max = s.new_full((r1 - r0, batch, heads), -math.inf)
            row_max.scatter_reduce_(0, local[:, None, None].expand_as(s), s, "amax")
            e = s.sub_(_gather(row_max, local)).exp_()
            denom = e.new_zeros(r1 - r0, batch, heads).index_add_(0, local, e)
            acc = out[r0:r1].index_add_(0, local, e[..., None] * _gather(v, cols))
            # Rows with pairs have denom >= 1 (their max scores e^0); empty rows stay 0.
            acc.div_(torch.where(denom > 0, denom, torch.ones_like(denom))[..., None])
            lse[r0:r1] = row_max + denom.log()
        ctx.save_for_backward(q, k, v, log_w, out, lse)
        ctx.pairs, ctx.chunks = pairs, chunks
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, log_w, out, lse = ctx.saved_tensors
        scale = 1.0 / math.sqrt(q.shape[-1])
        all_rows, all_cols = ctx.pairs.to(q.device)
        grad_out = grad_out.contiguous()
        delta = (grad_out * out).sum(-1)  # Σ_j p_ij (do_i · v_j), (N_out, B, H)
        need_q, need_k, need_v, need_w = ctx.needs_input_grad[:4]
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dv = torch.zeros_like(v) if need_v else None
        dw = torch.zeros_like(log_w) if need_w else None
        for _r0, _r1, p0, p1 in ctx.chunks:
            rows, cols = all_rows[p0:p1], all_cols[p0:p1]
            p = _scores(q, k, log_w, rows, cols, scale).sub_(_gather(lse, rows)).exp_()
            do = _gather(grad_out, rows)
            if need_v:
                dv.index_add_(0, cols, p[..., None] * do)
            if not (need_q or need_k or need_w):
                continue
            # softmax backward: ds_ij = p_ij (do_i · v_j − Σ_j' p_ij' do_i · v_j')
            ds = p.mul_((do * _gather(v, cols)).sum(-1).sub_(_gather(delta, rows)))
            if need_w:
                dw.index_add_(0, cols, ds.sum((1, 2)))
            ds.mul_(scale)
            if need_q:
                dq.index_add_(0, rows, ds[..., None] * _gather(k, cols))
            if need_k:
                dk.index_add_(0, cols, ds[..., None] * _gather(q, rows))
        return dq, dk, dv, dw, None, None


def local_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_w: torch.Tensor, pairs: BoxPairs
) -> torch.Tensor:
    r"""Softmax attention over each output point's neighbours only.

    :math:`o_i = \sum_{j \in S(i)} \operatorname{softmax}_{j \in S(i)}(q_i^\top k_j/\sqrt{d}
    + \log w_j)\, v_j`, and :math:`o_i = 0` when :math:`S(i)` is empty. A segment softmax
    over the cached pairs (per-row max by ``scatter_reduce``, exp, sums by ``index_add``),
    computed over chunks of whole rows so the working memory stays bounded; the backward
    pass recomputes the scores chunk by chunk instead of storing them.

    Args:
        q: ``(B, H, N_out, d)``; k, v: ``(B, H, N_in, d)``; log_w: ``(N_in,)``;
        pairs: the neighbour pairs of the support (see ``DIAttention.pairs``).

    Returns:
        ``(B, H, N_out, d)``.
    """
    batch, heads, _, d = q.shape
    point_major = [t.permute(2, 0, 1, 3).contiguous() for t in (q, k, v)]
    out = _LocalAttention.apply(*point_major, log_w.to(q.dtype), pairs, batch * heads * d)
    return out.permute(1, 2, 0, 3)


# --- the layer -------------------------------------------------------------------------------


class DIAttention(DIModule):
    r"""Multi-head attention with respect to the measure (DI-Net, Wang & Golland, TMLR 2023).

    For a query field :math:`q(x)` and key/value fields on the input points, each head computes
    the quadrature of

    .. math::
        o(x_i) = \frac{\int e^{q_i^\top k(y)/\sqrt{d}}\, v(y)\, dy}{\int e^{q_i^\top k(y)/
        \sqrt{d}}\, dy}
        \approx \sum_j \operatorname{softmax}_j\!\Big(\frac{q_i^\top k_j}{\sqrt{d}}
        + \log w_j\Big)\, v_j

    with quadrature weights :math:`w_j` of the input points, so where points are dense each
    one counts for less and the density of the discretization does not bias the attention.
    Then :math:`q_i = W_q\, x_q(x_i)`, :math:`k_j = W_k\, x(y_j)`, :math:`v_j = W_v\, x(y_j)`
    per head, and the heads are concatenated and mixed by an output projection, as in
    ``nn.MultiheadAttention``. With uniform weights (any grid or QMC set) ``log w`` is the same
    for every j and cancels, and the layer **is** ``nn.MultiheadAttention`` (see
    :meth:`from_multihead`).

    With ``support=r`` the integral runs over the box :math:`|y - x_i|_k \le r_k` only (local
    attention, neighbour lists cached per pair of point sets); a query with no input point
    in its box outputs the output projection's bias (its attention output is zero).

    Args:
        embed_dim: E, channels of the queries and of the output.
        num_heads: H; E must be divisible by H. Default 1.
        support: ``None`` (default) for global attention, or the box half-widths (a float or
            one per axis, in domain units) for local attention.
        dim: spatial dimension d of the point sets. Default 2.
        bias: learn biases in the input and output projections. Default ``True``.
        kdim: channels of ``x`` (the key field); default E.
        vdim: channels of the value field; default ``kdim``. When it differs from ``kdim``,
            pass the value field as ``value=``.

    Shapes:
        - x: ``(B, N_in, kdim)`` on ``points_in: PointSet(N_in)``
        - value (optional): ``(B, N_in, vdim)``, default ``x``
        - points_out: ``PointSet(N_out)``, default ``points_in``
        - query (optional): ``(B, N_out, E)``; default ``x`` itself (self-attention) or, when
          ``points_out`` is a prefix of ``points_in``, ``x[:, :N_out]``
        - output: ``(B, N_out, E)``

    Example:
        >>> import dinet.points as P
        >>> attn = DIAttention(16, num_heads=4)
        >>> pts = P.sobol(1024, 2, seed=0)
        >>> attn(torch.randn(2, 1024, 16), pts).shape
        torch.Size([2, 1024, 16])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int = 1,
        *,
        support: float | Sequence[float] | None = None,
        dim: int = 2,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
    ) -> None:
        super().__init__()
        kdim = embed_dim if kdim is None else kdim
        vdim = kdim if vdim is None else vdim
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads), ("dim", dim),
                            ("kdim", kdim), ("vdim", vdim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}) — each "
                f"head gets embed_dim / num_heads channels; try num_heads in "
                f"{[h for h in range(1, embed_dim + 1) if embed_dim % h == 0]}"
            )
        self.embed_dim, self.num_heads, self.dim = embed_dim, num_heads, dim
        self.kdim, self.vdim = kdim, vdim
        self.support = _support_half_widths(support, dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.MultiheadAttention`` (Xavier inputs, zero biases)."""
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight)
        self.out_proj.reset_parameters()
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def pairs(self, points_in: PointSet, points_out: PointSet) -> BoxPairs:
        """The cached neighbour pairs of the local support between two point sets."""
        if self.support is None:
            raise ValueError("global DIAttention (support=None) has no neighbour pairs")
        return box_pairs(points_in, points_out, self.support)

    def _queries(self, x, points_in, points_out, query) -> torch.Tensor:
        if query is not None:
            return check_values(query, points_out, self.embed_dim, name="query", module=self)
        if points_out is not points_in:
            m = len(points_out)
            prefix = m <= len(points_in) and torch.equal(
                points_in.coords[:m], points_out.coords.to(points_in.device)
            )
            if not prefix:
                raise ValueError(
                    f"points_out ({points_out.kind}, N={m}) is not a prefix of points_in "
                    f"({points_in.kind}, N={len(points_in)}), so there are no query values "
                    "at its points — pass query= of shape (B, N_out, embed_dim), e.g. the "
                    "field sampled at points_out"
                )
            x = x[:, :m]
        if self.kdim != self.embed_dim:
            raise ValueError(
                f"self-attention takes its queries from x, which has kdim={self.kdim} "
                f"channels but queries need embed_dim={self.embed_dim} — pass query="
            )
        return x

    def forward(
        self,
        x: torch.Tensor,
        points_in: PointSet,
        points_out: PointSet | None = None,
        query: torch.Tensor | None = None,
        *,
        value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from the queries at ``points_out`` to the field ``x`` on ``points_in``."""
        if upcast_on_cpu(x):  # the CPU's sparse kernels take float32/float64 only
            query, value = (None if t is None else t.float() for t in (query, value))
            return self.forward(x.float(), points_in, points_out, query, value=value).to(x.dtype)
        check_points(points_in, self.dim, "points_in")
        points_out = points_in if points_out is None else points_out
        check_points(points_out, self.dim, "points_out")
        check_values(x, points_in, self.kdim, module=self)
        if value is None:
            if self.vdim != self.kdim:
                raise ValueError(
                    f"this DIAttention has vdim={self.vdim} != kdim={self.kdim}, so x cannot "
                    "be the value field too — pass value= of shape (B, N_in, vdim)"
                )
            value = x
        else:
            check_values(value, points_in, self.vdim, name="value", module=self)
        query = self._queries(x, points_in, points_out, query)
        if query.shape[0] != x.shape[0] or value.shape[0] != x.shape[0]:
            raise ValueError(
                f"batch sizes differ: x has B={x.shape[0]}, query {query.shape[0]}, value "
                f"{value.shape[0]} — pass one query and value field per input field"
            )

        batch, heads, d = x.shape[0], self.num_heads, self.head_dim

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, N, E) -> (B, H, N, d)
            return t.reshape(batch, t.shape[1], heads, d).transpose(1, 2)

        q = split(self.q_proj(query))
        k = split(self.k_proj(x))
        v = split(self.v_proj(value))
        log_w = points_in.weights.to(device=x.device, dtype=q.dtype).log()
        if self.support is None:
            o = global_attention(q, k, v, log_w)
        else:
            o = local_attention(q, k, v, log_w, self.pairs(points_in, points_out))
        return self.out_proj(o.transpose(1, 2).reshape(batch, -1, self.embed_dim))

    def extra_repr(self) -> str:
        support = "global" if self.support is None else tuple(round(r, 6) for r in self.support)
        s = f"{self.embed_dim}, num_heads={self.num_heads}, support={support}, dim={self.dim}"
        if self.kdim != self.embed_dim or self.vdim != self.embed_dim:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        if self.out_proj.bias is None:
            s += ", bias=False"
        return s

    @classmethod
    def from_multihead(
        cls,
        mha: nn.MultiheadAttention,
        *,
        support: float | Sequence[float] | None = None,
        dim: int = 2,
    ) -> DIAttention:
        """A DIAttention with the weights of ``mha``.

        On a point set with uniform weights (a grid, a Sobol set) the global layer's output
        equals ``mha(query, x, x, need_weights=False)[0]`` with ``batch_first=True``. The DI
        layer is always batch-first: for an ``mha`` with ``batch_first=False`` transpose its
        ``(L, B, E)`` inputs to ``(B, L, E)``; the weights are the same either way. Attention
        dropout is not carried over (it acts only in training), so compare in eval mode.

        Args:
            mha: the attention to convert; ``add_bias_kv`` and ``add_zero_attn`` have no
                integral counterpart and are refused.
            support: ``None`` (global, the exact conversion) or box half-widths.
            dim: spatial dimension of the point sets.
        """
        check_multihead(mha)
        layer = cls(mha.embed_dim, mha.num_heads, support=support, dim=dim,
                    bias=mha.in_proj_bias is not None, kdim=mha.kdim, vdim=mha.vdim)
        return copy_multihead_weights(mha, layer)
