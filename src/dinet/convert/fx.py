"""``from_cnn``: trace a discrete CNN with ``torch.fx`` and rebuild it from DI layers."""

from __future__ import annotations

import copy
import inspect
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
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
from ..points import PointSet, grid
from .layers import INTERPOLATE_MODES, Interpolate
from .network import ConvertedCNN, Ref, Step

__all__ = ["SUPPORTED", "from_cnn"]

SUPPORTED = (
    "nn.Conv{d}d (any kernel size, stride, padding, dilation and groups; zero padding); "
    "nn.BatchNorm{d}d; nn.MaxPool{d}d and nn.AvgPool{d}d (and F.max_pool/F.avg_pool); "
    "nn.AdaptiveAvgPool{d}d / nn.AdaptiveMaxPool{d}d with output size 1 and a mean over the "
    "spatial axes (global pooling); nn.Flatten, torch.flatten(x, 1) and x.view(x.size(0), -1) "
    "after a global pool, then nn.Linear, nn.BatchNorm1d; pointwise activations (ReLU, "
    "ReLU6, GELU, SiLU, Sigmoid, Tanh, LeakyReLU, ELU, SELU, CELU, PReLU, Hardswish, "
    "Hardsigmoid, Hardtanh, Mish, Softplus, ... as modules, F.* functions or tensor "
    "methods), Softmax over channels, Dropout, Identity; +, -, *, / between values on the "
    "same points (residual additions), pooled values or numbers; torch.cat along channels; "
    "nn.Upsample / F.interpolate (nearest, linear, bilinear, trilinear) back to a finer "
    "level seen earlier in the network"
)

# Value kinds (see dinet.convert.network): tensors of the converted net, and the integers
# `x.size(0)` / `x.shape` that only serve to flatten.
FIELD, POOLED, VECTOR = "field", "pooled", "vector"
BATCH, SHAPE, UNKNOWN = "batch", "shape", "unknown"
TENSOR_KINDS = (FIELD, POOLED, VECTOR)

ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.SELU,
    nn.CELU, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Softsign,
    nn.Tanhshrink, nn.LogSigmoid, nn.Identity, nn.Dropout, nn.AlphaDropout,
)
CHANNEL_DROPOUT = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)

ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.sigmoid, torch.sigmoid, F.tanh, torch.tanh,
    F.leaky_relu, F.elu, F.selu, torch.selu, F.celu, F.hardswish, F.hardsigmoid, F.hardtanh,
    F.mish, F.softplus, F.softsign, F.logsigmoid, F.dropout, F.alpha_dropout, torch.clamp,
    torch.clip, torch.exp, torch.abs, operator.neg, torch.neg,
}
ELEMENTWISE_METHODS = {
    "relu", "sigmoid", "tanh", "clamp", "clip", "exp", "abs", "neg",
    "relu_", "sigmoid_", "tanh_", "clamp_", "clip_", "exp_", "abs_", "neg_",
}
IDENTITY_METHODS = {"contiguous", "clone"}

BINARY_FUNCTIONS = {
    operator.add: torch.add, operator.iadd: torch.add, torch.add: torch.add,
    operator.sub: torch.sub, operator.isub: torch.sub, torch.sub: torch.sub,
    operator.mul: torch.mul, operator.imul: torch.mul, torch.mul: torch.mul,
    operator.truediv: torch.div, operator.itruediv: torch.div, torch.div: torch.div,
}
BINARY_METHODS = {
    "add": torch.add, "add_": torch.add, "sub": torch.sub, "sub_": torch.sub,
    "mul": torch.mul, "mul_": torch.mul, "div": torch.div, "div_": torch.div,
}
CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
SOFTMAX_FUNCTIONS = {F.softmax: F.softmax, torch.softmax: F.softmax,
                     F.log_softmax: F.log_softmax, torch.log_softmax: F.log_softmax}

