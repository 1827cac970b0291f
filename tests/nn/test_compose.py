"""Chains, residual blocks, skips and coarser levels; a small U-Net that learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dinet.points as P
from dinet.nn import (
    Coarsened,
    DIAvgPool,
    DIBatchNorm,
    DIConv,
    DISequential,
    GlobalAvgPool,
    Resample,
    Residual,
    SkipConcat,
)


def test_residual_returns_x_plus_f_and_leaves_input_alone():
    torch.manual_seed(0)
    points = P.sobol(256, 2, seed=0)
    body = DIConv(4, 4, 3, spacing=0.1)
    block = Residual(body)
    x = torch.randn(2, 256, 4)
    before = x.clone()
    y, out_points = block(x, points)
    assert out_points is points
    torch.testing.assert_close(y, x + body(x, points))
    assert torch.equal(x, before)  # the paper's code returned 2·F(x) by mutating x


def test_residual_with_a_coarsening_body_needs_a_matching_shortcut():
    points = P.sobol(1024, 2, seed=0)
    body = DISequential(DIConv(4, 8, 3, spacing=0.1, stride=2), nn.GELU())
    x = torch.randn(1, 1024, 4)
    with pytest.raises(ValueError, match="shortcut"):
        Residual(body)(x, points)
    block = Residual(body, shortcut=DIConv(4, 8, 1, spacing=0.1, stride=2))
    y, out_points = block(x, points)
    assert y.shape == (1, 256, 8) and out_points == points.coarsen(2)


def test_sequential_passes_points_and_handles_plain_modules():
    points = P.grid((16, 16))
    net = DISequential(DIConv(3, 8, 3, spacing=2 / 16), nn.GELU(),
                       DIAvgPool(2, spacing=2 / 16, stride=2), nn.Linear(8, 5),
                       GlobalAvgPool())
    y, out_points = net(torch.randn(2, 256, 3), points)
    assert y.shape == (2, 5)
    assert out_points == points.coarsen(2)
    assert len(net) == 5 and isinstance(net[1], nn.GELU)


def test_skip_and_coarsened_return_to_the_input_points():
    points = P.sobol(1024, 2, seed=0)
    inner = DISequential(DIConv(4, 6, 3, spacing=0.1))
    skip = SkipConcat(Coarsened(inner, stride=2, upsample=Resample("linear", support=0.15)))
    x = torch.randn(2, 1024, 4)
    y, out_points = skip(x, points)
    assert y.shape == (2, 1024, 10) and out_points is points
    torch.testing.assert_close(y[..., :4], x)
    with pytest.raises(ValueError, match="Coarsened"):
        SkipConcat(DIConv(4, 4, 3, spacing=0.1, stride=2))(x, points)


def _unet(h: float) -> DISequential:
    def block(c_in, c_out, spacing):
        return DISequential(DIConv(c_in, c_out, 3, spacing=spacing), DIBatchNorm(c_out),
                            nn.GELU())

    bottom = block(16, 16, 4 * h)
    middle = DISequential(block(8, 16, 2 * h), SkipConcat(Coarsened(
        bottom, upsample=Resample("linear", support=4 * h))), block(32, 8, 2 * h))
    return DISequential(
        block(1, 8, h),
        SkipConcat(Coarsened(middle, upsample=Resample("linear", support=2 * h))),
        DIConv(16, 1, 3, spacing=h),
    )


def test_small_unet_trains_on_a_toy_task():
    """Denoise-and-threshold a smooth random field: the target is 1 where the clean field is
    positive. Trained on fresh Sobol draws; the loss must fall clearly."""
    torch.manual_seed(0)
    h = 2 / 16
    net = _unet(h)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    freqs = torch.randn(64, 3, 2) * 2

    def batch(step):
        points = P.sobol(256, 2, seed=step)
        phase = torch.rand(64, 3, 1) * 6.28
        clean = torch.sin(torch.einsum("bkd,nd->bkn", freqs[:8], points.coords) + phase[:8])
        clean = clean.sum(dim=1)[..., None]
        noisy = clean + 0.3 * torch.randn_like(clean)
        return noisy, (clean > 0).float(), points

    losses = []
    for step in range(40):
        x, target, points = batch(step)
        logits, _ = net(x, points)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"U-Net loss {first:.3f} -> {last:.3f}")
    assert last < 0.7 * first
