"""Kernel families of :class:`~dinet.nn.DIConv`: how K(δ) = Σ_b φ_b(δ) W_b / Π h is built.

A family says what its basis learns (a module, or nothing), the shape of the coefficients
``W_b``, the support, the stencil between two point sets, the stencil's values when they
are computed rather than fixed, and — where one exists — a dense fast path on grids.
``DIConv(kernel=name)`` looks the family up here and never branches on its name; a family
written outside dinet plugs in with :func:`register_kernel_family`. Where backends differ
(the compiled CPU kernels today, GPU kernels next) the family chooses, not the layer.

Families are stateless strategies: every method receives the layer, whose attributes
(``dim``, ``kernel_size``, ``spacing``, ``dilation``, ``basis``) hold the geometry and the
learned parts, so a layer's ``state_dict`` is the same whatever family code runs it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..neighbors import Stencil
from ..neighbors.stencils import (
    SNAP,
    PairStencil,
    pair_stencil,
    spline_stencil,
    spline_support,
)
from ..points import PointSet
from ._gridconv import GridPlan, grid_plan, offset_plan, rasterize
from .kernels import MLPBasis

if TYPE_CHECKING:
    from .conv import DIConv

__all__ = ["CubicFamily", "KernelFamily", "MLPFamily", "SplineFamily", "kernel_families",
           "kernel_family", "register_kernel_family"]

#: Pairs per chunk above which the ``"mlp"`` basis is evaluated chunk by chunk, and recomputed
#: in backward rather than stored.
PAIR_CHUNK = 1 << 16


class KernelFamily:
    """Base class of kernel families (override what differs; see the module docstring)."""

    #: One line for help texts.
    help = ""

    @classmethod
    def build(cls, conv: DIConv, n_basis: int, hidden: int) -> tuple[nn.Module | None,
                                                                     tuple[int, ...]]:
        """The learned basis module (``None`` for a fixed basis, stored as ``conv.basis``)
        and the trailing shape of the coefficients ``W_b`` (``conv.weight[:, :, *shape]``)."""
        raise NotImplementedError

    @classmethod
    def support(cls, conv: DIConv) -> tuple[float, ...]:
        """Half-widths of the kernel's box support, per axis, in domain units."""
        return tuple(spline_support(conv.kernel_size, conv.spacing, conv.dilation).tolist())

    @classmethod
    def stencil(cls, conv: DIConv, points_in: PointSet, points_out: PointSet) -> Stencil:
        """The cached sparse stencil between two point sets."""
        raise NotImplementedError

    @classmethod
    def values(cls, conv: DIConv, stencil: Stencil, device, dtype) -> torch.Tensor | None:
        """The stencil's values in entry order when they are computed (and learned);
        ``None`` when the stencil holds fixed values."""
        return None

    @classmethod
    def grid_plan(cls, conv: DIConv, points_in: PointSet,
                  points_out: PointSet) -> GridPlan | None:
        """A dense convolution plan when both sets are lattices the family can run as
        ``F.conv`` exactly; ``None`` (the default) for the sparse stencil."""
        return None

    @classmethod
    def raster(cls, conv: DIConv, plan: GridPlan) -> torch.Tensor:
        """The discrete kernel ``(O, C_in/groups, *raster)`` of a :meth:`grid_plan`,
        differentiable with respect to the layer's parameters."""
        return rasterize(conv.weight, plan)

    @classmethod
    def backend(cls, conv: DIConv, x: torch.Tensor) -> str:
        """The :func:`~dinet.nn.functional.stencil_conv` backend for ``x``: the layer's
        ``backend`` (``"auto"``: the fused Triton kernels on CUDA, the compiled kernels on
        the CPU); a family may pin ``"sparse"`` or ``"triton"``."""
        return conv.backend


class SplineFamily(KernelFamily):
    """Tensor-product linear hats on a k^d lattice: exact ``conv2d``/``conv3d`` on grids."""

    help = "linear hats on the kernel lattice (exact conv2d on grids)"

    @classmethod
    def build(cls, conv, n_basis, hidden):
        return None, conv.kernel_size

    @classmethod
    def stencil(cls, conv, points_in, points_out):
        return spline_stencil(points_in, points_out, conv.kernel_size, conv.spacing,
                              conv.dilation)

    @classmethod
    def grid_plan(cls, conv, points_in, points_out):
        return grid_plan(points_in, points_out, conv.kernel_size, conv.spacing, conv.dilation)


