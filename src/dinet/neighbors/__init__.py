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

__all__ = [
    "Neighbors",
    "Stencil",
    "StencilCache",
    "StencilTooLarge",
    "ball_neighbors",
    "box_neighbors",
    "check_stencil_budget",
    "expected_pairs",
    "memory_budget",
    "set_memory_budget",
    "stencil_cache",
]
