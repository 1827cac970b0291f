"""Compiled CPU kernels (numba): spline stencil construction and sparse-dense products.

These are fast paths. Each has a pure numpy/torch counterpart that stays the reference and
the fallback (when numba is missing or ``DINET_DISABLE_NUMBA=1``), and tests hold the two
equal. Kernels are compiled on first use and cached on disk by numba.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch

__all__ = ["AVAILABLE", "sddmm_add", "segment_max", "spline_stencil_csr", "spmm"]

try:  # pragma: no cover - exercised by whichever branch the machine has
    if os.environ.get("DINET_DISABLE_NUMBA", "") not in ("", "0"):
        raise ImportError("disabled by DINET_DISABLE_NUMBA")
    import numba
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover
    AVAILABLE = False


if AVAILABLE:

    @njit(cache=True, inline="always")
    def _axis_taps(off, h, dil, size, tol, out_taps, out_vals, k):
        """The two nearest hat centres on one axis and the hat values there (the formulas of
        ``dinet.neighbors.stencils._axis_hats``, so both paths agree to rounding)."""
        centre = (size - 1) / 2.0
        if dil == 1:
            u = off / h + centre
            t0 = np.floor(u)
            frac = u - t0
            if frac < tol:
                frac = 0.0
            elif frac > 1.0 - tol:
                frac = 1.0
            ti = int(t0)
            out_taps[k, 0] = ti
            out_vals[k, 0] = 1.0 - frac if 0 <= ti < size else 0.0
            out_taps[k, 1] = ti + 1
            out_vals[k, 1] = frac if 0 <= ti + 1 < size else 0.0
            return
        pixels = off / h
        t0 = np.floor(pixels / dil + centre)
        for s in range(2):
            t = t0 + s
            e = pixels - (t - centre) * dil
            nearest = np.rint(e)
            if abs(e - nearest) < tol:
                e = nearest
            v = 1.0 - abs(e)
            ti = int(t)
            if v <= 0.0 or ti < 0 or ti >= size:
                v = 0.0
            out_taps[k, s] = ti
            out_vals[k, s] = v

    @njit(cache=True, inline="always")
    def _scan(x, lead, sorted_keys, cell_start, lo, cell, ncell, strides, radius):
        """The run ``[start, end)`` of cell-sorted inputs that leading column ``lead`` (of the
        3^(d−1) around x's cell) holds within the support's reach on the last axis.
        ``cell_start[key]`` is the first sorted input of cell ``key`` (empty: too many cells
        for a table, a binary search instead)."""
        d = len(x)
        last_lo = int(np.floor((x[d - 1] - radius[d - 1] - lo[d - 1]) / cell[d - 1]))
        last_hi = int(np.floor((x[d - 1] + radius[d - 1] - lo[d - 1]) / cell[d - 1]))
        last_lo = min(max(last_lo, 0), ncell[d - 1] - 1)
        last_hi = min(max(last_hi, 0), ncell[d - 1] - 1)
        key = 0
        code = lead
        for k in range(d - 1):
            c = min(int(np.floor((x[k] - lo[k]) / cell[k])), ncell[k] - 1) + code % 3 - 1
            code //= 3
            if c < 0 or c >= ncell[k]:
                return 0, 0
            key += c * strides[k]
        if len(cell_start) > 0:
            return cell_start[key + last_lo], cell_start[key + last_hi + 1]
        return (np.searchsorted(sorted_keys, key + last_lo, side="left"),
                np.searchsorted(sorted_keys, key + last_hi, side="right"))

    @njit(parallel=True, cache=True)
    def _candidate_counts(chunks, out_coords, sorted_keys, cell_start, lo, cell, ncell,
                          strides, radius, bound):
        """``bound[c]``: the candidate pairs chunk c scans (no more entries than 2^d each)."""
        n_lead = 3 ** (out_coords.shape[1] - 1)
        for c in prange(len(chunks) - 1):
            total = 0
            for i in range(chunks[c], chunks[c + 1]):
                for lead in range(n_lead):
                    start, end = _scan(out_coords[i], lead, sorted_keys, cell_start, lo, cell,
                                       ncell, strides, radius)
                    total += end - start
            bound[c] = total

    @njit(parallel=True, cache=True)
    def _entries(chunks, starts, out_coords, in_sorted, in_weights, sorted_keys, cell_start,
                 lo, cell, ncell, strides, radius, spacing, dilation, ksize, kstrides, tol,
                 mode, counts, row_len, buf_b, buf_j, buf_v, positions, indices, values):
        """Visit the entries of every output point, chunk by chunk (row (b, i) belongs to
        point i alone, so chunks of outputs never share a row). ``mode``:

        0. count entries per (b, i) into ``counts``;
        1. also append them (b, j, value) to chunk c's run of ``buf_*`` from ``starts[c]``,
           recording each point's number of entries in ``row_len``;
        2. write them straight into the CSR arrays at ``positions[b, i]`` onwards.
        """
        d = out_coords.shape[1]
        n_lead = 3 ** (d - 1)
        n_combo = 1 << d
        for c in prange(len(chunks) - 1):
            taps = np.empty((d, 2), dtype=np.int64)
            vals = np.empty((d, 2), dtype=np.float64)
            p = starts[c]
            for i in range(chunks[c], chunks[c + 1]):
                x = out_coords[i]
                first = p
                for lead in range(n_lead):
                    start, end = _scan(x, lead, sorted_keys, cell_start, lo, cell, ncell,
                                       strides, radius)
                    for j in range(start, end):
                        inside = True
                        for k in range(d):
                            off = in_sorted[j, k] - x[k]
                            if abs(off) > radius[k]:
                                inside = False
                                break
                            _axis_taps(off, spacing[k], dilation[k], ksize[k], tol[k], taps,
                                       vals, k)
                        if not inside:
                            continue
                        for combo in range(n_combo):
                            b = 0
                            v = 1.0
                            for k in range(d):
                                s = (combo >> (d - 1 - k)) & 1
                                b += taps[k, s] * kstrides[k]
                                v *= vals[k, s]
                            if v > 0.0:
                                if mode == 2:
                                    q = positions[b, i]
                                    indices[q] = j
                                    values[q] = v * in_weights[j]
                                    positions[b, i] = q + 1
                                    continue
                                counts[b, i] += 1
                                if mode == 1:
                                    buf_b[p] = b
                                    buf_j[p] = j
                                    buf_v[p] = v * in_weights[j]
                                    p += 1
                if mode == 1:
                    row_len[i] = p - first

    @njit(parallel=True, cache=True)
    def _scatter(chunks, starts, row_len, buf_b, buf_j, buf_v, positions, indices, values):
        """Move the entries ``_entries`` appended (mode 1) to their CSR rows (b, i)."""
        for c in prange(len(chunks) - 1):
            p = starts[c]
            for i in range(chunks[c], chunks[c + 1]):
                for e in range(p, p + row_len[i]):
                    b = buf_b[e]
                    q = positions[b, i]
                    indices[q] = buf_j[e]
                    values[q] = buf_v[e]
                    positions[b, i] = q + 1
                p += row_len[i]

    @njit(parallel=True, fastmath=True, cache=True)
    def _spmm_kernel(indptr, indices, values, x, out):
        channels = x.shape[1]
        for r in prange(len(indptr) - 1):
            for c in range(channels):
                out[r, c] = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                v = values[p]
                j = indices[p]
                for c in range(channels):
                    out[r, c] += v * x[j, c]

    @njit(parallel=True, cache=True)
    def _segment_max_kernel(indptr, indices, x, out, arg):
        channels = x.shape[1]
        for r in prange(len(indptr) - 1):
            start, end = indptr[r], indptr[r + 1]
            for c in range(channels):
                if start == end:
                    out[r, c] = 0.0
                    arg[r, c] = -1
                    continue
                best = x[indices[start], c]
                best_j = indices[start]
                for p in range(start + 1, end):
                    v = x[indices[p], c]
                    if v > best:
                        best = v
                        best_j = indices[p]
                out[r, c] = best
                arg[r, c] = best_j

    @njit(parallel=True, fastmath=True, cache=True)
    def _sddmm_kernel(indptr, indices, a, b, out):
        channels = a.shape[1]
        for r in prange(len(indptr) - 1):
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[p]
                acc = 0.0
                for c in range(channels):
                    acc += a[r, c] * b[j, c]
                out[p] += acc


def _match_torch_threads() -> None:
    """Run numba's parallel loops on as many threads as torch uses (``torch.set_num_threads``,
    ``OMP_NUM_THREADS``): a process held to one thread must not wake a second one for every
    kernel call — on a busy 2-core machine that wait made a forward pass ~20× slower.
    Launching numba's OpenMP pool resets the OpenMP thread count that torch shares, so
    torch's own setting is put back."""
    torch_threads = torch.get_num_threads()
    n = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)


