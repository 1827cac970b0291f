"""``ConvertedCNN``: the DI-Net that :func:`~dinet.convert.from_cnn` returns.

The network is a list of steps, one per node of the CNN's ``torch.fx`` graph, run in order
on ``(B, N, C)`` values. Every value is one of three kinds:

- ``"field"``: ``(B, N, C)`` values on a point set (the CNN's ``(B, C, *spatial)`` tensors);
- ``"pooled"``: ``(B, 1, C)``, a globally pooled field (the CNN's ``(B, C, 1, 1)``), which
  broadcasts against fields like the CNN's tensor does (squeeze-and-excitation gates);
- ``"vector"``: ``(B, C)``, after a flatten (the classifier head).

Each field node lives on a point set derived from the input's: on the *reference grid*
(``grid(input_shape)``, the grid the CNN was built for) it is the CNN's own pixel grid at
that depth, recorded at conversion; on any other point set it is ``points.coarsen(level)``,
where ``level`` is the product of the strides between the input and the node (the prefix
convention of ``DIConv(stride=...)``). A network converted with ``lattice=True`` instead keeps
every node after the first DI layers on the CNN's own grids whatever the input: only the
layers that read the input integrate over its points, and they write onto the CNN's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._cache import LRUCache
from ..nn.base import check_points, check_values
from ..points import PointSet

__all__ = ["ConvertedCNN", "Ref", "Step"]

_POINT_SET_CACHE = 4  # input point sets whose derived levels are remembered


@dataclass(frozen=True)
class Ref:
    """A reference to the value of an earlier node, by name."""

    name: str


@dataclass
class Step:
    """One node of the converted graph.

    Attributes:
        name: the fx node's name; the value is stored under it.
        op: how to run it —
            ``"layer"``: ``layers[module](x, points(x), points(self))`` (a DI layer);
            ``"global"``: ``layers[module](x, points(x))``, a global pool to ``(B, C)``,
            unsqueezed to ``(B, 1, C)`` when ``kind == "pooled"``;
            ``"module"``: ``layers[module](x)`` on the values (on ``(B, C, N)`` when
            ``channel_first``);
            ``"call"``: ``fn(*args, **kwargs)`` with every :class:`Ref` replaced by its value;
            ``"flatten"``: ``(B, 1, C) → (B, C)`` for a pooled input, else the input.
        args, kwargs: arguments, with :class:`Ref` for node values.
        kind: the kind of the result, ``"field"``, ``"pooled"`` or ``"vector"``.
        module: key of the step's layer in ``ConvertedCNN.layers``.
        fn: the callable of a ``"call"`` step.
        channel_first: run a ``"module"`` step on ``(B, C, N)``.
    """

    name: str
    op: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    kind: str = "field"
    module: str | None = None
    fn: Callable | None = None
    channel_first: bool = False


def _substitute(template, env: dict[str, torch.Tensor]):
    """``template`` with every :class:`Ref` replaced by its value in ``env``."""
    if isinstance(template, Ref):
        return env[template.name]
    if isinstance(template, (tuple, list)):
        return type(template)(_substitute(t, env) for t in template)
    if isinstance(template, dict):
        return {k: _substitute(v, env) for k, v in template.items()}
    return template


def _refs(template) -> list[str]:
    """Names of the nodes a template refers to."""
    if isinstance(template, Ref):
        return [template.name]
    if isinstance(template, (tuple, list)):
        return [name for t in template for name in _refs(t)]
    if isinstance(template, dict):
        return [name for t in template.values() for name in _refs(t)]
    return []


class ConvertedCNN(nn.Module):
    """A CNN converted into a DI-Net by :func:`~dinet.convert.from_cnn`.

    Called as ``net(x, points)`` with ``x`` of shape ``(B, N, C_in)``, the input field's values
    on ``points`` (a :class:`~dinet.points.PointSet` of the CNN's spatial dimension). It
    returns what the CNN returns, with every spatial tensor as values on points: a field
    output is ``(B, N_out, C)`` on :meth:`output_points` ``(points)``, a flattened (or globally
    pooled) output is ``(B, C)``. On ``grid(input_shape)`` with the values in the grid's
    order (:func:`~dinet.points.image_to_values`), the output equals the CNN's output up to
    float rounding.

    Args:
        steps: the graph, in execution order (see :class:`Step`).
        layers: the converted modules, keyed by :attr:`Step.module`.
        input_name: name of the input node.
        output: the output template (a :class:`Ref` or a structure of them).
        levels: for every field node, the product of strides from the input to it.
        reference_sets: for every field node, its point set on the reference grid.
        input_shape: the spatial shape of the grid the CNN was built for.
        lattice: keep every node the input reaches through a DI layer on its reference
            grid, for any input points (see :func:`~dinet.convert.from_cnn`).

    Attributes:
        layers: ``nn.ModuleDict`` of the converted layers (their state dict holds the CNN's
            weights and statistics), keyed by fx node name.
        input_shape: as given.
        dim: spatial dimension.
        reference_points: ``dinet.points.grid(input_shape)``.
    """

    def __init__(self, steps: list[Step], layers: dict[str, nn.Module], input_name: str,
                 output, levels: dict[str, int], reference_sets: dict[str, PointSet],
                 input_shape: tuple[int, ...], lattice: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.steps = list(steps)
        self.input_name = input_name
        self.output = output
        self.levels = dict(levels)
        self.reference_sets = dict(reference_sets)
        self.input_shape = tuple(input_shape)
        self.dim = len(self.input_shape)
        self.reference_points = self.reference_sets[input_name]
        self._kinds = {input_name: "field", **{s.name: s.kind for s in self.steps}}
        # values that can be dropped after each step (their last use)
        keep = set(_refs(output))
        last_use: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            for name in _refs((step.args, step.kwargs)):
                last_use[name] = i
        self._release: list[list[str]] = [[] for _ in self.steps]
        for name, i in last_use.items():
            if name not in keep:
                self._release[i].append(name)
        self._point_cache = LRUCache(_POINT_SET_CACHE)
        self.lattice = bool(lattice)
        self._on_input = self._input_nodes()

    def _input_nodes(self) -> frozenset[str]:
        """The field nodes that live on the input's points with ``lattice=True``: the input
        and what pointwise steps compute from it alone (a DI layer moves onto the grid)."""
        on_input = {self.input_name}
        for step in self.steps:
            fields = [r for r in _refs((step.args, step.kwargs)) if self._kinds[r] == "field"]
            if step.kind != "field" or step.op == "layer" or not fields:
                continue
            mine = [r in on_input for r in fields]
            if all(mine):
                on_input.add(step.name)
            elif any(mine) and self.lattice:
                raise ValueError(
                    f"node {step.name!r} combines the input field with values computed on the "
                    "grid, which lattice=True cannot place on one point set — convert with "
                    "lattice=False")
        return frozenset(on_input)

    # --- point sets ---------------------------------------------------------------------
    def point_sets(self, points: PointSet) -> dict[str, PointSet]:
        """The point set of every field node when the input lives on ``points``.

        On the reference grid these are the CNN's pixel grids, recorded at conversion; on any
        other point set, ``points.coarsen(level)`` (``points`` itself at level 1) — or, with
        ``lattice=True``, ``points`` for the input and the CNN's grids for every node after a
        DI layer.
        """
        check_points(points, self.dim)
        return self._point_cache.get_or_build((points.digest, str(points.device)),
                                              lambda: self._point_sets(points))

    def _point_sets(self, points: PointSet) -> dict[str, PointSet]:
        if points == self.reference_points or self.lattice:
            sets = {name: points if name in self._on_input else p.to(points.device)
                    for name, p in self.reference_sets.items()}
        else:
            by_level: dict[int, PointSet] = {1: points}
            sets = {}
            for name, level in self.levels.items():
                if level not in by_level:
                    try:
                        by_level[level] = points.coarsen(level)
                    except ValueError as error:
                        raise ValueError(
                            f"node {name!r} is {level}x coarser than the input, which this "
                            f"{points.kind} point set cannot provide ({error}) — use the grid "
                            f"{self.input_shape} the CNN was built for, or a point set "
                            "without a grid shape (e.g. dinet.points.sobol)"
                        ) from error
                sets[name] = by_level[level]
        return sets

    def output_points(self, points: PointSet) -> PointSet:
        """The point set a field output lives on when the input lives on ``points``."""
        if not isinstance(self.output, Ref) or self._kinds[self.output.name] != "field":
            raise ValueError(
                "output_points needs a network whose output is a single field (B, N, C); "
                "this one returns a vector or several values"
            )
        return self.point_sets(points)[self.output.name]

    # --- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, points: PointSet):
        check_values(x, check_points(points, self.dim), name="x")
        sets = self.point_sets(points)
        env: dict[str, torch.Tensor] = {self.input_name: x}
        for step, release in zip(self.steps, self._release, strict=True):
            env[step.name] = self._run(step, env, sets)
            for name in release:
                env.pop(name, None)
        return self._result(self.output, env)

    def _run(self, step: Step, env: dict[str, torch.Tensor],
             sets: dict[str, PointSet]) -> torch.Tensor:
        if step.op == "call":
            return step.fn(*_substitute(step.args, env), **_substitute(step.kwargs, env))
        source = step.args[0].name
        x = env[source]
        if step.op == "layer":
            return self.layers[step.module](x, sets[source], sets[step.name])
        if step.op == "global":
            y = self.layers[step.module](x, sets[source])
            return y.unsqueeze(1) if step.kind == "pooled" else y
        if step.op == "module":
            module = self.layers[step.module]
            if step.channel_first and x.ndim == 3:
                return module(x.transpose(1, 2)).transpose(1, 2)
            return module(x)
        if step.op == "flatten":
            return x[:, 0] if self._kinds[source] == "pooled" else x
        raise RuntimeError(f"unknown step op {step.op!r}")  # pragma: no cover

    def _result(self, template, env: dict[str, torch.Tensor]):
        if isinstance(template, Ref):
            value = env[template.name]
            return value[:, 0] if self._kinds[template.name] == "pooled" else value
        if isinstance(template, (tuple, list)):
            return type(template)(self._result(t, env) for t in template)
        if isinstance(template, dict):
            return {k: self._result(v, env) for k, v in template.items()}
        return template

    def extra_repr(self) -> str:
        lattice = ", lattice=True" if self.lattice else ""
        return f"input_shape={self.input_shape}, steps={len(self.steps)}{lattice}"
