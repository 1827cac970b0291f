"""Hostile but realistic inputs: tampered datasets, killed runs, bad files and values.

Every case must end as a clear error (a ``ValueError`` naming the file or value and the
remedy; through the CLI: one line on stderr, exit code 2, nothing written) or a correct
result — never a traceback, never a silent change.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load

import dinet.points as P
from dinet.cli import main
from dinet.fields import FieldDataset
from dinet.fields import build as build_module
from dinet.fields.build import build_dataset
from dinet.fields.dataset import (
    DatasetError,
    shard_metadata,
    write_manifest,
    write_shard,
)
from dinet.fields.shards import serialize_safetensors

FIT = dict(arch_hparams={"width": 8, "depth": 2}, fit_options={"max_steps": 10,
                                                              "meta_steps": 2},
           shard_size=4, seed=0, progress=False)


def _images(n=12, size=8):
    rng = np.random.default_rng(0)
    return rng.random((n, size, size, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A labelled dataset of 12 fields in 3 shards, never modified (tests copy it)."""
    path = tmp_path_factory.mktemp("clean") / "ds"
    build_dataset(path, _images(), np.arange(12) % 3, **FIT)
    return path


@pytest.fixture
def ds_path(clean, tmp_path):
    path = tmp_path / "ds"
    shutil.copytree(clean, path)
    return path


