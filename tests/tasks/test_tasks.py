"""Segmentation, SDF, the grid baselines, reports, and the errors for mismatched inputs —
each on tiny data in seconds."""

from __future__ import annotations

import importlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import dinet.data
import dinet.points as P
from dinet.cli import main
from dinet.data import make_scenes
from dinet.data.sources import load_source
from dinet.fields import build_dataset
from dinet.models import GridUNetSegmenter, SDFNet, Segmenter, model_entry
from dinet.tasks import TrainConfig, evaluate, get_task, open_task_data, report, task_names, train
from dinet.tasks.metrics import confusion, mean_iou, pixel_accuracy

SIZE = 16  # the side of conftest's scenes_fields
train_module = importlib.import_module("dinet.tasks.train")  # the module, not the function


def test_metrics_by_hand():
    truth = torch.tensor([0, 0, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 0])
    conf = confusion(pred, truth, 4)
    assert conf.tolist()[:3] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0]]
    # IoU: class 0 1/3, class 1 2/3, class 2 0/1; class 3 absent from both is skipped.
    assert mean_iou(conf) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert pixel_accuracy(conf) == pytest.approx(3 / 5)


def test_segmentation_targets_follow_the_augmented_coordinates(scenes_fields,
                                                               fake_fashion_mnist):
    data = open_task_data("segment", scenes_fields)
    assert data.n_classes == 11 and data.size == SIZE
    coords = torch.tensor([[-0.99, -0.99], [0.0, 0.3]])
    flipped = coords * torch.tensor([-1.0, 1.0])
    labels = data.targets(np.array([3]), flipped[None])
    assert labels.tolist() == [data.scenes.label_field(3, flipped.numpy()).tolist()]


def test_segment_loss_of_a_cell_reading_model_is_its_exact_integral(scenes_fields,
                                                                      fake_fashion_mnist):
    """Labels and a cell-reading model's logits are constant on each pixel, so the training
    loss at the pixel centres is the domain integral of the per-point loss: equal to the
    same loss on a grid four times finer. A model whose logits vary inside a pixel is
    scored at its input points instead."""
    torch.manual_seed(0)
    task, data = get_task("segment"), open_task_data("segment", scenes_fields)
    model = Segmenter(base_spacing=2 / SIZE, widths=(8, 16)).eval()
    points, idx = P.sobol(SIZE * SIZE, 2, seed=2), np.array([0, 5])
    x = data.inputs(idx, points.coords)
    keep = lambda c: c  # noqa: E731 — no augmentation
    with torch.no_grad():
        out, query = task.forward(model, x, points, 0, data)
        assert query.digest == P.grid((SIZE, SIZE)).digest
        loss = task.loss(out, data, idx, keep, points, query)[0]
        fine = P.grid((4 * SIZE, 4 * SIZE))
        fine_loss = task.loss(model(x, points, fine), data, idx, keep, points, fine)[0]
        torch.testing.assert_close(loss, fine_loss, rtol=1e-5, atol=0)
        kernel = Segmenter(**{**model.config, "read": "kernel"}).eval()
        assert task.forward(kernel, x, points, 0, data)[1] is points


def test_scene_options_are_recorded_and_the_scenes_rebuilt_from_them(fake_fashion_mnist,
                                                                     tmp_path):
    images, labels, info = load_source("scenes", limit=5, size=SIZE, seed=2,
                                       scenes={"scale": (0.5, 0.75), "items": (2, 2)})
    assert labels is None and images.shape == (5, SIZE, SIZE, 1)
    assert (info["scale"], info["items"], info["n"], info["seed"]) == ([0.5, 0.75], [2, 2], 5,
                                                                       2)
    made = make_scenes(5, seed=2, size=SIZE, source=dinet.data.load_fashion_mnist(),
                       scale=(0.5, 0.75), items=(2, 2))  # the fake items
    np.testing.assert_array_equal(images, made.images)
    assert (made.num_items == 2).all()
    # the defaults are the benchmark's (one item of 0.75-1.0), and they are recorded too
    defaults = load_source("scenes", limit=2, size=SIZE)[2]
    assert (defaults["scale"], defaults["items"]) == ([0.75, 1.0], [1, 1])
    path = tmp_path / "opts"
    build_dataset(path, images, None, arch_hparams={"width": 8},
                  fit_options={"max_steps": 5, "meta_steps": 1}, progress=False, source=info)
    np.testing.assert_array_equal(open_task_data("segment", path).scenes.labels, made.labels)
    with pytest.raises(ValueError, match="apply to the scenes source only"):
        load_source("digits", scenes={"items": (1, 1)})


