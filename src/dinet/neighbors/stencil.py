"""The :class:`Stencil`: a layer's sparse integration matrix between two point sets."""

from __future__ import annotations

import threading

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

    Built once per (input set, output set, geometry) and cached; the torch tensors for a
    given device and dtype are made on first use and kept, and so is the transpose (which
    only backward passes need).

    Args:
        indptr: ``(n_basis * n_out + 1,)`` CSR row pointers.
        indices: ``(nnz,)`` input indices.
        values: ``(nnz,)`` float64 values.
        n_out, n_in, n_basis: the matrix is ``(n_basis * n_out, n_in)``.
    """

    def __init__(self, indptr, indices, values, n_out: int, n_in: int, n_basis: int) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float64)
        self.n_out, self.n_in, self.n_basis = int(n_out), int(n_in), int(n_basis)
        if len(self.indptr) != self.n_basis * self.n_out + 1:
            raise ValueError("Stencil indptr does not match n_basis * n_out rows")
        self._tensors: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._transpose: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_entries(
        cls, rows, basis, cols, values, n_out: int, n_in: int, n_basis: int
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
        return cls(indptr, np.asarray(cols)[order], np.asarray(values)[order], n_out, n_in, n_basis)

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_basis * self.n_out, self.n_in)

    def nbytes(self) -> int:
        """Host memory held (the CSR arrays and, once built, the transpose)."""
        total = self.indptr.nbytes + self.indices.nbytes + self.values.nbytes
        if self._transpose is not None:
            total += sum(a.nbytes for a in self._transpose)
        return total

    def scipy(self) -> sp.csr_matrix:
        """S as a scipy CSR matrix (float64)."""
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=self.shape)

    def _transposed_arrays(self):
        if self._transpose is None:
            t = self.scipy().tocsc()  # CSC of S is CSR of S^T: a counting sort, O(nnz)
            self._transpose = (
                t.indptr.astype(np.int64),
                t.indices.astype(np.int64),
                t.data,
            )
        return self._transpose

    def tensors(self, device, dtype, transpose: bool = False) -> torch.Tensor:
        """S (or S^T when ``transpose``) as a torch sparse CSR tensor on ``device``."""
        key = (torch.device(device), dtype, transpose)
        with self._lock:
            if key not in self._tensors:
                if transpose:
                    indptr, indices, values = self._transposed_arrays()
                    shape = (self.n_in, self.shape[0])
                else:
                    indptr, indices, values = self.indptr, self.indices, self.values
                    shape = self.shape
                self._tensors[key] = torch.sparse_csr_tensor(
                    torch.from_numpy(indptr),
                    torch.from_numpy(indices),
                    torch.from_numpy(values).to(dtype),
                    size=shape,
                    check_invariants=False,
                ).to(device)
            return self._tensors[key]

    def __repr__(self) -> str:
        return (
            f"Stencil(n_out={self.n_out}, n_in={self.n_in}, n_basis={self.n_basis}, "
            f"nnz={self.nnz})"
        )
