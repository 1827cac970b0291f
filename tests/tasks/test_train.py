"""Training a classifier on a tiny field dataset: runs, learns, resumes exactly."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dinet.cli import main
from dinet.fields import build_dataset
from dinet.models import Classifier, load_model
from dinet.tasks import (
    TrainConfig,
    discretizations,
    evaluate,
    is_randomised,
    make_points,
    train,
)

train_module = importlib.import_module("dinet.tasks.train")  # the module, not the function


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """24 fields of 8x8 images whose class is which half is brighter."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 24)
    y = np.mgrid[0:8, 0:8][1] / 7.0
    images = np.stack([np.where(lab, y, 1 - y) * 0.8 + 0.1 * rng.random((8, 8))
                       for lab in labels])[..., None].astype(np.float32)
    path = tmp_path_factory.mktemp("fields") / "tiny"
    build_dataset(path, images, labels, arch_hparams={"width": 8},
                  fit_options={"max_steps": 10, "meta_steps": 2}, shard_size=12,
                  progress=False)
    return path


def _config(fields, out, **kw):
    base = dict(fields=str(fields), out=str(out), model="dinet2", points=64, epochs=2,
                batch_size=8, lr=3e-3)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("kind", discretizations())
def test_make_points(kind):
    points = make_points(kind, 64, seed=3)
    assert len(points) == 64 and points.dim == 2
    assert make_points(kind, 64, seed=3) == points
    if is_randomised(kind) and kind != "mixed":  # mixed may draw the grid for both seeds
        assert make_points(kind, 64, seed=4) != points
    assert math.isclose(float(points.weights.double().sum()), 4.0, rel_tol=0.02)
    with pytest.raises(ValueError, match="valid: sobol, grid.*npz:FILE"):
        make_points("hex", 64)


def test_registering_a_discretization_from_outside(monkeypatch, fields, tmp_path):
    import dinet.points as P
    from dinet.tasks import discretize, register_discretization

    monkeypatch.setattr(discretize, "_KINDS", dict(discretize._KINDS))
    register_discretization("corner-heavy", lambda n, d, s: P.from_coords(
        P.sobol(n, d, seed=s).coords ** 3), help="Sobol cubed")
    assert "corner-heavy" in discretizations() and is_randomised("corner-heavy")
    points = make_points("corner-heavy", 256, seed=0)
    assert points.weight_method == "voronoi"
    last = train(_config(fields, tmp_path / "run", epochs=1, discretization="corner-heavy"),
                 progress=False)
    assert 0 <= last["accuracy"] <= 1
    with pytest.raises(ValueError, match="without ':'"):
        register_discretization("npz:x", lambda n, d, s: None)


def test_a_mixture_draws_one_of_its_kinds_per_seed(fields, tmp_path):
    kinds = ("sobol", "random", "shrunk")
    drawn = []
    for seed in range(30):
        points = make_points("+".join(kinds), 64, seed=seed)
        same = [k for k in kinds if make_points(k, 64, seed=seed) == points]
        assert len(same) == 1  # exactly the draw of one of its kinds for that seed
        drawn.append(same[0])
    assert set(drawn) == set(kinds)
    # the paper's mixed training is the mixture of its three kinds, seed for seed
    assert all(make_points("mixed", 64, seed=s) == make_points("grid+sobol+shrunk", 64, seed=s)
               for s in range(10))
    assert is_randomised("grid+sobol") and not is_randomised("grid+grid")
    with pytest.raises(ValueError, match="names 'hex', not a registered kind"):
        make_points("sobol+hex", 64)
    with pytest.raises(ValueError, match="perfect square"):  # every kind checked up front
        train(_config(fields, tmp_path / "bad", discretization="sobol+grid", points=60))
    last = train(_config(fields, tmp_path / "run", epochs=1, discretization="sobol+random"),
                 progress=False)
    assert 0 <= last["accuracy"] <= 1
    # a test draw of a mixture would be one of its kinds: evaluation asks for them one by one
    with pytest.raises(ValueError, match=r"name them one by one \(sobol,random\)"):
        evaluate(tmp_path / "run", fields, ("sobol+random+sobol",), (64,), plots=False)


def test_grid_needs_a_square():
    with pytest.raises(ValueError, match="perfect square.*64 or 81"):
        make_points("grid", 70)


def test_a_point_set_larger_than_memory_is_refused_before_it_is_drawn(monkeypatch):
    discretize = importlib.import_module("dinet.tasks.discretize")
    monkeypatch.setattr(discretize, "available_memory", lambda: 2**20)  # 1 MiB
    assert len(make_points("sobol", 4096)) == 4096  # 4,096 × 3 × 24 bytes = 288 KiB
    with pytest.raises(ValueError, match=r"16,384 points in 2-D need ~1.12 MiB to draw"):
        make_points("sobol", 16384)


