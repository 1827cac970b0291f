"""Discrete CNN baselines that see a field only on their own fixed grid.

They are what DI-Nets are compared against: each renders its input on a ``size``-per-axis
grid (``dinet.points.grid``) and refuses any other point set, and the dense models read
their output at query points by bilinear (trilinear) interpolation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.base import check_points, check_values
from ..points import PointSet, values_to_image
from ..points.checks import check_count, check_real
from .base import DIModel, check_counts

__all__ = ["GridCNNClassifier", "GridCNNSegmenter", "GridResNetClassifier", "GridUNetSegmenter",
           "VoxelCNN3d"]


def _grid_image(model: DIModel, x: torch.Tensor, points: PointSet, size: int,
                dim: int) -> torch.Tensor:
    """``(B, N, C)`` values on the model's own grid → ``(B, C, *shape)``, or a ValueError."""
    check_points(points)
    shape = (size,) * dim
    if points.shape != shape or points.kind != "grid":
        grid_call = f"dinet.points.grid({shape})"
        raise ValueError(
            f"{type(model).__name__} is a discrete CNN: it needs the field sampled on its own "
            f"{'x'.join(map(str, shape))} grid ({grid_call}); got {points} — sample the field "
            f"on {grid_call}, or use a DI-Net model (dinet.models), which accepts any points"
        )
    check_values(x, points, model.config["in_channels"])
    return values_to_image(x, points)


#: How a segmenter on a pixel lattice reads its logits at a query point: ``"cell"``, those of
#: the lattice cell (pixel) the point lies in — the piecewise-constant field of the pixel
#: labels, so a query between pixel centres gets its pixel's answer; ``"bilinear"``, the
#: bilinear interpolant of the four nearest cells' logits (smooth across cell edges).
SEGMENT_READS = ("cell", "bilinear")


def check_read(read: str, valid: tuple[str, ...] = SEGMENT_READS) -> str:
    if read not in valid:
        raise ValueError(f"unknown read {read!r}; valid: {', '.join(map(repr, valid))}")
    return read


def read_at(image: torch.Tensor, query: PointSet, read: str = "bilinear") -> torch.Tensor:
    """Lookup of ``(B, C, *shape)`` at the query coords → (B, Nq, C): bilinear (trilinear)
    interpolation of the cell centres, or (``read="cell"``) the value of the cell each point
    lies in.

    ``grid_sample`` orders its last axis x = W first, so the coordinates are reversed; with
    ``align_corners=False`` its cells are the pixels of ``dinet.points.grid``, so its
    ``"nearest"`` mode is the cell lookup.
    """
    b, c = image.shape[:2]
    dim = image.ndim - 2
    check_points(query, dim, "query")
    coords = query.coords.to(device=image.device, dtype=image.dtype).flip(-1)
    grid = coords.reshape(1, *([1] * (dim - 1)), -1, dim).expand(b, *([-1] * (dim + 1)))
    mode = "nearest" if check_read(read) == "cell" else "bilinear"
    out = F.grid_sample(image, grid, mode=mode, padding_mode="border",
                        align_corners=False)
    return out.reshape(b, c, -1).transpose(1, 2)


def _conv_bn(c_in: int, c_out: int, dim: int = 2) -> list[nn.Module]:
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dim == 2 else (nn.Conv3d, nn.BatchNorm3d)
    return [conv(c_in, c_out, 3, padding=1, bias=False), norm(c_out), nn.ReLU()]


