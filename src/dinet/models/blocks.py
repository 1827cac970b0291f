"""Building blocks the model presets share: conv-norm-activation, residual blocks, heads,
and the preset check."""

from __future__ import annotations

from torch import nn

from ..nn import DIBatchNorm, DIConv, DISequential, Residual

__all__ = ["check_preset", "conv_block", "mlp_head", "residual_block"]


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