def test_training_learns_and_writes_a_run(fields, tmp_path):
    out = tmp_path / "run"
    last = train(_config(fields, out, epochs=6), progress=False)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == list(range(6))
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert last == lines[-1]
    model = Classifier.from_checkpoint(out / "model.pt")
    assert model.config["preset"] == "dinet2"
    with pytest.raises(ValueError, match="--resume"):
        train(_config(fields, out), progress=False)


def test_distillation_follows_the_teacher_not_the_labels(fields, tmp_path):
    train(_config(fields, tmp_path / "trained", epochs=6), progress=False)
    teachers = {}
    for name, scale in (("teacher", 30.0), ("liar", -30.0)):  # confident; liar: the other class
        model = Classifier.from_checkpoint(tmp_path / "trained" / "model.pt")
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            head.weight.mul_(scale), head.bias.mul_(scale)
        teachers[name] = tmp_path / name
        teachers[name].mkdir()
        model.save(teachers[name] / "model.pt")
        (teachers[name] / "config.json").write_text(
            (tmp_path / "trained" / "config.json").read_text())
    teacher, liar = teachers["teacher"], teachers["liar"]
    # taught by the teacher alone (distill_weight 1: the labels are never read into the loss)
    honest = train(_config(fields, tmp_path / "a", epochs=6, distill=str(teacher),
                           distill_weight=1.0), progress=False)
    fooled = train(_config(fields, tmp_path / "b", epochs=6, distill=str(liar),
                           distill_weight=1.0), progress=False)
    # accuracy against the labels: the student agrees with its teacher, right or wrong (the
    # model it was made from scores ~0.7 here; learning nothing, ~0.5)
    assert honest["accuracy"] > 0.6 and fooled["accuracy"] < 0.4
    assert json.loads((tmp_path / "a" / "config.json").read_text())["distill"] == str(teacher)
    with pytest.raises(ValueError, match="distill_weight must be in"):
        train(_config(fields, tmp_path / "c", distill=str(teacher), distill_weight=0.0))
    with pytest.raises(ValueError, match="--distill .*no model.pt"):
        train(_config(fields, tmp_path / "d", distill=str(tmp_path)))
    sdf = tmp_path / "sdf"  # a teacher of another task, refused before anything is written
    train(TrainConfig(fields="balls:4", out=str(sdf), task="sdf", points=512, epochs=1,
                      batch_size=4), progress=False)
    with pytest.raises(ValueError, match="run of the sdf task cannot teach the classify task"):
        train(_config(fields, tmp_path / "e", distill=str(sdf)))
    assert not (tmp_path / "e").exists()


def test_killed_mid_epoch_and_resumed_equals_uninterrupted(fields, tmp_path, monkeypatch):
    clean = train(_config(fields, tmp_path / "clean", discretization="sobol"), progress=False)

    real = torch.nn.functional.cross_entropy
    calls = []

    def dying(*args, **kwargs):  # dies in the middle of the second epoch
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", dying)
    config = _config(fields, tmp_path / "resumed", discretization="sobol")
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", real)
    resumed = train(config, resume=True, progress=False)
    assert resumed == clean
    a = torch.load(tmp_path / "clean" / "train_state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ((tmp_path / "clean" / "metrics.jsonl").read_text()
            == (tmp_path / "resumed" / "metrics.jsonl").read_text())


def test_cli_train_and_errors(fields, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--fields", str(fields), "--points", "64", "--epochs", "1",
            "--batch-size", "8", "--discretization", "grid", "--out", str(out)]
    assert main(args) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main([*args[:-1], str(tmp_path / "x"), "--model", "resnet50"]) == 2
    assert "dinet2" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "y"), "--discretization", "hex"]) == 2
    assert "valid: sobol, grid" in capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 2  # exists: nothing is overwritten without --resume
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_evaluate_every_discretization(fields, tmp_path, capsys):
    out = tmp_path / "run"
    train(_config(fields, out, epochs=3), progress=False)
    assert main(["eval", "--run", str(out), "--fields", str(fields), "--points", "16,64",
                 "--discretizations", "sobol,grid,shrunk"]) == 0
    printed = capsys.readouterr().out
    assert "| grid |" in printed and "64 points" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]["accuracy"]) == {"sobol", "grid", "shrunk"}
    for row in results["metrics"]["accuracy"].values():
        assert set(row) == {"16", "64"} and all(0 <= a <= 1 for a in row.values())
    again = json.loads((out / "results.json").read_text())
    main(["eval", "--run", str(out), "--fields", str(fields), "--points", "16,64",
          "--discretizations", "sobol,grid,shrunk"])
    assert json.loads((out / "results.json").read_text()) == again  # reproducible
    assert {Path(p).name for p in again["plots"]} == {"heatmap.png", "vs_points.png"}
    assert all(Path(p).read_bytes().startswith(b"\x89PNG") for p in again["plots"])
    assert main(["eval", "--run", str(out), "--fields", str(fields),
                 "--discretizations", "hex"]) == 2
    assert "valid: sobol" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path), "--fields", str(fields)]) == 2
    assert "model.pt" in capsys.readouterr().err


