"""Spline stencils built with torch on the point sets' own device (a GPU): the cell-list box
search of :mod:`dinet.neighbors.search` and the hat values of
:func:`~dinet.neighbors.stencils.spline_basis`, the same arithmetic in torch, so a fresh
draw of points on the card never waits for the CPU build.

The matrix equals the CPU build's entry for entry (the same non-zeros, the values to
float64 rounding); only the internal point order differs — the device build keeps the
point sets' own order, where the CPU build sorts them by cell for its cache.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..points import PointSet
from .search import CellLayout
from .stencil import Stencil

__all__ = ["box_pairs_torch", "spline_stencil_torch"]


def box_pairs_torch(x: torch.Tensor, y: torch.Tensor, half_widths) -> tuple[torch.Tensor, ...]:
    """All pairs with ``|y_j − x_i|_k ≤ r_k`` on every axis, on ``x``'s device.

    Returns ``(rows, cols, offsets)``: output index (non-decreasing), input index and
    ``y_j − x_i`` (float64) of every pair.
    """
    device, d = x.device, x.shape[1]
    x, y = x.double(), y.double()
    r = np.broadcast_to(np.asarray(half_widths, dtype=np.float64), (d,)).copy()
    bounds = torch.stack([x.min(0).values, y.min(0).values, x.max(0).values, y.max(0).values,
                          x.abs().max(0).values, y.abs().max(0).values]).cpu().numpy()
    lo, hi = np.minimum(bounds[0], bounds[1]), np.maximum(bounds[2], bounds[3])
    cells = CellLayout.from_bounds(lo, hi, float(bounds[4:].max()), r)
    lo_t, cell_t = (torch.as_tensor(a, device=device) for a in (cells.lo, cells.cell))
    ncell_t = torch.as_tensor(cells.ncell, device=device)
    strides_t = torch.as_tensor(cells.strides, device=device)

    def cell_index(coords):
        return torch.minimum(torch.floor((coords - lo_t) / cell_t).long(), ncell_t - 1)

    key_y = (cell_index(y) * strides_t).sum(1)
    sorted_keys, order = torch.sort(key_y, stable=True)
    lead_x = cell_index(x)[:, :-1]
    r_scan = float(cells.radius[-1])
    last = x[:, -1]
    last_lo = torch.floor((last - r_scan - lo_t[-1]) / cell_t[-1]).long().clamp(
        0, int(cells.ncell[-1]) - 1)
    last_hi = torch.floor((last + r_scan - lo_t[-1]) / cell_t[-1]).long().clamp(
        0, int(cells.ncell[-1]) - 1)
    shifts = torch.tensor(list(itertools.product((-1, 0, 1), repeat=d - 1)),
                          device=device, dtype=torch.long).reshape(-1, d - 1)
    lead = lead_x[:, None, :] + shifts[None]  # (N_out, 3^(d-1), d-1)
    valid = ((lead >= 0) & (lead < ncell_t[:-1])).all(2)
    lead_key = torch.where(valid, (lead * strides_t[:-1]).sum(2), 0)
    starts = torch.searchsorted(sorted_keys, lead_key + last_lo[:, None])
    ends = torch.searchsorted(sorted_keys, lead_key + last_hi[:, None], right=True)
    lengths = torch.where(valid, ends - starts, 0).reshape(-1)
    starts = starts.reshape(-1)
    total = int(lengths.sum())
    rows = torch.repeat_interleave(torch.arange(len(x), device=device),
                                   lengths.reshape(len(x), -1).sum(1))
    first = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths)
    cand = torch.arange(total, device=device) + first  # positions in the sorted inputs
    cols = order[cand]
    offsets = y[cols] - x[rows]
    keep = (offsets.abs() <= torch.as_tensor(r, device=device)).all(1)
    return rows[keep], cols[keep], offsets[keep]


def _axis_hats(offset: torch.Tensor, size: int, h: float, dil: int, tol: float):
    """The two nearest hat centres along one axis and the hat values there (the formulas of
    :func:`dinet.neighbors.stencils.spline_basis`), ``(P, 2)`` each."""
    centre = (size - 1) / 2.0
    two = torch.tensor([0.0, 1.0], dtype=offset.dtype, device=offset.device)
    if dil == 1:
        u = offset / h + centre
        t0 = torch.floor(u)
        frac = u - t0
        frac = torch.where(frac < tol / h, 0.0, torch.where(frac > 1.0 - tol / h, 1.0, frac))
        vals = torch.stack([1.0 - frac, frac], 1)
    else:
        pixels = offset / h
        t0 = torch.floor(pixels / dil + centre)
        e = pixels[:, None] - (t0[:, None] + two - centre) * dil
        nearest = torch.round(e)
        e = torch.where((e - nearest).abs() < tol / h, nearest, e)
        vals = (1.0 - e.abs()).clamp_min(0.0)
    taps = t0.long()[:, None] + two.long()
    vals = torch.where((taps < 0) | (taps >= size), 0.0, vals)
    return taps, vals


def spline_stencil_torch(points_in: PointSet, points_out: PointSet, kernel_size, spacing,
                         dilation, snap: float) -> Stencil:
    """The spline stencil ``S[b·N_out + i, j] = w_j φ_b(y_j − x_i) / Π h`` built on the
    points' device, in the point sets' own order (see the module docstring)."""
    device = points_in.coords.device
    x = points_out.coords.to(device)
    y = points_in.coords
    ks = [int(k) for k in kernel_size]
    h = [float(v) for v in spacing]
    dil = [int(v) for v in dilation]
    support = ((np.asarray(ks) - 1) / 2 * np.asarray(dil) + 1) * np.asarray(h)
    rows, cols, offsets = box_pairs_torch(x, y, support)
    d, n_out, n_basis = len(ks), len(x), int(np.prod(ks))
    strides = np.cumprod([1, *ks[:0:-1]])[::-1]
    basis = torch.zeros((len(rows),) + (1,) * d, dtype=torch.long, device=device)
    value = torch.ones((len(rows),) + (1,) * d, dtype=torch.float64, device=device)
    for k in range(d):
        taps, vals = _axis_hats(offsets[:, k], ks[k], h[k], dil[k], snap)
        shape = (len(rows),) + (1,) * k + (2,) + (1,) * (d - k - 1)
        basis = basis + (taps * int(strides[k])).reshape(shape)
        value = value * vals.reshape(shape)
    value, basis = value.reshape(-1), basis.reshape(-1)
    kept = torch.nonzero(value > 0.0).squeeze(1)
    pair = kept >> d
    entry_cols = cols[pair]
    weights = points_in.weights.to(device).double() / float(np.prod(h))
    entry_rows = basis[kept] * n_out + rows[pair]
    order = torch.argsort(entry_rows * len(y) + entry_cols)  # (b, i) rows, inputs increasing
    indptr = torch.zeros(n_basis * n_out + 1, dtype=torch.long, device=device)
    indptr[1:] = torch.cumsum(torch.bincount(entry_rows, minlength=n_basis * n_out), 0)
    indices = entry_cols[order]
    values = (value[kept] * weights[entry_cols])[order]
    return Stencil.from_device(indptr, indices, values, n_out, len(y), n_basis)
