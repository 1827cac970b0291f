"""Pointwise layers: 1×1 convs exactly, MLP shapes, Fourier features of the coordinates."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import dinet.points as P
from dinet.nn.pointwise import PointwiseLinear, PointwiseMLP, PositionalEncoding

TOL = 1e-5


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# --- PointwiseLinear --------------------------------------------------------------------------

@pytest.mark.parametrize("conv_cls, shape", [(nn.Conv2d, (5, 7)), (nn.Conv3d, (3, 4, 5))])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("padding", [0, "same", "valid"])
def test_from_conv1x1_equals_the_conv_on_a_grid(conv_cls, shape, bias, padding):
    torch.manual_seed(0)
    conv = conv_cls(4, 6, 1, bias=bias, padding=padding)
    layer = PointwiseLinear.from_conv1x1(conv)
    points = P.grid(shape)
    x = torch.randn(2, 4, *shape)
    out = P.values_to_image(layer(P.image_to_values(x, points), points), points)
    assert _rel_err(out, conv(x)) <= TOL
    assert (layer.bias is None) == (not bias)


def test_from_conv1x1_rejects_what_is_not_a_pointwise_conv():
    for conv, what in [
        (nn.Conv2d(3, 4, 3), "kernel_size=(3, 3)"),
        (nn.Conv2d(3, 4, 1, stride=2), "stride=(2, 2)"),
        (nn.Conv2d(3, 4, 1, padding=1), "padding=(1, 1)"),
        (nn.Conv2d(4, 4, 1, groups=2), "groups=2"),
    ]:
        with pytest.raises(ValueError, match=rf"{re.escape(what)}.*DIConv.from_conv"):
            PointwiseLinear.from_conv1x1(conv)
    for module in (nn.ConvTranspose2d(3, 4, 1), nn.Linear(3, 4)):
        with pytest.raises(ValueError, match="converts nn.Conv1d/2d/3d"):
            PointwiseLinear.from_conv1x1(module)


def test_pointwise_linear_is_a_linear_map_of_the_channels():
    torch.manual_seed(1)
    layer = PointwiseLinear(3, 5)
    points = P.sobol(100, 2, seed=0)
    x = torch.randn(2, 100, 3)
    expected = x @ layer.weight.T + layer.bias
    torch.testing.assert_close(layer(x, points), expected)
    torch.testing.assert_close(layer(x), expected)  # points are optional
    torch.testing.assert_close(layer(x, points, points), expected)
    assert set(layer.state_dict()) == {"weight", "bias"}
    assert PointwiseLinear(3, 5, bias=False).bias is None
    assert repr(layer) == "PointwiseLinear(3, 5, bias=True)"


def test_pointwise_linear_errors():
    points = P.sobol(100, 2, seed=0)
    layer = PointwiseLinear(3, 5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="in_channels must be a positive integer"):
            PointwiseLinear(bad, 5)
    with pytest.raises(ValueError, match="C=4 channels but this layer expects 3"):
        layer(torch.randn(2, 100, 4), points)
    with pytest.raises(ValueError, match="C=4 channels but this PointwiseLinear expects 3"):
        layer(torch.randn(2, 100, 4))
    with pytest.raises(ValueError, match="N=99 points but its point set has 100"):
        layer(torch.randn(2, 99, 3), points)
    with pytest.raises(ValueError, match=r"shape \(B, N, C\)"):
        layer(torch.randn(100, 3))
    with pytest.raises(ValueError, match="pointwise in space"):
        layer(torch.randn(2, 100, 3), points, P.sobol(100, 2, seed=1))
    with pytest.raises(ValueError, match="no points_in"):
        layer(torch.randn(2, 100, 3), None, points)


# --- PointwiseMLP -----------------------------------------------------------------------------

@pytest.mark.parametrize("num_layers", [1, 2, 4])
def test_mlp_shapes_and_depth(num_layers):
    mlp = PointwiseMLP(3, 16, 2, num_layers=num_layers, activation=nn.ReLU)
    linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
    assert len(linears) == num_layers
    assert sum(isinstance(m, nn.ReLU) for m in mlp.net) == num_layers - 1
    assert linears[0].in_features == 3 and linears[-1].out_features == 2
    points = P.sobol(50, 2, seed=0)
    x = torch.randn(4, 50, 3, requires_grad=True)
    out = mlp(x, points)
    assert out.shape == (4, 50, 2)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in mlp.parameters())


def test_mlp_acts_on_each_point_alone():
    torch.manual_seed(2)
    mlp = PointwiseMLP(3, 8, 2)
    x = torch.randn(2, 30, 3)
    perm = torch.randperm(30)
    torch.testing.assert_close(mlp(x[:, perm]), mlp(x)[:, perm])
    torch.testing.assert_close(mlp(x[:, :1]), mlp(x)[:, :1])


def test_mlp_errors():
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        PointwiseMLP(3, 8, 2, num_layers=0)
    with pytest.raises(ValueError, match="not an instance"):
        PointwiseMLP(3, 8, 2, activation=nn.GELU())
    with pytest.raises(ValueError, match="must return an nn.Module"):
        PointwiseMLP(3, 8, 2, activation=lambda: torch.tanh)
    with pytest.raises(ValueError, match="C=2 channels"):
        PointwiseMLP(3, 8, 2)(torch.randn(1, 10, 2))


# --- PositionalEncoding -----------------------------------------------------------------------

@pytest.mark.parametrize("dim, num_frequencies, include_input", [
    (2, 6, True), (3, 4, False), (2, 0, True), (1, 3, True),
])
def test_positional_encoding_shapes(dim, num_frequencies, include_input):
    enc = PositionalEncoding(dim, num_frequencies, include_input)
    assert enc.extra_channels == dim * (2 * num_frequencies + int(include_input))
    points = P.sobol(40, dim, seed=0)
    x = torch.randn(3, 40, 5)
    out = enc(x, points)
    assert out.shape == (3, 40, 5 + enc.extra_channels)
    assert torch.equal(out[..., :5], x)
    assert torch.equal(out[0, :, 5:], out[2, :, 5:])  # the same features for every sample
    empty = enc(torch.zeros(2, 40, 0), points)  # coordinates only
    assert empty.shape == (2, 40, enc.extra_channels)


def test_positional_encoding_values():
    enc = PositionalEncoding(2, num_frequencies=3)
    coords = torch.tensor([[0.25, -0.5], [1.0, 0.1]])
    points = P.PointSet(coords, torch.tensor([2.0, 2.0]))
    out = enc(torch.zeros(1, 2, 0), points)[0]
    for i, (a, b) in enumerate(coords.tolist()):
        expected = [a, b]
        for level in range(3):
            f = 2**level * math.pi
            expected += [math.sin(f * a), math.sin(f * b), math.cos(f * a), math.cos(f * b)]
        torch.testing.assert_close(out[i], torch.tensor(expected), atol=1e-6, rtol=0)
    assert "extra_channels=14" in repr(enc)
    assert "frequencies" not in enc.state_dict()  # fixed by the arguments


def test_positional_encoding_errors():
    points = P.sobol(16, 2, seed=0)
    with pytest.raises(ValueError, match="3-D but this layer was built with dim=2"):
        PositionalEncoding(2)(torch.randn(1, 16, 1), P.sobol(16, 3, seed=0))
    with pytest.raises(ValueError, match="N=15 points but its point set has 16"):
        PositionalEncoding(2)(torch.randn(1, 15, 1), points)
    with pytest.raises(ValueError, match="num_frequencies must be a non-negative integer"):
        PositionalEncoding(2, num_frequencies=-1)
    with pytest.raises(ValueError, match="adds no channels"):
        PositionalEncoding(2, num_frequencies=0, include_input=False)
    with pytest.raises(ValueError, match="pointwise in space"):
        PositionalEncoding(2)(torch.randn(1, 16, 1), points, P.sobol(16, 2, seed=1))


# --- hygiene ------------------------------------------------------------------------------------

def test_inputs_are_not_mutated():
    points = P.sobol(64, 2, seed=0)
    x = torch.randn(2, 64, 3)
    for layer in (PointwiseLinear(3, 4), PointwiseMLP(3, 8, 3), PositionalEncoding(2)):
        before = x.clone()
        layer(x, points)
        assert torch.equal(x, before), type(layer).__name__