def test_mlp_kernel_and_spacing_options(fields, tmp_path):
    out = tmp_path / "mlp"
    train(_config(fields, out, epochs=1, kernel="mlp", base_spacing=0.25), progress=False)
    model = Classifier.from_checkpoint(out / "model.pt")
    assert model.config["kernel"] == "mlp" and model.config["base_spacing"] == 0.25
    convs = [m for m in model.modules() if m.__class__.__name__ == "DIConv"]
    assert convs and all(c.kernel == "mlp" for c in convs)


def test_mix_points_draws_every_count_and_is_validated(fields, tmp_path, monkeypatch):
    seen = []
    real = train_module._step_loss

    def spy(config, model, data, idx, points, seed, *rest):
        seen.append(len(points))
        return real(config, model, data, idx, points, seed, *rest)

    monkeypatch.setattr(train_module, "_step_loss", spy)
    out = tmp_path / "mix"
    train(_config(fields, out, epochs=2, mix_points=(16,)), progress=False)
    assert set(seen) == {64, 16}  # 6 steps, each drawing one of the two counts
    assert json.loads((out / "config.json").read_text())["mix_points"] == [16]
    # resume accepts the recorded list (JSON reads tuples back as lists)
    train(_config(fields, out, epochs=3, mix_points=(16,)), resume=True, progress=False)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="mix_points must be positive"):
        _config(fields, tmp_path / "bad", mix_points=(0,)).check()
    with pytest.raises(ValueError, match="perfect square"):
        _config(fields, tmp_path / "bad", discretization="grid", mix_points=(20,)).check()


