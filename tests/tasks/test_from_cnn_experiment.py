"""``dinet experiment from-cnn`` on tiny data: a CNN on pixels, converted, scored on fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dinet.cli import main
from dinet.fields import build_dataset
from dinet.tasks import FromCNNConfig, from_cnn_table, run_from_cnn, small_cnn

FIT = {"arch_hparams": {"width": 8}, "fit_options": {"max_steps": 10, "meta_steps": 2},
       "shard_size": 16, "progress": False}


def _pixels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 images whose class is which half (left or right) is brighter."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    ramp = np.mgrid[0:8, 0:8][1] / 7.0
    images = np.stack([np.where(lab, ramp, 1 - ramp) * 0.8 + 0.1 * rng.random((8, 8))
                       for lab in labels])[..., None].astype(np.float32)
    return images, labels.astype(np.int64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Train and test pixels, saved as .npz sources, and the field datasets fitted to them."""
    root = tmp_path_factory.mktemp("from_cnn")
    out = {}
    for split, n, seed in (("train", 32, 0), ("test", 16, 1)):
        images, labels = _pixels(n, seed)
        np.savez(root / f"{split}.npz", images=images, labels=labels)
        source = {"source": f"npz:{root / f'{split}.npz'}", "split": split, "limit": None,
                  "size": 8}
        build_dataset(root / split, images, labels, source=source, split=split, **FIT)
        out[split] = (root / split, (images, labels))
    return out


def _config(tiny, out, **kw) -> FromCNNConfig:
    base = dict(train_fields=str(tiny["train"][0]), test_fields=str(tiny["test"][0]),
                out=str(out), epochs=1, finetune_epochs=1, points=(64, 16), batch_size=16,
                finetune_batch_size=16, widths=(4, 4, 8))
    return FromCNNConfig(**{**base, **kw})


def test_converted_net_equals_the_cnn_on_the_grid_and_writes_results(tiny, tmp_path):
    out = tmp_path / "run"
    results = run_from_cnn(_config(tiny, out), tiny["train"][1], tiny["test"][1],
                           progress=False)
    check = results["grid_check"]
    assert check["equal"] and check["prediction_mismatches"] == 0
    assert check["max_logit_difference"] < 1e-4
    rows, grid = results["rows"], "grid:64"
    assert results["columns"] == [grid, "sobol:64", "shrunk:64", "jittered:64", "sobol:16",
                                  "shrunk:16", "jittered:16"]
    assert rows["zero_shot"][grid] == rows["cnn_fields"][grid]  # exactly, not nearly
    assert set(rows["cnn_pixels"]) == {grid}
    assert set(rows["zero_shot"]) == set(rows["finetuned"]) == set(results["columns"])
    assert all(0.0 <= v <= 1.0 for row in rows.values() for v in row.values())
    assert results["n_train"] == 32 and results["n_test"] == 16
    assert {"cnn_train", "finetune", "total"} <= set(results["timings"])

    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == rows and saved["config"]["points"] == [64, 16]
    table = (out / "results.md").read_text()
    assert table.strip() == from_cnn_table(saved)
    for title in ("CNN on pixels", "CNN on grid-rendered fields", "converted, zero-shot",
                  "converted, fine-tuned 1 epoch", "grid 8×8", "sobol 64", "jittered 16"):
        assert title in table
    assert "equals" in table.splitlines()[0]

    cnn_state = torch.load(out / "cnn.pt", weights_only=True)
    cnn = small_cnn(cnn_state["in_channels"], cnn_state["n_classes"], cnn_state["widths"])
    cnn.load_state_dict(cnn_state["state_dict"])
    assert (out / "finetuned.pt").exists()


def test_without_finetuning_and_with_limits(tiny, tmp_path):
    results = run_from_cnn(_config(tiny, tmp_path, finetune_epochs=0, points=(16,), limit=8,
                                   test_limit=4), tiny["train"][1], tiny["test"][1],
                           progress=False)
    assert results["rows"]["finetuned"] == {} and "finetune" not in results
    assert results["n_train"] == 8 and results["n_test"] == 4
    assert "fine-tuned" not in (tmp_path / "results.md").read_text()
    assert results["grid_check"]["equal"]


def test_missing_field_datasets_name_the_command_that_makes_them(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="make fields.*dinet fit --source "
                                                "fashion-mnist --split test"):
        run_from_cnn(_config(tiny, tmp_path, test_fields=str(tmp_path / "nowhere")),
                     tiny["train"][1], tiny["test"][1], progress=False)
    with pytest.raises(FileNotFoundError, match="--split train"):
        run_from_cnn(_config(tiny, tmp_path, train_fields=str(tmp_path / "nowhere")),
                     progress=False)


def test_pixels_must_be_the_images_the_fields_were_fitted_to(tiny, tmp_path):
    images, labels = tiny["test"][1]
    with pytest.raises(ValueError, match="not the images .* was fitted to"):
        run_from_cnn(_config(tiny, tmp_path), tiny["train"][1], (images * 0.5, labels),
                     progress=False)
    assert not (tmp_path / "results.json").exists()


def test_cubic_conversion_and_batch_norm_reestimation(tiny, tmp_path):
    """--kernel cubic (here with --lattice) keeps the grid exact; --bn-batches adds a
    gradient-free row whose weights are the zero-shot net's and whose statistics come from
    the training fields."""
    results = run_from_cnn(_config(tiny, tmp_path, kernel="cubic", bn_batches=2,
                                   finetune_epochs=0, points=(16,), lattice=True),
                           tiny["train"][1], tiny["test"][1], progress=False)
    assert results["grid_check"]["equal"] and results["config"]["kernel"] == "cubic"
    assert results["config"]["lattice"] is True
    rows = results["rows"]
    assert set(rows["recalibrated"]) == set(results["columns"])
    assert "recalibrate" in results["timings"]
    assert "batch norms re-estimated" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(("change", "message"), [
    ({"kernel": "bicubic"}, "valid: spline, mlp, cubic"),
    ({"bn_batches": -1}, "bn_batches must be an integer >= 0"),
    ({"points": (70,)}, "perfect square"),
    ({"points": ()}, "at least one"),
    ({"finetune_epochs": -1}, "finetune_epochs must be an integer >= 0"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"widths": (4, 8)}, "3 stages"),
])
def test_bad_settings_are_refused_before_any_work(tiny, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        run_from_cnn(_config(tiny, tmp_path, **change), progress=False)


def test_cli_runs_from_the_recorded_sources(tiny, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["experiment", "from-cnn", "--train-fields", str(tiny["train"][0]),
                 "--test-fields", str(tiny["test"][0]), "--epochs", "1",
                 "--finetune-epochs", "0", "--points", "16", "--limit", "16", "--out",
                 str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| converted, zero-shot |" in printed and "results.json" in printed
    assert json.loads((out / "results.json").read_text())["grid_check"]["equal"]


def test_cli_errors(tiny, tmp_path, capsys):
    code = main(["experiment", "from-cnn", "--train-fields", str(tmp_path / "missing"),
                 "--test-fields", str(tiny["test"][0]), "--points", "16", "--out",
                 str(tmp_path)])
    assert code == 2 and "make fields" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", "from-cnn", "--finetune-epochs", "-1"])
    assert "integer >= 0" in capsys.readouterr().err