class MLPFamily(KernelFamily):
    """A learned continuous basis: φ_m(δ) = MLP_m(δ / r) × a window vanishing at the edge."""

    help = "a learned MLP basis of n_basis functions (smooth on scattered points)"

    @classmethod
    def build(cls, conv, n_basis, hidden):
        return MLPBasis(conv.dim, n_basis, hidden), (n_basis,)

    @classmethod
    def stencil(cls, conv, points_in, points_out):
        return pair_stencil(points_in, points_out, cls.support(conv), conv.n_basis)

    @classmethod
    def values(cls, conv, stencil: PairStencil, device, dtype):
        """w_j φ_m(δ/r) / Π h in entry order, differentiable with respect to the basis."""
        radius = torch.as_tensor(cls.support(conv), device=device, dtype=dtype)
        u = stencil.pair_tensor("offsets", device, dtype) / radius
        if len(u) <= PAIR_CHUNK:
            phi = conv.basis(u)  # (P, M)
        elif torch.is_grad_enabled():
            # Keep only the inputs of each chunk for backward and recompute its activations
            # there: autograd would otherwise hold hidden-width activations for every pair
            # (hundreds of bytes each: tens of GiB at a million points).
            phi = torch.cat([checkpoint(conv.basis, part, use_reentrant=False)
                             for part in u.split(PAIR_CHUNK)])
        else:
            phi = torch.cat([conv.basis(part) for part in u.split(PAIR_CHUNK)])
        scale = stencil.pair_tensor("pair_weights", device, dtype) / math.prod(conv.spacing)
        return (phi * scale[:, None]).t().reshape(-1)

    @classmethod
    def grid_plan(cls, conv, points_in, points_out):
        return offset_plan(points_in, points_out, cls.support(conv), conv.spacing)

    @classmethod
    def raster(cls, conv, plan):
        """K(m·g) · w / Π h on every lattice offset in the support: the basis evaluated once
        per offset (not once per pair as on scattered points)."""
        weight = conv.weight
        offsets = [t[:, 0] for t in plan.tensor("taps", weight.device, weight.dtype)]
        mesh = torch.stack(torch.meshgrid(*offsets, indexing="ij"), dim=-1)
        radius = torch.as_tensor(cls.support(conv), device=weight.device, dtype=weight.dtype)
        phi = conv.basis((mesh / radius).reshape(-1, conv.dim))  # (T, M)
        kernel = torch.einsum("oim,tm->oit", weight, phi) * plan.scale
        return kernel.reshape(*weight.shape[:2], *mesh.shape[:-1])


def keys_cubic(s: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' interpolating cubic: 1 at 0, 0 at every other integer, support (−2, 2), C¹."""
    t = s.abs()
    inner = ((a + 2) * t - (a + 3)) * t * t + 1
    outer = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t < 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


class CubicFamily(KernelFamily):
    """Keys' interpolating cubic on the k^d lattice: φ_b(δ) = Π_k c(δ_k / h_k − t_bk).

    Like the linear hat, c is 1 at its own tap and 0 at every other one, so on a grid the
    layer *is* ``conv2d`` (``DIConv.from_conv(..., kernel="cubic")`` is exact there); between
    the taps it is smooth and much flatter in frequency than the hat, so on other points the
    integral stays closer to the CNN's sum. Its support is two steps past the outer taps.
    Dilation 1 only.
    """

    help = "Keys' cubic on the kernel lattice (exact conv2d on grids, smooth between taps)"

    @classmethod
    def build(cls, conv, n_basis, hidden):
        if any(r != 1 for r in conv.dilation):
            raise ValueError("the cubic kernel family takes dilation 1; use kernel='spline' "
                             "for dilated convolutions")
        return None, conv.kernel_size

    @classmethod
    def support(cls, conv):
        return tuple(((k - 1) / 2 + 2) * h for k, h in zip(conv.kernel_size, conv.spacing,
                                                           strict=True))

    @classmethod
    def stencil(cls, conv, points_in, points_out):
        return pair_stencil(points_in, points_out, cls.support(conv),
                            math.prod(conv.kernel_size))

    @classmethod
    def values(cls, conv, stencil: PairStencil, device, dtype):
        """w_j φ_b(δ) / Π h for every pair and tap, basis-major (cached per device and
        dtype: computed once in float64)."""
        def make():
            offsets = stencil.pair_tensor("offsets", device, torch.float64)
            phi = torch.ones(len(offsets), 1, dtype=torch.float64, device=device)
            for axis, (k, h) in enumerate(zip(conv.kernel_size, conv.spacing, strict=True)):
                u = offsets[:, axis] / h + (k - 1) / 2  # lattice coordinate of the offset
                snapped = torch.round(u)
                u = torch.where((u - snapped).abs() < SNAP / h, snapped, u)
                taps = torch.arange(k, dtype=torch.float64, device=device)
                phi = (phi[:, :, None] * keys_cubic(u[:, None] - taps)[:, None, :]).reshape(
                    len(offsets), -1)
            scale = stencil.pair_tensor("pair_weights", device, torch.float64)
            values = (phi * (scale / math.prod(conv.spacing))[:, None]).t().reshape(-1)
            return values.to(dtype)

        return stencil.memo(("cubic", conv.kernel_size, conv.spacing, torch.device(device),
                             dtype), make)


_FAMILIES: dict[str, type[KernelFamily]] = {}


def register_kernel_family(name: str, family: type[KernelFamily]) -> None:
    """Make ``DIConv(kernel=name)`` build its kernel with ``family`` (a subclass of
    :class:`KernelFamily`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a kernel family name is a non-empty string; got {name!r}")
    if not (isinstance(family, type) and issubclass(family, KernelFamily)):
        raise ValueError(f"family must be a subclass of KernelFamily; got {family!r}")
    _FAMILIES[name] = family


def kernel_families() -> tuple[str, ...]:
    """The registered family names."""
    return tuple(_FAMILIES)


def kernel_family(name: str) -> type[KernelFamily]:
    """The family registered as ``name``, or a ValueError naming the valid ones."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown kernel family {name!r}; valid: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


register_kernel_family("spline", SplineFamily)
register_kernel_family("mlp", MLPFamily)
register_kernel_family("cubic", CubicFamily)