@pytest.mark.parametrize("kernel", ["spline", "mlp"])
def test_same_seed_gives_bit_identical_runs(fields, tmp_path, kernel):
    """Determinism on CPU: two runs with one seed write the same metrics, byte for byte, and
    the same weights — with two threads, so the parallel sparse kernels are exercised (each
    output row is summed by one thread, in a fixed order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [tmp_path / "a", tmp_path / "b"]
        for out in runs:
            train(_config(fields, out, epochs=2, kernel=kernel, discretization="random"),
                  progress=False)
    finally:
        torch.set_num_threads(threads)
    a, b = ((out / "metrics.jsonl").read_bytes() for out in runs)
    assert a == b and len(a.splitlines()) == 2
    wa, wb = (torch.load(out / "train_state.pt", weights_only=True)["model"] for out in runs)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "config"])
def test_resume_refuses_a_damaged_run_and_touches_nothing(fields, tmp_path, damage):
    out = tmp_path / "run"
    train(_config(fields, out, epochs=1), progress=False)
    state = out / "train_state.pt"
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[:300])
    elif damage == "flip":  # one bit inside a weight: torch.load alone would not notice
        data = bytearray(state.read_bytes())
        raw = torch.load(state, weights_only=True)["model"]
        weight = next(v for v in raw.values() if v.numel() >= 64)
        at = data.find(weight.numpy().tobytes()[:32])
        data[at + 9] ^= 0x08
        state.write_bytes(bytes(data))
    elif damage == "foreign":
        torch.save({"model": {}}, state)
    else:
        (out / "config.json").write_text('{"task": "class')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    expected = {"truncate": "train_state.pt cannot be read", "flip": "train_state.pt is damaged",
                "foreign": "train_state.pt is not a dinet-train-state-1 file",
                "config": "config.json is not valid JSON"}[damage]
    with pytest.raises(ValueError, match=expected + ".*another --out"):
        train(_config(fields, out, epochs=2), resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_refuses_a_state_of_another_model_shape(fields, tmp_path):
    """A run begun before a model's layers changed (dinet-res's format-1 stem, say) holds a
    sound state that does not fit the model built now: a ValueError, nothing touched."""
    from dinet._io import save_with_digest

    out = tmp_path / "run"
    train(_config(fields, out, epochs=1), progress=False)
    state = torch.load(out / "train_state.pt", weights_only=True)
    del state["sha256"]
    key = next(k for k, v in state["model"].items() if v.dim() >= 2)
    state["model"][key] = state["model"][key][:1]  # as an older, narrower layer
    save_with_digest(state, out / "train_state.pt")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="does not fit the dinet2 this dinet builds.*older"):
        train(_config(fields, out, epochs=2), resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_init_starts_from_another_runs_weights(fields, tmp_path):
    """--init RUN: the new run's parameters start as RUN's model left them (a learning rate
    of 1e-12 moves them by ~1e-12), with another point count; another model is refused."""
    first = tmp_path / "first"
    train(_config(fields, first, epochs=1), progress=False)
    second = tmp_path / "second"
    train(_config(fields, second, epochs=1, lr=1e-12, weight_decay=0.0, points=36,
                  init=str(first)), progress=False)
    a, b = (load_model(out / "model.pt") for out in (first, second))
    params = dict(a.named_parameters())
    assert all(torch.allclose(p, params[n], atol=1e-8, rtol=0) for n, p in b.named_parameters())
    fresh = tmp_path / "fresh"
    train(_config(fields, fresh, epochs=1, lr=1e-12, weight_decay=0.0), progress=False)
    c = dict(load_model(fresh / "model.pt").named_parameters())
    assert not all(torch.allclose(p, c[n], atol=1e-3) for n, p in a.named_parameters())
    with pytest.raises(ValueError, match="--init .*is not this one"):
        train(_config(fields, tmp_path / "other", model="dinet4", init=str(first)),
              progress=False)
    with pytest.raises(ValueError, match="no model.pt there"):
        _config(fields, tmp_path / "x", init=str(tmp_path / "nowhere")).check()


def test_your_own_coordinates_in_train_and_eval(fields, tmp_path, capsys):
    """npz:FILE: a user's sensor layout, trained on and scored in one command each."""
    import dinet.points as P

    layout = tmp_path / "hex.npz"
    np.savez(layout, coords=P.hexagonal(64, seed=0).coords.numpy())
    out = tmp_path / "run"
    base = ["train", "--fields", str(fields), "--epochs", "1", "--batch-size", "8",
            "--model", "dinet2"]
    assert main([*base, "--discretization", f"npz:{layout}", "--points", "64",
                 "--out", str(out)]) == 0
    assert main(["eval", "--run", str(out), "--fields", str(fields), "--points", "16,256",
                 "--discretizations", f"sobol,npz:{layout}"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    table = results["metrics"]["accuracy"]
    assert set(table["sobol"]) == {"16", "256"} and set(table[f"npz:{layout}"]) == {"64"}
    assert f"| npz:{layout} | – | " in printed  # scored at its own 64 points only
    # explicit weights are used as given
    weights = np.full(64, 4.0 / 64)
    np.savez(tmp_path / "w.npz", coords=P.hexagonal(64, seed=0).coords.numpy(), weights=weights)
    points = make_points(f"npz:{tmp_path / 'w.npz'}", 64)
    assert points.weight_method == "density" and torch.allclose(points.weights,
                                                                torch.full((64,), 4.0 / 64))
    # errors name the file and the remedy
    for bad, message in [
        (lambda p: p.write_text("not a zip"), "not a readable .npz"),
        (lambda p: np.savez(p, a=np.zeros((4, 2)), b=np.zeros(4)), "name the coordinates"),
        (lambda p: np.savez(p, coords=np.zeros((4, 3))), r"\(N, 2\) array"),
        (lambda p: np.savez(p, coords=np.full((4, 2), 3.0)), r"\[-1, 1\]"),
        (lambda p: np.savez(p, coords=np.zeros((4, 2)), weights=-np.ones(4)), "positive"),
    ]:
        path = tmp_path / "bad.npz"
        bad(path)
        with pytest.raises(ValueError, match=message):
            make_points(f"npz:{path}", 4)
    with pytest.raises(ValueError, match="holds 64 points, not 100 — pass --points 64"):
        make_points(f"npz:{layout}", 100)
    assert main([*base, "--discretization", f"npz:{tmp_path / 'nope.npz'}", "--points", "64",
                 "--out", str(tmp_path / "x")]) == 2
    assert "no such file" in capsys.readouterr().err
    np.save(tmp_path / "plain.npy", P.sobol(32, seed=0).coords.numpy())
    assert len(make_points(f"npz:{tmp_path / 'plain.npy'}", 32)) == 32
