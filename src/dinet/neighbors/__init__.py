"""Neighbour search between point sets and the cached sparse stencils built on it."""

from .budget import (
    StencilTooLarge,
    check_stencil_budget,
    expected_pairs,
    memory_budget,
    set_memory_budget,
)
from .cache import StencilCache, stencil_cache
from .search import Neighbors, ball_neighbors, box_neighbors
from .stencil import Stencil
from .stencils import PairStencil, check_kernel_scale, pair_stencil, spline_stencil

__all__ = [
    "Neighbors",
    "PairStencil",
    "Stencil",
    "StencilCache",
    "StencilTooLarge",
    "ball_neighbors",
    "box_neighbors",
    "check_kernel_scale",
    "check_stencil_budget",
    "expected_pairs",
    "memory_budget",
    "pair_stencil",
    "set_memory_budget",
    "spline_stencil",
    "stencil_cache",
]