def _manifest(path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _resign(path, manifest: dict) -> None:
    """Rewrite the manifest with a fresh digest: a tamperer who knows the format."""
    write_manifest(path, {k: v for k, v in manifest.items()
                          if k not in ("format", "format_version", "sha256")})


def _rewrite_shard(path, k: int, change) -> None:
    """Replace shard k by one whose tensors ``change`` edits, and re-sign the manifest with the
    new file's hash (so only the content checks can notice)."""
    manifest = _manifest(path)
    entry = manifest["shards"][k]
    tensors = st_load((path / entry["file"]).read_bytes())
    state = {name[len("field."):]: t for name, t in tensors.items() if name.startswith("field.")}
    change(state)
    manifest["shards"][k] = write_shard(path, k, entry["start"], state, tensors["psnr_grid"],
                                        tensors["psnr_offgrid"], tensors["labels"],
                                        manifest["plan"])
    _resign(path, manifest)


def _flip_inside(path, tensor: str) -> None:
    """Flip one bit inside the data of ``tensor`` (header intact, file still parses)."""
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    begin, _ = json.loads(data[8:8 + header_len])[tensor]["data_offsets"]
    data[8 + header_len + begin + 5] ^= 0x10
    path.write_bytes(bytes(data))


# --- 1. a rerun never re-approves a corrupted shard -----------------------------------------


def test_rerun_refits_exactly_the_damaged_shard(ds_path, clean, monkeypatch):
    shard = ds_path / "shard-00001.safetensors"
    _flip_inside(shard, "field.layers.1.weight")
    problems = FieldDataset.open(ds_path).verify()
    assert len(problems) == 1 and "shard-00001" in problems[0]
    fitted = []
    real = build_module.fit_module.fit_fields
    monkeypatch.setattr(build_module.fit_module, "fit_fields",
                        lambda images, *a, **k: (fitted.append(len(images)),
                                                 real(images, *a, **k))[1])
    build_dataset(ds_path, _images(), np.arange(12) % 3, **FIT)
    assert fitted == [4]  # the damaged shard, and only it
    assert FieldDataset.open(ds_path).verify() == []
    for p in clean.iterdir():  # bit for bit the clean dataset again
        assert (ds_path / p.name).read_bytes() == p.read_bytes(), p.name


def test_rerun_refits_a_shard_whose_header_is_damaged(ds_path, clean):
    shard = ds_path / "shard-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF  # inside the JSON header: the file no longer parses
    shard.write_bytes(bytes(data))
    build_dataset(ds_path, _images(), np.arange(12) % 3, **FIT)
    assert shard.read_bytes() == (clean / shard.name).read_bytes()


def test_shard_without_a_recorded_digest_is_refitted(ds_path, clean, monkeypatch):
    """A shard that cannot vouch for itself (a hand-made file of the right plan) is not
    trusted: the rerun fits it again."""
    manifest = _manifest(ds_path)
    (ds_path / "manifest.json").unlink()
    entry = manifest["shards"][0]
    tensors = st_load((ds_path / entry["file"]).read_bytes())
    meta = {k: v for k, v in shard_metadata(ds_path / entry["file"]).items() if k != "sha256"}
    tensors["field.layers.0.bias"] += 1.0
    (ds_path / entry["file"]).write_bytes(serialize_safetensors(tensors, meta))
    build_dataset(ds_path, _images(), np.arange(12) % 3, **FIT)
    assert (ds_path / entry["file"]).read_bytes() == (clean / entry["file"]).read_bytes()


# --- 3. shard contents are checked against the manifest's architecture ----------------------


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s["layers.1.weight"].fill_(float("nan")), "NaN or infinite values"),
    (lambda s: s.update({"layers.1.weight": s["layers.1.weight"].long()}), "torch.int64"),
    (lambda s: s.update({"layers.0.weight": s["layers.0.weight"].transpose(1, 2).contiguous()}),
     r"torch.float32 \(4, 8, 2\); expected torch.float32 \(4, 2, 8\)"),
    (lambda s: s.pop("layers.1.bias"), r"missing \['field.layers.1.bias'\]"),
    (lambda s: s.update({"extra": torch.zeros(4)}), r"unexpected \['field.extra'\]"),
], ids=["nan", "int64", "transposed", "missing", "extra"])
def test_shard_contents_must_fit_the_architecture(ds_path, change, message, capsys):
    _rewrite_shard(ds_path, 1, change)
    ds = FieldDataset.open(ds_path)
    problems = ds.verify()
    assert len(problems) == 1 and "shard-00001" in problems[0]
    assert re.search(message, problems[0]), problems[0]
    with pytest.raises(DatasetError, match="shard-00001.*rerun `dinet fit`"):
        ds.fields([5])
    assert ds.fields([0, 9]).n_fields == 2  # the other shards still load
    out = ds_path.parent / "run"
    assert main(["train", "--fields", str(ds_path), "--points", "16", "--epochs", "1",
                 "--batch-size", "4", "--model", "dinet2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "shard-00001" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# --- 4, 5 and the manifest's schema ------------------------------------------------------


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(n_fields=10**12), "n_fields 1000000000000"),
    (lambda m: m.update(n_fields=-5), "n_fields -5"),
    (lambda m: m.update(n_fields=100), "holds 100 fields but its shards hold 12"),
    (lambda m: m.update(labels=[-3] * 12), r"labels outside the class indices \[0, 65536\)"),
    (lambda m: m.update(labels=[1, 2]), "2 labels for 12 fields"),
    (lambda m: m.update(labels=[10**9] * 12), "labels outside the class indices"),
    (lambda m: m.update(shards="oops"), "has shards 'oops'"),
    (lambda m: m.pop("arch"), "field architecture None"),
    (lambda m: m.update(hparams={**m["hparams"], "colour": 3}), "does not take"),
    (lambda m: m["shards"][1].update(start=5), "shard 1 starts at field 5; the shards before "
                                               "it end at 4"),
    (lambda m: m["shards"][0].update(start=5), "shard 0 starts at field 5"),
    (lambda m: m["shards"][2].update(file="../../etc/passwd"), "lists file '../../etc/passwd'"),
    (lambda m: m["shards"][2].update(file="/etc/passwd"), "lists file '/etc/passwd'"),
    (lambda m: m["shards"][0].update(count=0), "holds 0 fields"),
    (lambda m: m["shards"][0].update(sha256=None), "no valid SHA-256 for shard 0"),
])
def test_tampered_but_resigned_manifest_is_refused(ds_path, edit, message, capsys):
    manifest = _manifest(ds_path)
    edit(manifest)
    _resign(ds_path, manifest)
    with pytest.raises(DatasetError, match=message):
        FieldDataset.open(ds_path)
    out = ds_path.parent / "run"
    assert main(["train", "--fields", str(ds_path), "--points", "16", "--epochs", "1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_manifest_without_its_digest_or_of_another_shape_is_refused(ds_path):
    manifest = _manifest(ds_path)
    manifest.pop("sha256")
    (ds_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="records no SHA-256"):
        FieldDataset.open(ds_path)
    (ds_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a dinet-fields manifest"):
        FieldDataset.open(ds_path)


def test_paths_outside_the_folder_are_never_read(ds_path, monkeypatch):
    """The same error whether the outside path exists or not: nothing is probed."""
    manifest = _manifest(ds_path)
    messages = []
    for target in ("/etc/hostname", "/nonexistent/file"):
        manifest["shards"][2]["file"] = target
        _resign(ds_path, manifest)
        with pytest.raises(DatasetError) as info:
            FieldDataset.open(ds_path)
        messages.append(str(info.value).replace(target, "X"))
    assert messages[0] == messages[1]


def test_values_read_from_a_good_dataset_are_unchanged(ds_path, clean):
    """The checks reject nothing that is right."""
    a, b = FieldDataset.open(ds_path), FieldDataset.open(clean)
    pts = P.sobol(32, seed=0)
    assert torch.equal(a.sample(range(12), pts), b.sample(range(12), pts))
    assert a.verify() == []


# --- 6. image sources ----------------------------------------------------------------------


FAST_FIT = ["--max-steps", "5", "--width", "8", "--shard-size", "4"]


def test_sixteen_bit_pngs_are_scaled_and_hidden_folders_ignored(tmp_path):
    image_mod = pytest.importorskip("PIL.Image", reason="Pillow reads image folders")
    from dinet.data.sources import load_image_folder

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)  # 0 .. 63,000 of 65,535
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        image_mod.fromarray(ramp).save(tmp_path / "imgs" / cls / "0.png")
    (tmp_path / "imgs" / ".ipynb_checkpoints").mkdir()
    image_mod.fromarray(ramp).save(tmp_path / "imgs" / ".ipynb_checkpoints" / "x.png")
    image_mod.fromarray(ramp).save(tmp_path / "imgs" / "a" / ".hidden.png")
    images, labels, classes = load_image_folder(tmp_path / "imgs", 8)
    assert classes == ["a", "b"] and labels.tolist() == [0, 1]
    np.testing.assert_allclose(images[0, ..., 0], ramp / 65535.0, atol=1e-6)


def test_bad_sources_are_one_line_errors_and_write_nothing(tmp_path, capsys, monkeypatch):
    image_mod = pytest.importorskip("PIL.Image", reason="Pillow reads image folders")
    images = (np.random.default_rng(0).random((4, 8, 8)) * 255).astype(np.uint8)
    cases = {}
    (tmp_path / "notzip.npz").write_text("hello")
    cases["notzip"] = (f"npz:{tmp_path / 'notzip.npz'}", "not a readable .npz archive")
    np.save(tmp_path / "plain.npy", images)
    cases["npy"] = (f"npz:{tmp_path / 'plain.npy'}", "is a .npy file holding one array")
    np.savez(tmp_path / "huge.npz", images=images, labels=np.array([0, 1, 10**9, 2]))
    cases["labels"] = (f"npz:{tmp_path / 'huge.npz'}", "class indices below 65536")
    (tmp_path / "bomb" / "a").mkdir(parents=True)
    image_mod.new("L", (40, 40)).save(tmp_path / "bomb" / "a" / "big.png")
    cases["bomb"] = (f"folder:{tmp_path / 'bomb'}", "big.png")
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 100)  # 40 x 40 > 2 x 100: a bomb
    for name, (source, message) in cases.items():
        out = tmp_path / f"out-{name}"
        assert main(["fit", "--source", source, "--size", "8", "--out", str(out),
                     *FAST_FIT]) == 2, name
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not out.exists(), name
    np.savez(tmp_path / "ok.npz", images=images)
    assert main(["fit", "--source", f"npz:{tmp_path / 'ok.npz'}", "--size", "100000",
                 "--out", str(tmp_path / "big"), *FAST_FIT]) == 2
    assert "--size must be an integer in [1, 4096]" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert main(["fit", "--source", f"npz:{tmp_path / 'ok.npz'}", "--size", "8",
                 "--out", str(tmp_path / "a-file" / "ds"), *FAST_FIT]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


# --- run folders ---------------------------------------------------------------------------


@pytest.fixture
def run(clean, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--fields", str(clean), "--points", "16", "--epochs", "1",
                 "--batch-size", "4", "--model", "dinet2", "--out", str(out)]) == 0
    return out


def test_damaged_run_files_are_one_line_errors(run, clean, tmp_path, capsys, monkeypatch):
    capsys.readouterr()
    eval_args = ["eval", "--run", str(run), "--fields", str(clean), "--points", "16",
                 "--discretizations", "sobol", "--no-plots"]
    (run / "config.json").write_text("[1]")
    assert main(eval_args) == 2
    assert "holds a JSON list, not an object" in capsys.readouterr().err
    assert main(["train", "--fields", str(clean), "--points", "16", "--epochs", "2",
                 "--batch-size", "4", "--model", "dinet2", "--out", str(run), "--resume"]) == 2
    assert "config.json holds a JSON list" in capsys.readouterr().err
    (run / "config.json").write_text(json.dumps({"task": "paint"}))
    assert main(eval_args) == 2
    assert "names the task 'paint'" in capsys.readouterr().err
    (run / "config.json").write_text(json.dumps({"task": "classify"}))
    assert main(eval_args) == 0
    results = json.loads((run / "results.json").read_text())
    results.pop("metrics")
    (run / "results.json").write_text(json.dumps(results))
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    assert "has no 'metrics'" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()
    # a run folder that cannot be written: refused before any scoring
    (run / "results.json").unlink()
    monkeypatch.setattr("os.access", lambda *a, **k: False)
    assert main(eval_args) == 2
    assert "cannot write into" in capsys.readouterr().err
    assert not (run / "results.json").exists()


# --- dtypes: alike in every layer ------------------------------------------------------------


def _layers():
    from dinet.nn import (
        DIAttention,
        DIAvgPool,
        DIBatchNorm,
        DIConv,
        DIMaxPool,
        GlobalAvgPool,
        GlobalMaxPool,
        PointwiseLinear,
        Resample,
    )

    torch.manual_seed(0)
    return {
        "conv-spline": DIConv(3, 4, 3, spacing=0.2),
        "conv-mlp": DIConv(3, 4, 3, spacing=0.2, kernel="mlp", n_basis=4, hidden=8),
        "avgpool": DIAvgPool(3, spacing=0.2),
        "maxpool": DIMaxPool(3, spacing=0.2),
        "global-avg": GlobalAvgPool(),
        "global-max": GlobalMaxPool(),
        "batchnorm": DIBatchNorm(3),
        "resample": Resample("linear", support=0.3),
        "attention-global": DIAttention(3, 1),
        "attention-local": DIAttention(3, 1, support=0.4),
        "pointwise": PointwiseLinear(3, 4),
    }


def _call(name, layer, x, points):
    if name == "resample":
        return layer(x, points, P.sobol(32, seed=9))
    return layer(x, points)


@pytest.mark.parametrize("name", list(_layers()))
def test_every_layer_takes_half_precision_and_refuses_other_dtypes_alike(name):
    layer = _layers()[name]
    points = P.sobol(256, seed=0)
    x = torch.randn(2, 256, 3)
    with torch.no_grad():
        ref = _call(name, layer, x, points)
        for dtype in (torch.float16, torch.bfloat16):  # computed in float32 on the CPU
            out = _call(name, layer, x.to(dtype), points)
            assert out.dtype == dtype, (name, dtype)
            err = float((out.float() - ref).norm() / ref.norm())
            assert err < 2e-2, (name, dtype, err)
        with pytest.raises(ValueError, match=r"torch.int64 values.*x.float\(\)"):
            _call(name, layer, x.long(), points)
        if any(True for _ in layer.parameters()):
            with pytest.raises(ValueError, match="float64 values but the layer's parameters "
                                                 "are torch.float32"):
                _call(name, layer, x.double(), points)
            out = _call(name, layer.double(), x.double(), points)  # converted: it runs
            assert out.dtype == torch.float64
        else:  # nothing to mismatch: float64 values give float64 results
            assert _call(name, layer, x.double(), points).dtype == torch.float64


# --- 2. resume after SIGKILL --------------------------------------------------------------


def test_sigkill_during_training_then_resume_equals_uninterrupted(clean, tmp_path):
    """The default classifier (dropout included), killed with SIGKILL after its second epoch
    by another process, then resumed: the same metrics and weights as a run never killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "dinet", "train", "--fields", str(clean), "--points", "64",
            "--epochs", "5", "--batch-size", "2", "--lr", "3e-3"]
    # All three runs in processes alike (threads fixed: float sums depend on the split).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    subprocess.run([*args, "--out", str(tmp_path / "clean")], check=True, **quiet)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(killed)], **quiet)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = killed / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break  # two epochs recorded: the third is under way
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len((killed / "metrics.jsonl").read_text().splitlines()) < 5
    subprocess.run([*args, "--out", str(killed), "--resume"], check=True, **quiet)
    assert ((killed / "metrics.jsonl").read_text()
            == (tmp_path / "clean" / "metrics.jsonl").read_text())
    a = torch.load(tmp_path / "clean" / "train_state.pt", weights_only=True)["model"]
    b = torch.load(killed / "train_state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
