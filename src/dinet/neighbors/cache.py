"""The process-wide cache of precomputed stencils, keyed by point-set hashes and geometry."""

from __future__ import annotations

from .._cache import LRUCache

__all__ = ["StencilCache", "stencil_cache"]


class StencilCache(LRUCache):
    """The :class:`~dinet._cache.LRUCache` of stencils and grid plans.

    Stencils depend only on the point sets and the layer geometry, never on the batch or the
    weights, so one build serves every forward and backward pass on the same points.
    ``clear()`` empties every precomputation the layers keep (sparse stencils, pair stencils,
    grid fast-path plans).
    """


#: The process-wide cache every DI layer uses.
stencil_cache = StencilCache()
