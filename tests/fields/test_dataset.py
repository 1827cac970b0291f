"""FieldDataset: round trips, sampling cache, damaged files, resumable building."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dinet.points as P
from dinet.fields import SirenField
from dinet.fields import build as build_module
from dinet.fields import dataset as dataset_module
from dinet.fields.build import build_dataset
from dinet.fields.dataset import (
    FORMAT_VERSION,
    DatasetError,
    FieldDataset,
    write_manifest,
    write_shard,
)

HPARAMS = {"width": 16, "depth": 2}
FIT = {"max_steps": 30}


def _images(n=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0.5, 3, 3)
        out.append(0.5 + 0.4 * np.sin(a * x + b * y + c))
    return np.stack(out)[..., None].astype(np.float32)


def _write_random_dataset(folder, n=5, shard_size=2):
    torch.manual_seed(0)
    fields = SirenField(n, **HPARAMS)
    entries = []
    for k, start in enumerate(range(0, n, shard_size)):
        idx = list(range(start, min(n, start + shard_size)))
        part = fields.select(idx)
        entries.append(write_shard(folder, k, start, part.state_dict(), np.full(len(idx), 31.0),
                                   np.full(len(idx), 29.0), idx, plan="p"))
    hparams = {k: v for k, v in fields.hparams().items() if k != "n_fields"}
    write_manifest(folder, {"plan": "p", "arch": "siren", "hparams": hparams, "n_fields": n,
                            "shard_size": shard_size, "split": "train", "labels": list(range(n)),
                            "psnr_grid": [31.0] * n, "psnr_offgrid": [29.0] * n,
                            "shards": entries})
    return fields


def test_save_load_round_trip_is_bit_exact(tmp_path):
    fields = _write_random_dataset(tmp_path)
    ds = FieldDataset.open(tmp_path)
    assert len(ds) == 5 and ds.labels.tolist() == [0, 1, 2, 3, 4]
    for idx in ([0], [4, 1, 2], [3, 0, 4, 1, 2]):
        got = ds.fields(idx).state_dict()
        want = fields.select(idx).state_dict()
        assert got.keys() == want.keys()
        for name in got:
            assert torch.equal(got[name], want[name]), name


def test_sample_matches_rendering_and_is_cached(tmp_path):
    fields = _write_random_dataset(tmp_path)
    ds = FieldDataset.open(tmp_path)
    grid = P.grid((8, 8))
    values = ds.sample([2, 0], grid)
    with torch.no_grad():
        rendered = fields.select([2, 0])(grid.coords)
    assert values.shape == (2, 64, 1)
    torch.testing.assert_close(values, rendered, rtol=0, atol=0)
    # The cached values are served without evaluating the fields again.
    ds.fields = None  # any evaluation would now fail
    torch.testing.assert_close(ds.sample([0, 2], grid), values.flip(0), rtol=0, atol=0)


def test_large_evaluations_are_chunked_uncached_or_refused(tmp_path, monkeypatch):
    fields = _write_random_dataset(tmp_path)
    ds = FieldDataset.open(tmp_path)
    points = P.sobol(300, 2, seed=0)
    with torch.no_grad():
        want = fields.select([4, 1, 3])(points.coords)
    # chunks of 7 (field, point) pairs: one field at a time, 7 points at a time
    monkeypatch.setattr(dataset_module, "CHUNK_BYTES", 8 * HPARAMS["width"] * 7)
    built, fields_of = [], ds.fields
    ds.fields = lambda idx: built.append(list(idx)) or fields_of(idx)
    torch.testing.assert_close(ds.values([4, 1, 3], points.coords), want, rtol=0, atol=1e-6)
    assert built == [[4], [1], [3]]
    # the cache of every field at the points (5 × 300 × 4 bytes) would take more than a
    # quarter of the memory: the fields asked for are evaluated, and nothing is kept
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 20_000)
    torch.testing.assert_close(ds.sample([4, 1, 3], points), want, rtol=0, atol=1e-6)
    assert len(ds._samples) == 0
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 3_000)
    with pytest.raises(ValueError, match=r"3 fields at 300 points take 3\.52 KiB, more than"):
        ds.sample([4, 1, 3], points)


def test_fields_live_on_the_datasets_device(tmp_path):
    """``to(device)`` moves the loaded shards and every later one, and ``fields`` builds its
    modules there (the meta device stands in for a GPU: shapes and placement, no values)."""
    _write_random_dataset(tmp_path)
    ds = FieldDataset.open(tmp_path)
    ds.fields([0])  # shard 0 loaded on the CPU, then moved
    assert ds.to("meta") is ds and ds.device.type == "meta"
    module = ds.fields([4, 1])  # shards 0 and 2: one moved, one loaded after the move
    assert all(p.device.type == "meta" for p in module.parameters())
    out = module(P.grid((8, 8)).coords.to("meta"))
    assert out.device.type == "meta" and out.shape == (2, 64, 1)


def _corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-3] ^= 0x40
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_shard_names_the_file_and_others_still_load(tmp_path, how):
    _write_random_dataset(tmp_path)
    shard = tmp_path / "shard-00001.safetensors"
    _corrupt(shard, how)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    ds = FieldDataset.open(tmp_path)
    with pytest.raises(DatasetError, match="shard-00001.safetensors.*rerun `dinet fit`"):
        ds.fields([2])
    assert ds.fields([0, 1, 4]).n_fields == 3  # the other shards still load
    assert ds.verify() and "shard-00001" in ds.verify()[0]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing touched


def test_wrong_version_and_not_a_dataset(tmp_path):
    _write_random_dataset(tmp_path / "ds")
    manifest = tmp_path / "ds" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = FORMAT_VERSION + 1
    manifest.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="manifest.json has format version .* refit"):
        FieldDataset.open(tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a field dataset"):
        FieldDataset.open(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not a folder"):
        FieldDataset.open(tmp_path / "missing")
    # A changed label in an otherwise valid manifest: the recorded digest catches it.
    data["format_version"] = FORMAT_VERSION
    good = json.dumps(data)
    manifest.write_text(good.replace('"labels": [', '"labels": [1', 1))
    json.loads(manifest.read_text())  # still valid JSON
    with pytest.raises(DatasetError, match="manifest.json is damaged.*delete it and rerun"):
        FieldDataset.open(tmp_path / "ds")
    manifest.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        FieldDataset.open(tmp_path / "ds")


def test_build_is_resumable_and_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    images, labels = _images(), np.arange(6) % 3
    kwargs = dict(arch_hparams=HPARAMS, fit_options=FIT, shard_size=2, seed=3, progress=False)
    clean = build_dataset(tmp_path / "clean", images, labels, **kwargs)
    assert len(clean) == 6 and clean.labels.tolist() == labels.tolist()

    real_fit = build_module.fit_module.fit_fields
    calls = []

    def dying_fit(*args, **kw):  # the process "dies" while fitting the third shard
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_fit(*args, **kw)

    monkeypatch.setattr(build_module.fit_module, "fit_fields", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(tmp_path / "resumed", images, labels, **kwargs)
    done = {p.name: (p.stat().st_mtime_ns, p.read_bytes())
            for p in (tmp_path / "resumed").glob("shard-*")}
    assert sorted(done) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not (tmp_path / "resumed" / "manifest.json").exists()

    calls.clear()
    monkeypatch.setattr(build_module.fit_module, "fit_fields", lambda *a, **k: (
        calls.append(1), real_fit(*a, **k))[1])
    resumed = build_dataset(tmp_path / "resumed", images, labels, **kwargs)
    assert len(calls) == 1  # only the missing shard was fitted
    for name, (mtime, data) in done.items():
        path = tmp_path / "resumed" / name
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data
    for name in ("shard-00000.safetensors", "shard-00001.safetensors",
                 "shard-00002.safetensors", "manifest.json"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "clean" / name
                                                              ).read_bytes(), name
    assert resumed.psnr_grid.shape == (6,)


def test_build_refuses_a_folder_holding_another_dataset(tmp_path):
    images = _images(4)
    build_dataset(tmp_path, images, arch_hparams=HPARAMS, fit_options=FIT, shard_size=2,
                  progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DatasetError, match="different field dataset"):
        build_dataset(tmp_path, images, arch_hparams={"width": 8, "depth": 2},
                      fit_options=FIT, shard_size=2, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    other = tmp_path.parent / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="notes.txt"):
        build_dataset(other, images, arch_hparams=HPARAMS, fit_options=FIT, progress=False)
