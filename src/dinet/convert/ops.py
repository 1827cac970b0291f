"""What :func:`~dinet.convert.from_cnn` converts: the op tables and the dispatch tables.

The op tables group the modules, functions and tensor methods by how they convert
(elementwise, binary, concatenation, softmax, pools); the dispatch tables map each of them to
the *rule* that converts it, a method of the converter (see :mod:`dinet.convert.rules_layers`
and :mod:`dinet.convert.rules_values`) named by a string. Adding an op is one table entry,
plus a rule if no existing one fits. Also here: the value kinds, the errors a rule raises,
and small pure helpers on fx nodes and arguments.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..nn import GlobalAvgPool, GlobalMaxPool
from ..points import PointSet

__all__ = ["SUPPORTED"]

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
KIND_WORDS = {
    FIELD: "a field (B, C, *spatial)",
    POOLED: "a globally pooled value (B, C, 1, 1)",
    VECTOR: "a flattened value (B, C)",
    BATCH: "an integer",
    SHAPE: "a shape",
    UNKNOWN: "unknown",
}

# --- op tables ------------------------------------------------------------------------------
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
SOFTMAX_METHODS = {"softmax": F.softmax, "log_softmax": F.log_softmax}

# functional pools → the module they stand for and the names of their positional arguments
MAX_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
AVG_POOL_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override")
POOL_FUNCTIONS = {
    F.max_pool1d: (nn.MaxPool1d, MAX_POOL_ARGS), F.max_pool2d: (nn.MaxPool2d, MAX_POOL_ARGS),
    F.max_pool3d: (nn.MaxPool3d, MAX_POOL_ARGS),
    F.avg_pool1d: (nn.AvgPool1d, AVG_POOL_ARGS[:-1]),
    F.avg_pool2d: (nn.AvgPool2d, AVG_POOL_ARGS), F.avg_pool3d: (nn.AvgPool3d, AVG_POOL_ARGS),
}
ADAPTIVE_FUNCTIONS = {
    F.adaptive_avg_pool1d: GlobalAvgPool, F.adaptive_avg_pool2d: GlobalAvgPool,
    F.adaptive_avg_pool3d: GlobalAvgPool, F.adaptive_max_pool1d: GlobalMaxPool,
    F.adaptive_max_pool2d: GlobalMaxPool, F.adaptive_max_pool3d: GlobalMaxPool,
}
INTERPOLATE_ARGS = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                    "antialias")

# helpful reasons for layers people often try
REASONS = {
    "ConvTranspose": "transposed convolutions are not supported — use nn.Upsample followed "
                     "by a convolution",
    "LSTM": "a recurrent layer has no DI equivalent",
    "GRU": "a recurrent layer has no DI equivalent",
    "RNN": "a recurrent layer has no DI equivalent",
}

# --- dispatch tables ------------------------------------------------------------------------
# A module converts by the rule of the first entry it is an instance of, called as
# rule(node, module); a transposed convolution has none (see `module_rule`).
MODULE_RULES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (nn.modules.conv._ConvNd, "conv"),
    (nn.modules.batchnorm._BatchNorm, "batchnorm"),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d),
     "pool"),
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
      nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d), "adaptive_module"),
    (nn.Flatten, "flatten_module"),
    (nn.Linear, "linear"),
    ((*ELEMENTWISE_MODULES, *CHANNEL_DROPOUT, nn.PReLU), "pointwise_module"),
    ((nn.Softmax, nn.LogSoftmax), "softmax_module"),
    (nn.Upsample, "upsample_module"),
)

# A function or tensor method converts by the rule of its entry, (rule, *args), called as
# rule(node, *args).
FUNCTION_RULES: dict[Callable, tuple] = {
    **{fn: ("binary", op) for fn, op in BINARY_FUNCTIONS.items()},
    **{fn: ("elementwise", fn) for fn in ELEMENTWISE_FUNCTIONS},
    **{fn: ("cat",) for fn in CAT_FUNCTIONS},
    torch.flatten: ("flatten_call",),
    torch.mean: ("mean",),
    **{fn: ("softmax_call", op) for fn, op in SOFTMAX_FUNCTIONS.items()},
    **{fn: ("pool_function", *spec) for fn, spec in POOL_FUNCTIONS.items()},
    **{fn: ("adaptive_function", cls, int(fn.__name__[-2]))
       for fn, cls in ADAPTIVE_FUNCTIONS.items()},
    F.interpolate: ("interpolate_function",),
    getattr: ("attribute",),
    operator.getitem: ("getitem",),
}
METHOD_RULES: dict[str, tuple] = {
    **{name: ("binary", op) for name, op in BINARY_METHODS.items()},
    **{name: ("elementwise", getattr(torch, name.rstrip("_"))) for name in ELEMENTWISE_METHODS},
    **{name: ("identity_method",) for name in IDENTITY_METHODS},
    "flatten": ("flatten_call",),
    "view": ("view",),
    "reshape": ("view",),
    "size": ("size",),
    "mean": ("mean",),
    **{name: ("softmax_call", op) for name, op in SOFTMAX_METHODS.items()},
}


class Unsupported(Exception):
    """This node cannot be converted; the message says why."""


class Skip(Exception):
    """This node depends on an unsupported one; only the root cause is reported."""


@dataclass(frozen=True)
class Value:
    """What the converter knows of a node's value."""

    kind: str
    points: PointSet | None = None  # the field's point set on the reference grid
    level: int = 1  # product of strides from the input


