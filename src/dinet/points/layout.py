"""Moving values between image layout ``(B, C, *shape)`` and point layout ``(B, N, C)``."""

from __future__ import annotations

import numpy as np
import torch

from .generators import _coarse_to_fine_order, grid_axes
from .pointset import PointSet

__all__ = ["lattice_index", "image_to_values", "values_to_image"]


def lattice_index(points: PointSet) -> torch.Tensor:
    """Row-major flat index of every point of a grid-structured set in its lattice, ``(N,)``."""
    axes = grid_axes(points)
    if points.kind == "jittered":
        # Jittered points are off the lattice, so their coordinates do not say which pixel
        # they stand for; they keep the grid's coarse-to-fine storage order (prefixes too).
        return torch.from_numpy(_coarse_to_fine_order(points.shape))
    c = points.coords.double().cpu().numpy()
    flat = np.zeros(len(points), dtype=np.int64)
    for k, (axis, size) in enumerate(zip(axes, points.shape, strict=True)):
        step = (axis[-1] - axis[0]) / (size - 1) if size > 1 else 1.0
        idx = np.rint((c[:, k] - axis[0]) / step).astype(np.int64)
        flat = flat * size + idx
    return torch.from_numpy(flat)


def image_to_values(image: torch.Tensor, points: PointSet) -> torch.Tensor:
    """``(B, C, *shape)`` array → ``(B, N, C)`` values in the order of the grid ``points``."""
    if points.shape is None or tuple(image.shape[2:]) != points.shape:
        raise ValueError(
            f"image spatial shape {tuple(image.shape[2:])} does not match the grid "
            f"{points.shape} — pass (B, C, *shape) and a grid point set of that shape"
        )
    index = lattice_index(points).to(image.device)
    return image.flatten(2)[:, :, index].transpose(1, 2)


def values_to_image(values: torch.Tensor, points: PointSet) -> torch.Tensor:
    """``(B, N, C)`` values on the grid ``points`` → ``(B, C, *shape)`` array."""
    if points.shape is None or values.shape[1] != len(points):
        raise ValueError(
            f"values with N={values.shape[1]} do not fit grid point set {points}"
        )
    index = lattice_index(points).to(values.device)
    out = values.new_empty(values.shape[0], values.shape[2], len(points))
    out[:, :, index] = values.transpose(1, 2)
    return out.reshape(values.shape[0], values.shape[2], *points.shape)
