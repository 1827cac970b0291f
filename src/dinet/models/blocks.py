"""Building blocks the model presets share: conv-norm-activation, residual blocks, heads,
the linear-interpolant stem's grid, and the preset check."""

from __future__ import annotations

import math

from torch import nn

from ..nn import DIBatchNorm, DIConv, DISequential, Residual
from ..points import PointSet, grid

__all__ = ["check_preset", "check_stem_quadrature", "conv_block", "interpolant_grid", "mlp_head",
           "residual_block"]

STEM_QUADRATURES = ("weights", "linear")


def check_stem_quadrature(value: str, valid: tuple[str, ...] = STEM_QUADRATURES) -> str:
    if value not in valid:
        raise ValueError(f"unknown stem_quadrature {value!r}; valid: "
                         f"{', '.join(map(repr, valid))}")
    return value


#: How many times finer than its lattice a stem's interpolant grid may be (dinet-res: 3).
MAX_REFINE = 33


def interpolant_grid(side: int, lattice_spacing: float, stem_spacing: float) -> PointSet:
    """The grid a ``stem_quadrature="linear"`` stem reads the points' interpolant on: the
    finest grid of pixel centres that holds the ``side × side`` lattice's nodes (an odd
    refinement of it) with a step no coarser than the stem kernel's (48×48 for a 16×16
    lattice and a stem half its spacing)."""
    refine = math.ceil(lattice_spacing / stem_spacing - 1e-9)
    refine += 1 - refine % 2
    if refine > MAX_REFINE:
        raise ValueError(f"a stem spacing of {stem_spacing:g} is {refine}× finer than the "
                         f"lattice's {lattice_spacing:g}: its interpolant grid would have "
                         f"{(side * refine) ** 2:,} nodes — use a stem at most {MAX_REFINE}× "
                         "finer than the lattice")
    return grid((side * refine, side * refine))


def check_preset(preset, valid: tuple[str, ...], owner: str) -> str:
    if preset not in valid:
        raise ValueError(
            f"unknown {owner} preset {preset!r}; valid: {', '.join(map(repr, valid))}"
        )
    return preset


def conv_block(c_in: int, c_out: int, spacing: float, *, dim: int = 2, stride: int = 1,
               kernel_size: int = 3, relu: bool = True, kernel: str = "spline") -> DISequential:
    """DIConv → DIBatchNorm (→ ReLU)."""
    layers: list[nn.Module] = [
        DIConv(c_in, c_out, kernel_size, spacing=spacing, dim=dim, stride=stride, bias=False,
               kernel=kernel),
        DIBatchNorm(c_out),
    ]
    if relu:
        layers.append(nn.ReLU())
    return DISequential(*layers)


def residual_block(c_in: int, c_out: int, spacing: float, stride: int = 1,
                   kernel: str = "spline") -> DISequential:
    """conv-norm-ReLU-conv-norm + identity (a 1×1 stride-``stride`` DIConv shortcut when the
    channels or points change), then ReLU. ``spacing`` is the output level's spacing."""
    body = DISequential(
        conv_block(c_in, c_out, spacing, stride=stride, kernel=kernel),
        conv_block(c_out, c_out, spacing, relu=False, kernel=kernel),
    )
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = DISequential(
            DIConv(c_in, c_out, 1, spacing=spacing / stride, stride=stride, bias=False),
            DIBatchNorm(c_out),
        )
    return DISequential(Residual(body, shortcut), nn.ReLU())


def mlp_head(c_in: int, hidden: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
