"""Neighbour search between point sets and the cached sparse stencils built on it."""

from .cache import StencilCache, stencil_cache
from .search import Neighbors, ball_neighbors, box_neighbors
from .stencil import Stencil

__all__ = [
    "Neighbors",
    "Stencil",
    "StencilCache",
    "ball_neighbors",
    "box_neighbors",
    "stencil_cache",
]