def test_segment_trains_evaluates_and_draws(scenes_fields, fake_fashion_mnist, tmp_path):
    out = tmp_path / "seg"
    config = TrainConfig(fields=str(scenes_fields), out=str(out), task="segment",
                         model="dinet3", points=256, epochs=8, batch_size=4, lr=1e-2)
    train(config, progress=False)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert isinstance(Segmenter.from_checkpoint(out / "model.pt"), Segmenter)
    results = evaluate(out, scenes_fields, ("sobol", "grid"), (64, 256), examples=2)
    m = results["metrics"]
    assert set(m) == {"miou", "pixel_accuracy", "miou_pixel_centres",
                      "pixel_accuracy_pixel_centres"}
    for table in m.values():
        assert set(table) == {"sobol", "grid"}
        assert all(0 <= v <= 1 for row in table.values() for v in row.values())
    # Better than the trivial all-background answer: items are found and labelled.
    data = open_task_data("segment", scenes_fields)
    background = float((data.scenes.labels == 0).mean())
    assert m["pixel_accuracy_pixel_centres"]["grid"]["256"] > background + 0.05
    assert {Path(p).name for p in results["plots"]} == {"heatmap.png", "vs_points.png",
                                                         "examples.png"}
    assert "miou_pixel_centres" in (out / "results.md").read_text()


def test_segmentation_grid_cnn_baseline(scenes_fields, fake_fashion_mnist, tmp_path):
    out = tmp_path / "cnn"
    train(TrainConfig(fields=str(scenes_fields), out=str(out), task="segment", model="cnn",
                      discretization="grid", points=SIZE * SIZE, epochs=1, batch_size=6),
          progress=False)
    assert isinstance(GridUNetSegmenter.from_checkpoint(out / "model.pt"), GridUNetSegmenter)
    results = evaluate(out, scenes_fields, ("sobol", "grid"), (64,), plots=False)
    assert results["baseline"]
    assert list(results["metrics"]["miou"]) == ["grid"]  # its own grid only
    assert list(results["metrics"]["miou"]["grid"]) == [str(SIZE * SIZE)]
    # dinet-unet starts from it (--init): the same weights, then trained on Sobol points
    # with it as the teacher (--distill: it reads its own grid, the student Sobol points)
    di = tmp_path / "di"
    last = train(TrainConfig(fields=str(scenes_fields), out=str(di), task="segment", points=64,
                             epochs=1, batch_size=6, lr=1e-12, weight_decay=0.0, init=str(out),
                             distill=str(out)), progress=False)
    assert math.isfinite(last["loss"]) and last["loss"] > 0
    cnn = dict(GridUNetSegmenter.from_checkpoint(out / "model.pt").named_parameters())
    for name, value in Segmenter.from_checkpoint(di / "model.pt").named_parameters():
        if name == "stem.weight":  # the pixels' channel, then the unused spacing channel
            value, spacing = value[:, :1], value[:, 1:]
            torch.testing.assert_close(spacing, torch.zeros_like(spacing), rtol=0, atol=1e-8)
        name = name.replace("stem_norm.", "stem.1.").replace("stem.weight", "stem.0.weight")
        torch.testing.assert_close(value, cnn[name], rtol=0, atol=1e-8)


