"""What every DI layer shares: the call convention and the checks on its inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..points import PointSet

__all__ = ["DIModule", "check_dtype", "check_points", "check_values", "per_axis",
           "upcast_on_cpu"]


def check_points(points, dim: int | None = None, name: str = "points") -> PointSet:
    """``points`` must be a :class:`PointSet` (of dimension ``dim`` when given)."""
    if not isinstance(points, PointSet):
        raise ValueError(f"{name} must be a dinet.points.PointSet; got {type(points).__name__}")
    if dim is not None and points.dim != dim:
        raise ValueError(f"{name} is {points.dim}-D but this layer was built with dim={dim}")
    return points


def check_values(x: torch.Tensor, points: PointSet, channels: int | None = None,
                 name: str = "x", module: nn.Module | None = None) -> torch.Tensor:
    """``x`` must be ``(B, N, C)`` with N = len(points) (and C = ``channels`` when given),
    of a floating dtype the layer computes in.

    Dtypes, alike in every layer: integer values are refused (say ``x.float()``); float16 and
    bfloat16 values are taken (on the CPU, whose sparse kernels lack them, a layer computes in
    float32 and returns the input's dtype: see :func:`upcast_on_cpu`); float32 values into a
    float64 layer (``module``'s parameters) or the other way round are refused rather than
    silently promoted, as torch's own layers do."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{name} must have shape (B, N, C); got {shape} — add a batch dimension with "
            f"{name}.unsqueeze(0), or move channels last"
        )
    if x.shape[1] != len(points):
        raise ValueError(
            f"{name} has N={x.shape[1]} points but its point set has {len(points)} — sample the "
            "field on the same point set you pass"
        )
    if channels is not None and x.shape[2] != channels:
        raise ValueError(f"{name} has C={x.shape[2]} channels but this layer expects {channels}")
    return check_dtype(x, name, module)


def check_dtype(x: torch.Tensor, name: str = "x", module: nn.Module | None = None
                ) -> torch.Tensor:
    """The dtype part of :func:`check_values`."""
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} holds {x.dtype} values; DI layers integrate floating-point "
                         f"values — pass {name}.float()")
    param = next(module.parameters(), None) if module is not None else None
    full = (torch.float32, torch.float64)
    if param is not None and x.dtype != param.dtype and x.dtype in full and param.dtype in full:
        raise ValueError(f"{name} holds {x.dtype} values but the layer's parameters are "
                         f"{param.dtype} — convert one: layer.to({x.dtype}) or "
                         f"{name}.to({param.dtype})")
    return x


def upcast_on_cpu(x: torch.Tensor) -> bool:
    """Whether ``x`` is float16/bfloat16 on the CPU, where the sparse kernels (torch's CSR
    matmul, the compiled ones) do not take it: layers then compute in float32 and return
    ``x``'s dtype."""
    return (isinstance(x, torch.Tensor) and x.device.type == "cpu"
            and x.dtype in (torch.float16, torch.bfloat16))


def per_axis(value, dim: int, name: str, kind=float) -> tuple:
    """One positive, finite value per axis from a scalar or a sequence (``kind`` int or
    float), or a ValueError that names the value and the fix."""
    values = tuple(value) if isinstance(value, (Sequence, np.ndarray, torch.Tensor)) else (value,)
    if len(values) == 1:
        values = values * dim
    if len(values) != dim:
        raise ValueError(f"{name} needs 1 or {dim} values (one per axis); got {len(values)}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be numbers; got {value!r}")
        if kind is int and int(v) != v:
            raise ValueError(f"{name} must be integers; got {value!r}")
        if not math.isfinite(float(v)) or v <= 0:
            raise ValueError(
                f"{name} must be positive and finite; got {value!r} — "
                + ("spacing is the kernel lattice step in domain units, e.g. 2/H for an H-pixel "
                   "image" if name == "spacing" else f"use {name}=1 or more")
            )
        out.append(kind(v))
    return tuple(out)


class DIModule(nn.Module):
    """Base class of layers called as ``layer(x, points_in, points_out=None)``.

    ``x`` is ``(B, N_in, C)`` on ``points_in``; the result lives on ``points_out``, which
    defaults to :meth:`output_points` of ``points_in`` (the input set itself unless the layer
    coarsens). :class:`~dinet.nn.DISequential` uses :meth:`output_points` to pass point sets
    along a chain.
    """

    def output_points(self, points_in: PointSet) -> PointSet:
        """The point set the output lives on when the caller does not name one."""
        return points_in
