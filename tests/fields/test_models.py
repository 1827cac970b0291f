"""Batched fields: shared vs per-field coords, select/stack, ω0 folding, image interpolation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinet import points as P
from dinet.fields import (
    FIELD_ARCHS,
    AnalyticField,
    FourierFeatureField,
    ImageField,
    SirenField,
    build_field,
)


def test_siren_shared_and_per_field_coords_agree():
    torch.manual_seed(0)
    field = SirenField(3, in_dim=2, out_dim=2, width=16, depth=3)
    coords = torch.rand(50, 2) * 2 - 1
    shared = field(coords)
    per_field = field(coords.expand(3, -1, -1).clone())
    assert shared.shape == (3, 50, 2)
    torch.testing.assert_close(shared, per_field, rtol=0, atol=1e-6)


def test_siren_parameter_names_and_shapes():
    field = SirenField(4, in_dim=3, out_dim=2, width=8, depth=2)
    shapes = {k: tuple(v.shape) for k, v in field.state_dict().items()}
    assert shapes == {
        "layers.0.weight": (4, 3, 8), "layers.0.bias": (4, 1, 8),
        "layers.1.weight": (4, 8, 8), "layers.1.bias": (4, 1, 8),
        "layers.2.weight": (4, 8, 2), "layers.2.bias": (4, 1, 2),
    }


@pytest.mark.parametrize("arch", sorted(FIELD_ARCHS))
def test_batch_is_stack_of_singles(arch):
    torch.manual_seed(1)
    field = build_field(arch, 5, out_dim=3, width=16)
    coords = torch.rand(40, 2) * 2 - 1
    singles = [field.select([i]) for i in range(5)]
    restacked = type(field).stack(singles)
    assert restacked.n_fields == 5
    for k, v in field.state_dict().items():
        assert torch.equal(v, restacked.state_dict()[k])
    assert torch.equal(restacked(coords), field(coords))
    for i, single in enumerate(singles):
        torch.testing.assert_close(single(coords)[0], field(coords)[i], rtol=0, atol=1e-6)
    picked = field.select([4, 0])
    assert torch.equal(picked.layers[0].weight, field.layers[0].weight[[4, 0]])
    picked.layers[0].weight.data.zero_()  # copies, not views
    assert field.layers[0].weight.abs().sum() > 0


def test_stack_rejects_mismatched_hparams():
    with pytest.raises(ValueError, match="same class and hparams"):
        SirenField.stack([SirenField(1, width=8), SirenField(1, width=16)])


def _reference_siren(field: SirenField, index: int, coords: torch.Tensor) -> torch.Tensor:
    """The textbook SIREN sin(ω0 (x W + b)) with the unfolded parameters of one field."""
    w0 = field.omega0
    h = coords
    for layer in field.layers[:-1]:
        weight, bias = layer.weight[index] / w0, layer.bias[index] / w0
        h = torch.sin(w0 * (h @ weight + bias))
    last = field.layers[-1]
    return h @ last.weight[index] + last.bias[index]


def test_omega_folding_matches_unfolded_reference():
    torch.manual_seed(2)
    field = SirenField(2, out_dim=2, width=32, depth=3, omega0=30.0)
    coords = torch.rand(64, 2) * 2 - 1
    out = field(coords)
    for i in range(2):
        torch.testing.assert_close(out[i], _reference_siren(field, i, coords), atol=2e-5, rtol=0)


def test_siren_init_bounds():
    field = SirenField(8, width=64, depth=3, omega0=30.0)
    first, hidden = field.layers[0].weight, field.layers[1].weight
    assert first.abs().max() <= 30.0 / 2 + 1e-6
    assert hidden.abs().max() <= (6 / 64) ** 0.5 + 1e-6  # ω0 · √(6/fan_in)/ω0
    assert hidden.abs().max() > 0.9 * (6 / 64) ** 0.5


def test_hparams_roundtrip():
    field = FourierFeatureField(2, n_features=16, scale=3.0, width=8, depth=1, seed=4)
    twin = build_field("fourier", 2, **field.hparams())
    assert torch.equal(twin.frequencies, field.frequencies)
    assert "frequencies" not in field.state_dict()


def test_fourier_shapes():
    field = FourierFeatureField(3, in_dim=3, out_dim=2, n_features=16, width=8, depth=2)
    assert field(torch.rand(10, 3)).shape == (3, 10, 2)
    assert field(torch.rand(3, 7, 3)).shape == (3, 7, 2)
    assert field.frequencies.shape == (3, 16)
    assert field.layers[0].weight.shape == (3, 32, 8)


def test_bad_coords_and_unknown_arch():
    field = SirenField(2)
    with pytest.raises(ValueError, match="coords must be"):
        field(torch.rand(10, 3))
    with pytest.raises(ValueError, match="batch 3"):
        field(torch.rand(3, 10, 2))
    with pytest.raises(ValueError, match=r"valid archs: \['fourier', 'siren'\]"):
        build_field("nerf", 2)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_image_field_exact_at_pixel_centres(mode):
    torch.manual_seed(3)
    images = torch.rand(2, 3, 6, 9)
    grid = P.grid((6, 9))
    out = ImageField(images, mode=mode)(grid.coords.float())
    torch.testing.assert_close(out, P.image_to_values(images, grid), atol=1e-5, rtol=0)


def test_image_field_half_pixel_matches_interpolate():
    torch.manual_seed(4)
    images = torch.rand(2, 1, 5, 7)
    # the midpoint of pixel centres (i, j) and (i+1, j+1) is the mean of those four pixels
    i, j = 2, 3
    x = torch.tensor([[-1 + (2 * i + 2) / 5, -1 + (2 * j + 2) / 7]])
    expected = images[:, :, i : i + 2, j : j + 2].mean(dim=(2, 3))
    torch.testing.assert_close(ImageField(images)(x)[:, 0], expected, atol=1e-6, rtol=0)
    # and every output pixel of F.interpolate (2x, align_corners=False) is the field at its
    # pixel centre on the finer grid
    fine = P.grid((10, 14))
    up = F.interpolate(images, size=(10, 14), mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        ImageField(images)(fine.coords.float()), P.image_to_values(up, fine), atol=1e-6, rtol=0
    )


def test_image_field_is_edge_clamped_and_3d():
    images = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    field = ImageField(images)
    corner = field(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    assert corner[0, :, 0].tolist() == [0.0, 7.0]
    with pytest.raises(ValueError, match="bicubic"):
        ImageField(images, mode="bicubic")
    with pytest.raises(ValueError, match="images"):
        ImageField(torch.rand(4, 4))


def test_analytic_field():
    field = AnalyticField(lambda x: x.norm(dim=-1, keepdim=True), out_dim=1)
    assert field(torch.zeros(2, 5, 2)).shape == (2, 5, 1)
    with pytest.raises(ValueError, match="expected"):
        AnalyticField(lambda x: x, out_dim=1)(torch.zeros(5, 2))
