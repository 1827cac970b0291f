"""Where a discrete CNN layer's output pixels sit, as point sets (for exact conversion)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..points import PointSet, grid, grid_axes, lattice

__all__ = ["input_lattice", "window_output_points"]


def window_output_points(
    grid_shape: Sequence[int] | PointSet, kernel_size, stride, padding, dilation, what: str
) -> tuple[PointSet, PointSet, tuple[float, ...]]:
    """The input grid, the output point set and the spacing of a sliding-window layer.

    Each output pixel is placed at the centre of its receptive field,
    c = o·s − p_left + d(k−1)/2 in input-pixel units, so stride 2 with padding k//2 gives the
    grid's coarser prefix and a 2×2 stride-2 window gives the coarse pixel centres.

    Args:
        grid_shape: the input's spatial shape, or a grid point set.
        kernel_size, stride, dilation: per axis.
        padding: per axis, ``"same"`` or ``"valid"``.
        what: the layer's name, for error messages.
    """
    dim = len(kernel_size)
    points_in, axes, spacing = input_lattice(grid_shape, dim, what)
    ks = kernel_size
    if padding == "same":
        left = [d * (k - 1) // 2 for k, d in zip(ks, dilation, strict=True)]
        right = [d * (k - 1) - lf for k, d, lf in zip(ks, dilation, left, strict=True)]
    elif padding == "valid":
        left = right = [0] * dim
    else:
        left = right = list(padding)
    out_axes = []
    for a in range(dim):
        n = len(axes[a])
        n_out = (n + left[a] + right[a] - dilation[a] * (ks[a] - 1) - 1) // stride[a] + 1
        if n_out < 1:
            raise ValueError(
                f"the {what}'s output is empty along axis {a} for an input of size {n}"
            )
        centre = np.arange(n_out) * stride[a] - left[a] + dilation[a] * (ks[a] - 1) / 2
        if centre[0] < -0.5 or centre[-1] > n - 0.5:
            raise ValueError(
                f"padding {padding} puts output pixels outside the domain along axis {a}; "
                "DI-Nets support padding up to dilation*(kernel_size-1)/2"
            )
        out_axes.append(axes[a][0] + centre * spacing[a])
    return points_in, _output_lattice(points_in, axes, out_axes), spacing


def input_lattice(grid_shape, dim: int, what: str = "layer"):
    """The input grid point set, its per-axis coordinates and spacings."""
    if isinstance(grid_shape, PointSet):
        points = grid_shape
        if points.shape is None or len(points.shape) != dim:
            raise ValueError(
                f"converting a {dim}-D {what} needs a {dim}-D grid point set; got {points.kind} "
                f"with shape {points.shape}"
            )
        axes = grid_axes(points)
        spacing = tuple(float(a[1] - a[0]) if len(a) > 1 else 2.0 for a in axes)
        return points, axes, spacing
    shape = tuple(grid_shape)
    if len(shape) != dim:
        raise ValueError(f"grid_shape {shape} has {len(shape)} axes but the {what} is {dim}-D")
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
