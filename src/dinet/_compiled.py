"""Compiled CPU kernels (numba): spline stencil construction and sparse-dense products.

These are fast paths. Each has a pure numpy/torch counterpart that stays the reference and
the fallback (when numba is missing or ``DINET_DISABLE_NUMBA=1``), and tests hold the two
equal. Kernels are compiled on first use and cached on disk by numba.
"""

from __future__ import annotations

import os

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
        """The two nearest hat centres on one axis and the hat values there."""
        centre = (size - 1) / 2.0
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
                ti = 0
            out_taps[k, s] = ti
            out_vals[k, s] = v

    @njit(cache=True)
    def _pass(i0, i1, out_coords, in_sorted, in_weights, sorted_keys, lo, cell, ncell,
              strides, radius, spacing, dilation, ksize, kstrides, tol, counts, positions,
              indices, values, write):
        """Entries of output points i0..i1-1 (row (b, i) belongs to point i alone).

        ``write=False`` counts entries per (b, i) into ``counts``; ``write=True`` writes them
        at ``positions[b, i]`` onwards.
        """
        d = out_coords.shape[1]
        n_lead = 3 ** (d - 1)
        n_combo = 1 << d
        taps = np.empty((d, 2), dtype=np.int64)
        vals = np.empty((d, 2), dtype=np.float64)
        for i in range(i0, i1):
            x = out_coords[i]
            last_lo = int(np.floor((x[d - 1] - radius[d - 1] - lo[d - 1]) / cell[d - 1]))
            last_hi = int(np.floor((x[d - 1] + radius[d - 1] - lo[d - 1]) / cell[d - 1]))
            last_lo = min(max(last_lo, 0), ncell[d - 1] - 1)
            last_hi = min(max(last_hi, 0), ncell[d - 1] - 1)
            for lead in range(n_lead):
                key = 0
                ok = True
                code = lead
                for k in range(d - 1):
                    c = min(int(np.floor((x[k] - lo[k]) / cell[k])), ncell[k] - 1) + code % 3 - 1
                    code //= 3
                    if c < 0 or c >= ncell[k]:
                        ok = False
                    key += c * strides[k]
                if not ok:
                    continue
                start = np.searchsorted(sorted_keys, key + last_lo, side="left")
                end = np.searchsorted(sorted_keys, key + last_hi, side="right")
                for jj in range(start, end):
                    inside = True
                    for k in range(d):
                        off = in_sorted[jj, k] - x[k]
                        if abs(off) > radius[k]:
                            inside = False
                            break
                        _axis_taps(off, spacing[k], dilation[k], ksize[k], tol[k], taps, vals, k)
                    if not inside:
                        continue
                    j = jj
                    for combo in range(n_combo):
                        b = 0
                        v = 1.0
                        for k in range(d):
                            s = (combo >> (d - 1 - k)) & 1
                            b += taps[k, s] * kstrides[k]
                            v *= vals[k, s]
                        if v > 0.0:
                            if write:
                                p = positions[b, i]
                                indices[p] = j
                                values[p] = v * in_weights[j]
                                positions[b, i] = p + 1
                            else:
                                counts[b, i] += 1

    @njit(parallel=True, cache=True)
    def _all_passes(chunks, out_coords, in_sorted, in_weights, sorted_keys, lo, cell,
                    ncell, strides, radius, spacing, dilation, ksize, kstrides, tol, counts,
                    positions, indices, values, write):
        for c in prange(len(chunks) - 1):
            _pass(chunks[c], chunks[c + 1], out_coords, in_sorted, in_weights,
                  sorted_keys, lo, cell, ncell, strides, radius, spacing, dilation, ksize,
                  kstrides, tol, counts, positions, indices, values, write)

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
    kernel call — on a busy 2-core machine that wait made a forward pass ~20× slower."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


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
        snap: absolute snapping tolerance of offsets (see ``dinet.nn.kernels``).
    """
    x = np.ascontiguousarray(out_coords, dtype=np.float64)
    n_out = len(x)
    ksize = np.asarray(kernel_size, dtype=np.int64)
    spacing = np.asarray(spacing, dtype=np.float64)
    kstrides = np.cumprod(np.concatenate([[1], ksize[:0:-1]]))[::-1].astype(np.int64)
    n_basis = int(np.prod(ksize))
    _match_torch_threads()
    chunks = np.linspace(0, n_out, 8 * numba.get_num_threads() + 1).astype(np.int64)
    counts = np.zeros((n_basis, n_out), dtype=np.int64)
    args = (chunks, x, np.ascontiguousarray(in_coords, dtype=np.float64),
            np.ascontiguousarray(in_weights, dtype=np.float64),
            np.ascontiguousarray(in_keys, dtype=np.int64), layout.lo, layout.cell, layout.ncell,
            layout.strides, layout.radius, spacing,
            np.asarray(dilation, dtype=np.int64), ksize, kstrides, snap / spacing)
    empty_i, empty_v = np.zeros(0, np.int64), np.zeros(0, np.float64)
    _all_passes(*args, counts, counts, empty_i, empty_v, False)
    indptr = np.zeros(n_basis * n_out + 1, dtype=np.int64)
    np.cumsum(counts.reshape(-1), out=indptr[1:])
    positions = indptr[:-1].reshape(n_basis, n_out).copy()
    indices = np.empty(indptr[-1], dtype=np.int64)
    values = np.empty(indptr[-1], dtype=np.float64)
    _all_passes(*args, counts, positions, indices, values, True)
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