#: Entries (16 bytes each) the stencil build's reusable buffer may hold: 128 MiB.
_BUFFER_ENTRIES = 1 << 23
_buffers = threading.local()


def _entry_buffers(n: int):
    """Per-thread (b, j, value) buffers of at least ``n`` entries, reused across builds:
    on a VM a fresh buffer's page faults cost as much as filling it."""
    held = getattr(_buffers, "arrays", None)
    if held is None or len(held[0]) < n:
        held = (np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.float64))
        _buffers.arrays = held
    return held


def spline_stencil_csr(out_coords, in_coords, in_keys, in_weights, layout, kernel_size, spacing,
                       dilation, snap):
    """CSR arrays (rows b·N_out + i) of w_j φ_b(y_j − x_i), as the numpy path builds them.

    Args:
        out_coords: ``(N_out, d)`` float64.
        in_coords: ``(N_in, d)`` float64, sorted by cell key.
        in_keys: ``(N_in,)`` their (non-decreasing) cell keys under ``layout``.
        in_weights: ``(N_in,)`` float64, already including any kernel normalisation.
        layout: the :class:`~dinet.neighbors.search.CellLayout` of the keys.
        kernel_size, spacing, dilation: per axis.
        snap: absolute snapping tolerance of offsets (see ``dinet.neighbors.stencils``).
    """
    x = np.ascontiguousarray(out_coords, dtype=np.float64)
    n_out = len(x)
    ksize = np.asarray(kernel_size, dtype=np.int64)
    spacing = np.asarray(spacing, dtype=np.float64)
    kstrides = np.cumprod(np.concatenate([[1], ksize[:0:-1]]))[::-1].astype(np.int64)
    n_basis = int(np.prod(ksize))
    _match_torch_threads()
    chunks = np.linspace(0, n_out, 8 * numba.get_num_threads() + 1).astype(np.int64)
    in_keys = np.ascontiguousarray(in_keys, dtype=np.int64)
    n_cells = int(np.prod(layout.ncell))
    cell_start = np.zeros(0, dtype=np.int64)
    if n_cells <= 4 * len(in_keys) + 65536:  # a table beats a binary search per scan
        cell_start = np.zeros(n_cells + 1, dtype=np.int64)
        np.cumsum(np.bincount(in_keys, minlength=n_cells), out=cell_start[1:])
    geometry = (x, np.ascontiguousarray(in_coords, dtype=np.float64),
                np.ascontiguousarray(in_weights, dtype=np.float64), in_keys, cell_start,
                layout.lo, layout.cell, layout.ncell, layout.strides, layout.radius, spacing,
                np.asarray(dilation, dtype=np.int64), ksize, kstrides, snap / spacing)
    # One pass over the candidates when their entries fit the reusable buffer (the usual
    # case); otherwise one pass to count and one to write.
    bound = np.zeros(len(chunks) - 1, dtype=np.int64)
    _candidate_counts(chunks, x, in_keys, cell_start, layout.lo, layout.cell, layout.ncell,
                      layout.strides, layout.radius, bound)
    bound *= 1 << x.shape[1]
    starts = np.zeros(len(chunks), dtype=np.int64)
    np.cumsum(bound, out=starts[1:])
    one_pass = starts[-1] <= _BUFFER_ENTRIES and len(in_keys) < 2**31
    counts = np.zeros((n_basis, n_out), dtype=np.int64)
    row_len = np.zeros(n_out if one_pass else 0, dtype=np.int64)
    buf_b, buf_j, buf_v = _entry_buffers(int(starts[-1]) if one_pass else 0)
    empty_i, empty_v = np.zeros(0, np.int64), np.zeros(0, np.float64)
    no_pos = np.zeros((0, 0), np.int64)
    _entries(chunks, starts, *geometry, 1 if one_pass else 0, counts, row_len, buf_b, buf_j,
             buf_v, no_pos, empty_i, empty_v)
    indptr = np.zeros(n_basis * n_out + 1, dtype=np.int64)
    np.cumsum(counts.reshape(-1), out=indptr[1:])
    positions = indptr[:-1].reshape(n_basis, n_out).copy()
    indices = np.empty(indptr[-1], dtype=np.int64)
    values = np.empty(indptr[-1], dtype=np.float64)
    if one_pass:
        _scatter(chunks, starts, row_len, buf_b, buf_j, buf_v, positions, indices, values)
    else:
        _entries(chunks, starts, *geometry, 2, counts, row_len, buf_b, buf_j, buf_v,
                 positions, indices, values)
    return indptr, indices, values


