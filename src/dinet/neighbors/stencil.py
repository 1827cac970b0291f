"""The :class:`Stencil`: a layer's sparse integration matrix between two point sets."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["Stencil"]


class Stencil:
    """The sparse matrix S of a DI layer, with rows (basis b, output i) and columns (input j).

    ``S[b * n_out + i, j] = w_j φ_b(y_j − x_i)`` for a basis of ``n_basis`` functions φ_b, the
    quadrature weights w_j of the input points and the offsets y_j − x_i; ``Z = S @ X`` then
    holds, for every basis function, the integral of the basis against the input field around
    each output point. Rows are basis-major, so ``Z`` reshapes to ``(n_basis, n_out, C)``.

    The matrix may index points in an internal order of its own: input position p is point
    ``in_order[p]`` of the input set and output position q is point ``out_order[q]``
    (spatially sorted orders keep the sparse products cache-friendly). ``None`` means the
    point sets' own order.

    Built once per (input set, output set, geometry) and cached; the arrays for a given
    device and dtype are made on first use and kept, and so is the transpose (which only
    backward passes need).

    Args:
        indptr: ``(n_basis * n_out + 1,)`` CSR row pointers.
        indices: ``(nnz,)`` input positions.
        values: ``(nnz,)`` float64 values.
        n_out, n_in, n_basis: the matrix is ``(n_basis * n_out, n_in)``.
        in_order, out_order: ``(n_in,)`` / ``(n_out,)`` permutations, or ``None``.
    """

    def __init__(self, indptr, indices, values, n_out: int, n_in: int, n_basis: int,
                 in_order=None, out_order=None) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float64)
        self.n_out, self.n_in, self.n_basis = int(n_out), int(n_in), int(n_basis)
        if len(self.indptr) != self.n_basis * self.n_out + 1:
            raise ValueError("Stencil indptr does not match n_basis * n_out rows")
        self.in_order = None if in_order is None else np.asarray(in_order, dtype=np.int64)
        self.out_order = None if out_order is None else np.asarray(out_order, dtype=np.int64)
        self._cache: dict[tuple, object] = {}
        self._lock = threading.RLock()  # arrays() is called inside tensors()

    @classmethod
    def from_entries(
        cls, rows, basis, cols, values, n_out: int, n_in: int, n_basis: int,
        in_order=None, out_order=None,
    ) -> Stencil:
        """Build from entries listed with non-decreasing output index ``rows``.

        Entries are put in (b, i) row order by a counting sort (scipy's CSR → CSC
        conversion, which is stable), so no comparison sort is needed.
        """
        rows = np.asarray(rows, dtype=np.int64)
        basis = np.asarray(basis, dtype=np.int64)
        by_output = np.zeros(n_out + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_out), out=by_output[1:])
        entry = np.arange(len(rows), dtype=np.int64)
        # Matrix (output i) x (basis b) holding entry numbers; its CSC order is (b, i).
        csc = sp.csr_matrix((entry, basis, by_output), shape=(n_out, n_basis)).tocsc()
        order = csc.data
        indptr = np.zeros(n_basis * n_out + 1, dtype=np.int64)
        np.cumsum(
            np.bincount(basis[order] * n_out + csc.indices, minlength=n_basis * n_out),
            out=indptr[1:],
        )
        return cls(indptr, np.asarray(cols)[order], np.asarray(values)[order], n_out, n_in,
                   n_basis, in_order, out_order)

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_basis * self.n_out, self.n_in)

    def nbytes(self) -> int:
        """Host memory held by the CSR arrays (float64 values, int64 indices)."""
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes

    def scipy(self) -> sp.csr_matrix:
        """S as a scipy CSR matrix (float64), in the stencil's internal point order."""
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=self.shape)

    def _cached(self, key, make):
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def arrays(self, dtype=np.float64, transpose: bool = False):
        """``(indptr, indices, values)`` numpy arrays of S (or S^T), values in ``dtype``."""
        dtype = np.dtype(dtype)

        def make():
            if transpose:
                t = self.scipy().tocsc()  # CSC of S is CSR of S^T: a counting sort, O(nnz)
                base = (t.indptr.astype(np.int64), t.indices.astype(np.int64), t.data)
            else:
                base = (self.indptr, self.indices, self.values)
            return base[0], base[1], base[2].astype(dtype, copy=False)

        return self._cached(("arrays", dtype.str, transpose), make)

    def tensors(self, device, dtype, transpose: bool = False) -> torch.Tensor:
        """S (or S^T when ``transpose``) as a torch sparse CSR tensor on ``device``."""
        def make():
            indptr, indices, values = self.arrays(np.float64, transpose)
            shape = (self.n_in, self.shape[0]) if transpose else self.shape
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                return torch.sparse_csr_tensor(
                    torch.from_numpy(indptr), torch.from_numpy(indices),
                    torch.from_numpy(values).to(dtype), size=shape, check_invariants=False,
                ).to(device)

        return self._cached(("tensors", torch.device(device), dtype, transpose), make)

    def order(self, which: str, device) -> torch.Tensor | None:
        """``in_order`` or ``out_order`` as a torch index tensor on ``device`` (or ``None``)."""
        perm = self.in_order if which == "in" else self.out_order
        if perm is None:
            return None
        return self._cached(("order", which, torch.device(device)),
                            lambda: torch.from_numpy(perm).to(device))

    def __repr__(self) -> str:
        return (
            f"Stencil(n_out={self.n_out}, n_in={self.n_in}, n_basis={self.n_basis}, "
            f"nnz={self.nnz})"
        )