# functional pools → the module they stand for and the names of their positional arguments
_MAX_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override")
POOL_FUNCTIONS = {
    F.max_pool1d: (nn.MaxPool1d, _MAX_ARGS), F.max_pool2d: (nn.MaxPool2d, _MAX_ARGS),
    F.max_pool3d: (nn.MaxPool3d, _MAX_ARGS), F.avg_pool1d: (nn.AvgPool1d, _AVG_ARGS[:-1]),
    F.avg_pool2d: (nn.AvgPool2d, _AVG_ARGS), F.avg_pool3d: (nn.AvgPool3d, _AVG_ARGS),
}
ADAPTIVE_FUNCTIONS = {
    F.adaptive_avg_pool1d: GlobalAvgPool, F.adaptive_avg_pool2d: GlobalAvgPool,
    F.adaptive_avg_pool3d: GlobalAvgPool, F.adaptive_max_pool1d: GlobalMaxPool,
    F.adaptive_max_pool2d: GlobalMaxPool, F.adaptive_max_pool3d: GlobalMaxPool,
}
_INTERPOLATE_ARGS = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                     "antialias")

# helpful reasons for layers people often try
_REASONS = {
    "ConvTranspose": "transposed convolutions are not supported — use nn.Upsample followed "
                     "by a convolution",
    "LSTM": "a recurrent layer has no DI equivalent",
    "GRU": "a recurrent layer has no DI equivalent",
    "RNN": "a recurrent layer has no DI equivalent",
}


class _Unsupported(Exception):
    """This node cannot be converted; the message says why."""


class _Skip(Exception):
    """This node depends on an unsupported one; only the root cause is reported."""


@dataclass(frozen=True)
class _Value:
    """What the converter knows of a node's value."""

    kind: str
    points: PointSet | None = None  # the field's point set on the reference grid
    level: int = 1  # product of strides from the input


def _type_name(cls: type) -> str:
    module = cls.__module__
    if module == "torch.nn" or module.startswith("torch.nn.modules"):
        return f"nn.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


def _function_name(fn) -> str:
    name = getattr(fn, "__name__", repr(fn))
    module = getattr(fn, "__module__", None)
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    if module in (None, "torch._C._VariableFunctions", "torch._C"):
        module = "torch"
    return f"{module}.{name}" if module else name


def _check_input_shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if (not isinstance(input_shape, Sequence) or not 1 <= len(input_shape) <= 3
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                   for s in input_shape)):
        raise ValueError(
            f"input_shape must be the spatial shape of the CNN's input grid, 1 to 3 positive "
            f"integers such as (32, 32) or (16, 16, 16); got {input_shape!r} — leave out the "
            "batch and channel axes"
        )
    return tuple(int(s) for s in input_shape)


def from_cnn(model: nn.Module, input_shape: Sequence[int]) -> ConvertedCNN:
    """Convert a discrete CNN into a DI-Net that carries its weights.

    ``model`` is traced with :func:`torch.fx.symbolic_trace` and every node of its graph is
    replaced by its discretization-invariant counterpart: convolutions by
    :meth:`DIConv.from_conv <dinet.nn.DIConv.from_conv>` (1×1 convolutions by
    :meth:`PointwiseLinear.from_conv1x1 <dinet.nn.PointwiseLinear.from_conv1x1>`), batch norms
    by :meth:`DIBatchNorm.from_batchnorm <dinet.nn.DIBatchNorm.from_batchnorm>`, pools by
    ``DIMaxPool``/``DIAvgPool.from_pool``, global pools by
    :class:`~dinet.nn.GlobalAvgPool`, upsampling by :class:`~dinet.convert.Interpolate`;
    pointwise layers (activations, dropout, the classifier head after a global pool) act on
    the values as they are. Spacings are fixed in domain units by ``input_shape``, so the
    network runs on any point set; on ``grid(input_shape)`` it reproduces the CNN.

    Every strided layer moves to a coarser point set: on the grid the CNN was built for, the
    CNN's own pixel grid at that depth (a stride-2 3×3 conv with padding 1 lands on the
    grid's prefix of even pixels, a 2×2 pool on the coarse pixel centres); on any other point
    set, ``points.coarsen(level)``, ``level`` being the product of the strides so far (the
    prefix convention of ``DIConv(stride=...)``). Upsampling returns to a finer level the
    network came from.

    Args:
        model: the CNN, an ``nn.Module`` whose ``forward`` takes one ``(B, C, *spatial)``
            tensor and is traceable by ``torch.fx`` (no data-dependent control flow). Its
            train/eval mode is copied.
        input_shape: the spatial shape of the grid the CNN was built for, without batch or
            channel axes: ``(H, W)`` for a 2-D CNN, ``(D, H, W)`` for a 3-D one. It fixes
            every layer's spacing in domain units (2 / H per pixel along an axis of H pixels).

    Returns:
        A :class:`~dinet.convert.ConvertedCNN`, called as ``net(x, points)`` with ``x`` of
        shape ``(B, N, C_in)`` on a ``PointSet`` of dimension ``len(input_shape)``.

    Raises:
        ValueError: ``input_shape`` is not a spatial shape, ``torch.fx`` cannot trace the
            model, or some nodes cannot be converted — one error lists every such node with
            its name and type, and what is supported.

    Example:
        >>> import dinet.points as P
        >>> cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        >>> net = from_cnn(cnn.eval(), (32, 32))
        >>> net(torch.randn(2, 1024, 3), P.sobol(1024, 2, seed=0)).shape
        torch.Size([2, 10])
    """
    shape = _check_input_shape(input_shape)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module; got {type(model).__name__}")
    # a single torch.nn layer is traced into its functional form: trace it as a leaf instead
    root = nn.Sequential(model) if torch.fx.Tracer().is_leaf_module(model, "") else model
    try:
        traced = torch.fx.symbolic_trace(root)
    except Exception as error:  # fx raises many kinds of errors
        raise ValueError(
            f"torch.fx could not trace {type(model).__name__}: {type(error).__name__}: {error} "
            "— make its forward traceable (no control flow that depends on tensor values or "
            "shapes), or build the DI-Net by hand from dinet.nn layers"
        ) from error
    net = _Converter(traced, shape, type(model).__name__).convert()
    return net.train(model.training)


