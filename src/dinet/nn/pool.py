"""Pooling over a box support (average, max) and over the whole domain (global pools)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import _compiled
from ..neighbors import Stencil, stencil_cache
from ..neighbors.stencils import MAX_WEIGHT_RATIO, PairStencil, pair_stencil
from ..points import PointSet
from ._lattice import window_output_points
from .base import DIModule, check_points, check_values, per_axis, upcast_on_cpu
from .functional import sparse_matmul

__all__ = ["DIAvgPool", "DIMaxPool", "GlobalAvgPool", "GlobalMaxPool"]


class _BoxPool(DIModule):
    """Shared geometry of the box pools: a window of ``kernel_size`` pixels of size h."""

    def __init__(self, kernel_size, *, spacing, dim: int = 2, stride: int = 1) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive integer; got {stride!r}")
        self.dim = dim
        self.kernel_size = per_axis(kernel_size, dim, "kernel_size", int)
        self.spacing = per_axis(spacing, dim, "spacing", float)
        self.stride = stride

    @property
    def support(self) -> tuple[float, ...]:
        """Half-widths of the box, k·h/2 per axis (the window of k pixels), in domain units."""
        return tuple(k * h / 2 for k, h in zip(self.kernel_size, self.spacing, strict=True))

    def output_points(self, points_in: PointSet) -> PointSet:
        return points_in.coarsen(self.stride) if self.stride != 1 else points_in

    def _points(self, x, points_in, points_out) -> PointSet:
        check_values(x, check_points(points_in, self.dim, "points_in"))
        points_out = self.output_points(points_in) if points_out is None else points_out
        return check_points(points_out, self.dim, "points_out")

    def extra_repr(self) -> str:
        s = (f"kernel_size={self.kernel_size}, "
             f"spacing={tuple(round(h, 6) for h in self.spacing)}")
        return s + (f", stride={self.stride}" if self.stride != 1 else "")

    @classmethod
    def _from_torch(cls, pool: nn.Module, grid_shape, **kwargs):
        dim = {"1d": 1, "2d": 2, "3d": 3}[type(pool).__name__[-2:].lower()]

        def axes(value):
            return (value,) * dim if isinstance(value, int) else tuple(value)

        if getattr(pool, "ceil_mode", False):
            raise ValueError("ceil_mode=True has no DI equivalent; use ceil_mode=False")
        if any(d != 1 for d in axes(getattr(pool, "dilation", 1))):
            raise ValueError(f"dilated pooling is not supported; got dilation={pool.dilation}")
        kernel = axes(pool.kernel_size)
        stride = axes(pool.stride if pool.stride is not None else pool.kernel_size)
        _, points_out, spacing = window_output_points(
            grid_shape, kernel, stride, axes(pool.padding), (1,) * dim, type(pool).__name__
        )
        return cls(kernel, spacing=spacing, dim=dim, **kwargs), points_out


class DIAvgPool(_BoxPool):
    r"""Average over a box of ``kernel_size`` pixels of size ``spacing`` around each output.

    .. math::
        y(x_i) = \frac{\sum_{j:\, |y_j - x_i|_k \le k_k h_k / 2} w_j f(y_j)}
                      {\sum_{j:\, |y_j - x_i|_k \le k_k h_k / 2} w_j}

    the quadrature of the mean of f over the box ∩ Ω. On a grid this is
    ``F.avg_pool2d(..., count_include_pad=False)``. With ``count_include_pad=True`` the
    denominator is the box's volume Π k_k h_k instead (the field counts as zero outside Ω),
    which on a grid is ``F.avg_pool2d`` with its default ``count_include_pad=True``.
    An output point with no input point in its box gets 0.

    Args:
        kernel_size: window size k in pixels (int or one per axis).
        spacing: pixel size h in domain units (float or one per axis).
        dim: spatial dimension d. Default 2.
        stride: the default output set is ``points_in.coarsen(stride)``. Default 1.
        count_include_pad: divide by the box volume rather than the measure of the points
            found in it. Default ``False``.

    Shapes:
        - x: ``(B, N_in, C)``, points_in: ``PointSet(N_in)``
        - points_out: ``PointSet(N_out)``, default ``points_in.coarsen(stride)``
        - output: ``(B, N_out, C)``
    """

    def __init__(self, kernel_size, *, spacing, dim: int = 2, stride: int = 1,
                 count_include_pad: bool = False) -> None:
        super().__init__(kernel_size, spacing=spacing, dim=dim, stride=stride)
        self.count_include_pad = count_include_pad

    def forward(self, x: torch.Tensor, points_in: PointSet,
                points_out: PointSet | None = None) -> torch.Tensor:
        if upcast_on_cpu(x):  # the CPU's sparse kernels take float32/float64 only
            return self.forward(x.float(), points_in, points_out).to(x.dtype)
        points_out = self._points(x, points_in, points_out)
        key = ("avgpool", points_in.digest, points_out.digest, self.support,
               self.count_include_pad)
        stencil = stencil_cache.get_or_build(
            key, lambda: self._average_stencil(pair_stencil(points_in, points_out, self.support))
        )
        return sparse_matmul(x, stencil)

    def _average_stencil(self, pairs: PairStencil) -> Stencil:
        w = pairs.pair_weights
        if self.count_include_pad:
            denom = math.prod(k * h for k, h in zip(self.kernel_size, self.spacing, strict=True))
            if len(w) and not w.max() <= MAX_WEIGHT_RATIO * denom:
                raise ValueError(
                    f"DIAvgPool(count_include_pad=True): the box volume {denom:.3g} is far "
                    f"smaller than the input points' quadrature weights (up to {w.max():.3g}), "
                    "so the average would scale single points by their ratio — use a larger "
                    "kernel_size or spacing, more points, or count_include_pad=False"
                )
            values = w / denom
        else:
            row_total = np.bincount(pairs.pair_rows, weights=w, minlength=pairs.n_out)
            values = w / row_total[pairs.pair_rows]
        return Stencil(pairs.indptr, pairs.indices, values, pairs.n_out, pairs.n_in, 1,
                       pairs.in_order, pairs.out_order)

    @classmethod
    def from_pool(cls, pool: nn.Module, grid_shape: Sequence[int] | PointSet):
        """``(layer, points_out)`` equal to ``nn.AvgPool1d/2d/3d`` on the grid ``grid_shape``."""
        if not isinstance(pool, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
            raise ValueError(f"from_pool converts nn.AvgPool1d/2d/3d; got {type(pool).__name__}")
        if getattr(pool, "divisor_override", None):
            raise ValueError("divisor_override has no DI equivalent; leave it None")
        return cls._from_torch(pool, grid_shape, count_include_pad=pool.count_include_pad)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", count_include_pad=True" if self.count_include_pad
                                       else "")


class DIMaxPool(_BoxPool):
    r"""Maximum over a box of ``kernel_size`` pixels of size ``spacing`` around each output.

    .. math::
        y(x_i) = \max_{j:\, |y_j - x_i|_k \le k_k h_k / 2} f(y_j)

    On a grid this is ``F.max_pool2d`` (padding contributes nothing: points outside Ω do not
    exist). An output point with no input point in its box gets 0. The gradient flows to the
    arg-max point of each window, as in torch.

    Args / Shapes: as :class:`DIAvgPool` (without ``count_include_pad``).
    """

    def forward(self, x: torch.Tensor, points_in: PointSet,
                points_out: PointSet | None = None) -> torch.Tensor:
        if upcast_on_cpu(x):  # the CPU's sparse kernels take float32/float64 only
            return self.forward(x.float(), points_in, points_out).to(x.dtype)
        points_out = self._points(x, points_in, points_out)
        return _BoxMax.apply(x.contiguous(), pair_stencil(points_in, points_out, self.support))

    @classmethod
    def from_pool(cls, pool: nn.Module, grid_shape: Sequence[int] | PointSet):
        """``(layer, points_out)`` equal to ``nn.MaxPool1d/2d/3d`` on the grid ``grid_shape``."""
        if not isinstance(pool, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            raise ValueError(f"from_pool converts nn.MaxPool1d/2d/3d; got {type(pool).__name__}")
        if pool.return_indices:
            raise ValueError("return_indices=True is not supported; use return_indices=False")
        return cls._from_torch(pool, grid_shape)


class _BoxMax(torch.autograd.Function):
    """Max over each output's pairs; the gradient goes to the arg-max input."""

    @staticmethod
    def forward(ctx, x, pairs: PairStencil):
        batch, _, channels = x.shape
        out = x.new_empty(batch, pairs.n_out, channels)
        arg = torch.empty(batch, pairs.n_out, channels, dtype=torch.long, device=x.device)
        in_order, out_order = pairs.order("in", x.device), pairs.order("out", x.device)
        for t in range(batch):
            if x.device.type == "cpu" and _compiled.AVAILABLE:
                x_t = x[t].detach().index_select(0, in_order)  # the stencil's internal order
                values, index = _compiled.segment_max(pairs.indptr, pairs.indices, x_t.numpy())
                values, index = torch.from_numpy(values), torch.from_numpy(index)
                index = torch.where(index >= 0, in_order[index.clamp(min=0)], index)
            else:
                values, index = _segment_max_torch(x[t], pairs)
            out[t].index_copy_(0, out_order, values)
            arg[t].index_copy_(0, out_order, index)
        ctx.save_for_backward(arg)
        ctx.n_in = x.shape[1]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (arg,) = ctx.saved_tensors
        grad_x = grad_out.new_zeros(grad_out.shape[0], ctx.n_in + 1, grad_out.shape[2])
        # Empty windows have index -1: send their (unused) gradient to a discarded row.
        index = torch.where(arg >= 0, arg, ctx.n_in)
        grad_x.scatter_add_(1, index, grad_out)
        return grad_x[:, : ctx.n_in], None


