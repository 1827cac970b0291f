"""``Interpolate``: the DI form of ``nn.Upsample`` / ``F.interpolate`` for converted CNNs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..nn import Resample
from ..nn.base import DIModule, check_points, check_values, per_axis
from ..points import PointSet, image_to_values, values_to_image

__all__ = ["Interpolate", "INTERPOLATE_MODES"]

#: Interpolation modes of ``F.interpolate`` that :class:`Interpolate` converts.
INTERPOLATE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear")


def is_lattice(points: PointSet) -> bool:
    """Whether ``points`` is an axis-aligned lattice that can be laid out as an image: a
    :func:`~dinet.points.grid` or :func:`~dinet.points.lattice` or one of their coarser
    prefixes (jittered grids have a shape too, but their points sit off the lattice)."""
    return points.shape is not None and points.kind == "grid"


class Interpolate(DIModule):
    """Upsample a field onto a finer point set, as ``F.interpolate`` does on an image.

    - When both point sets are lattices (grids and their coarser prefixes, see
      :func:`is_lattice`), the values are laid out as images and interpolated by
      ``F.interpolate`` with the CNN's own arguments, so a converted network equals the CNN
      on its grid bit for bit. On pixel-centre grids this *is* geometric interpolation
      (``align_corners=False``: the coarse pixel centres sit where torch assumes them), e.g.
      2× nearest and bilinear upsampling of ``grid((16, 16))`` onto ``grid((32, 32))``.
    - On any other point sets the field is resampled geometrically with
      :class:`~dinet.nn.Resample`: the nearest input point for the nearest modes, a moving
      least-squares linear fit over a box of half-width ``2 × spacing`` for the linear modes.

    Args:
        mode: one of :data:`INTERPOLATE_MODES`.
        spacing: the input level's point spacing in domain units (a float or one per axis),
            e.g. ``2 / 16`` for a field that was a 16-pixel-wide image in the CNN.
        dim: spatial dimension d. Default 2.
        scale_factor: the CNN's scale factor per axis, or ``None`` when it gave a size. On
            lattices it is used whenever it maps the input shape onto the output shape (torch
            computes source positions from it), else the output shape is.
        align_corners: as in ``F.interpolate`` (linear modes only).

    Shapes:
        - x: ``(B, N_in, C)``, points_in: ``PointSet(N_in)``
        - points_out: ``PointSet(N_out)`` (required)
        - output: ``(B, N_out, C)``
    """

    def __init__(self, mode: str = "nearest", *, spacing: float | Sequence[float], dim: int = 2,
                 scale_factor: float | Sequence[float] | None = None,
                 align_corners: bool | None = None) -> None:
        super().__init__()
        if mode not in INTERPOLATE_MODES:
            raise ValueError(
                f"unsupported interpolation mode {mode!r}; valid: {', '.join(INTERPOLATE_MODES)}"
            )
        if align_corners is not None and mode.startswith("nearest"):
            raise ValueError("align_corners applies to the linear modes only; leave it None")
        self.mode, self.dim, self.align_corners = mode, dim, align_corners
        self.spacing = per_axis(spacing, dim, "spacing", float)
        self.scale_factor = (None if scale_factor is None
                             else per_axis(scale_factor, dim, "scale_factor", float))
        if mode.startswith("nearest"):
            self.resample = Resample("nearest", dim=dim)
        else:
            self.resample = Resample("linear", support=tuple(2 * h for h in self.spacing),
                                     dim=dim)

    def forward(self, x: torch.Tensor, points_in: PointSet,
                points_out: PointSet | None = None) -> torch.Tensor:
        check_values(x, check_points(points_in, self.dim, "points_in"))
        if points_out is None:
            raise ValueError("Interpolate needs points_out, the finer point set to upsample onto")
        check_points(points_out, self.dim, "points_out")
        if not (is_lattice(points_in) and is_lattice(points_out)):
            return self.resample(x, points_in, points_out)
        image = values_to_image(x, points_in)
        kwargs = {"mode": self.mode, "align_corners": self.align_corners}
        scale = self.scale_factor
        if scale is not None and all(
            math.floor(n * s) == m
            for n, s, m in zip(points_in.shape, scale, points_out.shape, strict=True)
        ):
            out = F.interpolate(image, scale_factor=scale, **kwargs)
        else:
            out = F.interpolate(image, size=points_out.shape, **kwargs)
        return image_to_values(out, points_out)

    def extra_repr(self) -> str:
        s = f"{self.mode!r}, spacing={tuple(round(h, 6) for h in self.spacing)}"
        if self.scale_factor is not None:
            s += f", scale_factor={self.scale_factor}"
        if self.align_corners is not None:
            s += f", align_corners={self.align_corners}"
        return s
