"""``DIConv``: the discretization-invariant convolution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..neighbors import Stencil
from ..neighbors.stencils import check_kernel_scale
from ..points import PointSet
from ._gridconv import grid_conv
from ._lattice import window_output_points
from .base import DIModule, check_points, check_values, per_axis, upcast_on_cpu
from .families import KernelFamily, kernel_family
from .functional import BACKENDS, stencil_conv

__all__ = ["DIConv"]


class DIConv(DIModule):
    r"""Discretization-invariant convolution (DI-Net, Wang & Golland, TMLR 2023).

    Continuous cross-correlation, oriented as :func:`torch.nn.functional.conv2d`, computed
    by quadrature over whatever points the input field was sampled on:

    .. math::
        y(x_i) = \sum_{j:\, y_j - x_i \in S} w_j\, K(y_j - x_i)\, f(y_j) + b,
        \qquad K(\delta) = \frac{1}{\prod_k h_k} \sum_b \varphi_b(\delta)\, W_b

    with quadrature weights :math:`w_j` of the input points, over the box support
    :math:`|\delta_k| \le r_k = ((k_k - 1)/2 \cdot \text{dilation}_k + 1)\, h_k`. The
    geometry is fixed in domain units at construction, never derived from the points that
    arrive — this is what makes the layer discretization invariant.

    Kernel families:

    - ``"spline"`` (default): tensor-product linear hats :math:`\varphi_b` of half-width
      :math:`h_k` centred on a :math:`k_0 \times \dots \times k_{d-1}` lattice of spacing
      :math:`h_k \cdot \text{dilation}_k`. On a grid of pixel spacing h (weights h^d) the
      hats hit lattice points exactly and the layer **is** ``conv2d``/``conv3d`` with weight
      ``W`` (zero padding comes for free).
    - ``"mlp"``: a learned continuous basis of ``n_basis`` functions,
      :math:`\varphi_m(\delta) = \mathrm{MLP}_m(\delta / r)\,\prod_k (1 - \delta_k^2/r_k^2)`
      (see :class:`~dinet.nn.kernels.MLPBasis`), evaluated on the stencil's offsets at every
      call; gradients reach the MLP through the sparse values (hand-written SDDMM backward).

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
        kernel: kernel family, ``"spline"`` (default), ``"mlp"`` or any family registered
            with :func:`~dinet.nn.families.register_kernel_family`.
        n_basis: number of learned basis functions of the ``"mlp"`` family. Default 16.
        hidden: hidden width of the ``"mlp"`` basis. Default 32.
        stride: the default output set is ``points_in.coarsen(stride)`` (1: the input set).
        grid_fast_path: when the input is a lattice (a grid or its prefix) and the output a
            sub-lattice of it, run the kernel as ``F.conv1d/2d/3d`` on the rasterised kernel
            (:mod:`dinet.nn._gridconv`; the spline and MLP families) — the same values and
            gradients as the sparse stencil. ``None`` (default): on accelerators only, since
            on CPU the compiled stencil product measured as fast as conv2d plus the two
            reorderings the fast path needs; ``True``: wherever it applies; ``False``:
            never.
        backend: how the sparse path runs (:func:`~dinet.nn.functional.stencil_conv`):
            ``"auto"`` (default: the fused Triton kernels on CUDA, the compiled kernels on
            the CPU), ``"sparse"`` or ``"triton"``; the kernel family may override it.

    Raises:
        ValueError: for invalid arguments; at the first call on a point set, when the kernel
            cell Π h_k is over 10^6 times finer than the input points' quadrature weights
            (the quadrature cannot resolve it), or when the stencil's estimated memory
            exceeds the budget (:class:`~dinet.neighbors.StencilTooLarge`, see
            :func:`~dinet.neighbors.set_memory_budget`).

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
        n_basis: int = 16,
        hidden: int = 32,
        stride: int = 1,
        grid_fast_path: bool | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("groups", groups), ("dim", dim), ("n_basis", n_basis),
                            ("hidden", hidden), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                f"divisible by groups ({groups})"
            )
        family = kernel_family(kernel)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dim = dim
        self.kernel_size = per_axis(kernel_size, dim, "kernel_size", int)
        self.spacing = per_axis(spacing, dim, "spacing", float)
        self.dilation = per_axis(dilation, dim, "dilation", int)
        self.groups = groups
        self.kernel = kernel
        self.stride = stride
        if grid_fast_path not in (None, True, False):
            raise ValueError(f"grid_fast_path must be None, True or False; got {grid_fast_path!r}")
        self.grid_fast_path = grid_fast_path
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.backend = backend
        self.basis, basis_shape = family.build(self, n_basis, hidden)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *basis_shape))
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
        """Number of basis functions: k^d for splines, M for the MLP family."""
        return math.prod(self.weight.shape[2:])

    def output_points(self, points_in: PointSet) -> PointSet:
        return points_in.coarsen(self.stride) if self.stride != 1 else points_in

    @property
    def family(self) -> type[KernelFamily]:
        """The kernel family (see :mod:`dinet.nn.families`)."""
        return kernel_family(self.kernel)

    @property
    def support(self) -> tuple[float, ...]:
        """Half-widths of the kernel's box support, per axis, in domain units."""
        return self.family.support(self)

    def stencil(self, points_in: PointSet, points_out: PointSet | None = None) -> Stencil:
        """The cached sparse stencil of this layer's geometry between two point sets."""
        check_points(points_in, self.dim, "points_in")
        points_out = self.output_points(points_in) if points_out is None else points_out
        check_points(points_out, self.dim, "points_out")
        check_kernel_scale(points_in, math.prod(self.spacing), "DIConv")
        return self.family.stencil(self, points_in, points_out)

    def forward(
        self, x: torch.Tensor, points_in: PointSet, points_out: PointSet | None = None
    ) -> torch.Tensor:
        check_values(x, check_points(points_in, self.dim, "points_in"), self.in_channels,
                     module=self)
        if upcast_on_cpu(x):  # the CPU's sparse kernels take float32/float64 only
            return self.forward(x.float(), points_in, points_out).to(x.dtype)
        fast = self.grid_fast_path
        if fast is None:
            fast = x.device.type != "cpu"
        if fast:
            out = self.output_points(points_in) if points_out is None else points_out
            plan = self.family.grid_plan(self, points_in, check_points(out, self.dim,
                                                                         "points_out"))
            if plan is not None:
                return grid_conv(x, self.family.raster(self, plan), self.bias, plan,
                                 self.groups)
        stencil = self.stencil(points_in, points_out)
        k, g = self.n_basis, self.groups
        og, cg = self.out_channels // g, self.in_channels // g
        weight = self.weight.reshape(g, og, cg, k).permute(3, 0, 2, 1)  # (K, G, Cg, Og)
        values = self.family.values(self, stencil, x.device, x.dtype)
        y = stencil_conv(x, weight, stencil, values, self.family.backend(self, x))
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"spacing={tuple(round(h, 6) for h in self.spacing)}, kernel={self.kernel!r}")
        if self.basis is not None:
            s += f", n_basis={self.n_basis}"
        if self.stride != 1:
            s += f", stride={self.stride}"
        if any(r != 1 for r in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s

    @classmethod
    def from_conv(
        cls, conv: nn.Module, grid_shape: Sequence[int] | PointSet, kernel: str = "spline"
    ) -> tuple[DIConv, PointSet]:
        """Exact conversion of an ``nn.Conv1d/2d/3d`` applied to a grid.

        Args:
            conv: the convolution (weights, bias, stride, padding including ``"same"``,
                dilation, groups; ``padding_mode="zeros"``).
            grid_shape: the spatial shape of the conv's input, e.g. ``(H, W)``; or a grid
                point set (e.g. the ``points_out`` of a previous conversion).
            kernel: a family whose basis is 1 at its own tap and 0 at the others, so the
                grid sum is the conv's: ``"spline"`` (linear hats, default) or ``"cubic"``
                (Keys' cubic: smooth between the taps, closer to the conv's sum off the grid).

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
        ks, dil = conv.kernel_size, conv.dilation
        _, points_out, spacing = window_output_points(
            grid_shape, ks, conv.stride, conv.padding, dil, "conv"
        )
        layer = cls(
            conv.in_channels, conv.out_channels, ks, spacing=spacing, dim=len(ks),
            dilation=dil, groups=conv.groups, bias=conv.bias is not None, kernel=kernel,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        return layer, points_out
