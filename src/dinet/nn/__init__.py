"""Discretization-invariant layers: ``torch.nn.Module``s acting on ``(values, PointSet)``."""

from .conv import DIConv
from .functional import reference_conv, stencil_conv

__all__ = ["DIConv", "reference_conv", "stencil_conv"]
