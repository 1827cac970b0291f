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
        values: ``(nnz,)`` float64 values, or ``None`` for a stencil whose values are
            computed at every call (learned kernels); only its structure is then fixed.
        n_out, n_in, n_basis: the matrix is ``(n_basis * n_out, n_in)``.
        in_order, out_order: ``(n_in,)`` / ``(n_out,)`` permutations, or ``None``.
    """

    def __init__(self, indptr, indices, values, n_out: int, n_in: int, n_basis: int,
                 in_order=None, out_order=None) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.values = None if values is None else np.asarray(values, dtype=np.float64)
        self.n_out, self.n_in, self.n_basis = int(n_out), int(n_in), int(n_basis)
        if len(self.indptr) != self.n_basis * self.n_out + 1:
            raise ValueError("Stencil indptr does not match n_basis * n_out rows")
        self.in_order = None if in_order is None else np.asarray(in_order, dtype=np.int64)
        self.out_order = None if out_order is None else np.asarray(out_order, dtype=np.int64)
        self._cache: dict[tuple, object] = {}
        self._lock = threading.RLock()  # cached builders call each other

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

    @classmethod
    def from_device(cls, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
                    n_out: int, n_in: int, n_basis: int) -> Stencil:
        """A stencil built on a device (in the point sets' own order): the host keeps a
        copy, and the device arrays serve the kernels there without another upload."""
        stencil = cls(indptr.cpu().numpy(), indices.cpu().numpy(),
                      values.detach().double().cpu().numpy(), n_out, n_in, n_basis)
        device = indptr.device
        stencil._cache[("index", "indptr", device)] = indptr
        stencil._cache[("index", "indices", device)] = indices
        stencil._cache[("values", device, torch.float64)] = values.double()
        return stencil

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_basis * self.n_out, self.n_in)

    def nbytes(self) -> int:
        """Host memory held by the CSR arrays (int64 indices, float64 values if fixed)."""
        total = self.indptr.nbytes + self.indices.nbytes
        return total + (0 if self.values is None else self.values.nbytes)

    def scipy(self, values=None) -> sp.csr_matrix:
        """S as a scipy CSR matrix (float64), in the stencil's internal point order."""
        values = self.values if values is None else np.asarray(values, dtype=np.float64)
        return sp.csr_matrix((values, self.indices, self.indptr), shape=self.shape)

    def _cached(self, key, make):
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def memo(self, key: tuple, make):
        """``make()`` computed once per ``key`` and kept with the stencil (values a kernel
        family derives from the structure, per device)."""
        return self._cached(("memo", *key), make)

    def structure(self, transpose: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)`` of S, or of S^T when ``transpose``."""
        if not transpose:
            return self.indptr, self.indices
        indptr, indices, _ = self.transpose_structure()
        return indptr, indices

    def transpose_structure(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr, indices, perm)`` of S^T: entry e of S^T is entry ``perm[e]`` of S.

        Built once by scipy's CSR → CSC conversion (a counting sort) on entry numbers, so
        S^T's values for any values of S are ``values[perm]``.
        """
        def make():
            entries = np.arange(self.nnz, dtype=np.int64)
            t = sp.csr_matrix((entries, self.indices, self.indptr), shape=self.shape).tocsc()
            return t.indptr.astype(np.int64), t.indices.astype(np.int64), t.data

        return self._cached(("transpose",), make)

    def index_tensor(self, name: str, device) -> torch.Tensor:
        """A cached int64 tensor on ``device``: ``"indptr"``, ``"indices"``, their transposed
        versions ``"indptr_t"``, ``"indices_t"``, ``"perm_t"``, or ``"rows"`` (the row of
        every entry)."""
        def make():
            if name == "rows":
                array = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
            elif name in ("indptr", "indices"):
                array = getattr(self, name)
            else:
                indptr_t, indices_t, perm = self.transpose_structure()
                array = {"indptr_t": indptr_t, "indices_t": indices_t, "perm_t": perm}[name]
            return torch.from_numpy(array).to(device)

        return self._cached(("index", name, torch.device(device)), make)

    def value_tensor(self, device, dtype) -> torch.Tensor:
        """The fixed values as a cached tensor (stencils whose values are learned have none)."""
        if self.values is None:
            raise ValueError("this stencil has no fixed values; pass the values to use")
        def make():
            # A stencil built on the device keeps its float64 values there: convert those.
            there = self._cache.get(("values", torch.device(device), torch.float64))
            source = torch.from_numpy(self.values) if there is None else there
            return source.to(device=device, dtype=dtype)

        return self._cached(("values", torch.device(device), dtype), make)

    def tensors(self, device, dtype, transpose: bool = False, values=None) -> torch.Tensor:
        """S (or S^T when ``transpose``) as a torch sparse CSR tensor on ``device``.

        ``values`` (a tensor in S's entry order) replaces the fixed values.
        """
        if values is None:
            values = self.value_tensor(device, dtype)
        suffix = "_t" if transpose else ""
        if transpose:
            values = values[self.index_tensor("perm_t", device)]
        crow = self.index_tensor("indptr" + suffix, device)
        col = self.index_tensor("indices" + suffix, device)
        shape = (self.n_in, self.shape[0]) if transpose else self.shape
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, col, values.to(dtype), size=shape,
                                           check_invariants=False)

    def gather_structure(self, device, transpose: bool = False) -> dict[str, torch.Tensor]:
        """The structure a gather kernel reads (the fused GPU convolution), on ``device``.

        ``{"indptr", "cols", "dst"}``: row ``b * n_dst + r`` lists the entries of basis
        function b at destination position r; ``cols`` are the source *points* (the
        internal orders already applied, int32) and ``dst[r]`` is the destination point of
        position r. With ``transpose`` the roles swap (inputs are the destinations, for
        the input gradient) and ``"perm"`` maps those entries to S's entry order, so the
        values of that matrix are ``values[perm]``.
        """
        def make():
            n_dst = self.n_in if transpose else self.n_out
            indptr = self.index_tensor("indptr", device)
            indices = self.index_tensor("indices", device)
            rows = torch.repeat_interleave(torch.arange(len(indptr) - 1, device=indptr.device),
                                           indptr.diff())
            src_order = self.order("out" if transpose else "in", device)
            dst_order = self.order("in" if transpose else "out", device)
            arrays = {}
            if transpose:  # rows b * n_in + j, stably sorted: entries keep i increasing
                key = rows // self.n_out * self.n_in + indices
                arrays["perm"] = torch.sort(key, stable=True).indices
                indptr = torch.zeros(self.n_basis * n_dst + 1, dtype=torch.long,
                                     device=indptr.device)
                indptr[1:] = torch.cumsum(torch.bincount(key, minlength=len(indptr) - 1), 0)
                indices = (rows % self.n_out)[arrays["perm"]]
            cols = indices if src_order is None else src_order[indices]
            dst = (torch.arange(n_dst, device=indptr.device) if dst_order is None
                   else dst_order)
            return {"indptr": indptr, "cols": cols.int(), "dst": dst.int(), **arrays}

        return self._cached(("gather", transpose, torch.device(device)), make)

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
