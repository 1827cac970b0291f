"""Conversion rules for the layers that act across points: convolutions, batch norms, pools,
global pools (adaptive pools and spatial means) and upsampling.

They are the methods of :class:`LayerRules`, mixed into the converter of
:mod:`dinet.convert.fx` and named by the dispatch tables of :mod:`dinet.convert.ops`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.fx
from torch import nn

from ..nn import (
    DIAvgPool,
    DIBatchNorm,
    DIConv,
    DIMaxPool,
    GlobalAvgPool,
    GlobalMaxPool,
    PointwiseLinear,
)
from ..nn._lattice import input_lattice
from ..points import PointSet
from .layers import INTERPOLATE_MODES, Interpolate
from .ops import FIELD, INTERPOLATE_ARGS, POOLED, VECTOR, Unsupported, Value, axes, bind, flat

__all__: list[str] = []


class LayerRules:
    """The rules for layers that move between point sets or pool over them.

    A mixin: it uses the converter's ``dim``, ``shape`` and ``known_sets`` and its
    bookkeeping methods ``value_of``, ``field_of``, ``add_layer`` and ``add_step``."""

    # --- helpers ------------------------------------------------------------------------
    def stride(self, stride, what: str) -> int:
        """The one stride of a layer, the same along every axis."""
        strides = (stride,) * self.dim if isinstance(stride, int) else tuple(stride)
        if len(set(strides)) != 1:
            raise Unsupported(
                f"{what} stride {tuple(strides)} differs between axes; the converted net "
                "coarsens every axis alike (points.coarsen(stride))"
            )
        return int(strides[0])

    def check_dim(self, module_dim: int, what: str) -> None:
        if module_dim != self.dim:
            raise Unsupported(
                f"a {module_dim}-D {what} in a network converted for {self.dim}-D input "
                f"(input_shape={self.shape})"
            )

    def _strided(self, node: torch.fx.Node, x: Value, stride: int,
                 convert: Callable[[nn.Module, PointSet], tuple[nn.Module, PointSet]],
                 module: nn.Module) -> Value:
        """The step of a layer from ``x``'s points to coarser ones: ``convert(module, points)``
        builds the DI layer and the points it lands on, or says why not (``ValueError``)."""
        try:
            layer, points_out = convert(module, x.points)
        except ValueError as error:
            raise Unsupported(str(error)) from error
        key = self.add_layer(node, lambda: layer, x.points)
        return self.add_step(node, "layer", Value(FIELD, points_out, x.level * stride),
                             module=key)

    # --- layers -------------------------------------------------------------------------
    def conv(self, node: torch.fx.Node, conv: nn.Module) -> Value:
        self.check_dim(len(conv.kernel_size), "convolution")
        x = self.value_of(node.args[0], kinds=(FIELD, POOLED))
        padding = (0,) if isinstance(conv.padding, str) else conv.padding
        if (all(k == 1 for k in conv.kernel_size) and all(s == 1 for s in conv.stride)
                and all(p == 0 for p in padding) and conv.groups == 1):
            key = self.add_layer(node, lambda: PointwiseLinear.from_conv1x1(conv))
            return self.add_step(node, "module", x, module=key)
        if x.kind != FIELD:
            raise Unsupported(
                "a convolution wider than 1×1 (or strided, padded or grouped) applied to a "
                "globally pooled value"
            )
        stride = self.stride(conv.stride, "the convolution's")
        return self._strided(node, x, stride, lambda module, points: DIConv.from_conv(
            module, points, kernel=self.kernel), conv)

    def batchnorm(self, node: torch.fx.Node, bn: nn.Module) -> Value:
        x = self.value_of(node.args[0], kinds=(FIELD, VECTOR))
        if x.kind == VECTOR:
            if not isinstance(bn, nn.BatchNorm1d):
                raise Unsupported(f"{type(bn).__name__} applied to a flattened (B, C) value")
            key = self.add_layer(node, lambda: copy.deepcopy(bn))
            return self.add_step(node, "module", x, module=key)
        expected = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}.get(self.dim)
        if type(bn) not in (expected, nn.SyncBatchNorm):
            raise Unsupported(f"{type(bn).__name__} applied to a {self.dim}-D field")
        try:
            layer = DIBatchNorm.from_batchnorm(bn)
        except ValueError as error:
            raise Unsupported(str(error)) from error
        key = self.add_layer(node, lambda: layer)
        return self.add_step(node, "layer", x, module=key)

    def pool(self, node: torch.fx.Node, pool: nn.Module) -> Value:
        self.check_dim(int(type(pool).__name__[-2]), "pool")
        x = self.field_of(node)
        stride = self.stride(pool.stride if pool.stride is not None else pool.kernel_size,
                             "the pool's")
        cls = DIMaxPool if "Max" in type(pool).__name__ else DIAvgPool
        return self._strided(node, x, stride, cls.from_pool, pool)

    def pool_function(self, node: torch.fx.Node, cls: type, names: tuple[str, ...]) -> Value:
        kwargs = dict(zip(names, node.args[1:], strict=False))
        kwargs.update({k: v for k, v in node.kwargs.items() if k in names})
        if any(isinstance(v, torch.fx.Node) for v in kwargs.values()):
            raise Unsupported("pooling arguments computed in the network")
        return self.pool(node, cls(**kwargs))

    # --- global pools -------------------------------------------------------------------
    def adaptive_module(self, node: torch.fx.Node, pool: nn.Module) -> Value:
        cls = GlobalMaxPool if "Max" in type(pool).__name__ else GlobalAvgPool
        if getattr(pool, "return_indices", False):
            raise Unsupported("return_indices=True")
        return self._adaptive(node, cls, pool.output_size, int(type(pool).__name__[-2]))

    def adaptive_function(self, node: torch.fx.Node, cls: type, dim: int) -> Value:
        return self._adaptive(node, cls, bind(node, ("output_size", None))[0], dim)

    def _adaptive(self, node: torch.fx.Node, cls: type, output_size, dim: int) -> Value:
        self.check_dim(dim, "adaptive pool")
        sizes = (output_size,) * dim if isinstance(output_size, int) else tuple(output_size)
        if any(s != 1 for s in sizes):
            raise Unsupported(
                f"adaptive pooling to output size {output_size}; a pooled grid of a fixed size "
                "depends on the input grid — only output size 1 (global pooling) is supported"
            )
        self.field_of(node)
        key = self.add_layer(node, cls)
        return self.add_step(node, "global", Value(POOLED), module=key)

    def mean(self, node: torch.fx.Node) -> Value:
        dims, keepdim = bind(node, ("dim", None), ("keepdim", False))
        self.field_of(node)
        spatial = set(range(2, 2 + self.dim))
        if dims is None or axes(dims, self.dim + 2) != spatial:
            raise Unsupported(
                f"a mean over dims {dims}; only the mean over the spatial axes "
                f"{tuple(sorted(spatial))} (global average pooling) is supported"
            )
        key = self.add_layer(node, GlobalAvgPool)
        return self.add_step(node, "global", Value(POOLED if keepdim else VECTOR),
                             module=key)

    # --- upsampling ---------------------------------------------------------------------
    def upsample_module(self, node: torch.fx.Node, up: nn.Upsample) -> Value:
        return self._interpolate(node, up.size, up.scale_factor, up.mode, up.align_corners,
                                 getattr(up, "recompute_scale_factor", None))

    def interpolate_function(self, node: torch.fx.Node) -> Value:
        args = bind(node, *((name, None) for name in INTERPOLATE_ARGS))
        size, scale, mode, align, recompute, antialias = args
        if antialias:
            raise Unsupported("antialias=True (it only matters when downsampling)")
        return self._interpolate(node, size, scale, mode or "nearest", align, recompute)

    def _interpolate(self, node: torch.fx.Node, size, scale_factor, mode: str, align_corners,
                     recompute) -> Value:
        x = self.field_of(node)
        if mode not in INTERPOLATE_MODES:
            raise Unsupported(
                f"interpolation mode {mode!r}; supported: {', '.join(INTERPOLATE_MODES)}"
            )
        if any(isinstance(v, torch.fx.Node) for v in flat((size, scale_factor))):
            raise Unsupported(
                "an interpolation size computed in the network (e.g. from another tensor's "
                "shape); give a constant scale_factor or size"
            )
        in_shape = x.points.shape
        if size is not None:
            sizes = (size,) * self.dim if isinstance(size, int) else tuple(size)
            scales = None
        elif scale_factor is not None:
            scales = ((scale_factor,) * self.dim if isinstance(scale_factor, (int, float))
                      else tuple(scale_factor))
            sizes = tuple(math.floor(n * float(s)) for n, s in zip(in_shape, scales,
                                                                  strict=True))
        else:
            raise Unsupported("interpolation needs a size or a scale_factor")
        if recompute:
            scales = None
        factor = None
        if scales is not None and len(set(scales)) == 1 and float(scales[0]).is_integer():
            factor = int(scales[0])
        for points, level in self.known_sets:
            if (points.shape == sizes and level < x.level
                    and (factor is None or level * factor == x.level)):
                break
        else:
            raise Unsupported(
                f"upsampling {in_shape} to {sizes}, a resolution not seen earlier in the "
                "network; the converted net upsamples only back to a finer level it came from"
            )
        spacing = input_lattice(x.points, self.dim)[2]
        key = self.add_layer(node, lambda: Interpolate(
            mode, spacing=spacing, dim=self.dim, scale_factor=scales,
            align_corners=align_corners if not mode.startswith("nearest") else None,
        ), x.points)
        return self.add_step(node, "layer", Value(FIELD, points, level), module=key)
