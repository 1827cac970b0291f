"""Complete fixed-size neighbour search between two point sets, returned as CSR.

The search is exact and never capped: an integral over a support needs every point in it.
Points are binned into cells about the size of the support's half-widths; each query point
scans the cells around its own, and candidates are filtered by the exact box (or ball) test.
Everything is vectorised in numpy, so 16k points take a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from .budget import check_stencil_budget, search_bytes_per_pair

__all__ = ["CellLayout", "Neighbors", "box_neighbors", "ball_neighbors"]


@dataclass(frozen=True)
class CellLayout:
    """Axis-aligned cells for neighbour search with support half-widths r.

    Cells are r wide on the leading axes and r/4 on the last one, numbered row-major. For a
    fixed leading cell, the last-axis cells covering [x − r, x + r] are then one contiguous
    run of the cell-sorted inputs: a query scans one range per leading column (3^(d−1) of
    them), each only ~2.25 r long. Sorting points by cell key also gives a spatially coherent
    order, which the sparse kernels use for cache locality. There are never more than 2^20
    cells per axis, so keys fit in int64 even for tiny supports.

    ``radius`` is the scan half-width: r padded by a hair, so that rounding in the cell
    arithmetic never drops a pair exactly on the support's edge (two points exactly r apart
    could otherwise land two cells apart). Exact membership tests still use r.
    """

    lo: np.ndarray
    cell: np.ndarray
    ncell: np.ndarray
    strides: np.ndarray
    radius: np.ndarray

    @classmethod
    def for_search(cls, x: np.ndarray, y: np.ndarray, radius: np.ndarray) -> CellLayout:
        lo = np.minimum(x.min(axis=0), y.min(axis=0))
        hi = np.maximum(x.max(axis=0), y.max(axis=0))
        return cls.from_bounds(lo, hi, max(float(np.abs(x).max()), float(np.abs(y).max())),
                               radius)

    @classmethod
    def from_bounds(cls, lo: np.ndarray, hi: np.ndarray, scale: float,
                    radius: np.ndarray) -> CellLayout:
        """The layout for points within ``[lo, hi]`` whose largest coordinate magnitude is
        ``scale`` (the search of points held elsewhere, e.g. on a GPU)."""
        lo = np.asarray(lo, dtype=np.float64)
        span = np.asarray(hi, dtype=np.float64) - lo
        radius = np.asarray(radius, dtype=np.float64) * (1.0 + 1e-6) + 1e-12 * scale
        cell = radius.copy()
        cell[-1] /= 4
        cell = np.maximum(cell, span / 2**20)
        ncell = np.floor(span / cell).astype(np.int64) + 1
        strides = np.cumprod(np.concatenate([[1], ncell[:0:-1]]))[::-1].astype(np.int64)
        return cls(lo, cell, ncell, strides, radius)

    def keys(self, coords: np.ndarray) -> np.ndarray:
        """Row-major cell number of every point, ``(N,)`` int64."""
        idx = np.minimum(np.floor((coords - self.lo) / self.cell).astype(np.int64), self.ncell - 1)
        return idx @ self.strides


@dataclass(frozen=True)
class Neighbors:
    """Neighbour lists in CSR form: output point ``i`` has inputs ``cols[indptr[i]:indptr[i+1]]``.

    Attributes:
        indptr: ``(N_out + 1,)`` int64 row pointers.
        cols: ``(P,)`` int64 input indices, grouped by output point.
        offsets: ``(P, d)`` float64 offsets y_j − x_i (input minus output position); a
            transposed view of a ``(d, P)`` array, so per-axis columns are contiguous.
    """

    indptr: np.ndarray
    cols: np.ndarray
    offsets: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        """The output index of every pair, ``(P,)`` int64."""
        return np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))

    def __len__(self) -> int:
        return len(self.cols)


def _as_f64(coords) -> np.ndarray:
    if hasattr(coords, "detach"):
        coords = coords.detach().cpu().double().numpy()
    return np.ascontiguousarray(coords, dtype=np.float64)


def _expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + l)`` for every (s, l), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def _neighbors(x_out, y_in, half_widths, metric: str) -> Neighbors:
    x = _as_f64(x_out)
    y = _as_f64(y_in)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"point sets must be (N, d) with the same d; got {x.shape} and {y.shape}"
        )
    d = x.shape[1]
    r = np.broadcast_to(np.asarray(half_widths, dtype=np.float64), (d,)).copy()
    if not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"support half-widths must be positive and finite; got {r.tolist()}")
    check_stencil_budget(f"{metric} neighbour search", x, y, r, search_bytes_per_pair(d),
                         64.0 * (len(x) + len(y)), hint="pass smaller half-widths")
    cells = CellLayout.for_search(x, y, r)
    r_scan = cells.radius
    lo, cell, ncell, strides = cells.lo, cells.cell, cells.ncell, cells.strides
    key_y = cells.keys(y)
    order = np.argsort(key_y, kind="stable")
    y_sorted = [np.ascontiguousarray(y[order, k]) for k in range(d)]
    total_cells = int(np.prod(ncell))
    if total_cells <= max(8 * len(y), 1 << 16):  # a dense table of cell starts
        first = np.zeros(total_cells + 1, dtype=np.int64)
        np.cumsum(np.bincount(key_y, minlength=total_cells), out=first[1:])

        def locate(keys, side):
            return first[keys + (side == "right")]
    else:
        sorted_keys = key_y[order]

        def locate(keys, side):
            return np.searchsorted(sorted_keys, keys, side=side)

    lead_x = np.minimum(np.floor((x[:, :-1] - lo[:-1]) / cell[:-1]).astype(np.int64),
                        ncell[:-1] - 1)
    last_lo = np.floor((x[:, -1] - r_scan[-1] - lo[-1]) / cell[-1]).astype(np.int64)
    last_hi = np.floor((x[:, -1] + r_scan[-1] - lo[-1]) / cell[-1]).astype(np.int64)
    last_lo = np.clip(last_lo, 0, ncell[-1] - 1)
    last_hi = np.clip(last_hi, 0, ncell[-1] - 1)
    shifts = np.array(list(product((-1, 0, 1), repeat=d - 1)), dtype=np.int64)
    lead = lead_x[:, None, :] + shifts[None, :, :]  # (N_out, 3^(d-1), d-1)
    valid = np.all((lead >= 0) & (lead < ncell[:-1]), axis=2).reshape(-1)
    lead_key = np.where(valid, (lead @ strides[:-1]).reshape(-1), 0)
    per_col = len(shifts)
    starts = locate(lead_key + np.repeat(last_lo, per_col), "left")
    lengths = locate(lead_key + np.repeat(last_hi, per_col), "right") - starts
    lengths[~valid] = 0
    cand = _expand_ranges(starts, lengths)  # indices into the cell-sorted inputs
    rows = np.repeat(np.arange(len(x)), lengths.reshape(len(x), -1).sum(axis=1))

    # Exact test, one axis at a time (1-D gathers are much faster than row gathers).
    offsets = np.empty((d, len(cand)))
    keep = np.ones(len(cand), dtype=bool)
    norm = np.zeros(len(cand)) if metric == "ball" else None
    for k in range(d):
        np.subtract(y_sorted[k][cand], np.ascontiguousarray(x[:, k])[rows], out=offsets[k])
        scaled = np.abs(offsets[k]) / r[k]
        if norm is None:
            keep &= scaled <= 1.0
        else:
            norm += scaled * scaled
    if norm is not None:
        keep = norm <= 1.0
    rows, cand = rows[keep], order[cand[keep]]
    offsets = offsets[:, keep].T  # (P, d), a view of per-axis rows
    indptr = np.zeros(len(x) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(x)), out=indptr[1:])
    return Neighbors(indptr=indptr, cols=cand.astype(np.int64), offsets=offsets)


def box_neighbors(x_out, y_in, half_widths) -> Neighbors:
    """All pairs (i, j) with |y_j − x_i|_k ≤ r_k on every axis k (a box support).

    Args:
        x_out: ``(N_out, d)`` query (output) coordinates.
        y_in: ``(N_in, d)`` input coordinates.
        half_widths: r, a float or one value per axis, in domain units.
    """
    return _neighbors(x_out, y_in, half_widths, "box")


def ball_neighbors(x_out, y_in, radius) -> Neighbors:
    """All pairs (i, j) with Σ_k ((y_j − x_i)_k / r_k)^2 ≤ 1 (a ball, or an ellipsoid)."""
    return _neighbors(x_out, y_in, radius, "ball")
