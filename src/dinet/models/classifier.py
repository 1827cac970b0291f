"""``Classifier``: a field → class logits, on any discretization."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import DIBatchNorm, DIConv, DISequential, GlobalAvgPool, Resample
from ..points import PointSet, grid
from ..points.checks import check_count, check_real
from .base import DIModel
from .blocks import (
    check_preset,
    check_stem_quadrature,
    conv_block,
    interpolant_grid,
    mlp_head,
    residual_block,
)

__all__ = ["Classifier", "PRESETS"]

PRESETS = ("dinet2", "dinet4", "dinet-res")


class Classifier(DIModel):
    """A DI-Net classifier: integrals over the input points, then a global average pool.

    Presets:

    - ``"dinet2"`` (the paper's DI-Net-2): DIConv in→64 (3×3 at ``base_spacing``) + norm +
      ReLU; DIConv 64→128 with stride 2 (¼ of the points, spacing 2·base) + norm + ReLU;
      global average pool; MLP head 128→128→n_classes.
    - ``"dinet4"`` (DI-Net-4): 32 channels; stem conv, one residual block, a stride-2 conv,
      global pool, MLP head 32→32→n_classes.
    - ``"dinet-res"`` (default, stronger): a stem DIConv in→32 with a smooth learned kernel
      (32 MLP basis functions, 5×5 lattice at ``stem_spacing``, one pixel) integrates the
      field's piecewise-linear interpolant over whatever points arrive (``stem_quadrature``)
      and writes its features on a fixed lattice — the pixel centres of a
      (2/base_spacing)² grid. Everything after works on that
      lattice: three stages of residual blocks (2 × 32 channels on the lattice, 2 × 64 on its
      ¼ prefix, 1 × 128 on 1/16; the spacing doubles per stage; stride-2 1×1 DIConv
      shortcuts), global average pool, dropout 0.2, linear head. Only the stem's integral
      depends on the input points, so 256, 1,024 or 4,096 points of any discretization give
      the rest of the network the same kind of input. Use ``base_spacing`` of two pixels
      (4/H, the default 1/8 for 32×32 images), a 16×16 lattice, with a 6×6-pixel stem.

    Args:
        preset: one of :data:`PRESETS`.
        in_channels: channels of the input field.
        n_classes: number of classes.
        base_spacing: the finest kernel lattice step in domain units; default 2/32 (one pixel
            of a 32×32 image), and 4/32 for ``dinet-res``.
        quadrature: ``"weights"`` (integrate with the points' quadrature weights) or
            ``"none"`` (the paper's unweighted sums: uniform weights 2^d/N).
        kernel: the convolutions' kernel family, ``"spline"`` (default) or ``"mlp"``
            (a learned windowed basis, smoother to integrate on scattered points).
        stem_spacing: ``dinet-res`` only: the stem kernel's lattice step in domain units;
            default ``base_spacing / 2``, one pixel, so the stem resolves the detail the
            pixel CNN's 5×5 stem sees (checkpoints of format 1 had ``base_spacing``).
        stem_basis: ``dinet-res`` only: the number of learned basis functions of the stem's
            MLP kernel, which its 32 filters span; default 32 (16 in format 1).
        stem_quadrature: ``dinet-res`` only: how the stem integrates the input field.
            ``"weights"`` (formats 1 and 2): the sum over the input points with their
            quadrature weights. ``"linear"`` (default): product integration — the stem
            integrates the field's piecewise-linear interpolant on the Delaunay
            triangulation of the input points (:class:`~dinet.nn.Resample`
            ``"delaunay"``), read on a fixed grid at most as coarse as the stem's step whose
            pixel centres include the lattice (48×48 for the defaults, two thirds of a
            pixel), so the kernel is integrated at the same offsets whatever points arrive
            — as one ``conv2d`` — and sparse or uneven points are filled in linearly
            instead of weighting a few samples heavily.

    Shapes:
        - x: ``(B, N, in_channels)``, points: ``PointSet(N)`` (2-D)
        - output: logits ``(B, n_classes)``
    """

    # 2: dinet-res's stem one pixel fine with 32 basis functions; 3: and it integrates the
    # points' piecewise-linear interpolant (stem_quadrature="linear")
    FORMAT_VERSION = 3

    def __init__(self, preset: str = "dinet-res", in_channels: int = 1, n_classes: int = 10,
                 base_spacing: float | None = None, quadrature: str = "weights",
                 kernel: str = "spline", stem_spacing: float | None = None,
                 stem_basis: int | None = None, stem_quadrature: str | None = None) -> None:
        check_preset(preset, PRESETS, "Classifier")
        if base_spacing is None:  # one pixel of a 32 x 32 image; two for dinet-res
            base_spacing = (4 if preset == "dinet-res" else 2) / 32
        stem = {}
        if preset == "dinet-res":
            stem = {"stem_spacing": check_real(base_spacing / 2 if stem_spacing is None
                                                   else stem_spacing, "stem_spacing"),
                    "stem_basis": check_count(32 if stem_basis is None else stem_basis,
                                              "stem_basis"),
                    "stem_quadrature": check_stem_quadrature(
                        "linear" if stem_quadrature is None else stem_quadrature)}
        elif stem_spacing is not None or stem_basis is not None or stem_quadrature is not None:
            raise ValueError(f"stem_spacing, stem_basis and stem_quadrature are options of the "
                             f"dinet-res preset; {preset!r} has no separate stem")
        super().__init__(preset=preset, in_channels=in_channels, n_classes=n_classes,
                         base_spacing=base_spacing, quadrature=quadrature, kernel=kernel,
                         **stem)
        h = float(base_spacing)
        k = kernel
        if preset == "dinet2":
            self.net = DISequential(
                conv_block(in_channels, 64, h, kernel=k),
                conv_block(64, 128, 2 * h, stride=2, kernel=k),
                GlobalAvgPool(),
                mlp_head(128, 128, n_classes),
            )
        elif preset == "dinet4":
            self.net = DISequential(
                conv_block(in_channels, 32, h, kernel=k),
                residual_block(32, 32, h, kernel=k),
                conv_block(32, 32, 2 * h, stride=2, kernel=k),
                GlobalAvgPool(),
                mlp_head(32, 32, n_classes),
            )
        else:
            side = round(2.0 / h)
            self.lattice = grid((side, side))
            linear = stem["stem_quadrature"] == "linear"
            self.stem = DIConv(in_channels, 32, 5, spacing=stem["stem_spacing"], bias=False,
                               kernel="mlp", n_basis=stem["stem_basis"],
                               grid_fast_path=True if linear else None)
            self.stem_norm = DIBatchNorm(32)
            self.interpolant = None
            if linear:
                self.interpolant = Resample("delaunay")
                self.interpolant_grid = interpolant_grid(side, h, stem["stem_spacing"])
            layers: list[nn.Module] = []
            c_in = 32
            for stage, (width, blocks) in enumerate(((32, 2), (64, 2), (128, 1))):
                spacing = h * 2**stage
                for b in range(blocks):
                    stride = 2 if stage > 0 and b == 0 else 1
                    layers.append(residual_block(c_in, width, spacing, stride=stride, kernel=k))
                    c_in = width
            layers += [GlobalAvgPool(), nn.Dropout(0.2), nn.Linear(c_in, n_classes)]
            self.net = DISequential(*layers)

    @classmethod
    def upgrade_config(cls, config, version):
        # What earlier formats did not record: the defaults they were trained with.
        if version not in (1, 2):
            return super().upgrade_config(config, version)
        if config.get("preset", "dinet-res") == "dinet-res":
            if version == 1:
                config = {**config, "stem_spacing": config["base_spacing"], "stem_basis": 16}
            config = {**config, "stem_quadrature": "weights"}
        return config

    def forward(self, x: torch.Tensor, points: PointSet) -> torch.Tensor:
        points = self.prepare_points(points)
        if self.config["preset"] == "dinet-res":
            if self.interpolant is not None:
                x = self.interpolant(x, points, self.interpolant_grid)
                points = self.interpolant_grid
            x = torch.relu(self.stem_norm(self.stem(x, points, self.lattice), self.lattice))
            points = self.lattice
        logits, _ = self.net(x, points)
        return logits
