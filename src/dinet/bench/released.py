"""The released DI-Net convolution, re-implemented densely — a benchmark peer, not a layer.

The paper's released code builds, for every call, an N_out × N_in table of offsets between
all output and input points, masks the kernel's window, snaps each in-window offset to the
nearest of the k×k kernel taps and takes a plain mean over the in-window points (no
quadrature weights). This module does the same with dense tensors and one dense GEMM per tap
(``y = Σ_b (M_b X) W_b``, M_b the N_out × N_in matrix of tap b divided by the window count),
vectorised rather than the released per-point Python loop, so its cost is the algorithm's,
not the interpreter's. Memory grows as N_out · N_in: about 11 bytes per pair here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..points import PointSet

__all__ = ["ReleasedDIConv", "released_table_bytes"]


def released_table_bytes(n_out: int, n_in: int, dim: int = 2) -> int:
    """Bytes of the dense tables one call holds: offsets (float32 · d), tap index (int16),
    one tap's float32 matrix at a time, and the window mask (bool)."""
    return n_out * n_in * (4 * dim + 2 + 4 + 1)


class _DenseTaps(torch.autograd.Function):
    """Z_b = M_b X for every tap b, M_b rebuilt from the tap table (forward and backward) so
    that only one dense N_out × N_in float matrix exists at a time."""

    @staticmethod
    def forward(ctx, x2d, tap, inv_count, n_taps: int):
        ctx.save_for_backward(tap, inv_count)
        return torch.stack([((tap == b).to(x2d.dtype) * inv_count[:, None]) @ x2d
                            for b in range(n_taps)])

    @staticmethod
    def backward(ctx, grad_z):
        tap, inv_count = ctx.saved_tensors
        grad_x = None
        for b in range(grad_z.shape[0]):
            part = ((tap == b).to(grad_z.dtype) * inv_count[:, None]).t() @ grad_z[b]
            grad_x = part if grad_x is None else grad_x + part
        return grad_x, None, None, None


class ReleasedDIConv(nn.Module):
    """The released DI-Net convolution (dense all-pairs, snapped taps, plain mean).

    Args:
        in_channels, out_channels: channels.
        kernel_size: k (a k × k window of taps, 2-D).
        spacing: tap spacing h in domain units; the window is |δ_k| ≤ k·h/2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 spacing: float) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.spacing = spacing
        self.weight = nn.Parameter(torch.empty(kernel_size**2, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def tables(self, points_in: PointSet, points_out: PointSet, device=None):
        """The dense tap index (``-1`` outside the window) and 1 / window count per row,
        built on ``device`` (default: the points' own, the CPU)."""
        k, h = self.kernel_size, self.spacing
        c_in, c_out = points_in.coords.to(device), points_out.coords.to(device)
        offsets = c_in[None, :, :] - c_out[:, None, :]  # (No, Ni, d)
        window = (offsets.abs() <= k * h / 2).all(dim=-1)
        taps = torch.clamp(torch.round(offsets / h) + (k - 1) // 2, 0, k - 1).to(torch.int16)
        del offsets
        tap = taps[..., 0] * k + taps[..., 1]
        del taps
        tap[~window] = -1
        inv_count = 1.0 / window.sum(dim=1).clamp(min=1).to(torch.float32)
        return tap, inv_count * k * k  # k² makes a full window a sum, as conv2d

    def forward(self, x: torch.Tensor, points_in: PointSet,
                points_out: PointSet | None = None) -> torch.Tensor:
        points_out = points_in if points_out is None else points_out
        b, n_in, c = x.shape
        tap, inv_count = self.tables(points_in, points_out, x.device)
        x2d = x.transpose(0, 1).reshape(n_in, b * c)
        z = _DenseTaps.apply(x2d, tap, inv_count, self.weight.shape[0])  # (K, N_out, B·C)
        z = z.view(z.shape[0], z.shape[1], b, c)
        y = torch.einsum("knbc,kco->bno", z, self.weight)
        return y + self.bias
