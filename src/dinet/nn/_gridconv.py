"""The grid fast path of :class:`~dinet.nn.DIConv`: ``F.conv1d/2d/3d``.

When the input points are a lattice (a grid, or a grid's coarser prefix) and the output
points are a sub-lattice of it (the same lattice, or every s-th node from some offset), a
DI convolution is a discrete convolution: the kernel K(δ) = Σ_b φ_b(δ) W_b / Π h is read
at the lattice offsets δ = m·g and multiplied by the (uniform) quadrature weight. That
*rasterised* kernel is a differentiable function of W (and of a learned basis), so
``F.conv2d`` on it computes the same output and the same gradients as the sparse stencil,
at the cost of the discrete conv. :func:`grid_plan` plans it for the spline family (per-axis
hat values); :func:`offset_plan` for any kernel given its support (per-axis offsets, which
the family evaluates its basis on).

On a grid whose spacing g equals the kernel's h the hats hit lattice nodes exactly and the
rasterised kernel is W itself (k × k); for other spacings it is wider (all offsets with a
non-zero hat). Values are reordered between the point sets' coarse-to-fine storage and the
image layout by one gather on the way in and one on the way out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..neighbors import stencil_cache
from ..points import PointSet
from ..points.weights import coarse_to_fine_order
from .functional import scratch

__all__ = ["GridPlan", "grid_plan", "grid_conv", "offset_plan"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# Relative tolerance when matching lattices and snapping hat values onto 0 and 1: far above
# float32 coordinate rounding (~1e-7), far below any real mismatch of grids.
_TOL = 1e-5


@dataclass
class GridPlan:
    """How to run one (points_in, points_out, kernel geometry) as a discrete convolution.

    Attributes:
        shape_in, shape_out: lattice shapes of the input and output sets.
        pad: per axis, (left, right) zero padding (negative crops) of the input image.
        stride: per axis, output step in input nodes.
        taps: per axis, ``(2R+1, k)`` float64 matrix of hat values φ_t(m·g) (row m = −R…R)
            for :func:`grid_plan`; ``(2R+1, 1)``, the offsets m·g themselves, for
            :func:`offset_plan`.
        scale: quadrature weight / Π h (a scalar).
        identity: every tap matrix is the identity (g = h): the raster is W itself.
        image_from_points: ``(N_in,)`` point index of every image position (row-major).
        points_to_image: ``(N_in,)`` image position of every input point.
        points_from_image: ``(N_out,)`` image position of every output point.
    """

    shape_in: tuple[int, ...]
    shape_out: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    stride: tuple[int, ...]
    taps: tuple[np.ndarray, ...]
    scale: float
    image_from_points: np.ndarray
    points_to_image: np.ndarray
    points_from_image: np.ndarray
    identity: bool
    _tensors: dict = field(default_factory=dict, repr=False)

    def tensor(self, name: str, device, dtype=None) -> torch.Tensor:
        """A cached tensor of one of the index arrays or per-axis tap matrices."""
        key = (name, torch.device(device), dtype)
        if key not in self._tensors:
            if name == "taps":
                self._tensors[key] = tuple(
                    torch.as_tensor(t, dtype=dtype, device=device) for t in self.taps
                )
            else:
                self._tensors[key] = torch.from_numpy(getattr(self, name)).to(device)
        return self._tensors[key]


def _lattice_axes(points: PointSet) -> list[np.ndarray] | None:
    """Per-axis node coordinates when ``points`` are exactly a lattice with uniform
    weights (every axis ≥ 2 nodes for the input), else ``None``."""
    if points.shape is None or len(points.shape) != points.dim:
        return None
    c = points.coords.double().cpu().numpy()
    axes = []
    for k, size in enumerate(points.shape):
        lo, hi = c[:, k].min(), c[:, k].max()
        axes.append(np.linspace(lo, hi, size) if size > 1 else np.array([lo]))
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, points.dim)
    expected = mesh[coarse_to_fine_order(points.shape)]
    step = min((a[1] - a[0] for a in axes if len(a) > 1), default=2.0)
    if not np.allclose(c, expected, rtol=0.0, atol=_TOL * step + 1e-7):
        return None  # e.g. a jittered grid: lattice-shaped, but off its nodes
    w = points.weights
    if not bool((w == w[0]).all()):
        return None
    return axes


def _axis_taps(g: float, h: float, size: int, dilation: int) -> np.ndarray:
    """Hat values φ_t(m·g) of one axis, rows m = −R…R (R the last non-zero offset)."""
    radius = ((size - 1) / 2.0 * dilation + 1.0) * h
    reach = int(math.floor(radius / g * (1 + _TOL)))
    m = np.arange(-reach, reach + 1, dtype=np.float64)
    centres = (np.arange(size) - (size - 1) / 2.0) * dilation * h
    vals = 1.0 - np.abs(m[:, None] * g - centres[None, :]) / h
    vals[vals < _TOL] = 0.0
    vals[np.abs(vals - 1.0) < _TOL] = 1.0
    rows = np.flatnonzero(vals.any(axis=1))
    if rows.size == 0:
        return np.zeros((1, size))
    r = int(max(abs(rows[0] - reach), abs(rows[-1] - reach)))
    return vals[reach - r: reach + r + 1]


def _axis_offsets(g: float, radius: float) -> np.ndarray:
    """The offsets m·g inside the support [−radius, radius] of one axis, as a column."""
    reach = int(math.floor(radius / g * (1 + _TOL)))
    return (np.arange(-reach, reach + 1, dtype=np.float64) * g)[:, None]


def _build_plan(points_in: PointSet, points_out: PointSet, axis_taps, spacing):
    """The plan whose per-axis taps ``axis_taps(axis, g)`` gives for input spacing g."""
    axes_in = _lattice_axes(points_in)
    if axes_in is None or any(len(a) < 2 for a in axes_in):
        return None
    axes_out = axes_in if points_out is points_in else _lattice_axes(points_out)
    if axes_out is None:
        return None
    pad, stride, taps = [], [], []
    for axis, (a_in, a_out) in enumerate(zip(axes_in, axes_out, strict=True)):
        g = a_in[1] - a_in[0]
        offset = (a_out[0] - a_in[0]) / g
        step = (a_out[1] - a_out[0]) / g if len(a_out) > 1 else 1.0
        o, s = round(offset), round(step)
        if abs(offset - o) > _TOL or abs(step - s) > _TOL or o < 0 or s < 1:
            return None  # the output nodes are not a sub-lattice of the input's
        t = axis_taps(axis, g)
        r = (len(t) - 1) // 2
        left = r - o
        right = max(0, (len(a_out) - 1) * s + 2 * r + 1 - (len(a_in) + left))
        pad.append((left, right))
        stride.append(s)
        taps.append(t)
    points_to_image = coarse_to_fine_order(points_in.shape).astype(np.int64)
    image_from_points = np.empty(len(points_in), dtype=np.int64)
    image_from_points[points_to_image] = np.arange(len(points_in))
    return GridPlan(
        shape_in=points_in.shape,
        shape_out=points_out.shape,
        pad=tuple(pad),
        stride=tuple(stride),
        taps=tuple(taps),
        scale=float(points_in.weights[0]) / math.prod(spacing),
        image_from_points=image_from_points,
        points_to_image=points_to_image,
        points_from_image=coarse_to_fine_order(points_out.shape).astype(np.int64),
        identity=all(t.shape[0] == t.shape[1] and np.array_equal(t, np.eye(len(t)))
                     for t in taps),
    )


def grid_plan(points_in: PointSet, points_out: PointSet, kernel_size, spacing,
              dilation) -> GridPlan | None:
    """The (cached) :class:`GridPlan` of the spline kernel, or ``None`` when the sets are not
    lattices related by a stride and an offset (then the sparse stencil is used)."""
    if points_in.shape is None or points_out.shape is None:
        return None
    key = ("grid-plan", points_in.digest, points_out.digest, tuple(kernel_size),
           tuple(spacing), tuple(dilation))
    return stencil_cache.get_or_build(key, lambda: _build_plan(
        points_in, points_out,
        lambda axis, g: _axis_taps(g, spacing[axis], kernel_size[axis], dilation[axis]),
        spacing))


def offset_plan(points_in: PointSet, points_out: PointSet, support,
                spacing) -> GridPlan | None:
    """The (cached) :class:`GridPlan` of any kernel with box support of half-widths
    ``support``: its taps are the lattice offsets inside the support, which the kernel
    family evaluates (e.g. :class:`~dinet.nn.families.MLPFamily`); ``None`` as for
    :func:`grid_plan`."""
    if points_in.shape is None or points_out.shape is None:
        return None
    key = ("offset-plan", points_in.digest, points_out.digest, tuple(support), tuple(spacing))
    return stencil_cache.get_or_build(key, lambda: _build_plan(
        points_in, points_out, lambda axis, g: _axis_offsets(g, support[axis]), spacing))


def rasterize(weight: torch.Tensor, plan: GridPlan) -> torch.Tensor:
    """The discrete kernel ``(O, I/g, *raster)`` of spline weights ``(O, I/g, *k)``."""
    if plan.identity:
        return weight * plan.scale  # g = h: the hats hit the nodes, the raster is W itself
    taps = plan.tensor("taps", weight.device, weight.dtype)
    letters, rows = "abc"[: len(taps)], "xyz"[: len(taps)]
    spec = ",".join(m + k for m, k in zip(rows, letters, strict=True))
    return torch.einsum(f"oi{letters},{spec}->oi{rows}", weight, *taps) * plan.scale


def _image(x: torch.Tensor, plan: GridPlan) -> torch.Tensor:
    """``x (B, N, C)`` → the contiguous ``(B, C, *shape_in)`` image, in scratch memory (one
    gather). NCHW, not channels-last: torch 2.13's CPU conv2d backward corrupted memory and
    returned wrong weight gradients for channels-last 1×1 stride-2 inputs."""
    b, _, c = x.shape
    out = scratch("grid_image", (b, c, len(plan.image_from_points)), x)
    torch.index_select(x.transpose(1, 2), 2, plan.tensor("image_from_points", x.device),
                       out=out)
    return out.view(b, c, *plan.shape_in)


class _GridConv(torch.autograd.Function):
    """The discrete conv between the point layouts, saving ``x`` rather than its image:
    the image lives in reusable scratch memory and is gathered again for the backward
    pass (a fresh tensor of that size costs more in page faults than the gather)."""

    @staticmethod
    def forward(ctx, x, kernel, bias, plan: GridPlan, groups: int):
        dim = len(plan.shape_in)
        padding = [lf for lf, _ in plan.pad]
        y = _CONV[dim](_image(x, plan), kernel, bias, stride=plan.stride, padding=padding,
                       groups=groups)
        ctx.save_for_backward(x, kernel)
        ctx.plan, ctx.groups, ctx.padding, ctx.y_shape = plan, groups, padding, y.shape
        ctx.has_bias = bias is not None
        y = y[(slice(None), slice(None)) + tuple(slice(0, s) for s in plan.shape_out)]
        return y.flatten(2).transpose(1, 2).index_select(
            1, plan.tensor("points_from_image", x.device))  # (B, N_out, O), contiguous

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, kernel = ctx.saved_tensors
        plan = ctx.plan
        dim = len(plan.shape_in)
        b, _, o = grad_out.shape
        # The conv's output image; where it is larger than the output lattice (outputs the
        # forward dropped), the extra pixels get zero gradient.
        full = tuple(ctx.y_shape[2:]) == plan.shape_out
        if full:
            grad_y = scratch("grid_grad", tuple(ctx.y_shape), grad_out)
            inner = grad_y.view(b, o, -1)
        else:
            grad_y = grad_out.new_zeros(ctx.y_shape)
            inner = grad_out.new_empty(b, o, len(plan.points_from_image))
        inner.index_copy_(2, plan.tensor("points_from_image", x.device),
                          grad_out.transpose(1, 2))
        if not full:
            grad_y[(slice(None), slice(None)) + tuple(slice(0, s) for s in plan.shape_out)] = (
                inner.view(b, o, *plan.shape_out))
        need_x, need_k, need_b = ctx.needs_input_grad[:3]
        grad_img, grad_k, grad_b = torch.ops.aten.convolution_backward(
            grad_y, _image(x, plan), kernel, [o] if ctx.has_bias else None, list(plan.stride),
            ctx.padding, [1] * dim, False, [0] * dim, ctx.groups,
            [need_x, need_k, need_b and ctx.has_bias])
        grad_x = None
        if need_x:
            grad_x = grad_img.flatten(2).transpose(1, 2).index_select(
                1, plan.tensor("points_to_image", x.device))
        return grad_x, grad_k, grad_b, None, None


def grid_conv(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None,
              plan: GridPlan, groups: int) -> torch.Tensor:
    """The DI convolution of ``x (B, N_in, C)`` as a discrete convolution with the
    rasterised ``kernel (O, C/groups, *raster)`` (e.g. :func:`rasterize`)."""
    if all(0 <= rt <= lf for lf, rt in plan.pad):  # conv padding puts outputs in place
        return _GridConv.apply(x.contiguous(), kernel, bias, plan, groups)
    # Asymmetric or negative padding (outputs offset from the first node): plain autograd.
    b, _, c = x.shape
    dim = len(plan.shape_in)
    image = x.transpose(1, 2).index_select(2, plan.tensor("image_from_points", x.device))
    image = F.pad(image.view(b, c, *plan.shape_in),
                  [p for pair in reversed(plan.pad) for p in pair])
    y = _CONV[dim](image, kernel, bias, stride=plan.stride, groups=groups)
    y = y[(slice(None), slice(None)) + tuple(slice(0, s) for s in plan.shape_out)]
    return y.flatten(2).transpose(1, 2).index_select(
        1, plan.tensor("points_from_image", x.device))
