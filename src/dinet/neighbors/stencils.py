"""The stencils of DI convolutions and pools, built on the neighbour search: the spline
stencil (hat values φ_b on the offsets δ = y_j − x_i, fixed) and the pair stencil (the
pairs and their offsets, for kernels whose values are computed, and for box pools), each
checked against the memory budget and cached in :data:`stencil_cache`.

A DI kernel is K(δ) = Σ_b φ_b(δ) W_b; the learned bases live in :mod:`dinet.nn`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import _compiled
from .._cache import LRUCache
from ..points import PointSet
from .budget import (
    check_stencil_budget,
    lattice_aligned,
    search_bytes_per_pair,
    spline_taps_per_pair,
)
from .cache import stencil_cache
from .device_build import box_pairs_torch, spline_stencil_torch
from .search import CellLayout, Neighbors, ball_neighbors, box_neighbors
from .stencil import Stencil

__all__ = [
    "BoxPairs",
    "MAX_WEIGHT_RATIO",
    "PairStencil",
    "check_kernel_scale",
    "check_pair_budget",
    "box_pairs",
    "check_spline_budget",
    "pair_stencil",
    "spline_basis",
    "spline_stencil",
    "spline_support",
]

# Float32 coordinates carry an absolute rounding error of at most 2^-25 each, so an offset
# between two of them is off by at most 2^-24. Offsets that land within a few such errors of
# a hat's node or edge are snapped onto it: on a grid this makes the hats hit lattice points
# exactly (values exactly 1 and 0), which is what makes conversion from conv2d exact and
# keeps near-zero entries out of the sparse matrix.
#: Offsets within SNAP / h of a kernel lattice point count as on it (grid exactness).
SNAP = 4.0 * 2.0**-24

# Bytes per non-zero of a spline stencil over its life: CSR column and value (16), the
# transpose that backward builds (column and permutation, 16) and the float32 value tensor.
_SPLINE_BYTES_PER_NNZ = 40
# Bytes per point of a build that do not scale with the pairs: float64 coordinates in sorted
# order, the permutations and cell keys.
_BYTES_PER_POINT = 64
_SPLINE_HINT = ("a smaller spacing or kernel_size (the half-widths are "
                "((kernel_size − 1)/2 · dilation + 1) · spacing)")
_PAIR_HINT = "a smaller spacing or kernel_size"
#: Largest ratio of an input point's quadrature weight to a kernel's cell volume Π h_k. Near
#: 1 when the kernel is as fine as the points; a model run on points 100x sparser than it was
#: built for (per axis, in 3-D) reaches 10^6. Beyond, every output sees only itself, scaled
#: by that ratio, and a few layers overflow float32.
MAX_WEIGHT_RATIO = 1e6
# (point set, cell volume) pairs already checked against MAX_WEIGHT_RATIO: a dictionary
# look-up per call instead of a reduction over the weights (and a device sync).
_scale_checks = LRUCache(maxsize=256)


def spline_support(kernel_size, spacing, dilation) -> np.ndarray:
    """Half-widths r_k = ((k_k − 1)/2 · dilation_k + 1) · h_k of the spline kernel's box."""
    k = np.asarray(kernel_size, dtype=np.float64)
    return ((k - 1.0) / 2.0 * np.asarray(dilation, dtype=np.float64) + 1.0) * np.asarray(
        spacing, dtype=np.float64
    )