def module_rule(module: nn.Module) -> str:
    """The name of the rule that converts ``module``; raises :class:`Unsupported` if none."""
    for types, rule in MODULE_RULES:
        if isinstance(module, types):
            if rule == "conv" and module.transposed:  # see REASONS["ConvTranspose"]
                break
            return rule
    for word, reason in REASONS.items():
        if word in type(module).__name__:
            raise Unsupported(reason)
    raise Unsupported("no DI equivalent of this layer")


def function_rule(fn) -> tuple:
    """The ``(rule, *args)`` entry that converts a call of ``fn``."""
    if fn not in FUNCTION_RULES:
        raise Unsupported("no DI equivalent of this function")
    return FUNCTION_RULES[fn]


def method_rule(name: str) -> tuple:
    """The ``(rule, *args)`` entry that converts a call of the tensor method ``name``."""
    if name not in METHOD_RULES:
        raise Unsupported("no DI equivalent of this tensor method")
    return METHOD_RULES[name]


# --- helpers --------------------------------------------------------------------------------
RESERVED = set(dir(nn.ModuleDict()))  # names a layer key must not take


def type_name(cls: type) -> str:
    module = cls.__module__
    if module == "torch.nn" or module.startswith("torch.nn.modules"):
        return f"nn.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


def function_name(fn) -> str:
    name = getattr(fn, "__name__", repr(fn))
    module = getattr(fn, "__module__", None)
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    if module in (None, "torch._C._VariableFunctions", "torch._C"):
        module = "torch"
    return f"{module}.{name}" if module else name


def bind(node: torch.fx.Node, *names_defaults: tuple[str, object]) -> list:
    """The values of arguments after the first, by position or keyword."""
    out = []
    for i, (name, default) in enumerate(names_defaults):
        if len(node.args) > i + 1:
            out.append(node.args[i + 1])
        else:
            out.append(node.kwargs.get(name, default))
    return out


def axes(dims, rank: int) -> set[int]:
    """The axes ``dims`` (an int or a sequence, possibly negative) of a rank-``rank`` tensor."""
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return {d % rank for d in dims}


def has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def flat(values) -> list:
    """The leaves of nested tuples, lists and dicts."""
    out: list = []
    torch.fx.node.map_aggregate(values, out.append)
    return out


def out_of_place(fn: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
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
