"""The DI-Net paper's 3-D scenes: 2–4 coloured balls, an RGBA field in, a signed distance out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

Index = int | Sequence[int] | np.ndarray | torch.Tensor | slice


@dataclass(frozen=True)
class Balls:
    """A batch of ball scenes, padded to the largest ball count.

    Attributes:
        centers: ``(n, K, 3)`` float32 centres in [-1, 1]^3 (axis k = array axis k: D, H, W).
        radii: ``(n, K)`` float32 radii.
        colors: ``(n, K, 3)`` float32 RGB in [0, 1].
        valid: ``(n, K)`` bool; padding balls (beyond a scene's count) are ``False``.
    """

    centers: torch.Tensor
    radii: torch.Tensor
    colors: torch.Tensor
    valid: torch.Tensor

    def __len__(self) -> int:
        return self.centers.shape[0]

    @property
    def num_balls(self) -> torch.Tensor:
        """``(n,)`` int64, the number of balls in each scene."""
        return self.valid.sum(dim=1)

    def _ball_distances(self, index: Index, coords: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Signed distance to every ball, ``(..., N, K)`` (+inf for padding), and colours."""
        coords = torch.as_tensor(coords)
        if not coords.is_floating_point():
            coords = coords.float()
        if coords.shape[-1] != 3:
            raise ValueError(f"coords must have shape (..., N, 3); got {tuple(coords.shape)}")
        if isinstance(index, torch.Tensor):
            index = index.cpu()
        scalar = isinstance(index, (int, np.integer)) or (
            isinstance(index, torch.Tensor) and index.ndim == 0
        )
        if not scalar and not isinstance(index, slice):
            index = torch.as_tensor(np.asarray(index), dtype=torch.long)
            if index.ndim != 1:
                raise ValueError(f"indices must be an int or 1-D; got shape {tuple(index.shape)}")
        params = {"device": coords.device, "dtype": coords.dtype}
        centers, radii = self.centers[index].to(**params), self.radii[index].to(**params)
        colors, valid = self.colors[index].to(**params), self.valid[index].to(coords.device)
        if not scalar:
            # (B, K, ·) against coords (N, 3) or (B, N, 3): insert the point axis.
            if coords.ndim not in (2, 3) or (coords.ndim == 3 and coords.shape[0] != len(radii)):
                raise ValueError(
                    f"with {len(radii)} scenes coords must be (N, 3) or ({len(radii)}, N, 3); "
                    f"got {tuple(coords.shape)}"
                )
            centers, radii, valid = centers[:, None], radii[:, None], valid[:, None]
            colors = colors[:, None]
        distances = torch.linalg.vector_norm(coords.unsqueeze(-2) - centers, dim=-1) - radii
        distances = distances.masked_fill(~valid, float("inf"))
        return distances, colors

    def sdf(self, index: Index, coords: torch.Tensor) -> torch.Tensor:
        """min over balls of ‖x − c‖ − r, computed exactly.

        This is the paper's target. Outside the balls it is the exact distance to their
        union; inside an overlap of balls it is the depth inside the deepest single ball,
        which can be smaller than the true depth inside the union.

        Shapes:
            ``index`` an int: ``coords (..., N, 3)`` → ``(..., N, 1)``.
            ``index`` of shape ``(B,)`` (or a slice): ``coords (N, 3)`` or ``(B, N, 3)`` →
            ``(B, N, 1)``.
        """
        distances, _ = self._ball_distances(index, coords)
        return distances.min(dim=-1, keepdim=True).values

    def rgba(self, index: Index, coords: torch.Tensor) -> torch.Tensor:
        """The input field: colour of the containing ball and occupancy.

        Inside (``sdf < 0``, strictly) the RGB is that of the ball whose surface is farthest
        away, i.e. the ball attaining the minimum in :meth:`sdf`, and alpha is 1; outside
        and on the surface everything is 0. Shapes as in :meth:`sdf`, with 4 channels.
        """
        distances, colors = self._ball_distances(index, coords)
        depth, nearest = distances.min(dim=-1)
        inside = (depth < 0).unsqueeze(-1).to(distances.dtype)
        # colors is (K, 3) or (B, 1, K, 3); pick the deepest ball's colour per point.
        color = torch.take_along_dim(
            colors.expand(*nearest.shape, *colors.shape[-2:]),
            nearest[..., None, None].expand(*nearest.shape, 1, 3),
            dim=-2,
        ).squeeze(-2)
        return torch.cat([color * inside, inside], dim=-1)


def make_balls(
    n: int,
    seed: int,
    num_balls: tuple[int, int] = (2, 4),
    radius: tuple[float, float] = (0.2, 0.5),
) -> Balls:
    """``n`` scenes of random balls, as in the DI-Net paper.

    Each scene has a ball count uniform in ``num_balls`` (inclusive), radii uniform in
    ``radius``, centres uniform in [-1, 1]^3 and one uniform random RGB colour per ball.
    Deterministic for a seed.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    low, high = num_balls
    if not 1 <= low <= high:
        raise ValueError(f"num_balls must be (min, max) with 1 <= min <= max; got {num_balls}")
    if not 0.0 < radius[0] <= radius[1]:
        raise ValueError(f"radius must be (min, max) with 0 < min <= max; got {radius}")
    rng = np.random.default_rng(seed)
    counts = rng.integers(low, high + 1, size=n)
    centers = rng.uniform(-1.0, 1.0, size=(n, high, 3))
    radii = rng.uniform(radius[0], radius[1], size=(n, high))
    colors = rng.uniform(0.0, 1.0, size=(n, high, 3))
    valid = np.arange(high)[None, :] < counts[:, None]
    # Padding balls are zeroed so the stored parameters show only real balls.
    centers, radii, colors = centers * valid[..., None], radii * valid, colors * valid[..., None]
    return Balls(
        centers=torch.from_numpy(centers.astype(np.float32)),
        radii=torch.from_numpy(radii.astype(np.float32)),
        colors=torch.from_numpy(colors.astype(np.float32)),
        valid=torch.from_numpy(valid),
    )
