"""The immutable :class:`PointSet`: a discretization of the domain [-1, 1]^d with weights."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from .voronoi import voronoi_weights
from .weights import knn_weights, lattice_weights, prefix_shape

__all__ = ["PointSet"]

# How the quadrature weights of a point set were obtained; decides how `prefix` re-weights.
#  "uniform": measure / N.  "density": inverse sampling density / N (analytic or given), so a
#  prefix of m points scales them by N / m.  "knn": a k-nearest-neighbour volume estimate,
#  recomputed on the prefix.  "lattice": cell volume of an axis-aligned lattice.
#  "voronoi": the measure of each point's Voronoi cell in the domain (or its region),
#  recomputed on the prefix.
WEIGHT_METHODS = ("uniform", "density", "knn", "lattice", "voronoi")


def _as_tensor(values, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach()
    return torch.as_tensor(np.asarray(values))


class PointSet:
    """A discretization of the domain Ω = [-1, 1]^d: points, quadrature weights and a kind.

    Immutable and hashable by content, so stencils built on it can be cached. Use the
    generators in :mod:`dinet.points` (:func:`~dinet.points.sobol`, :func:`~dinet.points.grid`,
    …) rather than the constructor.

    Args:
        coords: ``(N, d)`` coordinates in [-1, 1]^d; ``coords[:, k]`` is array axis k.
        weights: ``(N,)`` positive quadrature weights; Σ w_j approximates the measure of the
            region the points cover (2^d for the whole domain).
        kind: a short name of the generator ("sobol", "grid", "shrunk", …).
        shape: the lattice shape for grid-structured kinds, else ``None``.
        weight_method: how the weights were obtained (see ``WEIGHT_METHODS``); it decides how
            :meth:`prefix` re-weights.
        region: the part of the domain the points cover when it is not the whole box (see
            :func:`~dinet.points.voronoi_weights`); Voronoi weights of prefixes use it.

    Attributes:
        coords: float32 tensor ``(N, d)``. Do not modify it in place.
        weights: float32 tensor ``(N,)``. Do not modify it in place.
        kind, shape, weight_method, region, dim, digest (hex content hash).
    """

    __slots__ = ("coords", "weights", "kind", "shape", "weight_method", "region", "digest",
                 "_frozen")

    def __init__(
        self,
        coords,
        weights,
        kind: str = "points",
        shape: Sequence[int] | None = None,
        weight_method: str = "density",
        *,
        region=None,
        digest: str | None = None,
    ) -> None:
        coords = _as_tensor(coords, "coords")
        weights = _as_tensor(weights, "weights")
        if coords.ndim != 2:
            raise ValueError(
                f"PointSet coords must have shape (N, d); got {tuple(coords.shape)} — "
                "reshape to one row per point"
            )
        n, d = coords.shape
        if n == 0:
            raise ValueError(
                "PointSet is empty (N = 0) — a discretization needs at least one point"
            )
        if d < 1:
            raise ValueError("PointSet coords have zero columns — pass (N, d) with d >= 1")
        if weights.shape != (n,):
            raise ValueError(
                f"PointSet weights must have shape ({n},) to match coords; got "
                f"{tuple(weights.shape)}"
            )
        if weight_method not in WEIGHT_METHODS:
            raise ValueError(
                f"unknown weight_method {weight_method!r}; valid: {', '.join(WEIGHT_METHODS)}"
            )
        coords = coords.to(torch.float32).contiguous()
        weights = weights.to(torch.float32).contiguous()
        if digest is None:  # validation is skipped only for trusted copies (to(), etc.)
            c = coords.cpu()
            if not torch.isfinite(c).all():
                bad = int((~torch.isfinite(c)).any(dim=1).nonzero()[0])
                raise ValueError(
                    f"PointSet coords contain NaN or inf (first at row {bad}) — drop or fix "
                    "those points"
                )
            lo, hi = float(c.min()), float(c.max())
            if lo < -1.0 or hi > 1.0:
                col = int((c.abs() > 1.0).any(dim=0).nonzero()[0])
                raise ValueError(
                    f"PointSet coords must lie in [-1, 1]^{d}; got range [{lo:.4g}, {hi:.4g}] "
                    f"(column {col} is outside) — rescale your coordinates into the domain"
                )
            w = weights.cpu()
            if not torch.isfinite(w).all() or bool((w <= 0).any()):
                raise ValueError(
                    f"PointSet quadrature weights must be positive and finite; got min "
                    f"{float(w.min()):.4g} — use weights='knn' to estimate them"
                )
            if shape is not None and int(np.prod(shape)) != n:
                raise ValueError(f"grid shape {tuple(shape)} does not hold {n} points")
            digest = _content_digest(c, w, kind, shape)
        object.__setattr__(self, "coords", coords)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "kind", str(kind))
        object.__setattr__(self, "shape", None if shape is None else tuple(int(s) for s in shape))
        object.__setattr__(self, "weight_method", weight_method)
        object.__setattr__(self, "region", region)
        object.__setattr__(self, "digest", digest)
        object.__setattr__(self, "_frozen", True)

    # --- immutability and identity -------------------------------------------------------
    def __setattr__(self, name, value):
        raise AttributeError("PointSet is immutable; build a new one (e.g. with prefix or masked)")

    def __delattr__(self, name):
        raise AttributeError("PointSet is immutable")

    def __setstate__(self, state) -> None:
        # copy.copy/deepcopy and pickle rebuild an object slot by slot with setattr, which
        # the immutability guard refuses; restore the slots past it (the content is trusted:
        # it was validated when the original was built, and the digest travels with it).
        _, slots = state
        for name, value in slots.items():
            object.__setattr__(self, name, value)

    def __hash__(self) -> int:
        return int(self.digest[:15], 16)

    def __eq__(self, other) -> bool:
        return isinstance(other, PointSet) and other.digest == self.digest

    def __len__(self) -> int:
        return self.coords.shape[0]

    @property
    def dim(self) -> int:
        """Spatial dimension d."""
        return self.coords.shape[1]

    @property
    def device(self) -> torch.device:
        return self.coords.device

    def __repr__(self) -> str:
        shape = f", shape={self.shape}" if self.shape is not None else ""
        return (
            f"PointSet(kind={self.kind!r}, n={len(self)}, dim={self.dim}{shape}, "
            f"digest={self.digest[:10]})"
        )

    # --- derived point sets --------------------------------------------------------------
    def to(self, device) -> PointSet:
        """The same point set with its tensors on ``device`` (same content hash)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return PointSet(
            self.coords.to(device),
            self.weights.to(device),
            self.kind,
            self.shape,
            self.weight_method,
            region=self.region,
            digest=self.digest,
        )

    def prefix(self, m: int) -> PointSet:
        """The first ``m`` points as a point set of their own (a coarser discretization).

        Weights are re-derived for the smaller set: uniform and density weights scale by
        N / m, k-NN and Voronoi weights are recomputed. For grid-structured sets, ``m`` must
        be the size of a coarser level (the sub-grid of indices ≡ 0 mod 2^k); see
        :meth:`levels`.
        """
        n = len(self)
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= n:
            raise ValueError(f"prefix size must be an integer in [1, {n}]; got {m!r}")
        m = int(m)
        if m == n:
            return self
        shape = None
        if self.shape is not None:
            shape = prefix_shape(self.shape, m)
            if shape is None:
                raise ValueError(
                    f"prefix({m}) of a {self.kind} {self.shape} is not a coarser grid; valid "
                    f"sizes are {self.levels()} (the sub-grids of indices ≡ 0 mod 2^k)"
                )
        coords = self.coords[:m]
        if self.weight_method == "uniform":
            weights = torch.full((m,), float(self.weights.sum()) / m, device=self.device)
        elif self.weight_method == "knn":
            weights = knn_weights(coords)
        elif self.weight_method == "lattice":
            weights = lattice_weights(coords, shape)
        elif self.weight_method == "voronoi":
            weights = torch.as_tensor(voronoi_weights(coords.double().cpu().numpy(), self.region),
                                      dtype=torch.float32, device=self.device)
        else:
            weights = self.weights[:m] * (n / m)
        kind = self.kind
        return PointSet(coords, weights, kind, shape, self.weight_method, region=self.region)

    def coarsen(self, stride: int = 2) -> PointSet:
        """The coarser discretization a stride-``stride`` layer downsamples to.

        Grid-structured sets: the sub-grid of indices ≡ 0 mod ``stride`` (a power of two).
        Other sets: the prefix of ⌈N / stride^d⌉ points (a Sobol prefix of N/4 points in 2-D
        for stride 2).
        """
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"stride must be a positive integer; got {stride!r}")
        if self.shape is None:
            return self.prefix(max(1, -(-len(self) // int(stride) ** self.dim)))
        level = int(np.log2(stride))
        if 2**level != stride:
            raise ValueError(
                f"a {self.kind} point set coarsens by powers of two; got stride {stride}"
            )
        shape = self.shape
        for _ in range(level):
            shape = tuple((s + 1) // 2 for s in shape)
        return self.prefix(int(np.prod(shape)))

    def levels(self) -> list[int]:
        """Valid prefix sizes, fine to coarse (grid-structured sets); ``[N]`` otherwise."""
        if self.shape is None:
            return [len(self)]
        sizes, shape = [], self.shape
        while True:
            sizes.append(int(np.prod(shape)))
            if all(s == 1 for s in shape):
                return sizes
            shape = tuple((s + 1) // 2 for s in shape)


def _content_digest(coords: torch.Tensor, weights: torch.Tensor, kind: str, shape) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(coords.numpy().tobytes())
    h.update(weights.numpy().tobytes())
    h.update(f"{kind}|{shape}".encode())
    return h.hexdigest()
