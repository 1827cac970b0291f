"""Conversion rules for the nodes that act on the values point by point, as methods of the
:class:`ValueRules` mixin: flattening after a global pool (with the ``x.size(0)`` or
``x.shape[0]`` it needs), the classifier head (``nn.Linear``), pointwise modules and
functions, softmax over channels, arithmetic and concatenation. The dispatch tables of
:mod:`dinet.convert.ops` name them; the converter of :mod:`dinet.convert.fx` runs them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .network import Ref
from .ops import (
    BATCH,
    CHANNEL_DROPOUT,
    FIELD,
    POOLED,
    SHAPE,
    VECTOR,
    Unsupported,
    Value,
    bind,
    flat,
    identity,
    out_of_place,
)

__all__: list[str] = []


class ValueRules:
    """The rules for pointwise and shape nodes.

    A mixin: it uses the converter's ``dim`` and ``values`` and its bookkeeping methods
    ``value_of``, ``add_layer`` and ``add_step``."""

    # --- flattening ---------------------------------------------------------------------
    def flatten_module(self, node: torch.fx.Node, flatten: nn.Flatten) -> Value:
        return self._flatten(node, flatten.start_dim, flatten.end_dim)

    def flatten_call(self, node: torch.fx.Node) -> Value:
        return self._flatten(node, *bind(node, ("start_dim", 0), ("end_dim", -1)))

    def _flatten(self, node: torch.fx.Node, start_dim, end_dim) -> Value:
        x = self.value_of(node.args[0])
        if start_dim != 1 or end_dim != -1:
            raise Unsupported(
                f"flatten(start_dim={start_dim}, end_dim={end_dim}); only flatten(x, 1) after "
                "a global pool is supported"
            )
        return self._flatten_pooled(node, x)

    def _flatten_pooled(self, node: torch.fx.Node, x: Value) -> Value:
        if x.kind == FIELD:
            raise Unsupported(
                "flattening a spatial feature map ties the network to one grid — pool "
                "globally first (e.g. nn.AdaptiveAvgPool2d(1))"
            )
        return self.add_step(node, "flatten", Value(VECTOR), args=(Ref(node.args[0].name),))

    def view(self, node: torch.fx.Node) -> Value:
        x = self.value_of(node.args[0])
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if (len(shape) == 2 and isinstance(shape[0], torch.fx.Node)
                and self.values[shape[0]].kind == BATCH and shape[1] == -1):
            return self._flatten_pooled(node, x)
        raise Unsupported(
            f"{node.target}{tuple(shape)}; only x.{node.target}(x.size(0), -1) after a global "
            "pool is supported"
        )

    def size(self, node: torch.fx.Node) -> Value:
        self.value_of(node.args[0])
        (dim,) = bind(node, ("dim", None))
        if dim != 0:
            raise Unsupported(
                f"x.size({dim}); sizes other than the batch size x.size(0) depend on the grid"
            )
        return Value(BATCH)

    def attribute(self, node: torch.fx.Node) -> Value:
        self.value_of(node.args[0])
        if node.args[1] != "shape":
            raise Unsupported(f"tensor attribute {node.args[1]!r}")
        return Value(SHAPE)

    def getitem(self, node: torch.fx.Node) -> Value:
        source = node.args[0]
        if (isinstance(source, torch.fx.Node) and self.values[source].kind == SHAPE
                and node.args[1] == 0):
            return Value(BATCH)
        raise Unsupported(
            "indexing; only x.shape[0] (the batch size, to flatten) is supported"
        )

    # --- pointwise modules --------------------------------------------------------------
    def linear(self, node: torch.fx.Node, linear: nn.Module) -> Value:
        x = self.value_of(node.args[0])
        if x.kind != VECTOR:
            raise Unsupported(
                "nn.Linear on a (B, C, *spatial) tensor acts on its last spatial axis — "
                "flatten after a global pool first, or use a 1×1 convolution"
            )
        key = self.add_layer(node, lambda: copy.deepcopy(linear))
        return self.add_step(node, "module", x, module=key)

    def pointwise_module(self, node: torch.fx.Node, module: nn.Module) -> Value:
        x = self.value_of(node.args[0])
        channel_first = False

        def build() -> nn.Module:
            if isinstance(module, CHANNEL_DROPOUT):  # drops whole channels of each sample
                return nn.Dropout1d(module.p) if x.kind != VECTOR else copy.deepcopy(module)
            layer = copy.deepcopy(module)
            if getattr(layer, "inplace", False):  # a DI layer may return a view of its input
                layer.inplace = False
            return layer

        if isinstance(module, CHANNEL_DROPOUT) or (isinstance(module, nn.PReLU)
                                                   and module.num_parameters > 1):
            channel_first = True
        key = self.add_layer(node, build)
        return self.add_step(node, "module", x, module=key, channel_first=channel_first)

    # --- softmax ------------------------------------------------------------------------
    def softmax_module(self, node: torch.fx.Node, module: nn.Module) -> Value:
        fn = F.softmax if isinstance(module, nn.Softmax) else F.log_softmax
        return self._softmax(node, fn, module.dim)

    def softmax_call(self, node: torch.fx.Node, fn: Callable) -> Value:
        return self._softmax(node, fn, bind(node, ("dim", None))[0])

    def _softmax(self, node: torch.fx.Node, fn: Callable, dim) -> Value:
        x = self.value_of(node.args[0])
        rank = 2 if x.kind == VECTOR else self.dim + 2
        if dim is None or dim % rank != 1:
            raise Unsupported(f"a softmax over dim {dim}; only the channel axis (dim=1) is "
                              "pointwise")
        return self.add_step(node, "call", x, fn=fn, args=(Ref(node.args[0].name),),
                             kwargs={"dim": -1})

    # --- functions of values ------------------------------------------------------------
    def identity_method(self, node: torch.fx.Node) -> Value:
        return self.add_step(node, "call", self.value_of(node.args[0]), fn=identity)

    def elementwise(self, node: torch.fx.Node, fn: Callable) -> Value:
        x = self.value_of(node.args[0])
        extra = (*node.args[1:], *node.kwargs.values())
        if any(isinstance(a, torch.fx.Node) for a in flat(extra)):
            raise Unsupported("an elementwise function of several tensors")
        args, kwargs = out_of_place(fn, (Ref(node.args[0].name), *node.args[1:]),
                                    dict(node.kwargs))
        return self.add_step(node, "call", x, fn=fn, args=args, kwargs=kwargs)

    def binary(self, node: torch.fx.Node, fn: Callable) -> Value:
        if len(node.args) != 2:
            raise Unsupported("expected two operands")
        operands, values = [], []
        for arg in node.args:
            if isinstance(arg, torch.fx.Node):
                values.append(self.value_of(arg, "operand"))
                operands.append(Ref(arg.name))
            elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
                operands.append(arg)
            else:
                raise Unsupported(f"an operand {arg!r} that is neither a tensor of the "
                                  "network nor a number")
        kinds = {v.kind for v in values}
        if len(kinds) == 1:
            result = values[0]
            fields = [v for v in values if v.kind == FIELD]
            if len(fields) == 2 and (fields[0].points != fields[1].points
                                     or fields[0].level != fields[1].level):
                raise Unsupported(
                    f"combines fields on different point sets ({fields[0].points.shape} at "
                    f"stride {fields[0].level} and {fields[1].points.shape} at stride "
                    f"{fields[1].level})"
                )
        elif kinds == {FIELD, POOLED}:
            result = next(v for v in values if v.kind == FIELD)
        else:
            raise Unsupported(
                f"combines a {' and a '.join(sorted(kinds))}; the operands must live on the "
                "same points (or one be globally pooled, (B, C, 1, 1))"
            )
        kwargs = {k: v for k, v in node.kwargs.items() if k == "alpha"}
        if len(kwargs) != len(node.kwargs):
            raise Unsupported(f"keyword arguments {sorted(node.kwargs)}")
        return self.add_step(node, "call", result, fn=fn, args=tuple(operands), kwargs=kwargs)

    def cat(self, node: torch.fx.Node) -> Value:
        tensors = node.args[0]
        (dim,) = bind(node, ("dim", 0))
        if not isinstance(tensors, (tuple, list)) or not tensors:
            raise Unsupported("expected a list of tensors")
        values = [self.value_of(t, "tensor") for t in tensors]
        kinds = {v.kind for v in values}
        if len(kinds) != 1:
            raise Unsupported(f"concatenates a mix of {', '.join(sorted(kinds))} values")
        kind = kinds.pop()
        rank = 2 if kind == VECTOR else self.dim + 2
        if dim % rank != 1:
            raise Unsupported(f"concatenation along dim {dim}; only the channel axis (dim=1) "
                              "is supported")
        if kind == FIELD and any(v.points != values[0].points or v.level != values[0].level
                                 for v in values):
            raise Unsupported(
                "concatenates fields on different point sets (shapes "
                f"{[v.points.shape for v in values]}) — upsample to a common level first"
            )
        refs = [Ref(t.name) for t in tensors]
        return self.add_step(node, "call", values[0], fn=torch.cat, args=(refs,),
                             kwargs={"dim": 1 if kind == VECTOR else -1})
