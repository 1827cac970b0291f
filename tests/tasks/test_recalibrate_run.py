"""``dinet recalibrate``: a run's batch-norm statistics re-estimated for other points, the
weights and the run itself untouched."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from dinet.cli import main
from dinet.models import load_model
from dinet.nn import reestimate_batchnorm
from dinet.tasks import (
    RecalibrateConfig,
    TrainConfig,
    evaluate,
    make_points,
    open_task_data,
    recalibrate_run,
    train,
)


@pytest.fixture(scope="module")
def class_run(class_fields, tmp_path_factory):
    out = tmp_path_factory.mktemp("recal") / "run"
    train(TrainConfig(fields=str(class_fields), out=str(out), model="dinet2", points=64,
                      epochs=2, batch_size=4, lr=3e-3), progress=False)
    return out


def _buffers(model):
    return {k: v for k, v in model.state_dict().items() if "running" in k}


def test_the_statistics_are_those_of_the_fields_at_the_points(class_fields, class_run,
                                                               tmp_path):
    before = (class_run / "model.pt").read_bytes()
    # Every item in each batch, on the fixed 8x8 grid: both batches are the same, so the
    # average is that one batch's statistics, computed here from the data directly.
    record = recalibrate_run(RecalibrateConfig(
        run=str(class_run), fields=str(class_fields), out=str(tmp_path / "grid"),
        discretization="grid", points=64, batches=2, batch_size=100), progress=False)
    assert record == {"from": str(class_run), "fields": str(class_fields),
                      "discretization": "grid", "points": [64], "batches": 2,
                      "batch_size": 16, "seed": 0}
    data = open_task_data("classify", class_fields)
    grid = make_points("grid", 64)
    expected = copy.deepcopy(load_model(class_run / "model.pt"))
    reestimate_batchnorm(expected, [(data.inputs(np.arange(len(data)), grid.coords), grid)])
    got, trained = load_model(tmp_path / "grid" / "model.pt"), load_model(class_run / "model.pt")
    for name, value in got.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(value, expected.state_dict()[name], rtol=1e-5, atol=1e-6)
        elif "num_batches" not in name:
            assert torch.equal(value, trained.state_dict()[name]), name  # the weights: the run's
    assert any(not torch.equal(v, _buffers(trained)[k]) for k, v in _buffers(got).items())
    assert (class_run / "model.pt").read_bytes() == before  # the run is left as it was
    config = json.loads((tmp_path / "grid" / "config.json").read_text())
    assert config["recalibrated"] == record and config["model"] == "dinet2"
    assert got.checkpoint_extra["recalibrated"] == record
    results = evaluate(tmp_path / "grid", class_fields, ("grid",), (64,), plots=False,
                       progress=False)
    assert 0.0 <= results["metrics"]["accuracy"]["grid"]["64"] <= 1.0


def test_draws_take_the_counts_in_turn_and_repeat_for_a_seed(class_fields, class_run, tmp_path):
    def run(out, **kw):
        options = dict(run=str(class_run), fields=str(class_fields), out=str(tmp_path / out),
                       discretization="sobol+shrunk", points=64, mix_points=(32,), batches=4,
                       batch_size=8)
        record = recalibrate_run(RecalibrateConfig(**{**options, **kw}), progress=False)
        return record, _buffers(load_model(tmp_path / out / "model.pt"))

    record, a = run("a")
    assert record["points"] == [64, 32] and record["batches"] == 4
    _, b = run("b")
    _, c = run("c", seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same seed: the same statistics
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # on one fixed grid the seed still draws which items (8 of 16) each batch reads
    _, d = run("d", discretization="grid", mix_points=(), batches=1)
    _, e = run("e", discretization="grid", mix_points=(), batches=1, seed=1)
    assert not all(torch.equal(d[k], e[k]) for k in d)


def test_a_segmenter_is_recalibrated_through_its_query_points(scenes_fields, fake_fashion_mnist,
                                                              tmp_path):
    run = tmp_path / "seg"
    train(TrainConfig(fields=str(scenes_fields), out=str(run), task="segment", model="dinet3",
                      points=64, epochs=1, batch_size=4), progress=False)
    assert main(["recalibrate", "--run", str(run), "--fields", str(scenes_fields), "--out",
                 str(tmp_path / "seg-rc"), "--discretization", "shrunk", "--points", "64",
                 "--batches", "2", "--batch-size", "4"]) == 0
    got, trained = load_model(tmp_path / "seg-rc" / "model.pt"), load_model(run / "model.pt")
    assert any(not torch.equal(v, _buffers(trained)[k]) for k, v in _buffers(got).items())
    assert json.loads((tmp_path / "seg-rc" / "config.json").read_text())["task"] == "segment"


def test_what_cannot_be_recalibrated_is_refused_before_anything_is_written(
        class_fields, class_run, tmp_path, capsys):
    def refused(match, **kw):
        options = dict(run=str(class_run), fields=str(class_fields), out=str(tmp_path / "new"))
        with pytest.raises(ValueError, match=match):
            recalibrate_run(RecalibrateConfig(**{**options, **kw}), progress=False)
        assert not (tmp_path / "new").exists()

    refused("is the run itself", out=str(class_run))
    refused("batches must be a positive integer", batches=0)
    refused("unknown discretization", discretization="hexagons")
    refused("square", discretization="grid", points=60)
    refused("one fixed point set", discretization="npz:x.npz", mix_points=(32,))
    refused("holds no model.pt", run=str(tmp_path))
    cnn = tmp_path / "cnn"
    train(TrainConfig(fields=str(class_fields), out=str(cnn), model="cnn", discretization="grid",
                      points=64, epochs=1, batch_size=8), progress=False)
    refused("grid CNN baseline", run=str(cnn))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "model.pt").write_bytes(b"")
    assert main(["recalibrate", "--run", str(class_run), "--fields", str(class_fields),
                 "--out", str(tmp_path / "taken")]) == 2
    assert "already holds a model.pt" in capsys.readouterr().err