class _GridClassifier(DIModel):
    """A classifier CNN on the field rendered on its own ``size × size`` grid: records its
    arguments, reads the grid and runs the ``nn.Sequential`` its subclass builds.

    Args:
        in_channels, n_classes: as for :class:`~dinet.models.Classifier`.
        size: the grid it reads (``dinet.points.grid((size, size))``).
        quadrature: accepted for a uniform interface; a grid's weights are uniform already.

    Shapes:
        - x: ``(B, size², in_channels)`` on ``points = grid((size, size))``
        - output: logits ``(B, n_classes)``
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, size: int = 32,
                 quadrature: str = "weights") -> None:
        super().__init__(in_channels=in_channels, n_classes=n_classes, size=size,
                         quadrature=quadrature)
        self.size = int(size)
        self.net = self.build(in_channels, n_classes)

    def build(self, in_channels: int, n_classes: int) -> nn.Sequential:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, points: PointSet) -> torch.Tensor:
        return self.net(_grid_image(self, x, points, self.size, 2))


class GridCNNClassifier(_GridClassifier):
    """A small CNN on its own grid (see :class:`_GridClassifier` for the arguments):
    conv32-pool-conv64-pool-conv128, global average pool, linear head."""

    def build(self, in_channels, n_classes):
        return nn.Sequential(
            *_conv_bn(in_channels, 32), nn.MaxPool2d(2),
            *_conv_bn(32, 64), nn.MaxPool2d(2),
            *_conv_bn(64, 128),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, n_classes),
        )


class _PixelResidual(nn.Module):
    """conv-BN-ReLU-conv-BN + identity (a 1×1 strided conv + BN when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                                  nn.BatchNorm2d(c_out), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class GridResNetClassifier(_GridClassifier):
    """``dinet-res``'s network as a pixel CNN: the price-of-invariance baseline (arguments
    as :class:`_GridClassifier`).

    A 5×5 stride-2 stem (32 channels: the 16×16 lattice of ``dinet-res`` for 32×32 images),
    then the same residual stages — 2 × 32 channels, 2 × 64 at stride 2, 1 × 128 at stride
    2 — global average pool, dropout 0.2, linear head. Only the stem differs from the
    DI-Net (a pixel conv instead of an integral over any points), so the two have the same
    size and the same lattice network.
    """

    def build(self, in_channels, n_classes):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 32, 5, 2, 2, bias=False),
                                   nn.BatchNorm2d(32), nn.ReLU()]
        c_in = 32
        for stage, (width, blocks) in enumerate(((32, 2), (64, 2), (128, 1))):
            for b in range(blocks):
                layers.append(_PixelResidual(c_in, width, 2 if stage > 0 and b == 0 else 1))
                c_in = width
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                             nn.Linear(c_in, n_classes))


