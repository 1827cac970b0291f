"""``SDFNet``: a 3-D field (e.g. RGBA) → signed distance, readable at any query points."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import DIConv, DISequential, PointwiseLinear
from ..nn.base import check_points
from ..points import PointSet
from .checkpoint import DIModel

__all__ = ["SDFNet"]


class SDFNet(DIModel):
    """The paper's signed-distance network, in 3-D.

    Encoder: DIConv(in→width, 3³ at ``base_spacing``) + ReLU → DIConv(width→width, stride 2:
    the coarser prefix, spacing 2·base) + ReLU → pointwise width→width + ReLU. Decoder: a
    DIConv(width→1, 3³ at spacing 2·base) from the coarse points evaluated at the query
    points, then ``scale · tanh`` so distances up to about ``scale`` fit.

    The paper keeps ¼ of the points at the second conv; a stride-2 DIConv in 3-D keeps the
    prefix of N/8 (a grid's coarser sub-grid), which is the level a point set can coarsen to.

    Args:
        in_channels: channels of the input field (4 for RGBA).
        width: hidden channels (8 in the paper).
        base_spacing: finest kernel lattice step (2/16 for 16³ voxels).
        scale: output bound. Default 2.
        quadrature: ``"weights"`` or ``"none"``.
        kernel: the convolutions' kernel family, ``"spline"`` (default) or ``"mlp"``.

    Shapes:
        - x: ``(B, N, in_channels)``, points: ``PointSet(N)`` (3-D)
        - query: ``PointSet(N_query)`` (3-D)
        - output: signed distances ``(B, N_query, 1)``
    """

    def __init__(self, in_channels: int = 4, width: int = 8, base_spacing: float = 2 / 16,
                 scale: float = 2.0, quadrature: str = "weights",
                 kernel: str = "spline") -> None:
        super().__init__(in_channels=in_channels, width=width, base_spacing=base_spacing,
                         scale=scale, quadrature=quadrature, kernel=kernel)
        h = float(base_spacing)
        self.scale = float(scale)
        self.encoder = DISequential(
            DIConv(in_channels, width, 3, spacing=h, dim=3, kernel=kernel), nn.ReLU(),
            DIConv(width, width, 3, spacing=2 * h, dim=3, stride=2, kernel=kernel), nn.ReLU(),
            PointwiseLinear(width, width), nn.ReLU(),
        )
        self.decoder = DIConv(width, 1, 3, spacing=2 * h, dim=3, kernel=kernel)

    def forward(self, x: torch.Tensor, points: PointSet, query: PointSet) -> torch.Tensor:
        features, coarse = self.encoder(x, check_points(self.prepare_points(points), 3))
        query = check_points(query, 3, "query")
        return self.scale * torch.tanh(self.decoder(features, coarse, query))
