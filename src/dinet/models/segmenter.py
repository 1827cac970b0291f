"""``Segmenter``: a field → per-point class logits, readable at any query points."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import Coarsened, DIBatchNorm, DIConv, DISequential, Resample, Residual
from ..nn.base import check_points
from ..points import PointSet, grid
from .base import DIModel
from .blocks import check_preset, residual_block
from .blocks import conv_block as _conv_block

__all__ = ["Segmenter", "SEGMENTER_PRESETS"]

SEGMENTER_PRESETS = ("dinet3", "dinet5", "dinet-unet")


def _up(spacing: float) -> Resample:
    """Linear (moving least squares) upsampling from a level of point spacing ``spacing``."""
    return Resample("linear", support=2 * spacing)


class LatticeUNet(nn.Module):
    """A U-Net on a point set that coarsens by prefix (a grid's sub-grids): per level a
    residual block (the first of each coarser level strided, so it integrates the finer
    level's features onto the coarse points), then back up — linear resampling to the finer
    level, concatenation with that level's features, two conv-norm-ReLU blocks.

    Args:
        widths: channels per level, finest first (the input has ``widths[0]``).
        spacing: the finest level's kernel lattice step; it doubles per level.
        kernel: the convolutions' kernel family.

    Shapes:
        - x: ``(B, N, widths[0])``, points: ``PointSet(N)``
        - output: ``(B, N, widths[0])`` on the same points
    """

    def __init__(self, widths: tuple[int, ...], spacing: float, kernel: str = "spline") -> None:
        super().__init__()
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level, width in enumerate(widths):
            h = spacing * 2**level
            c_in = widths[max(level - 1, 0)]
            self.down.append(DISequential(
                residual_block(c_in, width, h, stride=2 if level else 1, kernel=kernel),
                residual_block(width, width, h, kernel=kernel)))
            if level:
                self.up.append(_up(h))
                self.merge.append(DISequential(
                    _conv_block(widths[level - 1] + width, widths[level - 1], h / 2,
                                kernel=kernel),
                    _conv_block(widths[level - 1], widths[level - 1], h / 2, kernel=kernel)))

    def forward(self, x: torch.Tensor, points: PointSet) -> torch.Tensor:
        skips = []
        for down in self.down:
            x, points = down(x, points)
            skips.append((x, points))
        for level in reversed(range(len(self.up))):
            finer, finer_points = skips[level]
            x = self.up[level](x, points, finer_points)
            x, points = self.merge[level](torch.cat([finer, x], dim=-1), finer_points)
        return x


class Segmenter(DIModel):
    """A DI-Net segmenter whose last layer is a DIConv evaluated at the query points, so its
    output is a field of logits that can be read anywhere (e.g. between pixels).

    Presets:

    - ``"dinet3"`` (the paper's DI-Net-3): 16 channels, three convolutions (two conv-norm-ReLU
      blocks, then the query conv).
    - ``"dinet5"`` (DI-Net-5): 16 channels; a stem conv, a coarser level (¼ of the points,
      two convs) upsampled and added back to the stem's output (the skip), a conv, the query
      conv.
    - ``"dinet-unet"`` (default): a stem DIConv in→16 with a smooth learned kernel (MLP
      basis, 5×5 at ``base_spacing``) integrates the field over whatever points arrive onto
      a fixed lattice (the pixel centres of a (2/base_spacing)² grid); a four-level
      :class:`LatticeUNet` (16, 32, 64, 128 channels on the lattice and its ¼, 1/16, 1/64
      prefixes: a receptive field of the whole item) runs there; the query conv reads the
      logits anywhere. Only the stem depends on the input points.

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
            side = round(2.0 / h)
            self.lattice = grid((side, side))
            self.stem = DIConv(in_channels, 16, 5, spacing=h, bias=False, kernel="mlp")
            self.stem_norm = DIBatchNorm(16)
            self.unet = LatticeUNet((16, 32, 64, 128), h, kernel=kernel)
            width = 16
        self.head = DIConv(width, n_classes, 3, spacing=h, kernel=kernel)

    def forward(self, x: torch.Tensor, points: PointSet,
                query: PointSet | None = None) -> torch.Tensor:
        points = self.prepare_points(points)
        query = points if query is None else check_points(query, 2, "query")
        if self.config["preset"] == "dinet-unet":
            x = torch.relu(self.stem_norm(self.stem(x, points, self.lattice), self.lattice))
            return self.head(self.unet(x, self.lattice), self.lattice, query)
        features, _ = self.body(x, points)
        return self.head(features, points, query)