class ConvUNet(nn.Module):
    """A residual U-Net on images, the network of both segmentation U-Nets
    (``dinet-unet`` runs it on its fixed lattice, ``cnn`` on the pixels): per level two
    residual blocks (the first of each coarser level at stride 2), then back up — bilinear
    upsampling to the finer level, concatenation with its features, two conv-BN-ReLU blocks.

    Args:
        widths: channels per level, finest first (the input has ``widths[0]``); one level
            per width.

    Shapes:
        ``(B, widths[0], H, W)`` → ``(B, widths[0], H, W)``
    """

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.down = nn.ModuleList(
            nn.Sequential(_PixelResidual(widths[max(level - 1, 0)], width, 2 if level else 1),
                          _PixelResidual(width, width, 1))
            for level, width in enumerate(widths))
        self.merge = nn.ModuleList(
            nn.Sequential(*_conv_bn(finer + width, finer), *_conv_bn(finer, finer))
            for finer, width in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        for level in reversed(range(len(self.merge))):
            finer = skips[level]
            x = F.interpolate(x, size=finer.shape[2:], mode="bilinear", align_corners=False)
            x = self.merge[level](torch.cat([finer, x], dim=1))
        return x


class GridUNetSegmenter(DIModel):
    """``dinet-unet``'s network as a pixel CNN, the segmentation baseline (``--model cnn``):
    a 3×3 conv-BN-ReLU stem onto the ``size × size`` pixels, the same :class:`ConvUNet`
    and a 3×3 head whose logits are read at the query points (``read``). ``dinet-unet``
    with its default stem (``stem_quadrature="nodes"``) is this network behind the input
    points' interpolant, and starts from a trained one exactly (``Segmenter.start_from``).

    Args:
        in_channels, n_classes: the field's channels and the label values.
        size: the grid it reads (``dinet.points.grid((size, size))``).
        widths: channels per level, finest first (default 32, 64, 128, 256).
        quadrature: accepted for a uniform interface.
        read: ``"cell"`` (default): a query takes the logits of the pixel it lies in;
            ``"bilinear"`` (format 1): their bilinear interpolant (see :data:`SEGMENT_READS`).

    Shapes:
        - x: ``(B, size², in_channels)`` on ``points = grid((size, size))``
        - query: ``PointSet(N_query)`` (default: ``points``)
        - output: logits ``(B, N_query, n_classes)``
    """

    # 2: the logits are read by cell (``read``); format 1 read them bilinearly
    FORMAT_VERSION = 2

    def __init__(self, in_channels: int = 1, n_classes: int = 11, size: int = 32,
                 widths: tuple[int, ...] = (32, 64, 128, 256),
                 quadrature: str = "weights", read: str = "cell") -> None:
        widths = check_counts(widths, "widths")
        super().__init__(in_channels=in_channels, n_classes=n_classes, size=size,
                         widths=widths, quadrature=quadrature, read=check_read(read))
        self.size = int(size)
        self.stem = nn.Sequential(*_conv_bn(in_channels, widths[0]))
        self.unet = ConvUNet(tuple(widths))
        self.head = nn.Conv2d(widths[0], n_classes, 3, padding=1)

    def forward(self, x: torch.Tensor, points: PointSet,
                query: PointSet | None = None) -> torch.Tensor:
        x = self.unet(self.stem(_grid_image(self, x, points, self.size, 2)))
        return read_at(self.head(x), points if query is None else query, self.config["read"])

    @classmethod
    def upgrade_config(cls, config, version):
        if version == 1:
            return {**config, "read": "bilinear"}
        return super().upgrade_config(config, version)


class GridCNNSegmenter(DIModel):
    """A small two-level U-Net CNN on its own ``size × size`` grid (``--model cnn-small``);
    its logits are read at the query points by bilinear interpolation.

    Shapes:
        - x: ``(B, size², in_channels)`` on ``points = grid((size, size))``
        - query: ``PointSet(N_query)`` (default: ``points``)
        - output: logits ``(B, N_query, n_classes)``
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 11, size: int = 64,
                 quadrature: str = "weights") -> None:
        super().__init__(in_channels=in_channels, n_classes=n_classes, size=size,
                         quadrature=quadrature)
        self.size = int(size)
        self.encoder = nn.Sequential(*_conv_bn(in_channels, 16), *_conv_bn(16, 16))
        self.coarse = nn.Sequential(nn.MaxPool2d(2), *_conv_bn(16, 32), *_conv_bn(32, 32))
        self.decoder = nn.Sequential(*_conv_bn(16 + 32, 16), nn.Conv2d(16, n_classes, 1))

    def forward(self, x: torch.Tensor, points: PointSet,
                query: PointSet | None = None) -> torch.Tensor:
        image = _grid_image(self, x, points, self.size, 2)
        fine = self.encoder(image)
        coarse = F.interpolate(self.coarse(fine), size=fine.shape[2:], mode="bilinear",
                               align_corners=False)
        logits = self.decoder(torch.cat([fine, coarse], dim=1))
        return read_at(logits, points if query is None else query)


class VoxelCNN3d(DIModel):
    """A 3-D CNN on a ``size³`` voxel grid predicting signed distance, read at the query
    points by trilinear interpolation, then ``scale · tanh``.

    Shapes:
        - x: ``(B, size³, in_channels)`` on ``points = grid((size,) * 3)``
        - query: ``PointSet(N_query)`` (3-D)
        - output: ``(B, N_query, 1)``
    """

    def __init__(self, in_channels: int = 4, size: int = 16, width: int = 16,
                 scale: float = 2.0, quadrature: str = "weights") -> None:
        super().__init__(in_channels=in_channels, size=size, width=check_count(width, "width"),
                         scale=check_real(scale, "scale"), quadrature=quadrature)
        self.size, self.scale = int(size), float(scale)
        self.net = nn.Sequential(
            *_conv_bn(in_channels, width, 3), *_conv_bn(width, width, 3),
            nn.Conv3d(width, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, points: PointSet, query: PointSet) -> torch.Tensor:
        image = _grid_image(self, x, points, self.size, 3)
        return self.scale * torch.tanh(read_at(self.net(image), query))