class _Converter:
    """Walks the fx graph once, building the steps and layers of a :class:`ConvertedCNN`."""

    def __init__(self, traced: torch.fx.GraphModule, shape: tuple[int, ...],
                 name: str) -> None:
        self.traced = traced
        self.name = name
        self.shape = shape
        self.dim = len(shape)
        self.reference = grid(shape)
        self.values: dict[torch.fx.Node, _Value] = {}
        self.steps: list[Step] = []
        self.layers: dict[str, nn.Module] = {}
        self.problems: list[str] = []
        self.known_sets: list[tuple[PointSet, int]] = [(self.reference, 1)]
        self.shared: dict[str, tuple[str, PointSet | None]] = {}  # module target → key, grid
        self.input_name: str | None = None
        self.output = None

    # --- the walk -----------------------------------------------------------------------
    def convert(self) -> ConvertedCNN:
        for node in self.traced.graph.nodes:
            try:
                value = self._node(node)
            except _Skip:
                value = _Value(UNKNOWN)
            except _Unsupported as error:
                self.problems.append(f"{node.name} ({self._describe(node)}): {error}")
                value = _Value(UNKNOWN)
            self.values[node] = value
        if self.problems:
            listing = "\n".join(f"  - {p}" for p in self.problems)
            raise ValueError(
                f"cannot convert {self.name} to a DI-Net: {len(self.problems)} node(s) are not "
                f"supported:\n{listing}\n(Nodes that only consume what these produce are not "
                f"checked.)\nSupported: {SUPPORTED}.\nReplace these parts of the model, or "
                "build them by hand from dinet.nn layers."
            )
        if self.input_name is None or self.output is None:
            raise ValueError("the model has no input or no output to convert")
        levels = {n.name: v.level for n, v in self.values.items() if v.kind == FIELD}
        sets = {n.name: v.points for n, v in self.values.items() if v.kind == FIELD}
        return ConvertedCNN(self.steps, self.layers, self.input_name, self.output, levels,
                            sets, self.shape)

    def _describe(self, node: torch.fx.Node) -> str:
        if node.op == "call_module":
            module = self.traced.get_submodule(node.target)
            return f"call_module {node.target!r}: {_type_name(type(module))}"
        if node.op == "call_function":
            return f"call_function {_function_name(node.target)}"
        if node.op == "call_method":
            return f"call_method Tensor.{node.target}"
        if node.op == "get_attr":
            return f"get_attr {node.target!r}"
        return f"{node.op} {node.target!r}"

    def _node(self, node: torch.fx.Node) -> _Value:
        if node.op == "placeholder":
            return self._placeholder(node)
        if node.op == "output":
            return self._output(node)
        if node.op == "get_attr":
            raise _Unsupported(
                "a parameter or buffer used directly as a tensor; put it inside a supported "
                "layer"
            )
        if node.op == "call_module":
            module = self.traced.get_submodule(node.target)
            handler = self._module_handler(module)
            self._require_known(node)
            return handler(node, module)
        if node.op == "call_function":
            handler = self._function_handler(node.target)
        else:
            handler = self._method_handler(node.target)
        self._require_known(node)
        return handler(node)

    def _require_known(self, node: torch.fx.Node) -> None:
        if any(self.values[n].kind == UNKNOWN for n in node.all_input_nodes):
            raise _Skip

    def _placeholder(self, node: torch.fx.Node) -> _Value:
        if self.input_name is not None:
            if node.users:
                raise _Unsupported(
                    "a second input; the converted net takes one field, (x, points)"
                )
            return _Value(UNKNOWN)
        self.input_name = node.name
        return _Value(FIELD, self.reference, 1)

    def _output(self, node: torch.fx.Node) -> _Value:
        nodes = node.all_input_nodes
        if any(self.values[n].kind == UNKNOWN for n in nodes):
            raise _Skip
        bad = [n.name for n in nodes if self.values[n].kind not in TENSOR_KINDS]
        if bad:
            raise _Unsupported(f"the model returns non-tensor values ({', '.join(bad)})")
        self.output = torch.fx.node.map_arg(node.args[0], lambda n: Ref(n.name))
        return _Value(UNKNOWN)

    # --- helpers ------------------------------------------------------------------------
    def _value(self, arg, what: str = "input", kinds=TENSOR_KINDS) -> _Value:
        if not isinstance(arg, torch.fx.Node):
            raise _Unsupported(f"the {what} must be a tensor of the network; got {arg!r}")
        value = self.values[arg]
        if value.kind not in kinds:
            raise _Unsupported(
                f"the {what} {arg.name!r} is {_KIND_WORDS[value.kind]}; this needs "
                f"{' or '.join(_KIND_WORDS[k] for k in kinds)}"
            )
        return value

    def _add_step(self, node: torch.fx.Node, op: str, value: _Value, *, args=None,
                  kwargs=None, module: str | None = None, fn: Callable | None = None,
                  channel_first: bool = False) -> _Value:
        if args is None:
            args = (Ref(node.args[0].name),)
        self.steps.append(Step(node.name, op, tuple(args), dict(kwargs or {}), value.kind,
                               module, fn, channel_first))
        if value.kind == FIELD and all(p != value.points for p, _ in self.known_sets):
            self.known_sets.append((value.points, value.level))
        return value

    def _layer(self, node: torch.fx.Node, build: Callable[[], nn.Module],
               points: PointSet | None = None) -> str:
        """Key of the converted layer of a node. A module with weights or statistics is
        converted once: called twice, it shares one converted layer, so it must see one
        resolution. Parameter-free modules (pools, activations) get a layer per call."""
        shared = node.op == "call_module" and _has_state(self.traced.get_submodule(node.target))
        if shared and node.target in self.shared:
            key, seen = self.shared[node.target]
            if seen is not None and seen != points:
                raise _Unsupported(
                    f"module {node.target!r} is applied at two resolutions; a converted layer "
                    "has one spacing — use a separate module for each resolution"
                )
            return key
        key = node.name if node.name not in _RESERVED else f"{node.name}_"
        self.layers[key] = build()
        if shared:
            self.shared[node.target] = (key, points)
        return key

    def _field(self, node: torch.fx.Node, what: str = "input") -> _Value:
        return self._value(node.args[0] if node.args else None, what, (FIELD,))

    def _stride(self, stride, what: str) -> int:
        strides = (stride,) * self.dim if isinstance(stride, int) else tuple(stride)
        if len(set(strides)) != 1:
            raise _Unsupported(
                f"{what} stride {tuple(strides)} differs between axes; the converted net "
                "coarsens every axis alike (points.coarsen(stride))"
            )
        return int(strides[0])

    def _check_dim(self, module_dim: int, what: str) -> None:
        if module_dim != self.dim:
            raise _Unsupported(
                f"a {module_dim}-D {what} in a network converted for {self.dim}-D input "
                f"(input_shape={self.shape})"
            )

    def _dims(self, dims, rank: int) -> set[int]:
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        return {d % rank for d in dims}

    # --- dispatch -----------------------------------------------------------------------
    def _module_handler(self, module: nn.Module) -> Callable:
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            return self._conv
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return self._batchnorm
        if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                               nn.AvgPool2d, nn.AvgPool3d)):
            return self._pool
        if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                               nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                               nn.AdaptiveMaxPool3d)):
            return self._adaptive_module
        if isinstance(module, nn.Flatten):
            return lambda node, m: self._flatten(node, m.start_dim, m.end_dim)
        if isinstance(module, nn.Linear):
            return self._linear
        if isinstance(module, (*ELEMENTWISE_MODULES, *CHANNEL_DROPOUT, nn.PReLU)):
            return self._pointwise_module
        if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
            fn = F.softmax if isinstance(module, nn.Softmax) else F.log_softmax
            return lambda node, m: self._softmax(node, fn, m.dim)
        if isinstance(module, nn.Upsample):
            return self._upsample_module
        for word, reason in _REASONS.items():
            if word in type(module).__name__:
                raise _Unsupported(reason)
        raise _Unsupported("no DI equivalent of this layer")

    def _function_handler(self, fn) -> Callable:
        if fn in BINARY_FUNCTIONS:
            return lambda node: self._binary(node, BINARY_FUNCTIONS[fn])
        if fn in ELEMENTWISE_FUNCTIONS:
            return lambda node: self._elementwise(node, fn)
        if fn in CAT_FUNCTIONS:
            return self._cat
        if fn is torch.flatten:
            return lambda node: self._flatten(node, *self._bind(node, ("start_dim", 0),
                                                                ("end_dim", -1)))
        if fn is torch.mean:
            return self._mean
        if fn in SOFTMAX_FUNCTIONS:
            return lambda node: self._softmax(node, SOFTMAX_FUNCTIONS[fn],
                                              self._bind(node, ("dim", None))[0])
        if fn in POOL_FUNCTIONS:
            return lambda node: self._pool_function(node, *POOL_FUNCTIONS[fn])
        if fn in ADAPTIVE_FUNCTIONS:
            return lambda node: self._adaptive(
                node, ADAPTIVE_FUNCTIONS[fn], self._bind(node, ("output_size", None))[0],
                int(fn.__name__[-2]))
        if fn is F.interpolate:
            return self._interpolate_function
        if fn is getattr:
            return self._getattr
        if fn is operator.getitem:
            return self._getitem
        raise _Unsupported("no DI equivalent of this function")

    def _method_handler(self, name: str) -> Callable:
        if name in BINARY_METHODS:
            return lambda node: self._binary(node, BINARY_METHODS[name])
        if name in ELEMENTWISE_METHODS:
            return lambda node: self._elementwise(node, getattr(torch, name.rstrip("_")))
        if name in IDENTITY_METHODS:
            return lambda node: self._add_step(node, "call", self._value(node.args[0]),
                                               fn=_identity)
        if name == "flatten":
            return lambda node: self._flatten(node, *self._bind(node, ("start_dim", 0),
                                                                ("end_dim", -1)))
        if name in ("view", "reshape"):
            return self._view
        if name == "size":
            return self._size
        if name == "mean":
            return self._mean
        if name in ("softmax", "log_softmax"):
            fn = F.softmax if name == "softmax" else F.log_softmax
            return lambda node: self._softmax(node, fn, self._bind(node, ("dim", None))[0])
        raise _Unsupported("no DI equivalent of this tensor method")

    def _bind(self, node: torch.fx.Node, *names_defaults: tuple[str, object]) -> list:
        """The values of arguments after the first, by position or keyword."""
        out = []
        for i, (name, default) in enumerate(names_defaults):
            if len(node.args) > i + 1:
                out.append(node.args[i + 1])
            else:
                out.append(node.kwargs.get(name, default))
        return out

    # --- layers -------------------------------------------------------------------------
    def _conv(self, node: torch.fx.Node, conv: nn.Module) -> _Value:
        self._check_dim(len(conv.kernel_size), "convolution")
        x = self._value(node.args[0], kinds=(FIELD, POOLED))
        padding = (0,) if isinstance(conv.padding, str) else conv.padding
        if (all(k == 1 for k in conv.kernel_size) and all(s == 1 for s in conv.stride)
                and all(p == 0 for p in padding) and conv.groups == 1):
            key = self._layer(node, lambda: PointwiseLinear.from_conv1x1(conv))
            return self._add_step(node, "module", x, module=key)
        if x.kind != FIELD:
            raise _Unsupported(
                "a convolution wider than 1×1 (or strided, padded or grouped) applied to a "
                "globally pooled value"
            )
        stride = self._stride(conv.stride, "the convolution's")
        try:
            layer, points_out = DIConv.from_conv(conv, x.points)
        except ValueError as error:
            raise _Unsupported(str(error)) from error
        key = self._layer(node, lambda: layer, x.points)
        return self._add_step(node, "layer", _Value(FIELD, points_out, x.level * stride),
                              module=key)

    def _batchnorm(self, node: torch.fx.Node, bn: nn.Module) -> _Value:
        x = self._value(node.args[0], kinds=(FIELD, VECTOR))
        if x.kind == VECTOR:
            if not isinstance(bn, nn.BatchNorm1d):
                raise _Unsupported(f"{type(bn).__name__} applied to a flattened (B, C) value")
            key = self._layer(node, lambda: copy.deepcopy(bn))
            return self._add_step(node, "module", x, module=key)
        expected = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}.get(self.dim)
        if type(bn) not in (expected, nn.SyncBatchNorm):
            raise _Unsupported(f"{type(bn).__name__} applied to a {self.dim}-D field")
        try:
            layer = DIBatchNorm.from_batchnorm(bn)
        except ValueError as error:
            raise _Unsupported(str(error)) from error
        key = self._layer(node, lambda: layer)
        return self._add_step(node, "layer", x, module=key)

    def _pool(self, node: torch.fx.Node, pool: nn.Module) -> _Value:
        self._check_dim(int(type(pool).__name__[-2]), "pool")
        x = self._field(node)
        stride = self._stride(pool.stride if pool.stride is not None else pool.kernel_size,
                              "the pool's")
        cls = DIMaxPool if "Max" in type(pool).__name__ else DIAvgPool
        try:
            layer, points_out = cls.from_pool(pool, x.points)
        except ValueError as error:
            raise _Unsupported(str(error)) from error
        key = self._layer(node, lambda: layer, x.points)
        return self._add_step(node, "layer", _Value(FIELD, points_out, x.level * stride),
                              module=key)

    def _pool_function(self, node: torch.fx.Node, cls: type, names: tuple[str, ...]) -> _Value:
        kwargs = dict(zip(names, node.args[1:], strict=False))
        kwargs.update({k: v for k, v in node.kwargs.items() if k in names})
        if any(isinstance(v, torch.fx.Node) for v in kwargs.values()):
            raise _Unsupported("pooling arguments computed in the network")
        return self._pool(node, cls(**kwargs))

    def _adaptive_module(self, node: torch.fx.Node, pool: nn.Module) -> _Value:
        cls = GlobalMaxPool if "Max" in type(pool).__name__ else GlobalAvgPool
        if getattr(pool, "return_indices", False):
            raise _Unsupported("return_indices=True")
        return self._adaptive(node, cls, pool.output_size, int(type(pool).__name__[-2]))

    def _adaptive(self, node: torch.fx.Node, cls: type, output_size, dim: int) -> _Value:
        self._check_dim(dim, "adaptive pool")
        sizes = (output_size,) * dim if isinstance(output_size, int) else tuple(output_size)
        if any(s != 1 for s in sizes):
            raise _Unsupported(
                f"adaptive pooling to output size {output_size}; a pooled grid of a fixed size "
                "depends on the input grid — only output size 1 (global pooling) is supported"
            )
        self._field(node)
        key = self._layer(node, cls)
        return self._add_step(node, "global", _Value(POOLED), module=key)

    def _mean(self, node: torch.fx.Node) -> _Value:
        dims, keepdim = self._bind(node, ("dim", None), ("keepdim", False))
        self._field(node)
        spatial = set(range(2, 2 + self.dim))
        if dims is None or self._dims(dims, self.dim + 2) != spatial:
            raise _Unsupported(
                f"a mean over dims {dims}; only the mean over the spatial axes "
                f"{tuple(sorted(spatial))} (global average pooling) is supported"
            )
        key = self._layer(node, GlobalAvgPool)
        return self._add_step(node, "global", _Value(POOLED if keepdim else VECTOR),
                              module=key)

    def _flatten(self, node: torch.fx.Node, start_dim, end_dim) -> _Value:
        x = self._value(node.args[0])
        if start_dim != 1 or end_dim != -1:
            raise _Unsupported(
                f"flatten(start_dim={start_dim}, end_dim={end_dim}); only flatten(x, 1) after "
                "a global pool is supported"
            )
        return self._flatten_pooled(node, x)

    def _flatten_pooled(self, node: torch.fx.Node, x: _Value) -> _Value:
        if x.kind == FIELD:
            raise _Unsupported(
                "flattening a spatial feature map ties the network to one grid — pool "
                "globally first (e.g. nn.AdaptiveAvgPool2d(1))"
            )
        return self._add_step(node, "flatten", _Value(VECTOR), args=(Ref(node.args[0].name),))

    def _view(self, node: torch.fx.Node) -> _Value:
        x = self._value(node.args[0])
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if (len(shape) == 2 and isinstance(shape[0], torch.fx.Node)
                and self.values[shape[0]].kind == BATCH and shape[1] == -1):
            return self._flatten_pooled(node, x)
        raise _Unsupported(
            f"{node.target}{tuple(shape)}; only x.{node.target}(x.size(0), -1) after a global "
            "pool is supported"
        )

    def _size(self, node: torch.fx.Node) -> _Value:
        self._value(node.args[0])
        (dim,) = self._bind(node, ("dim", None))
        if dim != 0:
            raise _Unsupported(
                f"x.size({dim}); sizes other than the batch size x.size(0) depend on the grid"
            )
        return _Value(BATCH)

    def _getattr(self, node: torch.fx.Node) -> _Value:
        self._value(node.args[0])
        if node.args[1] != "shape":
            raise _Unsupported(f"tensor attribute {node.args[1]!r}")
        return _Value(SHAPE)

    def _getitem(self, node: torch.fx.Node) -> _Value:
        source = node.args[0]
        if (isinstance(source, torch.fx.Node) and self.values[source].kind == SHAPE
                and node.args[1] == 0):
            return _Value(BATCH)
        raise _Unsupported(
            "indexing; only x.shape[0] (the batch size, to flatten) is supported"
        )

    def _linear(self, node: torch.fx.Node, linear: nn.Module) -> _Value:
        x = self._value(node.args[0])
        if x.kind != VECTOR:
            raise _Unsupported(
                "nn.Linear on a (B, C, *spatial) tensor acts on its last spatial axis — "
                "flatten after a global pool first, or use a 1×1 convolution"
            )
        key = self._layer(node, lambda: copy.deepcopy(linear))
        return self._add_step(node, "module", x, module=key)

    def _pointwise_module(self, node: torch.fx.Node, module: nn.Module) -> _Value:
        x = self._value(node.args[0])
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
        key = self._layer(node, build)
        return self._add_step(node, "module", x, module=key, channel_first=channel_first)

    def _softmax(self, node: torch.fx.Node, fn: Callable, dim) -> _Value:
        x = self._value(node.args[0])
        rank = 2 if x.kind == VECTOR else self.dim + 2
        if dim is None or dim % rank != 1:
            raise _Unsupported(f"a softmax over dim {dim}; only the channel axis (dim=1) is "
                               "pointwise")
        return self._add_step(node, "call", x, fn=fn, args=(Ref(node.args[0].name),),
                              kwargs={"dim": -1})

    def _elementwise(self, node: torch.fx.Node, fn: Callable) -> _Value:
        x = self._value(node.args[0])
        extra = (*node.args[1:], *node.kwargs.values())
        if any(isinstance(a, torch.fx.Node) for a in _flat(extra)):
            raise _Unsupported("an elementwise function of several tensors")
        args, kwargs = _out_of_place(fn, (Ref(node.args[0].name), *node.args[1:]),
                                     dict(node.kwargs))
        return self._add_step(node, "call", x, fn=fn, args=args, kwargs=kwargs)

    def _binary(self, node: torch.fx.Node, fn: Callable) -> _Value:
        if len(node.args) != 2:
            raise _Unsupported("expected two operands")
        operands, values = [], []
        for arg in node.args:
            if isinstance(arg, torch.fx.Node):
                values.append(self._value(arg, "operand"))
                operands.append(Ref(arg.name))
            elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
                operands.append(arg)
            else:
                raise _Unsupported(f"an operand {arg!r} that is neither a tensor of the "
                                   "network nor a number")
        kinds = {v.kind for v in values}
        if len(kinds) == 1:
            result = values[0]
            fields = [v for v in values if v.kind == FIELD]
            if len(fields) == 2 and (fields[0].points != fields[1].points
                                     or fields[0].level != fields[1].level):
                raise _Unsupported(
                    f"combines fields on different point sets ({fields[0].points.shape} at "
                    f"stride {fields[0].level} and {fields[1].points.shape} at stride "
                    f"{fields[1].level})"
                )
        elif kinds == {FIELD, POOLED}:
            result = next(v for v in values if v.kind == FIELD)
        else:
            raise _Unsupported(
                f"combines a {' and a '.join(sorted(kinds))}; the operands must live on the "
                "same points (or one be globally pooled, (B, C, 1, 1))"
            )
        kwargs = {k: v for k, v in node.kwargs.items() if k == "alpha"}
        if len(kwargs) != len(node.kwargs):
            raise _Unsupported(f"keyword arguments {sorted(node.kwargs)}")
        return self._add_step(node, "call", result, fn=fn, args=tuple(operands), kwargs=kwargs)

    def _cat(self, node: torch.fx.Node) -> _Value:
        tensors = node.args[0]
        (dim,) = self._bind(node, ("dim", 0))
        if not isinstance(tensors, (tuple, list)) or not tensors:
            raise _Unsupported("expected a list of tensors")
        values = [self._value(t, "tensor") for t in tensors]
        kinds = {v.kind for v in values}
        if len(kinds) != 1:
            raise _Unsupported(f"concatenates a mix of {', '.join(sorted(kinds))} values")
        kind = kinds.pop()
        rank = 2 if kind == VECTOR else self.dim + 2
        if dim % rank != 1:
            raise _Unsupported(f"concatenation along dim {dim}; only the channel axis (dim=1) "
                               "is supported")
        if kind == FIELD and any(v.points != values[0].points or v.level != values[0].level
                                 for v in values):
            raise _Unsupported(
                "concatenates fields on different point sets (shapes "
                f"{[v.points.shape for v in values]}) — upsample to a common level first"
            )
        refs = [Ref(t.name) for t in tensors]
        return self._add_step(node, "call", values[0], fn=torch.cat, args=(refs,),
                              kwargs={"dim": 1 if kind == VECTOR else -1})

    # --- upsampling ---------------------------------------------------------------------
    def _upsample_module(self, node: torch.fx.Node, up: nn.Upsample) -> _Value:
        return self._interpolate(node, up.size, up.scale_factor, up.mode, up.align_corners,
                                 getattr(up, "recompute_scale_factor", None))

    def _interpolate_function(self, node: torch.fx.Node) -> _Value:
        args = self._bind(node, *((name, None) for name in _INTERPOLATE_ARGS))
        size, scale, mode, align, recompute, antialias = args
        if antialias:
            raise _Unsupported("antialias=True (it only matters when downsampling)")
        return self._interpolate(node, size, scale, mode or "nearest", align, recompute)

    def _interpolate(self, node: torch.fx.Node, size, scale_factor, mode: str, align_corners,
                     recompute) -> _Value:
        x = self._field(node)
        if mode not in INTERPOLATE_MODES:
            raise _Unsupported(
                f"interpolation mode {mode!r}; supported: {', '.join(INTERPOLATE_MODES)}"
            )
        if any(isinstance(v, torch.fx.Node) for v in _flat((size, scale_factor))):
            raise _Unsupported(
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
            raise _Unsupported("interpolation needs a size or a scale_factor")
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
            raise _Unsupported(
                f"upsampling {in_shape} to {sizes}, a resolution not seen earlier in the "
                "network; the converted net upsamples only back to a finer level it came from"
            )
        spacing = input_lattice(x.points, self.dim)[2]
        key = self._layer(node, lambda: Interpolate(
            mode, spacing=spacing, dim=self.dim, scale_factor=scales,
            align_corners=align_corners if not mode.startswith("nearest") else None,
        ), x.points)
        return self._add_step(node, "layer", _Value(FIELD, points, level), module=key)


_KIND_WORDS = {
    FIELD: "a field (B, C, *spatial)",
    POOLED: "a globally pooled value (B, C, 1, 1)",
    VECTOR: "a flattened value (B, C)",
    BATCH: "an integer",
    SHAPE: "a shape",
    UNKNOWN: "unknown",
}
_RESERVED = set(dir(nn.ModuleDict()))


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _flat(values) -> list:
    """The leaves of nested tuples, lists and dicts."""
    out: list = []
    torch.fx.node.map_aggregate(values, out.append)
    return out


def _out_of_place(fn: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``fn``'s arguments with ``inplace=False``: a DI layer may return a view of its input,
    which an in-place activation would overwrite."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature have no inplace flag
        return args, kwargs
    if "inplace" not in signature.parameters:
        return args, kwargs
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return args, kwargs
    bound.arguments["inplace"] = False
    return bound.args, bound.kwargs
