"""``DIConv``: the discretization-invariant convolution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..neighbors import Stencil
from ..points import PointSet, grid, grid_axes, lattice
from .functional import stencil_conv
from .kernels import spline_stencil, spline_support

__all__ = ["DIConv"]

KERNEL_FAMILIES = ("spline",)


def _per_axis(value, dim: int, name: str, kind=float) -> tuple:
    values = tuple(value) if isinstance(value, (Sequence, np.ndarray, torch.Tensor)) else (value,)
    if len(values) == 1:
        values = values * dim
    if len(values) != dim:
        raise ValueError(f"{name} needs 1 or {dim} values (one per axis); got {len(values)}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be numbers; got {value!r}")
        if kind is int and int(v) != v:
            raise ValueError(f"{name} must be integers; got {value!r}")
        if not math.isfinite(float(v)) or v <= 0:
            raise ValueError(
                f"{name} must be positive and finite; got {value!r} — "
                + ("spacing is the kernel lattice step in domain units, e.g. 2/H for an H-pixel "
                   "image" if name == "spacing" else f"use {name}=1 or more")
            )
        out.append(kind(v))
    return tuple(out)


class DIConv(nn.Module):
    r"""Discretization-invariant convolution (DI-Net, Wang & Golland, TMLR 2023).

    Continuous cross-correlation, oriented as :func:`torch.nn.functional.conv2d`, computed
    by quadrature over whatever points the input field was sampled on:

    .. math::
        y(x_i) = \sum_{j:\, y_j - x_i \in S} w_j\, K(y_j - x_i)\, f(y_j) + b,
        \qquad K(\delta) = \frac{1}{\prod_k h_k} \sum_b \varphi_b(\delta)\, W_b

    with quadrature weights :math:`w_j` of the input points. The spline family uses
    tensor-product linear hats :math:`\varphi_b` of half-width :math:`h_k` centred on a
    :math:`k_0 \times \dots \times k_{d-1}` lattice of spacing :math:`h_k \cdot
    \text{dilation}_k`. The geometry is fixed in domain units at construction, never derived
    from the points that arrive — this is what makes the layer discretization invariant. On
    a grid of pixel spacing h (weights h^d), the hats hit lattice points exactly and the
    layer **is** ``conv2d``/``conv3d`` with weight ``W`` (zero padding comes for free).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: k, an int or one per axis.
        spacing: h, the kernel lattice step in domain units (a float or one per axis); for an
            H×W image on [-1, 1]^2 use ``(2/H, 2/W)`` to match a pixel convolution.
        dim: spatial dimension d (2 or 3; any d works).
        dilation: lattice step in multiples of h (int or one per axis). Default 1.
        groups: as in ``nn.Conv2d``. Default 1.
        bias: learn an additive bias. Default ``True``.
        kernel: kernel family; ``"spline"`` (default).

    Shapes:
        - x: ``(B, N_in, C_in)``
        - points_in: ``PointSet(N_in)``, points_out: ``PointSet(N_out)`` (default points_in)
        - output: ``(B, N_out, C_out)``

    Example:
        >>> import dinet.points as P
        >>> conv = DIConv(3, 16, 3, spacing=2 / 32)
        >>> pts = P.sobol(1024, 2, seed=0)
        >>> conv(torch.randn(4, 1024, 3), pts).shape
        torch.Size([4, 1024, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        spacing: float | Sequence[float],
        dim: int = 2,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        kernel: str = "spline",
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("groups", groups), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                f"divisible by groups ({groups})"
            )
        if kernel not in KERNEL_FAMILIES:
            raise ValueError(
                f"unknown kernel family {kernel!r}; valid: {', '.join(KERNEL_FAMILIES)}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dim = dim
        self.kernel_size = _per_axis(kernel_size, dim, "kernel_size", int)
        self.spacing = _per_axis(spacing, dim, "spacing", float)
        self.dilation = _per_axis(dilation, dim, "dilation", int)
        self.groups = groups
        self.kernel = kernel
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups,
                                               *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Conv2d``, since on a grid the layer is that conv."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def n_basis(self) -> int:
        return math.prod(self.kernel_size)

    @property
    def support(self) -> tuple[float, ...]:
        """Half-widths of the kernel's box support, per axis, in domain units."""
        return tuple(spline_support(self.kernel_size, self.spacing, self.dilation).tolist())

    def stencil(self, points_in: PointSet, points_out: PointSet | None = None) -> Stencil:
        """The cached sparse stencil of this layer's geometry between two point sets."""
        points_out = points_in if points_out is None else points_out
        for name, pts in (("points_in", points_in), ("points_out", points_out)):
            if not isinstance(pts, PointSet):
                raise ValueError(
                    f"{name} must be a dinet.points.PointSet; got {type(pts).__name__}"
                )
            if pts.dim != self.dim:
                raise ValueError(
                    f"{name} is {pts.dim}-D but this DIConv was built with dim={self.dim}"
                )
        return spline_stencil(points_in, points_out, self.kernel_size, self.spacing, self.dilation)

    def forward(
        self, x: torch.Tensor, points_in: PointSet, points_out: PointSet | None = None
    ) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(
                f"DIConv expects x of shape (B, N, C); got {tuple(x.shape)} — add a batch "
                "dimension with x.unsqueeze(0), or move channels last"
            )
        if x.shape[1] != len(points_in):
            raise ValueError(
                f"x has N={x.shape[1]} points but points_in has {len(points_in)} — sample the "
                "field on the same point set you pass"
            )
        if x.shape[2] != self.in_channels:
            raise ValueError(
                f"x has C={x.shape[2]} channels but this DIConv expects {self.in_channels}"
            )
        stencil = self.stencil(points_in, points_out)
        k, g = self.n_basis, self.groups
        og, cg = self.out_channels // g, self.in_channels // g
        weight = self.weight.reshape(g, og, cg, k).permute(3, 0, 2, 1)  # (K, G, Cg, Og)
        y = stencil_conv(x, weight, stencil)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"spacing={tuple(round(h, 6) for h in self.spacing)}, kernel={self.kernel!r}")
        if any(r != 1 for r in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s

    @classmethod
    def from_conv(
        cls, conv: nn.Module, grid_shape: Sequence[int] | PointSet
    ) -> tuple[DIConv, PointSet]:
        """Exact conversion of an ``nn.Conv1d/2d/3d`` applied to a grid.

        Args:
            conv: the convolution (weights, bias, stride, padding including ``"same"``,
                dilation, groups; ``padding_mode="zeros"``).
            grid_shape: the spatial shape of the conv's input, e.g. ``(H, W)``; or a grid
                point set (e.g. the ``points_out`` of a previous conversion).

        Returns:
            ``(layer, points_out)``: a :class:`DIConv` with the conv's weights whose output on
            ``points.grid(grid_shape)`` (or the given grid) equals the conv's output, and the
            point set standing for the conv's output pixels (each at the centre of its
            receptive field, so stride 2 with padding k//2 gives the grid's coarser prefix and
            a 2×2 stride-2 conv gives the coarse pixel centres).
        """
        if not isinstance(conv, nn.modules.conv._ConvNd) or conv.transposed:
            raise ValueError(
                f"from_conv converts nn.Conv1d/2d/3d; got {type(conv).__name__}"
            )
        if conv.padding_mode != "zeros":
            raise ValueError(
                f"padding_mode={conv.padding_mode!r} has no DI equivalent (points outside the "
                "domain do not exist, which is zero padding); use padding_mode='zeros'"
            )
        dim = len(conv.kernel_size)
        points_in, axes, spacing = _input_lattice(grid_shape, dim)
        ks, stride, dil = conv.kernel_size, conv.stride, conv.dilation
        if conv.padding == "same":
            left = [d * (k - 1) // 2 for k, d in zip(ks, dil, strict=True)]
            right = [d * (k - 1) - lf for k, d, lf in zip(ks, dil, left, strict=True)]
        elif conv.padding == "valid":
            left = right = [0] * dim
        else:
            left = right = list(conv.padding)
        out_axes = []
        for a in range(dim):
            n = len(axes[a])
            n_out = (n + left[a] + right[a] - dil[a] * (ks[a] - 1) - 1) // stride[a] + 1
            if n_out < 1:
                raise ValueError(
                    f"the conv's output is empty along axis {a} for an input of size {n}"
                )
            centre = np.arange(n_out) * stride[a] - left[a] + dil[a] * (ks[a] - 1) / 2
            if centre[0] < -0.5 or centre[-1] > n - 0.5:
                raise ValueError(
                    f"padding {conv.padding} puts output pixels outside the domain along axis "
                    f"{a}; DI-Nets support padding up to dilation*(kernel_size-1)/2"
                )
            out_axes.append(axes[a][0] + centre * spacing[a])
        layer = cls(
            conv.in_channels, conv.out_channels, ks, spacing=spacing, dim=dim,
            dilation=dil, groups=conv.groups, bias=conv.bias is not None,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        return layer, _output_lattice(points_in, axes, out_axes)


def _input_lattice(grid_shape, dim: int):
    """The input grid point set, its per-axis coordinates and spacings."""
    if isinstance(grid_shape, PointSet):
        points = grid_shape
        if points.shape is None or len(points.shape) != dim:
            raise ValueError(
                f"from_conv needs a {dim}-D grid point set; got {points.kind} "
                f"with shape {points.shape}"
            )
        axes = grid_axes(points)
        spacing = tuple(float(a[1] - a[0]) if len(a) > 1 else 2.0 for a in axes)
        return points, axes, spacing
    shape = tuple(grid_shape)
    if len(shape) != dim:
        raise ValueError(f"grid_shape {shape} has {len(shape)} axes but the conv is {dim}-D")
    points = grid(shape)
    axes = [-1.0 + (2.0 * np.arange(n) + 1.0) / n for n in shape]
    return points, axes, tuple(2.0 / n for n in shape)


def _same_axes(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(len(x) == len(y) and np.allclose(x, y, rtol=0, atol=1e-6)
               for x, y in zip(a, b, strict=True))


def _output_lattice(points_in: PointSet, in_axes, out_axes) -> PointSet:
    """Reuse the input set, one of its prefixes or a pixel grid when the positions match,
    so later layers (and the stencil cache) see the same point sets."""
    if _same_axes(in_axes, out_axes):
        return points_in
    for m in points_in.levels()[1:]:
        coarse = points_in.prefix(m)
        if _same_axes(grid_axes(coarse), out_axes):
            return coarse
    shape = tuple(len(a) for a in out_axes)
    pixel = [-1.0 + (2.0 * np.arange(n) + 1.0) / n for n in shape]
    if _same_axes(pixel, out_axes):
        return grid(shape)
    return lattice(out_axes)
