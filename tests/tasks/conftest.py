"""Tiny field datasets shared by the task tests: each fits in a second or two."""

from __future__ import annotations

import numpy as np
import pytest

import dinet.data
from dinet.data import make_scenes
from dinet.fields import build_dataset

SIZE = 16


def _items():
    """Stand-ins for Fashion-MNIST items: bright squares and discs of classes 0 and 1."""
    yy, xx = np.mgrid[0:8, 0:8] / 7.0 * 2 - 1
    square = (np.maximum(abs(yy), abs(xx)) < 0.8).astype(np.float32)
    disc = (yy**2 + xx**2 < 0.7).astype(np.float32)
    return np.stack([square, disc] * 4)[..., None] * 0.9, np.array([0, 1] * 4)


@pytest.fixture
def fake_fashion_mnist(monkeypatch):
    fake = lambda split="train", **_: _items()  # noqa: E731
    monkeypatch.setattr(dinet.data, "load_fashion_mnist", fake)
    monkeypatch.setattr(dinet.data.fashion_mnist, "load_fashion_mnist", fake)


@pytest.fixture(scope="module")
def scenes_fields(tmp_path_factory):
    """A scenes dataset as `dinet fit` wrote it before the scenes' item scale and count were
    recorded: it is rebuilt with the former options."""
    scenes = make_scenes(12, seed=0, size=SIZE, source=_items(), scale=(0.3, 0.6),
                         items=(2, 3))
    path = tmp_path_factory.mktemp("scenes") / "scenes"
    build_dataset(path, scenes.images, None, arch_hparams={"width": 16},
                  fit_options={"max_steps": 40, "meta_steps": 2}, shard_size=6, progress=False,
                  source={"source": "scenes", "split": "train", "n": 12, "seed": 0,
                          "size": SIZE})
    return path


@pytest.fixture(scope="module")
def class_fields(tmp_path_factory):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 16)
    y = np.mgrid[0:8, 0:8][1] / 7.0
    images = np.stack([np.where(lab, y, 1 - y) for lab in labels])[..., None]
    path = tmp_path_factory.mktemp("cls") / "cls"
    build_dataset(path, images.astype(np.float32), labels, arch_hparams={"width": 8},
                  fit_options={"max_steps": 10, "meta_steps": 2}, shard_size=8,
                  progress=False, source={"source": "npz"})
    return path
