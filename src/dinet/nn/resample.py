"""``Resample``: move a field's values from one point set to another."""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy.spatial import Delaunay, QhullError, cKDTree
from threadpoolctl import ThreadpoolController

from ..neighbors import Stencil, box_neighbors, check_stencil_budget, stencil_cache
from ..neighbors.budget import search_bytes_per_pair
from ..points import PointSet
from .base import DIModule, check_points, check_values, per_axis, upcast_on_cpu
from .functional import sparse_matmul

__all__ = ["Resample"]

METHODS = ("linear", "delaunay", "idw", "nearest")


class Resample(DIModule):
    r"""Values of a field on ``points_in`` → its values on ``points_out``.

    When ``points_out`` is a prefix of ``points_in`` (a coarser level of the same
    discretization) this is exact and free: the first N_out values. Otherwise the field is
    interpolated, y(x_i) = Σ_j α_ij f(y_j), by one of:

    - ``"linear"``: moving least squares with the normalised hat kernel
      ω_ij = w_j Π_k max(0, 1 − |y_jk − x_ik| / r_k): the value at x_i of the weighted
      linear fit a + bᵀ(y − x_i) to the points in the box of half-widths ``support``.
      Reproduces every linear function exactly; where fewer than d + 1 points (or a flat
      configuration) sit in the box it falls back to the normalised hat average, and with
      none at all to the nearest point.
    - ``"delaunay"``: the piecewise-linear interpolant on the Delaunay triangulation
      (tetrahedralisation in 3-D, sorted segments in 1-D) of the input points: α_ij are the
      barycentric coordinates of x_i in the simplex that holds it. Exact at the input
      points and for every linear function inside their convex hull, with no scale to
      choose — it adapts to the local spacing wherever the points are dense or sparse.
      Queries outside the hull (and every query when the points span no simplex) take
      the value of the nearest input point.
    - ``"idw"``: inverse-distance weighting over the ``k`` nearest points,
      α_ij ∝ 1 / |y_j − x_i|^power (a query on an input point takes its value).
    - ``"nearest"``: the value of the nearest input point.

    Every α row is a convex or affine combination, so values stay bounded at the domain's
    boundary and corners. The interpolation matrix is cached per pair of point sets.

    Args:
        method: ``"linear"`` (default), ``"delaunay"``, ``"idw"`` or ``"nearest"``.
        support: half-widths r of the hat kernel in domain units (``"linear"`` only; a float
            or one per axis), e.g. twice the input's point spacing.
        k: neighbours for ``"idw"``. Default 4.
        power: distance exponent for ``"idw"``. Default 2.
        dim: spatial dimension d. Default 2.

    Shapes:
        - x: ``(B, N_in, C)``, points_in: ``PointSet(N_in)``, points_out: ``PointSet(N_out)``
        - output: ``(B, N_out, C)``
    """

    def __init__(self, method: str = "linear", *, support=None, k: int = 4, power: float = 2.0,
                 dim: int = 2) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown resampling method {method!r}; valid: {', '.join(METHODS)}")
        if method == "linear":
            if support is None:
                raise ValueError(
                    "Resample('linear') needs support= (the hat half-width in domain units, "
                    "e.g. twice the input point spacing)"
                )
            support = per_axis(support, dim, "support", float)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}")
        if not power > 0:
            raise ValueError(f"power must be positive; got {power!r}")
        self.method, self.support, self.k, self.power, self.dim = method, support, k, power, dim

    def forward(self, x: torch.Tensor, points_in: PointSet,
                points_out: PointSet | None = None) -> torch.Tensor:
        check_values(x, check_points(points_in, self.dim, "points_in"))
        if upcast_on_cpu(x):  # the CPU's sparse kernels take float32/float64 only
            return self.forward(x.float(), points_in, points_out).to(x.dtype)
        if points_out is None:
            raise ValueError("Resample needs points_out, the point set to resample onto")
        check_points(points_out, self.dim, "points_out")
        m = len(points_out)
        if m <= len(points_in) and torch.equal(points_in.coords[:m].cpu(),
                                               points_out.coords.cpu()):
            return x[:, :m]  # a coarser level of the same discretization
        key = ("resample", self.method, self.support, self.k, self.power,
               points_in.digest, points_out.digest)
        stencil = stencil_cache.get_or_build(key, lambda: self._build(points_in, points_out))
        return sparse_matmul(x, stencil)

    def _build(self, points_in: PointSet, points_out: PointSet) -> Stencil:
        y = points_in.coords.double().cpu().numpy()
        x = points_out.coords.double().cpu().numpy()
        if self.method == "linear":
            # Per pair: the search, the hat weights and fitted coefficients (copies of rows,
            # columns and offsets along the way), then the matrix and its transpose.
            check_stencil_budget(
                "Resample('linear') matrix", points_out.coords, points_in.coords, self.support,
                search_bytes_per_pair(self.dim) + 100 + 8 * self.dim,
                64.0 * (len(x) + len(y)), hint="pass a smaller support=",
            )
            rows, cols, values = _mls_linear(x, y, points_in.weights.double().cpu().numpy(),
                                             np.asarray(self.support))
        elif self.method == "delaunay":
            rows, cols, values = _delaunay_linear(x, y)
        else:
            k = 1 if self.method == "nearest" else min(self.k, len(y))
            dist, idx = cKDTree(y).query(x, k=k)
            dist, idx = dist.reshape(len(x), k), idx.reshape(len(x), k)
            if k == 1:
                values = np.ones_like(dist)
            else:
                hit = dist <= 1e-12
                # (d_min / d)^p ∝ 1 / d^p lies in [0, 1]: 1 / d^p itself overflows to inf
                # (and inf / inf is NaN) for small distances or a large power.
                nearest = np.maximum(dist[:, :1], 1e-12)
                inv = (nearest / np.maximum(dist, 1e-12)) ** self.power
                inv = np.where(hit.any(axis=1, keepdims=True), hit.astype(float), inv)
                values = inv / inv.sum(axis=1, keepdims=True)
            rows, cols, values = np.repeat(np.arange(len(x)), k), idx.reshape(-1), values.ravel()
        indptr = np.zeros(len(x) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(x)), out=indptr[1:])
        return Stencil(indptr, cols, values, len(x), len(y), 1)

    def extra_repr(self) -> str:
        if self.method == "linear":
            return f"'linear', support={tuple(round(r, 6) for r in self.support)}"
        if self.method == "idw":
            return f"'idw', k={self.k}, power={self.power}"
        return repr(self.method)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def _delaunay_linear(x: np.ndarray, y: np.ndarray):
    """Entries (row, col, α) of piecewise-linear interpolation from the points ``y`` to the
    queries ``x``: barycentric coordinates in the Delaunay simplex holding each query, the
    nearest point outside the convex hull."""
    n_out, d = x.shape
    rows = np.zeros(0, dtype=np.int64)
    cols = np.zeros(0, dtype=np.int64)
    values = np.zeros(0)
    outside = np.ones(n_out, dtype=bool)
    if d == 1 and len(np.unique(y[:, 0])) > 1:
        order = np.argsort(y[:, 0], kind="stable")
        t = y[order, 0]
        right = np.clip(np.searchsorted(t, x[:, 0], side="right"), 1, len(t) - 1)
        left = right - 1
        inside = (x[:, 0] >= t[0]) & (x[:, 0] <= t[-1])
        while True:  # step over repeated coordinates so that t[right] > t[left]
            same = inside & (t[right] == t[left])
            if not same.any():
                break
            left[same] -= 1
        lam = (x[inside, 0] - t[left[inside]]) / (t[right[inside]] - t[left[inside]])
        rows = np.repeat(np.flatnonzero(inside), 2)
        cols = np.stack([order[left[inside]], order[right[inside]]], axis=1).ravel()
        values = np.stack([1.0 - lam, lam], axis=1).ravel()
        outside = ~inside
    elif d > 1 and len(y) > d:
        # find_simplex computes every simplex's barycentric transform with LAPACK, whose
        # OpenBLAS threads then spin for a while: in a training step that took the CPU from
        # the layers that follow and made them twice as slow (2 cores). One BLAS thread here.
        with _blas_controller().limit(limits=1, user_api="blas"):
            try:
                tri = Delaunay(y)
            except QhullError:  # every point on one hyperplane: no simplex to interpolate in
                tri = None
            if tri is not None:
                simplex = tri.find_simplex(x)
                transform = tri.transform
        if tri is not None:
            inside = simplex >= 0
            transform = transform[simplex[inside]]
            b = np.einsum("nij,nj->ni", transform[:, :d], x[inside] - transform[:, d])
            bary = np.concatenate([b, 1.0 - b.sum(axis=1, keepdims=True)], axis=1)
            rows = np.repeat(np.flatnonzero(inside), d + 1)
            cols = tri.simplices[simplex[inside]].ravel().astype(np.int64)
            values = bary.ravel()
            outside = ~inside
    if outside.any():
        _, nearest = cKDTree(y).query(x[outside], k=1)
        rows = np.concatenate([rows, np.flatnonzero(outside)])
        cols = np.concatenate([cols, np.asarray(nearest, dtype=np.int64)])
        values = np.concatenate([values, np.ones(int(outside.sum()))])
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order], values[order]


