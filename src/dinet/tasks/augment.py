"""What a training step draws: seeds derived from (seed, epoch, step), and the field
augmentations applied to the coordinates the fields and targets are read at."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Augment", "derived_seed"]


def derived_seed(*keys: int) -> int:
    """A seed derived from non-negative integers (seed, epoch[, step])."""
    return int(np.random.SeedSequence([abs(k) for k in keys]).generate_state(1)[0])


class Augment:
    """Per-item flips and a small shift of the coordinates the fields and targets are read
    at; the model still sees the untouched points. Images flip left-right only (the last
    axis: an upside-down shirt is not in the data); 3-D ball scenes along every axis."""

    def __init__(self, gen: torch.Generator, batch: int, dim: int) -> None:
        flip = torch.rand(batch, 1, dim, generator=gen) < 0.5
        if dim == 2:
            flip[..., 0] = False
        self.flips = torch.where(flip, -1.0, 1.0)
        self.shift = 0.01 * torch.randn(batch, 1, dim, generator=gen)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        return (coords[None] * self.flips + self.shift).clamp(-1, 1)
