"""``from_cnn``: trace a discrete CNN with ``torch.fx`` and rebuild it from DI layers.

This module holds the entry point and the walk over the fx graph: each node is dispatched to
its conversion rule by the tables of :mod:`dinet.convert.ops`, the rules themselves
(:mod:`dinet.convert.rules_layers`, :mod:`dinet.convert.rules_values`) are mixed into the
converter, and the converter keeps the books they share: what is known of each node's value,
the steps and layers built so far, and the point sets seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.fx
from torch import nn

from ..points import PointSet, grid
from .network import ConvertedCNN, Ref, Step
from .ops import (
    FIELD,
    KIND_WORDS,
    RESERVED,
    SUPPORTED,
    TENSOR_KINDS,
    UNKNOWN,
    Skip,
    Unsupported,
    Value,
    function_name,
    function_rule,
    has_state,
    method_rule,
    module_rule,
    type_name,
)
from .rules_layers import LayerRules
from .rules_values import ValueRules

__all__ = ["SUPPORTED", "from_cnn"]


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


def from_cnn(model: nn.Module, input_shape: Sequence[int],
             kernel: str = "spline", lattice: bool = False) -> ConvertedCNN:
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
        kernel: the kernel family of the converted convolutions: ``"spline"`` (linear hats)
            or ``"cubic"`` (Keys' cubic, smooth between the taps: closer to the CNN's sum on
            other point sets); both reproduce the CNN exactly on its grid.
        lattice: ``False`` (default): every layer runs on the input's points and their
            coarsenings. ``True``: the layers that read the input integrate over its points
            and write onto the CNN's own grid; every later layer runs on the CNN's grids, so
            off the grid only the first integrals differ from the CNN (the design of
            ``dinet-res``, whose stem writes on a lattice) and field outputs live on the
            CNN's output grid.

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
    net = _Converter(traced, shape, type(model).__name__, kernel, lattice).convert()
    return net.train(model.training)


class _Converter(LayerRules, ValueRules):
    """Walks the fx graph once, building the steps and layers of a :class:`ConvertedCNN`.

    Each node goes to the rule its dispatch table names (:mod:`dinet.convert.ops`); the rules
    are the methods of the mixins :class:`~dinet.convert.rules_layers.LayerRules` and
    :class:`~dinet.convert.rules_values.ValueRules`."""

    def __init__(self, traced: torch.fx.GraphModule, shape: tuple[int, ...],
                 name: str, kernel: str = "spline", lattice: bool = False) -> None:
        self.traced = traced
        self.kernel = kernel
        self.lattice = lattice
        self.name = name
        self.shape = shape
        self.dim = len(shape)
        self.reference = grid(shape)
        self.values: dict[torch.fx.Node, Value] = {}
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
            except Skip:
                value = Value(UNKNOWN)
            except Unsupported as error:
                self.problems.append(f"{node.name} ({self._describe(node)}): {error}")
                value = Value(UNKNOWN)
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
                            sets, self.shape, lattice=self.lattice)

    def _describe(self, node: torch.fx.Node) -> str:
        if node.op == "call_module":
            module = self.traced.get_submodule(node.target)
            return f"call_module {node.target!r}: {type_name(type(module))}"
        if node.op == "call_function":
            return f"call_function {function_name(node.target)}"
        if node.op == "call_method":
            return f"call_method Tensor.{node.target}"
        if node.op == "get_attr":
            return f"get_attr {node.target!r}"
        return f"{node.op} {node.target!r}"

    def _node(self, node: torch.fx.Node) -> Value:
        if node.op == "placeholder":
            return self._placeholder(node)
        if node.op == "output":
            return self._output(node)
        if node.op == "get_attr":
            raise Unsupported(
                "a parameter or buffer used directly as a tensor; put it inside a supported "
                "layer"
            )
        if node.op == "call_module":
            module = self.traced.get_submodule(node.target)
            rule, *args = module_rule(module), module
        elif node.op == "call_function":
            rule, *args = function_rule(node.target)
        else:
            rule, *args = method_rule(node.target)
        self._require_known(node)
        return getattr(self, rule)(node, *args)

    def _require_known(self, node: torch.fx.Node) -> None:
        if any(self.values[n].kind == UNKNOWN for n in node.all_input_nodes):
            raise Skip

    def _placeholder(self, node: torch.fx.Node) -> Value:
        if self.input_name is not None:
            if node.users:
                raise Unsupported(
                    "a second input; the converted net takes one field, (x, points)"
                )
            return Value(UNKNOWN)
        self.input_name = node.name
        return Value(FIELD, self.reference, 1)

    def _output(self, node: torch.fx.Node) -> Value:
        nodes = node.all_input_nodes
        if any(self.values[n].kind == UNKNOWN for n in nodes):
            raise Skip
        bad = [n.name for n in nodes if self.values[n].kind not in TENSOR_KINDS]
        if bad:
            raise Unsupported(f"the model returns non-tensor values ({', '.join(bad)})")
        self.output = torch.fx.node.map_arg(node.args[0], lambda n: Ref(n.name))
        return Value(UNKNOWN)

    # --- bookkeeping the rules share ----------------------------------------------------
    def value_of(self, arg, what: str = "input", kinds=TENSOR_KINDS) -> Value:
        """What is known of ``arg``, which must be a node whose value is of one of ``kinds``."""
        if not isinstance(arg, torch.fx.Node):
            raise Unsupported(f"the {what} must be a tensor of the network; got {arg!r}")
        value = self.values[arg]
        if value.kind not in kinds:
            raise Unsupported(
                f"the {what} {arg.name!r} is {KIND_WORDS[value.kind]}; this needs "
                f"{' or '.join(KIND_WORDS[k] for k in kinds)}"
            )
        return value

    def add_step(self, node: torch.fx.Node, op: str, value: Value, *, args=None,
                 kwargs=None, module: str | None = None, fn: Callable | None = None,
                 channel_first: bool = False) -> Value:
        """Record the step that computes ``node`` (by default from its first argument) and
        return its value."""
        if args is None:
            args = (Ref(node.args[0].name),)
        self.steps.append(Step(node.name, op, tuple(args), dict(kwargs or {}), value.kind,
                               module, fn, channel_first))
        if value.kind == FIELD and all(p != value.points for p, _ in self.known_sets):
            self.known_sets.append((value.points, value.level))
        return value

    def add_layer(self, node: torch.fx.Node, build: Callable[[], nn.Module],
                  points: PointSet | None = None) -> str:
        """Key of the converted layer of a node. A module with weights or statistics is
        converted once: called twice, it shares one converted layer, so it must see one
        resolution. Parameter-free modules (pools, activations) get a layer per call."""
        shared = node.op == "call_module" and has_state(self.traced.get_submodule(node.target))
        if shared and node.target in self.shared:
            key, seen = self.shared[node.target]
            if seen is not None and seen != points:
                raise Unsupported(
                    f"module {node.target!r} is applied at two resolutions; a converted layer "
                    "has one spacing — use a separate module for each resolution"
                )
            return key
        key = node.name if node.name not in RESERVED else f"{node.name}_"
        self.layers[key] = build()
        if shared:
            self.shared[node.target] = (key, points)
        return key

    def field_of(self, node: torch.fx.Node, what: str = "input") -> Value:
        """The value of the node's first argument, which must be a field."""
        return self.value_of(node.args[0] if node.args else None, what, (FIELD,))
