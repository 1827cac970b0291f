"""A kernel family and a task written outside dinet, registered, and run through the same
entry points as the built-in ones (``dinet train`` / ``dinet eval`` and their functions)
without any edit of the package."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from dinet import points as P
from dinet.cli import main
from dinet.data import fit_source
from dinet.models import DIModel, load_model, register_model
from dinet.models import base as model_base
from dinet.models import registry as model_registry
from dinet.neighbors.stencils import pair_stencil
from dinet.nn import DIConv, GlobalAvgPool, KernelFamily, families, register_kernel_family
from dinet.tasks import (
    FieldTaskData,
    Scorer,
    Task,
    TrainConfig,
    evaluate,
    get_task,
    register_task,
    task_names,
    train,
)
from dinet.tasks import base as task_base
from dinet.tasks.base import open_field_dataset


# --- a Gaussian radial-basis kernel family ---------------------------------------------
class GaussianFamily(KernelFamily):
    """φ_b(δ) = exp(-|δ - c_b|² / 2σ²) for centres c_b on the k^d kernel lattice, σ = h / 2:
    a fixed smooth basis (nothing learned but the coefficients W_b)."""

    help = "Gaussian bumps on the kernel lattice"

    @classmethod
    def build(cls, conv, n_basis, hidden):
        return None, (math.prod(conv.kernel_size),)

    @classmethod
    def centres(cls, conv, device, dtype):
        axes = [(torch.arange(k, device=device, dtype=dtype) - (k - 1) / 2) * h
                for k, h in zip(conv.kernel_size, conv.spacing, strict=True)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, conv.dim)

    @classmethod
    def stencil(cls, conv, points_in, points_out):
        return pair_stencil(points_in, points_out, cls.support(conv),
                            math.prod(conv.kernel_size))

    @classmethod
    def values(cls, conv, stencil, device, dtype):
        offsets = stencil.pair_tensor("offsets", device, dtype)  # (P, d)
        sigma = torch.as_tensor(conv.spacing, device=device, dtype=dtype) / 2
        delta = (offsets[:, None, :] - cls.centres(conv, device, dtype)[None]) / sigma
        phi = torch.exp(-0.5 * delta.square().sum(-1))  # (P, B)
        scale = stencil.pair_tensor("pair_weights", device, dtype) / math.prod(conv.spacing)
        return (phi * scale[:, None]).t().reshape(-1)


# --- a task: regress the mean of a field over the domain --------------------------------
class MeanData(FieldTaskData):
    """A field dataset whose target is each field's mean over [-1, 1]^2 (on a 32² grid)."""

    def __init__(self, dataset, spec):
        super().__init__("field-mean", dataset, spec)
        self.n_classes = 1
        grid = P.grid((32, 32))
        self.means = self.dataset.sample(np.arange(len(dataset)), grid).mean(1)  # (N, C)

    def targets(self, idx, coords=None):
        return self.means[torch.as_tensor(idx)]


class MeanScorer(Scorer):
    def __init__(self, data, model):
        self.data, self.model, self.se, self.count = data, model, 0.0, 0

    def add(self, idx, x, points):
        err = self.model(x, points) - self.data.targets(idx)
        self.se += float(err.square().sum())
        self.count += err.numel()

    def result(self):
        return {"mse": self.se / self.count}


class MeanTask(Task):
    name = "field-mean"
    help = "field-mean: regress a field's mean"
    metrics = ("mse",)
    lower_is_better = frozenset(metrics)

    def open_data(self, spec):
        return MeanData(open_field_dataset(spec, self.name), spec)

    def loss(self, out, data, idx, where, points, query):
        target = data.targets(idx).to(out.device)
        err = nn.functional.mse_loss(out, target)
        return err, float(err.detach()) * target.numel(), target.numel()

    def scorer(self, data, model, seed):
        return MeanScorer(data, model)


class MeanNet(DIModel):
    """conv (any kernel family) → ReLU → global average (an integral) → linear."""

    def __init__(self, in_channels=1, width=4, base_spacing=0.125, kernel="spline",
                 quadrature="weights"):
        super().__init__(in_channels=in_channels, width=width, base_spacing=base_spacing,
                         kernel=kernel, quadrature=quadrature)
        self.conv = DIConv(in_channels, width, 3, spacing=base_spacing, kernel=kernel)
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(width, in_channels)

    def forward(self, x, points):
        points = self.prepare_points(points)
        return self.head(self.pool(torch.relu(self.conv(x, points)), points))


