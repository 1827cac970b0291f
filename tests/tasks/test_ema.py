"""``--ema``: a moving average of the weights, saved as the run's model, resumed exactly."""

from __future__ import annotations

import pytest
import torch

from dinet.cli import main
from dinet.models import load_model
from dinet.tasks import TrainConfig, WeightAverage, train


def _config(fields, out, **kw):
    base = dict(fields=str(fields), out=str(out), model="dinet2", points=64, epochs=2,
                batch_size=4, lr=3e-3, discretization="sobol")
    return TrainConfig(**{**base, **kw})


def test_the_average_follows_its_formula_and_copies_counters():
    torch.manual_seed(0)
    live = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in live.state_dict().items()}
    average = WeightAverage(live, decay=0.5)
    expected = {k: v.double() for k, v in start.items() if v.is_floating_point()}
    for step, value in enumerate((1.0, -2.0, 3.0, 0.5, 4.0, -1.0, 2.0, 7.0, -3.0, 1.5)):
        for tensor in live.state_dict().values():
            tensor.fill_(value if tensor.is_floating_point() else step)
        average.update(live, step)
        d = min(0.5, (1 + step) / (10 + step))  # the warm-up decay, then the decay itself
        expected = {k: d * v + (1 - d) * value for k, v in expected.items()}
    got = average.model.state_dict()
    for name, want in expected.items():
        torch.testing.assert_close(got[name].double(), want, rtol=0, atol=1e-6)
    assert int(got["1.num_batches_tracked"]) == 9  # copied, not averaged
    assert not any(p.requires_grad for p in average.model.parameters())
    assert torch.equal(live[0].weight, torch.full((2, 2), 1.5))  # the model is left alone


def test_a_run_with_ema_saves_the_average_and_resumes_exactly(class_fields, tmp_path,
                                                               monkeypatch):
    clean = train(_config(class_fields, tmp_path / "clean", ema=0.9), progress=False)
    state = torch.load(tmp_path / "clean" / "train_state.pt", weights_only=True)
    saved = load_model(tmp_path / "clean" / "model.pt").state_dict()
    assert all(torch.equal(saved[k], state["ema"][k]) for k in saved)  # model.pt: the average
    assert not all(torch.equal(saved[k], state["model"][k]) for k in saved)

    real, calls = torch.nn.functional.cross_entropy, []

    def dying(*args, **kwargs):  # dies in the middle of the second epoch (4 steps an epoch)
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", dying)
    config = _config(class_fields, tmp_path / "resumed", ema=0.9)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", real)
    assert train(config, resume=True, progress=False) == clean
    resumed = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=True)
    for part in ("model", "ema"):
        assert all(torch.equal(state[part][k], resumed[part][k]) for k in state[part])


def test_the_average_does_not_change_what_is_trained(class_fields, tmp_path):
    plain = train(_config(class_fields, tmp_path / "plain"), progress=False)
    averaged = train(_config(class_fields, tmp_path / "ema", ema=0.9), progress=False)
    assert plain == averaged  # the same epochs' losses and accuracies
    a = torch.load(tmp_path / "plain" / "train_state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ema" / "train_state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # what benchmarks/ema_vs_live.py relies on


def test_a_vanishing_decay_is_the_last_weights(class_fields, tmp_path):
    train(_config(class_fields, tmp_path / "run", ema=1e-9, epochs=1), progress=False)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    for name, value in state["ema"].items():  # updated after the last step, fully
        torch.testing.assert_close(value, state["model"][name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, float("nan")])
def test_ema_outside_zero_one_is_refused(class_fields, tmp_path, capsys, decay):
    with pytest.raises(ValueError, match=r"ema must be a decay in \(0, 1\)"):
        train(_config(class_fields, tmp_path / "run", ema=decay), progress=False)
    assert main(["train", "--fields", str(class_fields), "--out", str(tmp_path / "cli"),
                 "--ema", str(decay)]) == 2
    assert "ema must be a decay" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cli").exists()
