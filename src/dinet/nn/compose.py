"""Composing DI layers without mutation: chains, residual blocks, skips, coarser levels.

A *chain* module maps ``(x, points) → (x, points)``, carrying the point set along as
layers coarsen it. Inside a chain, each child is applied by kind:

- a chain module (:class:`DISequential`, :class:`Residual`, :class:`SkipConcat`,
  :class:`Coarsened`): ``x, points = child(x, points)``;
- a DI layer (:class:`~dinet.nn.base.DIModule`): ``x = child(x, points, points_out)`` with
  ``points_out = child.output_points(points)`` (a ``stride=2`` conv or pool coarsens);
- any other module acts on the channel axis alone: ``x = child(x)`` (``nn.GELU``,
  ``nn.Dropout``, ``nn.Linear``, ``nn.LayerNorm(C)``, …).

A U-Net level is then a skip around a coarser level::

    h = 2 / 32
    level = SkipConcat(Coarsened(
        DISequential(DIConv(16, 16, 3, spacing=2 * h), nn.GELU()),
        stride=2, upsample=Resample("linear", support=4 * h)))
"""

from __future__ import annotations

import torch
from torch import nn

from ..points import PointSet
from .base import DIModule, check_points
from .resample import Resample

__all__ = ["DIChain", "DISequential", "Residual", "SkipConcat", "Coarsened", "apply_module"]


class DIChain(nn.Module):
    """Base class of modules called as ``module(x, points) → (x, points)``."""


def apply_module(module: nn.Module, x: torch.Tensor,
                 points: PointSet) -> tuple[torch.Tensor, PointSet]:
    """Apply one child of a chain according to its kind (see the module docstring)."""
    if isinstance(module, DIChain):
        return module(x, points)
    if isinstance(module, DIModule):
        points_out = module.output_points(points)
        return module(x, points, points_out), points_out
    return module(x), points


class DISequential(DIChain):
    """Layers applied in order, the point set passed along.

    Shapes:
        - x: ``(B, N_in, C_in)``, points: ``PointSet(N_in)``
        - output: ``(y, points_out)``; y is ``(B, N_out, C_out)``, or ``(B, C)`` after a
          global pool.
    """

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor, points: PointSet) -> tuple[torch.Tensor, PointSet]:
        check_points(points)
        for module in self.layers:
            x, points = apply_module(module, x, points)
        return x, points

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> nn.Module:
        return self.layers[index]


class Residual(DIChain):
    """``x + F(x)``, or ``shortcut(x) + F(x)`` when F changes the channels or points.

    The input tensor is never modified. ``shortcut`` is applied like a chain child and must
    land on the same point set as ``body`` (e.g. a ``stride=2`` 1×1 ``DIConv``).

    Args:
        body: F, any chain child.
        shortcut: optional projection for the identity path.
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor, points: PointSet) -> tuple[torch.Tensor, PointSet]:
        y, points_out = apply_module(self.body, x, points)
        if self.shortcut is None:
            identity, identity_points = x, points
        else:
            identity, identity_points = apply_module(self.shortcut, x, points)
        if identity_points != points_out or identity.shape != y.shape:
            raise ValueError(
                f"Residual: the body maps {tuple(x.shape)} on {points} to {tuple(y.shape)} on "
                f"{points_out}, but the identity path gives {tuple(identity.shape)} on "
                f"{identity_points} — pass a shortcut= that matches (e.g. a 1x1 DIConv with "
                "the body's stride)"
            )
        return identity + y, points_out


class SkipConcat(DIChain):
    """``cat([x, F(x)], channels)``: a skip connection for U-Nets. F must return to the
    input's point set (wrap a coarser level in :class:`Coarsened`)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor, points: PointSet) -> tuple[torch.Tensor, PointSet]:
        y, points_out = apply_module(self.body, x, points)
        if points_out != points:
            raise ValueError(
                f"SkipConcat: the body ends on {points_out}, not on the input's {points} — "
                "wrap a coarsening body in Coarsened(..., upsample=...)"
            )
        return torch.cat([x, y], dim=-1), points


class Coarsened(DIChain):
    """Run ``body`` on a coarser level and resample its output back to the input points.

    Downsampling takes a prefix — ``points.coarsen(stride)`` and its first values, exact and
    free; upsampling uses ``upsample``, a :class:`Resample` (default inverse-distance
    weighting over 4 neighbours).

    Args:
        body: any chain child, run on the coarser level.
        stride: coarsening factor per axis (see :meth:`PointSet.coarsen`). Default 2.
        upsample: how to return to the input points.
        dim: spatial dimension, for the default ``upsample``. Default 2.
    """

    def __init__(self, body: nn.Module, stride: int = 2, upsample: Resample | None = None,
                 dim: int = 2) -> None:
        super().__init__()
        self.body = body
        self.stride = stride
        self.upsample = upsample if upsample is not None else Resample("idw", dim=dim)

    def forward(self, x: torch.Tensor, points: PointSet) -> tuple[torch.Tensor, PointSet]:
        coarse = check_points(points).coarsen(self.stride)
        y, points_body = apply_module(self.body, x[:, : len(coarse)], coarse)
        return self.upsample(y, points_body, points), points

    def extra_repr(self) -> str:
        return f"stride={self.stride}"