def _mls_linear(x: np.ndarray, y: np.ndarray, w: np.ndarray, radius: np.ndarray):
    """Entries (row, col, α) of the moving-least-squares linear interpolation matrix.

    With ω the hat-kernel weights of the pairs of row i, m = Σ ω δ / Σ ω and
    C = Σ ω δ δᵀ / Σ ω − m mᵀ, the fitted value at x_i is Σ_j α_j f_j with
    α_j = ω_j / Σ ω · (1 − (δ_j − m)ᵀ C⁻¹ m).
    """
    n_out, d = x.shape
    nb = box_neighbors(x, y, radius)
    rows, cols, delta = nb.rows, nb.cols, np.asarray(nb.offsets)
    omega = w[cols] * np.prod(np.clip(1.0 - np.abs(delta) / radius, 0.0, None), axis=1)
    keep = omega > 0
    rows, cols, delta, omega = rows[keep], cols[keep], delta[keep], omega[keep]
    total = np.bincount(rows, weights=omega, minlength=n_out)
    count = np.bincount(rows, minlength=n_out)
    safe_total = np.where(total > 0, total, 1.0)
    mean = np.stack([np.bincount(rows, weights=omega * delta[:, a], minlength=n_out)
                     for a in range(d)], axis=1) / safe_total[:, None]
    cov = np.empty((n_out, d, d))
    for a in range(d):
        for b in range(a, d):
            s = np.bincount(rows, weights=omega * delta[:, a] * delta[:, b], minlength=n_out)
            cov[:, a, b] = cov[:, b, a] = s / safe_total - mean[:, a] * mean[:, b]
    # A row is fitted linearly where the local configuration spans the space: at least d + 1
    # points and a covariance that is not (numerically) flat relative to the support's size.
    scale = float(np.prod(radius)) ** (2.0 / d)
    eig_min = np.linalg.eigvalsh(cov)[:, 0] if n_out else np.zeros(0)
    linear = (count > d) & (eig_min > 1e-8 * scale)
    correction = np.zeros((n_out, d))
    if linear.any():
        correction[linear] = np.linalg.solve(cov[linear], mean[linear][..., None])[..., 0]
    factor = 1.0 - np.einsum("pd,pd->p", delta - mean[rows], correction[rows])
    values = omega / safe_total[rows] * factor

    empty = np.flatnonzero(total <= 0)
    if len(empty):  # no point under the hat: take the nearest one
        _, nearest = cKDTree(y).query(x[empty], k=1)
        rows = np.concatenate([rows, empty])
        cols = np.concatenate([cols, nearest])
        values = np.concatenate([values, np.ones(len(empty))])
        order = np.argsort(rows, kind="stable")
        rows, cols, values = rows[order], cols[order], values[order]
    return rows, cols, values
