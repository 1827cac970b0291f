"""Moving values between image layout ``(B, C, *shape)`` and point layout ``(B, N, C)``."""

from __future__ import annotations

import torch

from .pointset import PointSet
from .weights import coarse_to_fine_order

__all__ = ["lattice_index", "image_to_values", "values_to_image"]


def lattice_index(points: PointSet) -> torch.Tensor:
    """Row-major flat index, in its lattice, of every point of a grid-structured set, ``(N,)``.

    Grid-structured sets (grids, lattices, jittered grids and their prefixes) are stored
    coarse to fine, so this is their storage order; jittered points, which sit off the
    lattice, are placed by it too.
    """
    if points.shape is None:
        raise ValueError(f"{points.kind} point set has no grid shape; pass a grid or lattice")
    return torch.from_numpy(coarse_to_fine_order(points.shape))


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
