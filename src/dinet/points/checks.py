"""Argument checks and seeding shared by the point-set generators and samplers.

Internal helpers (not part of :mod:`dinet.points`' API): each returns the checked value as a
plain Python number or tuple, or raises a ValueError naming the argument.
"""

from __future__ import annotations

import math

import numpy as np

__all__: list[str] = []


def check_count(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer; got {n!r}")
    return int(n)


def check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer (2 or 3 for images/volumes); got {dim!r}")
    return int(dim)


def check_space_dim(dim) -> int:
    dim = check_dim(dim)
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 (images) or 3 (volumes) for this generator; got {dim}")
    return dim


def check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = tuple(shape)
    if not shape or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape
    ):
        raise ValueError(f"grid shape must be a tuple of positive integers; got {shape!r}")
    return tuple(int(s) for s in shape)


def check_real(value, name: str, unit: bool = False) -> float:
    """A finite positive number, or one in [0, 1] when ``unit``; else a ValueError."""
    want = "lie in [0, 1]" if unit else "be a positive finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must {want}; got {value!r}")
    value = float(value)
    if not (0.0 <= value <= 1.0 if unit else math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must {want}; got {value!r}")
    return value


def seed_int(seed) -> int:
    """A concrete integer seed; ``None`` draws a fresh one from the OS."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    return int(seed)
