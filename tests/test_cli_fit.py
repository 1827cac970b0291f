"""`dinet fit` end to end on tiny data: digits, a user's npz file and image folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dinet.points as P
from dinet.cli import main
from dinet.fields import FieldDataset

FAST = ["--max-steps", "20", "--width", "16", "--shard-size", "4"]


def test_fit_digits_and_rerun_is_a_no_op(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="scikit-learn provides the digits")
    out = tmp_path / "digits"
    args = ["fit", "--source", "digits", "--limit", "6", "--size", "8", "--out", str(out), *FAST]
    assert main(args) == 0
    ds = FieldDataset.open(out)
    assert len(ds) == 6 and ds.labels is not None and ds.manifest["split"] == "train"
    assert ds.manifest["source"]["source"] == "digits"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 0  # everything is there: nothing is refitted or rewritten
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert "off the grid" in capsys.readouterr().out


def test_fit_npz_and_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "mine.npz"
    np.savez(npz, images=(rng.random((5, 12, 10)) * 255).astype(np.uint8),
             labels=np.array([0, 1, 0, 1, 1]))
    assert main(["fit", "--source", f"npz:{npz}", "--size", "8", "--out",
                 str(tmp_path / "npz"), *FAST]) == 0
    ds = FieldDataset.open(tmp_path / "npz")
    assert len(ds) == 5 and ds.labels.tolist() == [0, 1, 0, 1, 1]
    assert ds.manifest["source"]["image_shape"] == [8, 8, 1]

    image_mod = pytest.importorskip("PIL.Image", reason="Pillow reads image folders")
    for cls, mode in (("cat", "RGB"), ("dog", "L")):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            size = (9 + i, 7)
            image_mod.new(mode, size, color=60 * (i + 1)).save(tmp_path / "imgs" / cls / f"{i}.png")
    assert main(["fit", "--source", f"folder:{tmp_path / 'imgs'}", "--size", "8", "--out",
                 str(tmp_path / "folder"), *FAST]) == 0
    ds = FieldDataset.open(tmp_path / "folder")
    assert len(ds) == 4 and ds.out_dim == 3 and sorted(set(ds.labels.tolist())) == [0, 1]
    assert ds.manifest["source"]["classes"] == ["cat", "dog"]
    values = ds.sample([3, 0], P.grid((8, 8)))  # the manifest rebuilds the fitted modules
    assert values.shape == (2, 64, 3) and torch.isfinite(values).all()


def test_fit_errors(tmp_path, capsys):
    assert main(["fit", "--source", "imagenet", "--out", str(tmp_path / "x")]) == 2
    assert "valid: fashion-mnist, digits" in capsys.readouterr().err
    assert main(["fit", "--source", f"npz:{tmp_path / 'missing.npz'}",
                 "--out", str(tmp_path / "x")]) == 2
    assert "missing.npz" in capsys.readouterr().err
