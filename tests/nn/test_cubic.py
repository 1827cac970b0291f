"""The cubic kernel family (Keys' interpolating cubic): exactly conv2d on grids, like the
linear hat, and closer than the hat to the CNN's sum on other points."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinet import points as P
from dinet.nn import DIConv
from dinet.nn.families import keys_cubic


def test_keys_cubic_interpolates():
    s = torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0, 2.5, 0.5], dtype=torch.float64)
    torch.testing.assert_close(keys_cubic(s), torch.tensor(
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5625], dtype=torch.float64))
    # A partition of unity: the taps' weights at any offset sum to 1.
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    total = sum(keys_cubic(u - t) for t in (-1, 0, 1, 2))
    torch.testing.assert_close(total, torch.ones_like(u))


@pytest.mark.parametrize("conv", [
    nn.Conv2d(2, 3, 3, padding=1),
    nn.Conv2d(3, 4, 5, stride=2, padding=2),
    nn.Conv2d(4, 4, 3, padding=1, groups=2),
], ids=["3x3", "5x5-stride2", "groups"])
def test_cubic_from_conv_is_exactly_the_conv_on_its_grid(conv):
    torch.manual_seed(0)
    conv = conv.double()
    layer, out = DIConv.from_conv(conv, (16, 16), kernel="cubic")
    assert layer.kernel == "cubic"
    grid = P.grid((16, 16))  # a power of two: its float32 weights are exact
    image = torch.randn(2, conv.in_channels, 16, 16, dtype=torch.float64)
    y = layer.double()(P.image_to_values(image, grid), grid, out)
    torch.testing.assert_close(P.values_to_image(y, out), conv(image), rtol=1e-12, atol=1e-12)


def test_cubic_stays_closer_to_the_cnn_sum_off_the_grid():
    """A converted 3x3 conv applied to a field with detail at a few pixels' scale, read on
    16k scrambled Sobol points: the hat's integral smooths the field between the taps, the
    cubic's much less (9.9% vs 1.5% at 64k points, benchmarks/cubic_kernel.py; the bound
    leaves room)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    side, w = 16, 9.0

    def field(c):
        return torch.stack([torch.sin(w * c[..., 0] + 0.7 * w * c[..., 1]),
                            torch.cos(0.8 * w * c[..., 1] - 0.3 * w * c[..., 0])], -1)

    grid, points = P.grid((side, side)), P.sobol(16384, seed=0)
    with torch.no_grad():
        reference = conv(P.values_to_image(field(grid.coords.double())[None], grid))
        errors = {}
        for kernel in ("spline", "cubic"):
            layer, out = DIConv.from_conv(conv, (side, side), kernel=kernel)
            y = P.values_to_image(layer.double()(field(points.coords.double())[None], points,
                                                 out), out)
            inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # off the edges
            errors[kernel] = float((y - reference)[inner].abs().max()
                                   / reference[inner].abs().max())
    assert errors["cubic"] < 0.4 * errors["spline"], errors
    assert errors["cubic"] < 0.05, errors


def test_cubic_refuses_dilation():
    with pytest.raises(ValueError, match="dilation 1"):
        DIConv(2, 2, 3, spacing=0.1, dilation=2, kernel="cubic")
