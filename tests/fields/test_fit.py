"""fit_fields: reaches its target on easy images, stops early, is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinet.fields import SirenField, fit_fields, offgrid_points


def _blobs(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth Gaussian blobs, (n, size, size, 1) in [0, 1]."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    out = np.zeros((n, size, size, 1), dtype=np.float32)
    for k in range(n):
        cy, cx = rng.uniform(-0.5, 0.5, 2)
        s = rng.uniform(0.3, 0.6)
        out[k, :, :, 0] = 0.1 + 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out


FAST = dict(width=16, depth=2, omega0=10.0, meta_steps=2, meta_images=2, progress=False)


def test_fit_reaches_target_and_stops_early():
    images = _blobs(5)
    res = fit_fields(images, chunk=3, max_steps=200, target_psnr=30.0, **FAST)
    assert isinstance(res.fields, SirenField) and res.fields.n_fields == 5
    for arr in (res.psnr_grid, res.psnr_offgrid, res.steps):
        assert arr.shape == (5,)
    assert (res.psnr_grid >= 30.0).all()
    assert (res.steps < 200).all()
    assert np.isfinite(res.psnr_offgrid).all() and res.psnr_offgrid.min() > 20
    assert res.seconds > 0


def test_fit_psnr_matches_fields():
    images = _blobs(3)
    res = fit_fields(torch.from_numpy(images), chunk=2, max_steps=20, target_psnr=60.0, **FAST)
    from dinet import points as P

    grid = P.grid((16, 16))
    pred = res.fields(grid.coords.float())
    target = P.image_to_values(torch.from_numpy(images).permute(0, 3, 1, 2), grid)
    mse = (pred - target).pow(2).mean(dim=(1, 2))
    np.testing.assert_allclose(-10 * torch.log10(mse).detach().numpy(), res.psnr_grid, atol=1e-3)
    assert (res.steps <= 20).all()


def test_fit_is_deterministic():
    images = _blobs(3, seed=1)
    a = fit_fields(images, max_steps=15, seed=3, **FAST)
    b = fit_fields(images, max_steps=15, seed=3, **FAST)
    for k, v in a.fields.state_dict().items():
        assert torch.equal(v, b.fields.state_dict()[k])
    np.testing.assert_array_equal(a.psnr_grid, b.psnr_grid)
    np.testing.assert_array_equal(a.steps, b.steps)


def test_chunk_and_device_change_the_speed_not_the_fit():
    """The fields of a chunk are independent (one Adam row and one stopping rule each), so
    fitting 4 at once or 2 by 2 gives the same fields up to float rounding; an explicit
    device gives the default's result exactly, on the CPU."""
    images = _blobs(4, seed=2)
    whole = fit_fields(images, chunk=4, max_steps=12, seed=1, device="cpu", **FAST)
    pairs = fit_fields(images, chunk=2, max_steps=12, seed=1, **FAST)
    default = fit_fields(images, max_steps=12, seed=1, **FAST)
    np.testing.assert_allclose(whole.psnr_grid, pairs.psnr_grid, atol=1e-3)
    np.testing.assert_array_equal(pairs.steps, whole.steps)
    for k, v in whole.fields.state_dict().items():
        torch.testing.assert_close(v, pairs.fields.state_dict()[k], rtol=1e-4, atol=1e-5)
        assert v.device.type == "cpu"
    np.testing.assert_array_equal(default.psnr_grid, fit_fields(
        images, max_steps=12, seed=1, device=torch.device("cpu"), **FAST).psnr_grid)


def test_fit_fourier_arch():
    res = fit_fields(_blobs(2), "fourier", max_steps=5, progress=False, meta_steps=0,
                     n_features=16, width=16, depth=1, scale=2.0)
    assert res.fields.n_fields == 2 and res.psnr_grid.shape == (2,)


def test_offgrid_points_inside_half_pixel_border():
    pts = offgrid_points((16, 8), n=256)
    assert pts.shape == (256, 2)
    assert pts[:, 0].abs().max() <= 1 - 1 / 16 and pts[:, 1].abs().max() <= 1 - 1 / 8
    assert torch.equal(pts, offgrid_points((16, 8), n=256))


def test_fit_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        fit_fields(np.zeros((2, 16, 16)), progress=False)
    with pytest.raises(ValueError, match=r"valid archs: \['fourier', 'siren'\]"):
        fit_fields(_blobs(1), "nerf", progress=False)
