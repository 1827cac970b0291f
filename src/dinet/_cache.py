"""One least-recently-used cache for every precomputation dinet keeps (a leaf module: it
imports nothing of dinet, so any package may use it)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["LRUCache"]


class LRUCache:
    """A thread-safe least-recently-used cache with hit and miss counters: the one cache
    dinet keeps its precomputations in (stencils, grid plans, Voronoi weights, unweighted
    point sets, converted networks' point sets, sampled field values).

    Args:
        maxsize: how many entries to keep; the least recently used is dropped beyond it.
    """

    def __init__(self, maxsize: int = 64) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0; got {maxsize}")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The cached value for ``key``, calling ``build()`` (and storing it) on a miss."""
        with self._lock:
            if key in self._entries:
                self.hits += 1
                self._entries.move_to_end(key)
                return self._entries[key]
            self.misses += 1
        value = build()
        with self._lock:
            if self.maxsize > 0:
                self._entries[key] = value
                self._entries.move_to_end(key)
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
        return value

    def __getstate__(self) -> dict:
        # A copy or a pickle starts empty: entries are derived data (and a lock cannot be
        # copied), so an object holding a cache stays copyable.
        return {"maxsize": self.maxsize}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["maxsize"])

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.hits = 0
            self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def info(self) -> dict[str, int]:
        """``{"hits", "misses", "size", "maxsize"}``."""
        return {"hits": self.hits, "misses": self.misses, "size": len(self),
                "maxsize": self.maxsize}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(hits={self.hits}, misses={self.misses}, "
                f"size={len(self)}/{self.maxsize})")