def spmm(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, x: np.ndarray,
         out: np.ndarray | None = None) -> np.ndarray:
    """``out = S @ x`` for CSR ``S`` and a C-contiguous ``x`` (float32 or float64)."""
    if out is None:
        out = np.empty((len(indptr) - 1, x.shape[1]), dtype=x.dtype)
    _match_torch_threads()
    _spmm_kernel(indptr, indices, values, x, out)
    return out


def sddmm_add(indptr: np.ndarray, indices: np.ndarray, a: np.ndarray, b: np.ndarray,
              out: np.ndarray) -> np.ndarray:
    """``out[e] += a[row(e)] · b[indices[e]]`` for every entry e of a CSR structure: the
    gradient of ``S @ b`` with respect to S's values, given ``a`` = the output gradient."""
    _match_torch_threads()
    _sddmm_kernel(indptr, indices, a, b, out)
    return out


def segment_max(indptr: np.ndarray, indices: np.ndarray, x: np.ndarray):
    """Per row r and channel c, the max of ``x[j, c]`` over the row's columns j and the j
    that attains it (the first one); empty rows give 0 and -1."""
    out = np.empty((len(indptr) - 1, x.shape[1]), dtype=x.dtype)
    arg = np.empty((len(indptr) - 1, x.shape[1]), dtype=np.int64)
    _match_torch_threads()
    _segment_max_kernel(indptr, indices, x, out, arg)
    return out, arg