@pytest.fixture
def plugins(monkeypatch):
    """Register the family, the task and its model for one test; the registries are put
    back afterwards, so other tests see the built-in ones only."""
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    monkeypatch.setattr(task_base, "_TASKS", dict(task_base._TASKS))
    monkeypatch.setattr(model_registry, "_MODELS", dict(model_registry._MODELS))
    register_kernel_family("gauss", GaussianFamily)
    register_task(MeanTask())
    register_model("field-mean", "meannet",
                   lambda *, in_channels, base_spacing, kernel, quadrature, **_: MeanNet(
                       in_channels, base_spacing=base_spacing, kernel=kernel,
                       quadrature=quadrature), default=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("plugin") / "digits"
    fit_source("digits", out, limit=24, size=16, fit_options={"max_steps": 20},
               shard_size=12, progress=False)
    return out


def test_gaussian_family_is_its_quadrature_sum(plugins):
    """The registered family in a DIConv equals the sum it stands for, by hand."""
    conv = DIConv(2, 3, 3, spacing=0.2, kernel="gauss").double()
    assert conv.weight.shape == (3, 2, 9) and "kernel='gauss'" in repr(conv)
    pts_in, pts_out = P.sobol(400, seed=0), P.sobol(20, seed=1)
    x = torch.randn(1, 400, 2, dtype=torch.float64)
    c_in, c_out = pts_in.coords.double(), pts_out.coords.double()
    delta = c_in[None] - c_out[:, None]  # (out, in, 2)
    inside = (delta.abs() <= torch.tensor(conv.support).double()).all(-1)
    centres = GaussianFamily.centres(conv, "cpu", torch.float64)
    phi = torch.exp(-0.5 * ((delta[:, :, None] - centres) / 0.1).square().sum(-1))
    k = (inside[..., None] * phi * pts_in.weights.double()[None, :, None]) / 0.04  # (o, i, b)
    expected = torch.einsum("oib,ic,dcb->od", k, x[0], conv.weight) + conv.bias
    torch.testing.assert_close(conv(x, pts_in, pts_out)[0], expected)


def test_a_new_task_and_family_train_and_evaluate_through_the_entry_points(
        plugins, digits, tmp_path, capsys):
    assert "field-mean" in task_names() and get_task("field-mean").models == ("meannet",)
    # The library entry point: one epoch on Sobol points with the Gaussian family.
    out = tmp_path / "lib"
    last = train(TrainConfig(fields=str(digits), out=str(out), task="field-mean",
                             kernel="gauss", points=256, batch_size=8, epochs=1),
                 progress=False)
    assert set(last) >= {"loss", "mse"} and math.isfinite(last["mse"]) and last["steps"] == 3
    model = load_model(out / "model.pt")
    assert isinstance(model, MeanNet) and model.conv.kernel == "gauss"
    results = evaluate(out, digits, ("sobol", "grid"), (256,), plots=True)
    assert results["task"] == "field-mean" and results["primary"] == "mse"
    assert set(results["metrics"]["mse"]) == {"sobol", "grid"}
    assert (out / "heatmap.png").exists() and not (out / "examples.png").exists()
    # The command line: its --task and --kernel choices come from the registries.
    run = tmp_path / "cli"
    assert main(["train", "--task", "field-mean", "--kernel", "gauss", "--fields",
                 str(digits), "--points", "256", "--batch-size", "12", "--out",
                 str(run)]) == 0
    assert "mse" in capsys.readouterr().out
    assert main(["eval", "--run", str(run), "--fields", str(digits), "--discretizations",
                 "sobol", "--points", "256", "--no-plots"]) == 0
    assert "field-mean: model meannet" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["kernel"] == "gauss"
    # dinet predict: without a predict hook of its own, the task's raw output
    answers = tmp_path / "answers.json"
    assert main(["predict", "--run", str(run), "--fields", str(digits), "--items", "0:3",
                 "--out", str(answers)]) == 0
    assert "item 2: output min" in capsys.readouterr().out
    points = P.sobol(256, 2, seed=0)
    with torch.no_grad():
        want = load_model(run / "model.pt").eval()(
            open_field_dataset(str(digits), "field-mean").sample([0, 1, 2], points), points)
    np.testing.assert_allclose(json.loads(answers.read_text())["output"], want, atol=1e-6)


PLUGIN = """
from torch import nn
from dinet.models import DIModel, register_model
from dinet.nn import GlobalAvgPool


class PluginMeanClassifier(DIModel):
    def __init__(self, in_channels=1, n_classes=10):
        super().__init__(in_channels=in_channels, n_classes=n_classes)
        self.pool, self.head = GlobalAvgPool(), nn.Linear(in_channels, n_classes)

    def forward(self, x, points):
        return self.head(self.pool(x, self.prepare_points(points)))


register_model("classify", "plugin-mean", lambda *, in_channels, n_classes, **_:
               PluginMeanClassifier(in_channels, n_classes))
"""


def test_the_command_line_imports_plugins_before_it_parses(digits, tmp_path, monkeypatch,
                                                           capsys):
    """``dinet --plugin FILE`` registers a model (and its class) from a file of the user's,
    for train and for eval of its run; without it both say what to do in one line."""
    monkeypatch.setattr(model_registry, "_MODELS", dict(model_registry._MODELS))
    monkeypatch.setattr(model_base, "MODEL_CLASSES", dict(model_base.MODEL_CLASSES))
    plugin = tmp_path / "my_models.py"
    plugin.write_text(PLUGIN)
    run = tmp_path / "run"
    train_argv = ["train", "--model", "plugin-mean", "--fields", str(digits), "--points",
                  "64", "--batch-size", "12", "--out", str(run)]
    eval_argv = ["eval", "--run", str(run), "--fields", str(digits), "--discretizations",
                 "sobol", "--points", "64", "--no-plots"]
    assert main(train_argv) == 2
    assert "unknown classify model 'plugin-mean'" in capsys.readouterr().err
    assert main(["--plugin", str(plugin), *train_argv]) == 0
    # a fresh process: the class is unknown until the plugin is imported again
    model_base.MODEL_CLASSES.pop("PluginMeanClassifier")
    for name in [m for m in sys.modules if m.startswith("dinet_plugin_")]:
        monkeypatch.delitem(sys.modules, name)
    assert main(eval_argv) == 2
    assert "import the module that defines it first" in capsys.readouterr().err
    assert main(["--plugin", str(plugin), *eval_argv]) == 0
    assert "model plugin-mean" in capsys.readouterr().out
    not_python = tmp_path / "picture.png"  # a file, but none Python can import
    not_python.write_bytes(b"\x89PNG")
    for bad, message in (("no_such_dinet_plugin", "No module named 'no_such_dinet_plugin'"),
                         (str(tmp_path / "gone.py"), "no such file"),
                         (str(not_python), "not a Python source file")):
        assert main(["--plugin", bad, *eval_argv]) == 2
        err = capsys.readouterr().err
        assert f"--plugin {bad}: " in err and message in err