def test_model_options_build_the_model_and_resume_with_it(scenes_fields, fake_fashion_mnist,
                                                        tmp_path, capsys):
    """--model-option NAME=VALUE reaches the model's constructor (JSON values), is recorded,
    resumes, and a name the model lacks or a value it cannot take is one line naming why."""
    out = tmp_path / "opts"
    argv = ["train", "--task", "segment", "--fields", str(scenes_fields), "--points", "64",
            "--batch-size", "6", "--out", str(out), "--model-option", "widths=[8,16]",
            "--model-option", "spacing_input=false", "--model-option", "read=kernel"]
    assert main([*argv, "--epochs", "1"]) == 0
    model = Segmenter.from_checkpoint(out / "model.pt")
    assert (model.config["widths"], model.config["spacing_input"],
            model.config["read"]) == ([8, 16], False, "kernel")
    assert model.stem.weight.shape[:2] == (8, 1)  # no spacing channel
    recorded = json.loads((out / "config.json").read_text())["model_options"]
    assert recorded == {"widths": [8, 16], "spacing_input": False, "read": "kernel"}
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    # from Python a tuple is the same option as the list config.json holds
    train(TrainConfig(fields=str(scenes_fields), out=str(out), task="segment", points=64,
                      batch_size=6, epochs=3, model_options={
                          "widths": (8, 16), "spacing_input": False, "read": "kernel"}),
          resume=True, progress=False)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    for option, message in (("spacing=1", "has no option 'spacing'; its options: widths, "
                             "stem_quadrature, spacing_input, lattice_net, read"),
                            ("widths=32", "widths must be a non-empty list"),
                            ("stem_quadrature=cubic", "cubic")):
        assert main(["train", "--task", "segment", "--fields", str(scenes_fields), "--out",
                     str(tmp_path / "bad"), "--model-option", option]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="has no option 'widths'; its options: none"):
        train(TrainConfig(fields=str(scenes_fields), out=str(tmp_path / "bad"), task="segment",
                          model="dinet3", model_options={"widths": [8]}), progress=False)


def test_sdf_trains_and_beats_predicting_zero(tmp_path):
    out = tmp_path / "sdf"
    config = TrainConfig(fields="balls:32", out=str(out), task="sdf", points=512, epochs=6,
                         batch_size=8, lr=1e-2)
    train(config, progress=False)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "mse" in lines[0] and lines[-1]["loss"] < lines[0]["loss"]
    assert isinstance(SDFNet.from_checkpoint(out / "model.pt"), SDFNet)
    results = evaluate(out, "balls:16:1", ("sobol", "grid"), (512,), examples=2)
    data = open_task_data("sdf", "balls:16:1")
    query = torch.rand(4096, 3) * 2 - 1
    zero_mse = float(data.targets(np.arange(16), query).square().mean())
    for kind in ("sobol", "grid"):
        assert results["metrics"]["mse"][kind]["512"] < zero_mse
        assert results["metrics"]["mae"][kind]["512"] > 0
    assert "examples.png" in {Path(p).name for p in results["plots"]}