def spline_basis(offsets: np.ndarray, kernel_size, spacing, dilation):
    """Evaluate the tensor-product linear-spline basis on offsets.

    Hat b = (t_0, …, t_{d-1}) (row-major over the kernel's axes) is centred at
    c_b = ((t_k − (k_k − 1)/2) · dilation_k · h_k)_k with half-width h_k on each axis:
    φ_b(δ) = Π_k max(0, 1 − |δ_k − c_bk| / h_k). A point touches at most 2^d hats.

    Args:
        offsets: ``(P, d)`` float64 offsets δ = y_j − x_i.

    Returns:
        ``(pair, basis, value)``: for every non-zero φ_b(δ_p), the pair index p, the basis
        index b and the value, grouped by pair in increasing p.
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    n_pairs, d = offsets.shape
    ks = np.asarray(kernel_size, dtype=np.int64)
    h = np.asarray(spacing, dtype=np.float64)
    dil = np.asarray(dilation, dtype=np.int64)
    strides = np.cumprod(np.concatenate([[1], ks[:0:-1]]))[::-1]
    # Outer products over axes, built by broadcasting: (P, 2, 2, ...) -> (P, 2^d).
    basis = np.zeros((n_pairs,) + (1,) * d, dtype=np.int64)
    value = np.ones((n_pairs,) + (1,) * d, dtype=np.float64)
    for k in range(d):
        taps, vals = _axis_hats(offsets[:, k], int(ks[k]), float(h[k]), int(dil[k]))
        shape = (n_pairs,) + (1,) * k + (2,) + (1,) * (d - k - 1)
        basis = basis + (taps * strides[k]).reshape(shape)
        value = value * vals.reshape(shape)
    value = value.reshape(-1)
    kept = np.flatnonzero(value > 0.0)
    return kept >> d, basis.reshape(-1).take(kept), value.take(kept)


def _axis_hats(offset: np.ndarray, size: int, h: float, dil: int):
    """The two nearest hat centres along one axis and the hat values there, ``(P, 2)`` each;
    a tap outside the kernel gets value 0."""
    centre = (size - 1) / 2.0
    tol = SNAP / h
    if dil == 1:
        u = offset / h + centre  # lattice coordinate
        t0 = np.floor(u)
        frac = u - t0
        frac[frac < tol] = 0.0
        frac[frac > 1.0 - tol] = 1.0
        vals = np.stack([1.0 - frac, frac], axis=1)
    else:
        pixels = offset / h
        t0 = np.floor(pixels / dil + centre)
        e = pixels[:, None] - (t0[:, None] + np.array([0.0, 1.0]) - centre) * dil
        nearest = np.rint(e)
        e = np.where(np.abs(e - nearest) < tol, nearest, e)
        vals = np.clip(1.0 - np.abs(e), 0.0, None)
    taps = t0.astype(np.int64)[:, None] + np.array([0, 1])
    vals[(taps < 0) | (taps >= size)] = 0.0
    return taps, vals


def _ordered_coords(points_in: PointSet, points_out: PointSet, radius):
    """Both point sets' coordinates (float64) in a spatially coherent (cell-sorted) order.

    Stencils index points in this order, which keeps the sparse products cache-friendly.

    Returns:
        ``(x_out, y_in, in_order, out_order, layout, in_keys)`` with the sorted coordinates,
        the permutations (internal position → point index), the cell layout and the sorted
        cell keys of the inputs.
    """
    y = points_in.coords.double().cpu().numpy()
    x = y if points_out is points_in else points_out.coords.double().cpu().numpy()
    layout = CellLayout.for_search(x, y, np.asarray(radius, dtype=np.float64))
    in_keys = layout.keys(y)
    in_order = np.argsort(in_keys, kind="stable")
    out_order = in_order if x is y else np.argsort(layout.keys(x), kind="stable")
    return x[out_order], y[in_order], in_order, out_order, layout, in_keys[in_order]


class PairStencil(Stencil):
    """A stencil over neighbour pairs whose values are recomputed from the offsets.

    Row ``b·N_out + i`` holds the neighbours of output i for every basis function b (the
    same columns for each b), so values of shape ``(n_basis, P)`` flatten into entry order.

    Attributes:
        offsets: ``(P, d)`` float64 offsets y_j − x_i of the pairs, in internal order.
        pair_weights: ``(P,)`` float64 quadrature weights w_j of each pair's input point.
        pair_rows, pair_cols: ``(P,)`` output and input position of each pair (internal).
        point_rows, point_cols: the same as indices into the point sets.
    """

    def __init__(self, neighbors, n_in: int, n_basis: int, in_order, out_order,
                 pair_weights) -> None:
        pairs = len(neighbors.cols)
        base = neighbors.indptr[:-1]
        indptr = np.concatenate([base + b * pairs for b in range(n_basis)]
                                + [[n_basis * pairs]])
        super().__init__(indptr, np.tile(neighbors.cols, n_basis), None,
                         len(neighbors.indptr) - 1, n_in, n_basis, in_order, out_order)
        self.offsets = np.ascontiguousarray(neighbors.offsets)
        self.pair_weights = pair_weights
        self.pair_rows = neighbors.rows
        self.pair_cols = neighbors.cols
        # The same pairs as indices into the point sets themselves (not the internal order).
        self.point_rows = self.out_order[self.pair_rows]
        self.point_cols = self.in_order[self.pair_cols]

    @property
    def n_pairs(self) -> int:
        return len(self.pair_weights)

    def pair_tensor(self, name: str, device, dtype=None):
        """One of the per-pair arrays above as a cached tensor on ``device``."""
        def make():
            t = torch.from_numpy(np.ascontiguousarray(getattr(self, name))).to(device)
            return t if dtype is None else t.to(dtype)

        return self._cached(("pair", name, torch.device(device), dtype), make)


def pair_stencil(points_in: PointSet, points_out: PointSet, radius, n_basis: int = 1,
                 metric: str = "box") -> PairStencil:
    """The cached :class:`PairStencil` of all pairs with y_j − x_i in the box (or ball) of
    half-widths ``radius``."""
    radius = tuple(float(r) for r in np.broadcast_to(radius, (points_in.dim,)))
    key = ("pairs", metric, points_in.digest, points_out.digest, radius, int(n_basis))

    def build():
        if points_in.coords.device.type != "cpu" and metric == "box":
            return _device_pair_stencil(points_in, points_out, radius, n_basis)
        check_pair_budget(points_in, points_out, radius, n_basis)
        x, y, in_order, out_order, _, _ = _ordered_coords(points_in, points_out, radius)
        search = box_neighbors if metric == "box" else ball_neighbors
        neighbors = search(x, y, radius)
        weights = points_in.weights.double().cpu().numpy()[in_order][neighbors.cols]
        return PairStencil(neighbors, len(y), n_basis, in_order, out_order, weights)

    return stencil_cache.get_or_build(key, build)


def _device_pair_stencil(points_in: PointSet, points_out: PointSet, radius,
                         n_basis: int) -> PairStencil:
    """The box pairs searched on the points' device (a GPU), in the point sets' own order."""
    check_pair_budget(points_in.to("cpu"), points_out.to("cpu"), radius, n_basis)
    rows, cols, offsets = box_pairs_torch(points_out.coords.to(points_in.coords.device),
                                          points_in.coords, radius)
    n_out, n_in = len(points_out), len(points_in)
    indptr = np.zeros(n_out + 1, dtype=np.int64)
    np.cumsum(torch.bincount(rows, minlength=n_out).cpu().numpy(), out=indptr[1:])
    cols_np = cols.cpu().numpy()
    neighbors = Neighbors(indptr, cols_np, offsets.cpu().numpy())
    weights = points_in.weights.double().cpu().numpy()[cols_np]
    return PairStencil(neighbors, n_in, n_basis, np.arange(n_in), np.arange(n_out), weights)


def check_kernel_scale(points_in: PointSet, cell_volume: float, layer: str,
                       what: str = "spacing") -> None:
    """Refuse (``ValueError``) a kernel whose cell volume Π h is so much smaller than the
    input points' quadrature weights that its quadrature is meaningless (see
    ``MAX_WEIGHT_RATIO``). Checked once per (point set, cell volume)."""
    def check() -> bool:
        w_max = float(points_in.weights.max())
        ratio = w_max / cell_volume if cell_volume > 0 else float("inf")
        if not ratio <= MAX_WEIGHT_RATIO:
            d = points_in.dim
            raise ValueError(
                f"{layer}: the {what} is far finer than the input points — their quadrature "
                f"weights (up to {w_max:.3g}) are {ratio:.3g} times the kernel cell volume "
                f"{cell_volume:.3g} (limit {MAX_WEIGHT_RATIO:g}), so each output would see "
                f"about one input point scaled by that factor. Use a {what} near the point "
                f"spacing (about {w_max ** (1 / d):.3g} per axis here) or many more points"
            )
        return True

    _scale_checks.get_or_build((points_in.digest, float(cell_volume)), check)


def check_pair_budget(points_in: PointSet, points_out: PointSet, radius, n_basis: int,
                      what: str = "pair stencil") -> float:
    """Refuse (:class:`~dinet.neighbors.StencilTooLarge`) a :class:`PairStencil` whose
    estimated memory exceeds the budget; return the estimate in bytes.

    Per pair: the offsets, weight, row and column (in both orders), the column repeated for
    every basis function (8 bytes per entry), and what a learned kernel adds per entry when
    it runs: float32 values, their gradient and the transposed product's (12 bytes; the
    basis MLP's activations are recomputed chunk by chunk, not stored). Measured on the
    default classifier's stem at 2^16 points: 342 bytes per pair at the peak of a whole
    forward+backward, against 426 estimated here.
    """
    d, n_basis = points_in.dim, int(n_basis)
    per_pair = 48 + 8 * d + 20 * n_basis + search_bytes_per_pair(d)
    fixed = 8 * n_basis * len(points_out) + _BYTES_PER_POINT * (len(points_in) + len(points_out))
    return check_stencil_budget(what, points_out.coords, points_in.coords, radius, per_pair,
                                fixed, entries_per_pair=n_basis, hint=_PAIR_HINT)


def check_spline_budget(points_in: PointSet, points_out: PointSet, kernel_size, spacing,
                        dilation, compiled: bool = True) -> float:
    """Refuse (:class:`~dinet.neighbors.StencilTooLarge`) a spline stencil whose estimated
    memory exceeds the budget; return the estimate in bytes.

    Non-zeros ≈ pairs × the hats a pair touches (:func:`spline_taps_per_pair`, at most 2^d);
    the numpy build also holds the neighbour search and 2^d candidate entries per pair.
    """
    d, n_basis = points_in.dim, int(np.prod(kernel_size))
    taps = spline_taps_per_pair(kernel_size, dilation,
                                lattice_aligned(points_in, points_out, spacing))
    per_pair = taps * _SPLINE_BYTES_PER_NNZ
    if not compiled:
        per_pair += search_bytes_per_pair(d) + 40 * 2**d
    # Row pointers and per-row counts of the (basis, output) rows, and the per-point arrays.
    fixed = 24 * n_basis * len(points_out) + _BYTES_PER_POINT * (len(points_in) + len(points_out))
    return check_stencil_budget(
        "DIConv spline stencil", points_out.coords, points_in.coords,
        spline_support(kernel_size, spacing, dilation), per_pair, fixed,
        entries_per_pair=taps, hint=_SPLINE_HINT,
    )


def _build_spline_stencil(points_in: PointSet, points_out: PointSet, kernel_size, spacing,
                          dilation, compiled: bool | None = None) -> Stencil:
    """Build the stencil; ``compiled=None`` uses the numba kernel when it is available,
    ``False`` forces the numpy path (the reference the compiled one is tested against)."""
    if points_in.coords.device.type != "cpu":  # fresh draws on a GPU: built there
        check_spline_budget(points_in.to("cpu"), points_out.to("cpu"), kernel_size, spacing,
                            dilation, compiled=False)
        return spline_stencil_torch(points_in, points_out, kernel_size, spacing, dilation,
                                    SNAP)
    if compiled is None:
        compiled = _compiled.AVAILABLE
    check_spline_budget(points_in, points_out, kernel_size, spacing, dilation, compiled)
    radius = spline_support(kernel_size, spacing, dilation)
    x, y, in_order, out_order, layout, in_keys = _ordered_coords(points_in, points_out, radius)
    # Quadrature weight of the input point, and the 1/h^d that makes W_b a conv2d weight.
    weights = points_in.weights.double().cpu().numpy()[in_order] / float(np.prod(spacing))
    n_out, n_basis = len(x), int(np.prod(kernel_size))
    if compiled:
        indptr, indices, values = _compiled.spline_stencil_csr(
            x, y, in_keys, weights, layout, kernel_size, spacing, dilation, SNAP,
        )
        return Stencil(indptr, indices, values, n_out, len(y), n_basis, in_order, out_order)
    neighbors = box_neighbors(x, y, radius)
    pair, basis, value = spline_basis(neighbors.offsets, kernel_size, spacing, dilation)
    cols = neighbors.cols[pair]
    value *= weights[cols]
    return Stencil.from_entries(neighbors.rows[pair], basis, cols, value, n_out, len(y),
                                n_basis, in_order, out_order)


def spline_stencil(points_in: PointSet, points_out: PointSet, kernel_size, spacing,
                   dilation) -> Stencil:
    """The cached spline stencil from ``points_in`` to ``points_out``.

    ``S[b·N_out + i, j] = w_j φ_b(y_j − x_i) / Π_k h_k``; see :func:`spline_basis`.
    """
    key = (
        "spline",
        points_in.digest,
        points_out.digest,
        tuple(int(k) for k in kernel_size),
        tuple(float(h) for h in spacing),
        tuple(int(r) for r in dilation),
    )
    return stencil_cache.get_or_build(
        key,
        lambda: _build_spline_stencil(points_in, points_out, kernel_size, spacing, dilation),
    )


# --- box pairs (local attention) -------------------------------------------------------
@dataclass
class BoxPairs:
    """Neighbour pairs of a box support in the point sets' own order, grouped by output
    point (CSR), kept per device: what local attention iterates over."""

    indptr: np.ndarray  # (N_out + 1,)
    rows: torch.Tensor  # (P,) int64, non-decreasing
    cols: torch.Tensor  # (P,) int64
    _on_device: dict = field(default_factory=dict)

    def to(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device.type == "cpu":
            return self.rows, self.cols
        if device not in self._on_device:
            self._on_device[device] = (self.rows.to(device), self.cols.to(device))
        return self._on_device[device]

    def chunks(self, per_pair: int, elements: int) -> list[tuple[int, int, int, int]]:
        """Row ranges ``(r0, r1, p0, p1)`` of whole rows holding about
        ``elements / per_pair`` pairs each (a longer row gets a chunk of its own)."""
        target = max(1, elements // max(per_pair, 1))
        indptr, n_out = self.indptr, len(self.indptr) - 1
        out, r0 = [], 0
        while r0 < n_out:
            r1 = int(np.searchsorted(indptr, indptr[r0] + target, side="right")) - 1
            r1 = min(max(r1, r0 + 1), n_out)
            if indptr[r1] > indptr[r0]:  # rows without pairs need no work
                out.append((r0, r1, int(indptr[r0]), int(indptr[r1])))
            r0 = r1
        return out


def box_pairs(points_in: PointSet, points_out: PointSet, half_widths) -> BoxPairs:
    """The cached :class:`BoxPairs` of a box support from ``points_out`` to ``points_in``."""
    def build() -> BoxPairs:
        check_stencil_budget(
            "DIAttention neighbour pairs", points_out.coords, points_in.coords, half_widths,
            search_bytes_per_pair(points_in.dim) + 8, 64.0 * (len(points_in) + len(points_out)),
            hint="pass a smaller support= (or support=None: global attention keeps no pairs)",
        )
        nb = box_neighbors(points_out.coords, points_in.coords, half_widths)
        return BoxPairs(nb.indptr, torch.from_numpy(nb.rows), torch.from_numpy(nb.cols))

    key = ("DIAttention.box", points_in.digest, points_out.digest, tuple(half_widths))
    return stencil_cache.get_or_build(key, build)
