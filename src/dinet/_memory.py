"""How much memory there is, and how much of it one precomputed structure may take.

The memory budget bounds what a single stencil build may allocate (see
:mod:`dinet.neighbors.budget`). It is, in order of precedence:

1. what :func:`set_memory_budget` set (bytes, a size string such as ``"8GiB"``, or ``None``
   for no limit);
2. the environment variable ``DINET_MEMORY_BUDGET`` (bytes, or a size with a suffix ``KiB``,
   ``MiB``, ``GiB``, ``TiB``, ``KB``, ``MB``, ``GB``, ``TB``; ``none`` for no limit);
3. half of the memory available right now (``MemAvailable`` in ``/proc/meminfo`` on Linux,
   else ``psutil`` if installed, else no limit).
"""

from __future__ import annotations

import os
import re

__all__ = [
    "DEFAULT_FRACTION",
    "ENV_VAR",
    "available_memory",
    "format_bytes",
    "memory_budget",
    "parse_size",
    "set_memory_budget",
]

#: Environment variable that sets the budget (bytes or a size with a unit; "none": no limit).
ENV_VAR = "DINET_MEMORY_BUDGET"
#: Fraction of the available memory one stencil build may take by default.
DEFAULT_FRACTION = 0.5

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
_NO_LIMIT = ("none", "off", "unlimited", "inf")
_AUTO = "auto"
_override: int | None | str = _AUTO


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _psutil_available() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - any failure means "unknown"
        return None


def available_memory(fallback_total: bool = True) -> int | None:
    """Bytes of memory available to new allocations.

    ``MemAvailable`` from ``/proc/meminfo`` (Linux), else ``psutil``; where neither exists,
    the machine's total RAM when ``fallback_total`` (``None`` if even that is unknown),
    else ``None``.
    """
    found = _meminfo_available()
    if found is None:
        found = _psutil_available()
    if found is None and fallback_total:
        try:
            found = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            found = None
    return found


def parse_size(value, name: str = "memory budget") -> int | None:
    """Bytes from an int, a float or a string like ``"12GiB"``, ``"512 MB"``, ``"3e9"``;
    ``None`` (no limit) for ``None`` or the strings none/off/unlimited/inf."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number of bytes or a size like '8GiB'; got {value!r}")
    if isinstance(value, (int, float)):
        if not value > 0 or value != value:
            raise ValueError(f"{name} must be positive; got {value!r} — pass None for no limit")
        return None if value == float("inf") else int(value)
    text = str(value).strip().lower()
    if text in _NO_LIMIT:
        return None
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)", text)
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(
            f"{name} {value!r} is not a size: write bytes (e.g. 8000000000) or a number with a "
            "unit KiB/MiB/GiB/TiB or KB/MB/GB/TB (e.g. 8GiB), or 'none' for no limit"
        )
    size = float(match.group(1)) * _UNITS[match.group(2)]
    if not size > 0:
        raise ValueError(f"{name} must be positive; got {value!r} — use 'none' for no limit")
    return int(size)


def set_memory_budget(budget="auto"):
    """Set the memory one stencil build may take; returns the previous setting.

    Args:
        budget: bytes (int), a size string (``"8GiB"``), ``None`` for no limit, or ``"auto"``
            to go back to the default (``DINET_MEMORY_BUDGET`` if set, else half of the
            available memory).

    Returns:
        The previous setting, which passed back restores it.
    """
    global _override
    previous = _override
    if isinstance(budget, str) and budget.strip().lower() == _AUTO:
        _override = _AUTO
    else:
        _override = parse_size(budget)
    return previous


def memory_budget() -> tuple[int | None, str]:
    """``(bytes or None for no limit, where the number comes from)``, read now."""
    if _override != _AUTO:
        source = "set by dinet.neighbors.set_memory_budget"
        return _override, source  # type: ignore[return-value]
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return parse_size(env, f"{ENV_VAR}"), f"{ENV_VAR}={env}"
    available = available_memory(fallback_total=False)
    if available is None:
        return None, "no limit: the available memory is unknown"
    return (int(DEFAULT_FRACTION * available),
            f"{DEFAULT_FRACTION:.0%} of the {format_bytes(available)} available now")


def format_bytes(n: float) -> str:
    """``"1.5 GiB"``-style text for a byte count."""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"
