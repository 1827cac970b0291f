"""Learned kernel bases of DI convolutions (the stencils they are evaluated on are built in
:mod:`dinet.neighbors.stencils`; the families that use them in :mod:`dinet.nn.families`)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLPBasis"]


class MLPBasis(nn.Module):
    r"""A learned continuous basis φ_m(u), m = 1…M, on the unit box u ∈ [-1, 1]^d.

    φ(u) = MLP(u) · Π_k (1 − u_k²): the window makes every basis function vanish on the
    support's boundary, so the kernel is continuous and its quadrature converges as fast on
    scattered points as on grids.

    Args:
        dim: d.
        n_basis: M.
        hidden: width of the hidden layers. Default 32.
        layers: number of hidden layers. Default 2.
    """

    def __init__(self, dim: int, n_basis: int, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        widths = [dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.GELU()]
        blocks.append(nn.Linear(widths[-1], n_basis))
        self.net = nn.Sequential(*blocks)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        window = (1 - u * u).clamp(min=0).prod(dim=-1, keepdim=True)
        return self.net(u) * window