def _segment_max_torch(x: torch.Tensor, pairs: PairStencil):
    """The fallback of :class:`_BoxMax` for one batch element: values and arg-max indices
    (into the point set's order) in internal output order."""
    rows = pairs.pair_tensor("pair_rows", x.device)
    cols = pairs.pair_tensor("point_cols", x.device)
    channels = x.shape[1]
    index = rows[:, None].expand(-1, channels)
    gathered = x.index_select(0, cols)
    values = x.new_zeros(pairs.n_out, channels).scatter_reduce(
        0, index, gathered, reduce="amax", include_self=False)
    is_max = gathered == values.index_select(0, rows)
    candidates = torch.where(is_max, cols[:, None], torch.iinfo(torch.long).max)
    arg = torch.full((pairs.n_out, channels), torch.iinfo(torch.long).max, device=x.device)
    arg = arg.scatter_reduce(0, index, candidates, reduce="amin")
    empty = arg == torch.iinfo(torch.long).max
    return values.masked_fill(empty, 0.0), arg.masked_fill(empty, -1)


class GlobalAvgPool(DIModule):
    r"""Mean of the field over the domain: :math:`\sum_j w_j f(y_j) / \sum_j w_j`.

    On a grid: ``F.adaptive_avg_pool2d(x, 1)``.

    Shapes:
        - x: ``(B, N, C)``, points: ``PointSet(N)``
        - output: ``(B, C)``
    """

    def forward(self, x: torch.Tensor, points: PointSet, points_out=None) -> torch.Tensor:
        check_values(x, check_points(points))
        w = points.weights.to(device=x.device, dtype=x.dtype)
        return torch.einsum("bnc,n->bc", x, w / w.sum())


class GlobalMaxPool(DIModule):
    r"""Maximum of the field over the points: :math:`\max_j f(y_j)`.

    On a grid: ``F.adaptive_max_pool2d(x, 1)``.

    Shapes:
        - x: ``(B, N, C)``, points: ``PointSet(N)``
        - output: ``(B, C)``
    """

    def forward(self, x: torch.Tensor, points: PointSet, points_out=None) -> torch.Tensor:
        check_values(x, check_points(points))
        return x.amax(dim=1)
