"""Tests for dinet.data: IDX parsing, Fashion-MNIST, digits, user sources, scenes, balls."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dinet.data import (
    FASHION_MNIST_CLASSES,
    Balls,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    load_npz,
    make_balls,
    make_scenes,
    read_idx,
    resize_images,
)
from dinet.data.fashion_mnist import DEFAULT_DATA_DIR


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_fake_fashion(folder: Path, n: int = 6, split: str = "t10k") -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
    write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress=False)
    return images, labels


# --- IDX and Fashion-MNIST ---------------------------------------------------------------


def test_read_idx_gz_and_plain(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        path = write_idx(tmp_path / f"a{compress}", array, compress)
        np.testing.assert_array_equal(read_idx(path, ndim=3), array)
        np.testing.assert_array_equal(read_idx(path, ndim=3, limit=1), array[:1])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda data: b"\x01\x02" + data[2:],  # bad magic
        lambda data: data[:-5],  # truncated payload
        lambda data: data + b"\x00",  # trailing bytes
        lambda data: data[:2] + b"\x0d" + data[3:],  # float element type
        lambda data: data[:3] + b"\x01" + data[4:],  # wrong number of dimensions
    ],
)
def test_read_idx_corrupt_names_file(tmp_path, mangle):
    good = write_idx(tmp_path / "good", np.zeros((2, 3, 4)), compress=False).read_bytes()
    bad = tmp_path / "broken-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(mangle(good)))
    with pytest.raises(ValueError, match="broken-images-idx3-ubyte"):
        read_idx(bad, ndim=3)


def test_read_idx_bad_gzip_names_file(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(ValueError, match="bad.gz"):
        read_idx(bad, ndim=1)


def test_load_fashion_mnist_from_folder(tmp_path):
    images, labels = write_fake_fashion(tmp_path)
    x, y = load_fashion_mnist("test", data_dir=tmp_path)
    assert x.shape == (6, 28, 28, 1) and x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_allclose(x[..., 0], images / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, labels)
    x2, y2 = load_fashion_mnist("test", data_dir=tmp_path, limit=2)
    assert x2.shape == (2, 28, 28, 1) and len(y2) == 2


def test_load_fashion_mnist_env_var_and_subfolder(tmp_path, monkeypatch):
    (tmp_path / "fashion-mnist").mkdir()
    write_fake_fashion(tmp_path / "fashion-mnist", n=3, split="train")
    monkeypatch.setenv("DINET_DATA", str(tmp_path))
    x, _ = load_fashion_mnist("train")
    assert x.shape == (3, 28, 28, 1)


def test_load_fashion_mnist_mismatched_counts(tmp_path):
    write_fake_fashion(tmp_path, n=4)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3), compress=False)
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        load_fashion_mnist("test", data_dir=tmp_path)


def test_missing_dataset_message(tmp_path, monkeypatch):
    monkeypatch.delenv("DINET_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist("train", data_dir=tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "DINET_DATA" in message and "--data" in message


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("valid")


@pytest.mark.skipif(
    not (DEFAULT_DATA_DIR / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"Fashion-MNIST not installed in {DEFAULT_DATA_DIR} "
    "(sudo apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("DINET_DATA", raising=False)
    for split in ("train", "test"):
        x, y = load_fashion_mnist(split, limit=20)
        assert x.shape == (20, 28, 28, 1) and x.dtype == np.float32
        assert y.shape == (20,) and y.dtype == np.int64
        assert 0 <= y.min() and y.max() <= 9
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[y[0]] == "Ankle boot"  # the test split starts with a boot


# --- digits and resizing -----------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed"
)
def test_digits():
    x, y = load_digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_resize_shapes_and_values():
    constant = np.full((2, 28, 28, 3), 0.25, dtype=np.float32)
    up = resize_images(constant, 32)
    assert up.shape == (2, 32, 32, 3) and up.dtype == np.float32
    np.testing.assert_allclose(up, 0.25, atol=1e-6)
    down = resize_images(constant, 7)
    np.testing.assert_allclose(down, 0.25, atol=1e-6)
    # antialiased 2x shrink of a checkerboard averages to grey
    board = (np.indices((16, 16)).sum(0) % 2).astype(np.float32)[None, ..., None]
    np.testing.assert_allclose(resize_images(board, 8), 0.5, atol=0.05)
    assert resize_images(board, (4, 8)).shape == (1, 4, 8, 1)
    with pytest.raises(ValueError, match="shape"):
        resize_images(np.zeros((4, 4)), 2)


# --- npz and image folders ---------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=(5, 9, 7), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", images=raw, labels=np.arange(5))
    x, y = load_npz(tmp_path / "u8.npz")
    assert x.shape == (5, 9, 7, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], raw / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, np.arange(5))

    floats = rng.uniform(size=(3, 4, 4, 3))
    np.savez(tmp_path / "f.npz", images=floats)
    x, y = load_npz(tmp_path / "f.npz")
    assert y is None and x.shape == (3, 4, 4, 3)
    np.testing.assert_allclose(x, floats, atol=1e-7)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"pixels": np.zeros((2, 4, 4))}, "no array named 'images'"),
        ({"images": np.zeros((2, 4, 4)) + 2.0}, r"\[0, 1\]"),
        ({"images": np.full((2, 4, 4), 300)}, "0..255"),
        ({"images": np.zeros((2, 4, 4, 2))}, "C = 1 or 3"),
        ({"images": np.zeros((4, 4))}, "shape"),
        ({"images": np.full((2, 4, 4), np.nan)}, "NaN"),
        ({"images": np.zeros((2, 4, 4)), "labels": np.zeros(3)}, r"labels must have shape \(2,\)"),
        ({"images": np.zeros((2, 4, 4)), "labels": np.array([0.5, 1])}, "integers"),
    ],
)
def test_npz_bad_arrays(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        load_npz(tmp_path / "bad.npz")


def test_image_folder_mixed(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    (tmp_path / "cat").mkdir()
    (tmp_path / "ant").mkdir()
    rng = np.random.default_rng(2)
    pil.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "cat/a.png")
    pil.fromarray(np.full((10, 10), 200, dtype=np.uint8)).save(tmp_path / "cat/b.png")
    pil.fromarray(np.full((40, 12), 51, dtype=np.uint8)).save(tmp_path / "ant/c.PNG")
    (tmp_path / "ant/notes.txt").write_text("ignored")

    x, y, classes = load_image_folder(tmp_path, size=16)
    assert classes == ["ant", "cat"]
    assert x.shape == (3, 16, 16, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y, [0, 1, 1])
    np.testing.assert_allclose(x[0], 0.2, atol=1e-5)  # grey replicated to RGB
    np.testing.assert_allclose(x[2], 200 / 255, atol=1e-5)

    gray, _, _ = load_image_folder(tmp_path, size=8, channels=1)
    assert gray.shape == (3, 8, 8, 1)


def test_image_folder_errors(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path, size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no"):
        load_image_folder(tmp_path, size=8)
    (tmp_path / "empty").rmdir()
    (tmp_path / "one").mkdir()
    pil.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "one/ok.png")
    (tmp_path / "one/broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image_folder(tmp_path, size=8)


# --- scenes ------------------------------------------------------------------------------


def blob_source() -> tuple[np.ndarray, np.ndarray]:
    """Four synthetic 12x12 items: filled discs and squares of distinct classes."""
    grid = np.indices((12, 12)) - 5.5
    disc = (np.hypot(*grid) < 5).astype(np.float32)
    square = np.zeros((12, 12), np.float32)
    square[2:10, 2:10] = 0.8
    images = np.stack([disc, square, disc * 0.6, square])[..., None]
    return images, np.array([0, 3, 7, 9])


def test_scenes_shapes_determinism_and_labels():
    source = blob_source()
    a = make_scenes(6, seed=3, size=32, source=source, items=(2, 3))
    b = make_scenes(6, seed=3, size=32, source=source, items=(2, 3))
    c = make_scenes(6, seed=4, size=32, source=source, items=(2, 3))
    assert a.images.shape == (6, 32, 32, 1) and a.images.dtype == np.float32
    assert a.labels.shape == (6, 32, 32) and a.labels.dtype == np.int64
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert set(np.unique(a.labels)) <= {0, 1, 4, 8, 10}
    assert a.labels.min() >= 0 and a.labels.max() < a.num_classes == 11
    assert np.all((a.num_items >= 2) & (a.num_items <= 3))
    for scene in range(len(a)):
        assert (a.labels[scene] > 0).any(), "every scene shows at least one item"
        assert (a.labels[scene] == 0).any(), "and some background"
        # item pixels are bright, background pixels are black
        assert np.all(a.images[scene, ..., 0][a.labels[scene] == 0] == 0)
        assert np.all(a.images[scene, ..., 0][a.labels[scene] > 0] > 0.1)


def test_label_field_at_pixel_centres():
    scenes = make_scenes(3, seed=0, size=20, source=blob_source())
    rows, cols = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    centres = np.stack([-1 + (2 * rows + 1) / 20, -1 + (2 * cols + 1) / 20], -1).reshape(-1, 2)
    one = scenes.label_field(1, centres)
    np.testing.assert_array_equal(one.reshape(20, 20), scenes.labels[1])
    batch = scenes.label_field([2, 0], torch.from_numpy(centres).float())
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 400)
    assert batch.dtype == torch.int64
    np.testing.assert_array_equal(batch.numpy().reshape(2, 20, 20), scenes.labels[[2, 0]])
    per_scene = scenes.label_field(np.array([0, 1]), np.stack([centres, centres]))
    np.testing.assert_array_equal(per_scene.reshape(2, 20, 20), scenes.labels[:2])
    # a point a third of a pixel off centre keeps the pixel's label
    shifted = scenes.label_field(1, centres + 0.3 * 2 / 20)
    np.testing.assert_array_equal(shifted.reshape(20, 20), scenes.labels[1])


# --- balls -------------------------------------------------------------------------------


def test_balls_parameters_and_determinism():
    balls = make_balls(50, seed=0)
    again = make_balls(50, seed=0)
    assert isinstance(balls, Balls) and len(balls) == 50
    torch.testing.assert_close(balls.centers, again.centers)
    counts = balls.num_balls
    assert counts.min() >= 2 and counts.max() <= 4
    radii = balls.radii[balls.valid]
    assert radii.min() >= 0.2 and radii.max() <= 0.5
    centres = balls.centers[balls.valid]
    assert centres.abs().max() <= 1.0
    colors = balls.colors[balls.valid]
    assert colors.min() >= 0.0 and colors.max() <= 1.0


def test_balls_sdf_exact_values():
    balls = Balls(
        centers=torch.tensor([[[0.0, 0.0, 0.0], [0.8, 0.0, 0.0]]]),
        radii=torch.tensor([[0.5, 0.2]]),
        colors=torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]),
        valid=torch.tensor([[True, False]]),  # second ball is padding: ignored
    )
    points = torch.tensor(
        [[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, -0.9], [0.8, 0.0, 0.0], [0.3, 0.4, 0.0]]
    )
    sdf = balls.sdf(0, points)
    torch.testing.assert_close(sdf[:, 0], torch.tensor([-0.5, 0.0, 0.4, 0.3, 0.0]))
    rgba = balls.rgba(0, points)
    torch.testing.assert_close(rgba[0], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert torch.all(rgba[1:] == 0)  # on the surface and outside: transparent black


def test_balls_deepest_ball_wins():
    balls = Balls(
        centers=torch.tensor([[[0.0, 0.0, 0.0], [0.4, 0.0, 0.0]]]),
        radii=torch.tensor([[0.5, 0.3]]),
        colors=torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]),
        valid=torch.tensor([[True, True]]),
    )
    points = torch.tensor([[0.4, 0.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(balls.sdf(0, points)[:, 0], torch.tensor([-0.3, -0.5]))
    torch.testing.assert_close(
        balls.rgba(0, points), torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0]])
    )


def test_balls_batched_shapes_and_consistency():
    balls = make_balls(8, seed=5)
    generator = torch.Generator().manual_seed(0)
    shared = torch.rand(300, 3, generator=generator) * 2 - 1
    per_scene = torch.rand(3, 300, 3, generator=generator) * 2 - 1
    assert balls.sdf([1, 4, 6], shared).shape == (3, 300, 1)
    assert balls.rgba(torch.tensor([1, 4, 6]), per_scene).shape == (3, 300, 4)
    assert balls.rgba(2, per_scene).shape == (3, 300, 4)  # one scene, extra leading axis
    assert balls.sdf(slice(0, 8), shared).shape == (8, 300, 1)

    sdf = balls.sdf(torch.arange(8), shared)
    rgba = balls.rgba(torch.arange(8), shared)
    assert torch.equal(rgba[..., 3] == 1, sdf[..., 0] < 0)
    assert torch.all(rgba[..., :3][sdf[..., 0] >= 0] == 0)
    assert (sdf < 0).any() and (sdf > 0).any()
    # batched equals one-by-one, centres give -r
    for scene in (0, 5):
        torch.testing.assert_close(sdf[scene], balls.sdf(scene, shared))
        centres = balls.centers[scene][balls.valid[scene]]
        own = balls.sdf(scene, centres)[:, 0]
        assert torch.all(own <= -balls.radii[scene][balls.valid[scene]] + 1e-6)
    doubles = balls.sdf(0, shared.double())
    assert doubles.dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        balls.sdf([0, 1], per_scene)
