"""from_cnn(..., lattice=True): only the layers that read the input integrate over its points;
they write onto the CNN's grid, where every later layer is the CNN itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dinet.points as P
from dinet.convert import from_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    cnn = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 5))
    with torch.no_grad():  # statistics that are not the identity
        cnn[1].running_mean.uniform_(-0.5, 0.5)
        cnn[1].running_var.uniform_(0.5, 1.5)
    return cnn.eval()


@pytest.mark.parametrize("kernel", ["spline", "cubic"])
def test_lattice_is_the_cnn_after_the_first_integral(kernel):
    """On Sobol points the lattice net equals the CNN applied to what its first converted
    convolution integrates onto the 16x16 grid (float64 rounding); on the grid it is the CNN
    exactly, as without lattice."""
    cnn = _cnn().double()
    net = from_cnn(cnn, (16, 16), kernel=kernel, lattice=True).double()
    grid = P.grid((16, 16))
    images = torch.rand(3, 2, 16, 16, dtype=torch.float64)
    on_grid = net(P.image_to_values(images, grid), grid)
    assert torch.allclose(on_grid, cnn(images), atol=1e-12, rtol=0)

    points = P.sobol(700, 2, seed=3)
    x = torch.rand(3, len(points), 2, dtype=torch.float64)
    first = next(iter(net.layers.values()))  # the first convolution, converted
    image = P.values_to_image(first(x, points, grid), grid)
    expected = cnn[1:](image)
    assert torch.allclose(net(x, points), expected, atol=1e-12, rtol=0)
    sets = net.point_sets(points)
    assert len(sets[net.input_name]) == 700
    assert sorted({len(p) for name, p in sets.items() if name != net.input_name}) == [16, 64, 256]


def test_without_lattice_every_layer_sees_the_input_points():
    net = from_cnn(_cnn(), (16, 16))
    sets = net.point_sets(P.sobol(1024, 2, seed=0))
    assert max(len(p) for p in sets.values()) == 1024 and not net.lattice


def test_lattice_refuses_mixing_the_input_with_grid_values():
    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    with pytest.raises(ValueError, match="combines the input field with values computed on"):
        from_cnn(Skip().eval(), (8, 8), lattice=True)
    assert from_cnn(Skip().eval(), (8, 8)) is not None  # fine without lattice


def test_pointwise_steps_on_the_input_stay_on_its_points():
    """A normalisation of the input before the first convolution runs on the input's points;
    the convolution then moves onto the grid."""
    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv((x - 0.5) * 2.0))

    net = from_cnn(Normalised().eval(), (8, 8), lattice=True)
    points = P.sobol(300, 2, seed=1)
    out = net(torch.rand(2, 300, 1), points)
    assert out.shape == (2, 64, 4)
    assert len(net.output_points(points)) == 64
