"""``Segmenter``: a field → per-point class logits, readable at any query points."""

from __future__ import annotations

import torch

from ..nn import Coarsened, DIConv, DISequential, Resample, Residual, SkipConcat
from ..nn.base import check_points
from ..points import PointSet
from .checkpoint import DIModel
from .classifier import check_preset
from .classifier import conv_block as _conv_block

__all__ = ["Segmenter", "SEGMENTER_PRESETS"]

SEGMENTER_PRESETS = ("dinet3", "dinet5", "dinet-unet")


def _up(spacing: float) -> Resample:
    """Linear (moving least squares) upsampling from a level of point spacing ``spacing``."""
    return Resample("linear", support=2 * spacing)


class Segmenter(DIModel):
    """A DI-Net segmenter whose last layer is a DIConv evaluated at the query points, so its
    output is a field of logits that can be read anywhere (e.g. between pixels).

    Presets:

    - ``"dinet3"`` (the paper's DI-Net-3): 16 channels, three convolutions (two conv-norm-ReLU
      blocks, then the query conv).
    - ``"dinet5"`` (DI-Net-5): 16 channels; a stem conv, a coarser level (¼ of the points,
      two convs) upsampled and added back to the stem's output (the skip), a conv, the query
      conv.
    - ``"dinet-unet"`` (default): a three-level U-Net (16 @ N, 32 @ N/4, 64 @ N/16) of two
      conv-norm-ReLU blocks per level, skips by concatenation, ``Resample("linear")``
      upsampling, and the query conv.

    Args:
        preset: one of :data:`SEGMENTER_PRESETS`.
        in_channels: channels of the input field.
        n_classes: number of classes.
        base_spacing: the finest kernel lattice step in domain units (2/H for H×H images).
        quadrature: ``"weights"`` or ``"none"`` (uniform weights 2^d/N, as in the paper).
        kernel: the convolutions' kernel family, ``"spline"`` (default) or ``"mlp"``.

    Shapes:
        - x: ``(B, N, in_channels)``, points: ``PointSet(N)`` (2-D)
        - query: ``PointSet(N_query)`` (default: ``points``)
        - output: logits ``(B, N_query, n_classes)``
    """

    def __init__(self, preset: str = "dinet-unet", in_channels: int = 1, n_classes: int = 11,
                 base_spacing: float = 2 / 64, quadrature: str = "weights",
                 kernel: str = "spline") -> None:
        check_preset(preset, SEGMENTER_PRESETS, "Segmenter")
        super().__init__(preset=preset, in_channels=in_channels, n_classes=n_classes,
                         base_spacing=base_spacing, quadrature=quadrature, kernel=kernel)
        h = float(base_spacing)

        def conv_block(c_in: int, c_out: int, spacing: float) -> DISequential:
            return _conv_block(c_in, c_out, spacing, kernel=kernel)

        if preset == "dinet3":
            self.body = DISequential(conv_block(in_channels, 16, h), conv_block(16, 16, h))
            width = 16
        elif preset == "dinet5":
            coarse = DISequential(conv_block(16, 16, 2 * h), conv_block(16, 16, 2 * h))
            self.body = DISequential(
                conv_block(in_channels, 16, h),
                Residual(Coarsened(coarse, stride=2, upsample=_up(2 * h))),
                conv_block(16, 16, h),
            )
            width = 16
        else:
            def level(c_in: int, c_out: int, spacing: float) -> DISequential:
                return DISequential(conv_block(c_in, c_out, spacing),
                                    conv_block(c_out, c_out, spacing))

            bottom = level(32, 64, 4 * h)
            middle = DISequential(
                level(16, 32, 2 * h),
                SkipConcat(Coarsened(bottom, stride=2, upsample=_up(4 * h))),
                level(32 + 64, 32, 2 * h),
            )
            self.body = DISequential(
                level(in_channels, 16, h),
                SkipConcat(Coarsened(middle, stride=2, upsample=_up(2 * h))),
                level(16 + 32, 16, h),
            )
            width = 16
        self.head = DIConv(width, n_classes, 3, spacing=h, kernel=kernel)

    def forward(self, x: torch.Tensor, points: PointSet,
                query: PointSet | None = None) -> torch.Tensor:
        points = self.prepare_points(points)
        features, _ = self.body(x, points)
        query = points if query is None else check_points(query, 2, "query")
        return self.head(features, points, query)


