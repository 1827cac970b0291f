"""A cheap estimate of a stencil's size, checked against the memory budget before building it.

A support that is large compared with the point spacing makes every output point see most of
the inputs: a stencil on a million points could then need terabytes, and the build would run
the machine out of memory long before it finished. Every stencil builder calls
:func:`check_stencil_budget` first; it costs one min/max pass over the coordinates (no
neighbour search) and refuses with :class:`StencilTooLarge`, a ``ValueError`` whose message
gives the estimate, the budget and what to change.

The expected number of neighbour pairs assumes the input points spread evenly over their
bounding box, and the output points over theirs: per axis k, an output point's box of
half-width r_k covers on average a fraction ``(2 r − r² / e) / e`` of the inputs' extent e
(the box clipped to the extent, averaged over positions; 1 once r ≥ e). For uniform point
sets this is the expectation of the true count, within a few per cent (tests hold it to
that); strongly clustered sets can exceed it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _memory

__all__ = [
    "StencilTooLarge",
    "check_stencil_budget",
    "expected_pairs",
    "lattice_aligned",
    "memory_budget",
    "set_memory_budget",
    "spline_taps_per_pair",
]

memory_budget = _memory.memory_budget
set_memory_budget = _memory.set_memory_budget

# Bytes per neighbour pair that the search itself holds at its peak: for every candidate (about
# 1.7x the pairs in 2-D, 2.5x in 3-D) an index, a row, the offsets and a mask, then the kept
# pairs' columns and offsets.
_SEARCH_BYTES_PER_CANDIDATE = 25
_CANDIDATES_PER_PAIR = {1: 1.2, 2: 1.7, 3: 2.5}


class StencilTooLarge(ValueError):
    """A stencil's estimated memory exceeds the budget (see :mod:`dinet._memory`).

    Attributes:
        estimate: the estimated bytes.
        budget: the budget in bytes.
    """

    def __init__(self, message: str, estimate: float, budget: int) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.budget = budget


def _bounds(coords) -> tuple[np.ndarray, np.ndarray, int]:
    if hasattr(coords, "detach"):  # a torch tensor: reduce it where it lives
        coords = coords.detach()
        if coords.shape[0] == 0:
            return np.zeros(coords.shape[1]), np.zeros(coords.shape[1]), 0
        lo, hi = torch.aminmax(coords, dim=0)  # one pass; 4x faster than amin and amax
        return (lo.double().cpu().numpy(), hi.double().cpu().numpy(), int(coords.shape[0]))
    coords = np.asarray(coords)
    if coords.shape[0] == 0:
        return np.zeros(coords.shape[1]), np.zeros(coords.shape[1]), 0
    return (coords.min(axis=0).astype(np.float64), coords.max(axis=0).astype(np.float64),
            int(coords.shape[0]))


def expected_pairs(out_coords, in_coords, half_widths) -> float:
    """Expected number of pairs (i, j) with |y_j − x_i|_k ≤ r_k, from bounding boxes only.

    Args:
        out_coords: ``(N_out, d)`` array or tensor; the same object as ``in_coords`` for a
            stencil from a point set to itself (each point then counts itself).
        in_coords: ``(N_in, d)`` array or tensor.
        half_widths: r, a float or one per axis.
    """
    in_lo, in_hi, n_in = _bounds(in_coords)
    out_lo, out_hi, n_out = (in_lo, in_hi, n_in) if out_coords is in_coords else _bounds(
        out_coords)
    d = len(in_lo)
    r = np.broadcast_to(np.asarray(half_widths, dtype=np.float64), (d,))
    fraction = 1.0
    for k in range(d):
        # Inputs a box around an output point reaches (the box clipped to their extent).
        extent = in_hi[k] - in_lo[k]
        if extent > 0 and r[k] < extent:
            fraction *= (2.0 * r[k] - r[k] * r[k] / extent) / extent
        # Outputs within reach of the inputs at all.
        out_extent = out_hi[k] - out_lo[k]
        reach = min(out_hi[k], in_hi[k] + r[k]) - max(out_lo[k], in_lo[k] - r[k])
        if reach < 0:
            return 0.0
        if out_extent > 0:
            fraction *= min(1.0, reach / out_extent)
    fraction = min(fraction, 1.0)
    if out_coords is in_coords:  # every point is its own neighbour, whatever the support
        return float(n_out) * (1.0 + (n_in - 1.0) * fraction)
    return float(n_out) * float(n_in) * fraction


def spline_taps_per_pair(kernel_size, dilation, aligned=None) -> float:
    """Average number of linear hats a pair in the support touches: per axis, k hats of
    half-width h cover 2kh of the support's width ((k − 1)·dilation + 2)·h.

    ``aligned[k]`` marks an axis on which both point sets are lattices whose offsets are
    whole multiples of h: there a point sits on a hat's node or edge, so it touches one hat
    (or none) instead of two, which halves the count.
    """
    taps = 1.0
    aligned = (False,) * len(kernel_size) if aligned is None else aligned
    for k, dil, exact in zip(kernel_size, dilation, aligned, strict=True):
        taps *= min(2.0, 2.0 * k / ((k - 1) * dil + 2.0)) * (0.5 if exact else 1.0)
    return taps


def lattice_aligned(points_in, points_out, spacing) -> tuple[bool, ...]:
    """Per axis: are both point sets lattices (``shape`` set) whose spacings and relative
    shift are whole multiples of ``spacing`` (within rounding)?"""
    d = points_in.dim
    if points_in.shape is None or points_out.shape is None:
        return (False,) * d
    in_lo, in_hi, _ = _bounds(points_in.coords)
    out_lo, out_hi, _ = _bounds(points_out.coords)
    out = []
    for k in range(d):
        h = float(spacing[k])
        steps = []
        for lo, hi, size in ((in_lo[k], in_hi[k], points_in.shape[k]),
                             (out_lo[k], out_hi[k], points_out.shape[k])):
            if size > 1:
                steps.append((hi - lo) / (size - 1) / h)
        steps.append((out_lo[k] - in_lo[k]) / h)
        out.append(all(abs(q - round(q)) < 1e-4 for q in steps)
                   and all(round(q) >= 1 for q in steps[:-1]))
    return tuple(out)


def search_bytes_per_pair(dim: int) -> float:
    """Peak bytes per kept pair of :func:`~dinet.neighbors.box_neighbors` (candidates
    included) plus the result it returns (a column and the offsets)."""
    candidates = _CANDIDATES_PER_PAIR.get(dim, 1.0 + 0.5 * dim)
    return candidates * (_SEARCH_BYTES_PER_CANDIDATE + 8 * dim) + 8 + 8 * dim


def check_stencil_budget(
    what: str,
    out_coords,
    in_coords,
    half_widths,
    bytes_per_pair: float,
    fixed_bytes: float = 0.0,
    *,
    entries_per_pair: float = 1.0,
    hint: str = "smaller half-widths",
) -> float:
    """Refuse a stencil whose estimated memory exceeds the budget; return the estimate.

    The estimate is ``expected_pairs × bytes_per_pair + fixed_bytes``.

    Args:
        what: the structure, for the message (e.g. ``"DIConv spline stencil"``).
        out_coords, in_coords, half_widths: as :func:`expected_pairs`.
        bytes_per_pair: bytes the build and the finished structure hold per neighbour pair.
        fixed_bytes: bytes that do not scale with the pairs (row pointers, per-point arrays).
        entries_per_pair: sparse non-zeros per pair, for the message.
        hint: how to make the support smaller, for the message.

    Raises:
        StencilTooLarge: a ``ValueError`` naming the estimate, the budget and the remedies.
    """
    pairs = expected_pairs(out_coords, in_coords, half_widths)
    estimate = pairs * bytes_per_pair + fixed_bytes
    budget, source = _memory.memory_budget()
    if budget is None or estimate <= budget:
        return estimate
    n_out, n_in, d = len(out_coords), len(in_coords), int(in_coords.shape[1])
    r = tuple(round(float(v), 6) for v in np.broadcast_to(half_widths, (d,)))
    shrink = ""
    room = budget - fixed_bytes
    if room > 0 and pairs > 0:
        factor = (pairs * bytes_per_pair / room) ** (1.0 / d)
        shrink = f" (about {math.ceil(factor * 10) / 10:g}x smaller per axis would fit)"
    gib = 1024.0**3
    raise StencilTooLarge(
        f"{what} from {n_in} to {n_out} points with support half-widths {r} would need "
        f"about {estimate / gib:.3g} GiB ({pairs * entries_per_pair:.3g} entries: each "
        f"output point sees ~{pairs / max(n_out, 1):.3g} of the {n_in} input points), over the "
        f"memory budget of {budget / gib:.3g} GiB ({source}). Use a smaller support{shrink} — "
        f"{hint} — or fewer points; or raise the budget with "
        f"dinet.neighbors.set_memory_budget('64GiB') or the environment variable "
        f"{_memory.ENV_VAR}=64GiB ('none' for no limit).",
        estimate,
        budget,
    )