def test_report_assembles_runs(class_fields, tmp_path, capsys):
    runs = []
    for kind in ("sobol", "grid"):
        out = tmp_path / "runs" / kind
        train(TrainConfig(fields=str(class_fields), out=str(out), model="dinet2",
                          discretization=kind, points=64, epochs=1, batch_size=8),
              progress=False)
        evaluate(out, class_fields, ("sobol", "grid", "shrunk"), (16, 64), plots=False)
        runs.append(str(out))
    assert main(["report", *runs]) == 0
    printed = capsys.readouterr().out
    assert "dinet2 · sobol @ 64" in printed and "dinet2 · grid @ 64" in printed
    result = report(runs)
    assert result["columns"] == ["sobol", "grid", "shrunk"]
    assert len(result["values"]) == 2 and all(len(r) == 3 for r in result["values"])
    # "worst vs own discretization": the row's diagonal minus its lowest cell.
    diagonal = result["values"][0][0]
    assert result["worst"][0] == pytest.approx(diagonal - min(result["values"][0]))
    assert (tmp_path / "runs" / "report.md").exists()
    assert (tmp_path / "runs" / "report.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="evaluated at 16, 64 points, not 1024"):
        report(runs, points=1024)
    # two runs of the same settings are told apart by their folders, the others are not
    again = tmp_path / "runs" / "again"
    shutil.copytree(runs[0], again)
    rows = report([*runs, str(again)])["rows"]
    assert rows == [f"dinet2 · sobol @ 64 ({runs[0]})", "dinet2 · grid @ 64",
                    f"dinet2 · sobol @ 64 ({again})"]
    with pytest.raises(ValueError, match="dinet eval"):
        report([str(tmp_path)])
    # A truncated results.json: the error names the file and how to rewrite it.
    results_json = Path(runs[0]) / "results.json"
    results_json.write_text(results_json.read_text()[:40])
    with pytest.raises(ValueError, match=r"results.json is not valid JSON .*rerun `dinet eval"):
        report(runs)


def test_eval_shows_its_progress_unless_told_not_to(class_fields, tmp_path, capsys):
    out = tmp_path / "run"
    train(TrainConfig(fields=str(class_fields), out=str(out), model="dinet2",
                      discretization="sobol", points=64, epochs=1, batch_size=8),
          progress=False)
    capsys.readouterr()
    evaluate(out, class_fields, ("sobol", "grid"), (16, 64), batch_size=8, plots=False)
    shown = capsys.readouterr().err
    # 2 kinds x 2 counts x 2 batches of the 16 fields, the last point set named
    assert "eval run" in shown and "8/8" in shown and "grid @ 64" in shown
    evaluate(out, class_fields, ("sobol",), (16,), plots=False, progress=False)
    assert capsys.readouterr().err == ""


def test_mismatched_data_models_and_runs_are_refused(class_fields, scenes_fields,
                                                    fake_fashion_mnist, tmp_path, capsys):
    with pytest.raises(ValueError, match="not segmentation scenes.*--task classify"):
        open_task_data("segment", class_fields)
    with pytest.raises(ValueError, match="without labels.*--task segment"):
        open_task_data("classify", scenes_fields)
    with pytest.raises(ValueError, match="balls:N"):
        open_task_data("sdf", class_fields)
    with pytest.raises(ValueError, match="only the sdf task"):
        open_task_data("classify", "balls:10")
    with pytest.raises(ValueError, match="valid: classify, segment, sdf"):
        open_task_data("detect", class_fields)
    base = ["train", "--fields", str(class_fields), "--points", "64", "--batch-size", "8"]
    for extra, expected in [
        (["--task", "segment", "--fields", str(scenes_fields), "--model", "dinet2"],
         "valid: dinet-unet, dinet3, dinet5, cnn, cnn-small"),
        (["--model", "cnn"], "--discretization grid"),
        (["--task", "sdf", "--fields", "balls:4", "--model", "dinet-unet"],
         "valid: sdfnet, cnn"),
    ]:
        out = tmp_path / f"bad{len(extra)}"
        assert main([*base, *extra, "--out", str(out)]) == 2
        assert expected in capsys.readouterr().err
        assert not out.exists()  # nothing written
    # A run folder resumed with another model: refused, nothing overwritten.
    out = tmp_path / "run"
    assert main([*base, "--model", "dinet2", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*base, "--model", "dinet4", "--out", str(out), "--resume"]) == 2
    assert "model differ" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # Evaluating a classifier run on segmentation scenes: the data are refused.
    assert main(["eval", "--run", str(out), "--fields", str(scenes_fields)]) == 2
    assert "without labels" in capsys.readouterr().err


RESUME_CASES = [(task, model) for task in task_names() for model in get_task(task).models]


@pytest.mark.parametrize(("task", "model"), RESUME_CASES,
                         ids=[f"{t}-{m}" for t, m in RESUME_CASES])
def test_killed_and_resumed_equals_uninterrupted_for_every_model(
        task, model, class_fields, scenes_fields, fake_fashion_mnist, tmp_path, monkeypatch):
    """Every preset of every task, default ones (with dropout) included: a run killed in its
    second epoch and resumed writes the same metrics and weights, bit for bit."""
    fields = {"classify": class_fields, "segment": scenes_fields, "sdf": "balls:12"}[task]
    points = {"classify": 64, "segment": SIZE * SIZE, "sdf": 512}[task]
    kw = dict(task=task, model=model, fields=str(fields), points=points, epochs=2,
              batch_size=4, lr=3e-3,
              discretization="grid" if model_entry(task, model).grid_baseline else "sobol")
    clean = train(TrainConfig(out=str(tmp_path / "clean"), **kw), progress=False)
    real, calls = train_module._step_loss, []

    def dying(*args, **kwargs):  # dies in the middle of the second epoch
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step_loss", dying)
    config = TrainConfig(out=str(tmp_path / "resumed"), **kw)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    monkeypatch.setattr(train_module, "_step_loss", real)
    assert train(config, resume=True, progress=False) == clean
    a = torch.load(tmp_path / "clean" / "train_state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ((tmp_path / "clean" / "metrics.jsonl").read_text()
            == (tmp_path / "resumed" / "metrics.jsonl").read_text())
