"""Evaluating a trained run on every discretization (``dinet eval``) and assembling several
runs into one cross-discretization table (``dinet report``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from .. import distributed
from .. import points as P
from .._io import atomic_write_text, check_writable, read_json
from ..models import GridCNNClassifier, GridCNNSegmenter, VoxelCNN3d, load_model
from ..points import PointSet, values_to_image
from .data import TaskData, open_task_data
from .discretize import make_points, point_sets
from .metrics import confusion, mean_iou, pixel_accuracy
from .train import MODELS

__all__ = ["DEFAULT_POINTS", "METRICS", "evaluate", "report", "results_table"]

#: Test point counts per domain dimension (3-D: 12³, 16³, 24³ so the grid is defined).
DEFAULT_POINTS = {2: (256, 1024, 4096), 3: (1728, 4096, 13824)}
#: Metrics per task; the first is the primary one (tables, heat maps, reports).
METRICS = {
    "classify": ("accuracy",),
    "segment": ("miou", "pixel_accuracy", "miou_pixel_centres", "pixel_accuracy_pixel_centres"),
    "sdf": ("mse", "mae"),
}
_LOWER_IS_BETTER = {"mse", "mae"}
_PERCENT = {"accuracy", "miou", "pixel_accuracy", "miou_pixel_centres",
            "pixel_accuracy_pixel_centres"}
_SDF_QUERIES = 4096
_BASELINES = (GridCNNClassifier, GridCNNSegmenter, VoxelCNN3d)


def _fmt(metric: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}%" if metric in _PERCENT else f"{value:.4f}"


class _Scorer:
    """Accumulates one task's metrics over batches for one input point set."""

    def __init__(self, task: str, data: TaskData, model, seed: int) -> None:
        self.task, self.data, self.model = task, data, model
        self.sums: dict[str, float] = {}
        if task == "segment":
            side = data.size
            self.queries = {"": make_points("sobol", side * side, seed=seed + 1),
                            "_pixel_centres": P.grid((side, side))}
            self.conf = {k: torch.zeros(data.n_classes, data.n_classes, dtype=torch.long)
                         for k in self.queries}
        elif task == "sdf":
            self.query = make_points("sobol", _SDF_QUERIES, 3, seed=seed + 1)

    def add(self, idx: np.ndarray, x: torch.Tensor, points: PointSet) -> None:
        if self.task == "classify":
            correct = (self.model(x, points).argmax(1) == self.data.targets(idx)).sum()
            self.sums["correct"] = self.sums.get("correct", 0) + int(correct)
            self.sums["count"] = self.sums.get("count", 0) + len(idx)
        elif self.task == "segment":
            for key, query in self.queries.items():
                pred = self.model(x, points, query).argmax(-1)
                self.conf[key] += confusion(pred, self.data.targets(idx, query.coords),
                                            self.data.n_classes)
        else:
            err = self.model(x, points, self.query) - self.data.targets(idx, self.query.coords)
            self.sums["se"] = self.sums.get("se", 0.0) + float(err.square().sum())
            self.sums["ae"] = self.sums.get("ae", 0.0) + float(err.abs().sum())
            self.sums["count"] = self.sums.get("count", 0) + err.numel()

    def result(self) -> dict[str, float]:
        if self.task == "classify":
            return {"accuracy": self.sums["correct"] / self.sums["count"]}
        if self.task == "segment":
            out = {}
            for key, conf in self.conf.items():
                out["miou" + key] = mean_iou(conf)
                out["pixel_accuracy" + key] = pixel_accuracy(conf)
            return out
        return {"mse": self.sums["se"] / self.sums["count"],
                "mae": self.sums["ae"] / self.sums["count"]}


class _OnDevice:
    """A model run on ``device`` with CPU tensors in and out: evaluation reads its data and
    scores on the CPU. Other attributes are the model's."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model.to(device), device

    def __call__(self, x: torch.Tensor, *point_sets: PointSet) -> torch.Tensor:
        return self.model(x.to(self.device), *point_sets).cpu()

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def _load_run(run: Path) -> tuple[dict, object]:
    """A run's config and model, with errors that say what a run folder holds."""
    if not (run / "model.pt").exists():
        raise ValueError(f"{run} holds no model.pt — pass a run folder written by `dinet train`")
    config = read_json(run / "config.json", "restore it, or rerun `dinet train`") if (
        run / "config.json").exists() else {}
    config.setdefault("task", "classify")
    if config["task"] not in METRICS:
        raise ValueError(f"{run / 'config.json'} names the task {config['task']!r}; valid: "
                         f"{', '.join(METRICS)} — restore it, or rerun `dinet train`")
    model = load_model(run / "model.pt")
    extra = getattr(model, "checkpoint_extra", None) or {}
    task = extra.get("task", config["task"])
    if task != config["task"]:
        raise ValueError(f"{run}/model.pt was trained for the {task} task but config.json "
                         f"says {config['task']} — the folder mixes two runs")
    name = config.get("model")
    if name is not None and name not in MODELS[task]:
        raise ValueError(f"{run}: unknown {task} model {name!r}; valid: "
                         f"{', '.join(MODELS[task])}")
    return config, model


@torch.no_grad()
def evaluate(run: str | Path, fields: str | Path, discretizations=None, points=None,
             batch_size: int = 128, seed: int = 1234, limit: int | None = None,
             plots: bool = True, examples: int = 4, device: str = "cpu") -> dict:
    """Metrics of the run's model on ``fields`` for every discretization and number of
    points; writes ``results.json``, ``results.md`` and (``plots``) PNG figures into the
    run folder.

    Each (discretization, N) uses one fixed draw (``seed``), so results are reproducible;
    field datasets are sampled once per point set (cached). A grid CNN baseline sees the
    fields only on its own grid, so it is scored there once ("own grid").

    Args:
        run: a folder written by ``dinet train``.
        fields: the test data (a field dataset folder, or ``balls:N:SEED`` for sdf).
        discretizations: test discretizations (default: sobol, grid, shrunk, random,
            jittered): names from :func:`~dinet.tasks.discretizations`, or ``npz:FILE``
            (your own coordinates, scored once at their own number of points).
        points: test point counts (default: :data:`DEFAULT_POINTS` for the dimension).
        batch_size: items per forward pass.
        seed: the draw of every randomised discretization and of the query points.
        limit: score only the first ``limit`` items.
        plots: write the PNG figures.
        examples: items shown in the segmentation / SDF pictures.
        device: where the model runs: ``auto`` (CUDA when available), ``cpu`` or ``cuda``;
            the data are read and scored on the CPU.
    """
    run = Path(run)
    check_writable(run, "--run")  # before any scoring: results are written into the run
    discretizations = tuple(discretizations or ("sobol", "grid", "shrunk", "random",
                                                "jittered"))
    config, model = _load_run(run)
    task = config["task"]
    model.eval()
    data = open_task_data(task, fields)
    points = tuple(int(c) for c in (points or DEFAULT_POINTS[data.dim]))
    n = len(data) if limit is None else min(limit, len(data))
    baseline = isinstance(model, _BASELINES)
    if baseline:  # a discrete CNN reads the field on its own grid only
        discretizations, points = ("grid",), (model.size ** data.dim,)
    model = _OnDevice(model, distributed.select_device(device))
    # Every point set up front: an unknown name or impossible count fails before any work.
    sets = point_sets(discretizations, points, data.dim, seed)
    metrics: dict[str, dict[str, dict[str, float]]] = {m: {} for m in METRICS[task]}
    for (kind, count), point_set in sets.items():
        scorer = _Scorer(task, data, model, seed)
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            scorer.add(idx, data.sample(idx, point_set), point_set)
        for name, value in scorer.result().items():
            metrics[name].setdefault(kind, {})[str(count)] = value
    results = {"task": task, "run": str(run), "fields": str(fields), "n_items": n,
               "train_discretization": config.get("discretization"),
               "train_points": config.get("points"), "model": config.get("model"),
               "baseline": baseline, "primary": METRICS[task][0], "metrics": metrics,
               "plots": []}
    if plots:
        results["plots"] = _plots(run, results, data, model, seed, examples)
    atomic_write_text(run / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(run / "results.md", results_table(results) + "\n")
    return results


def results_table(results: dict, metrics=None) -> str:
    """Markdown: per metric, one row per test discretization, one column per point count."""
    task = results.get("task", "classify")
    metrics = metrics or (METRICS[task][:1] if task != "segment" else
                          ("miou", "miou_pixel_centres"))
    lines = [f"{task}: model {results.get('model')} trained on "
             f"{results.get('train_discretization')} ({results.get('train_points')} points), "
             f"{results['n_items']} test items"]
    for metric in metrics:
        table = results["metrics"][metric]
        counts = _counts(table)
        lines += ["", f"**{metric}**" + (" (lower is better)" if metric in _LOWER_IS_BETTER
                                         else ""), "",
                  "| test discretization | " + " | ".join(f"{int(c):,} points" for c in counts)
                  + " |", "|---|" + "---|" * len(counts)]
        for kind, row in table.items():
            lines.append(f"| {'own grid' if results.get('baseline') else kind} | "
                         + " | ".join(_fmt(metric, row.get(c)) for c in counts) + " |")
    return "\n".join(lines)


def _counts(table: dict[str, dict[str, float]]) -> list[str]:
    """Every point count of a metric's table, increasing (a ``npz:FILE`` row has only its
    own)."""
    return sorted({c for row in table.values() for c in row}, key=int)


# --- figures ---------------------------------------------------------------------------
def _plots(run: Path, results: dict, data: TaskData, model, seed: int,
           examples: int) -> list[str]:
    from . import plots

    metric = results["primary"]
    table = results["metrics"][metric]
    kinds, counts = list(table), _counts(table)
    scale = 100.0 if metric in _PERCENT else 1.0
    label = f"{metric} (%)" if scale == 100 else metric
    title = (f"{results['model']} trained on {results['train_discretization']} "
             f"@ {results['train_points']}")
    written = [plots.heatmap(
        [[table[k].get(c, math.nan) for c in counts] for k in kinds], kinds,
        [f"{int(c):,}" for c in counts],
        run / "heatmap.png", title=title, row_title="test discretization",
        col_title="test points", scale=scale, fmt="{:.1f}" if scale == 100 else "{:.4f}",
        higher_is_better=metric not in _LOWER_IS_BETTER)]
    if len(counts) > 1:
        reference = None
        if results["train_points"] and not results["baseline"]:
            reference = (int(results["train_points"]), "training resolution")
        written.append(plots.metric_vs_points(
            {k: table[k] for k in kinds}, run / "vs_points.png", metric=label, title=title,
            scale=scale, reference=reference))
    if data.task in ("segment", "sdf") and examples > 0:
        written.append(_example_pictures(run, results, data, model, seed, examples))
    return [str(p) for p in written]


def _example_pictures(run: Path, results: dict, data: TaskData, model, seed: int,
                      examples: int) -> Path:
    """Input | truth | prediction for the first items: segmentation at pixel centres, SDF
    on the z = 0 slice (array axis 0 = 0) at 64 × 64 points."""
    from . import plots

    idx = np.arange(min(examples, len(data)))
    if results["baseline"]:
        points = P.grid((model.size,) * data.dim)
    else:
        points = make_points(results["train_discretization"] or "sobol",
                             int(results["train_points"] or DEFAULT_POINTS[data.dim][1]),
                             data.dim, seed=seed)
    x = data.sample(idx, points)
    rows = []
    if data.task == "segment":
        side = data.size
        pixels = P.grid((side, side))
        image = values_to_image(data.sample(idx, pixels), pixels)[:, 0].numpy()
        pred = model(x, points, pixels).argmax(-1)
        pred = values_to_image(pred[..., None].float(), pixels)[:, 0].long().numpy()
        truth = data.targets(idx, pixels.coords)
        truth = values_to_image(truth[..., None].float(), pixels)[:, 0].long().numpy()
        for i in range(len(idx)):
            rows.append([{"image": image[i], "kind": "image"},
                         {"image": truth[i], "kind": "labels"},
                         {"image": pred[i], "kind": "labels"}])
        cols = ["input field", "truth", f"prediction ({points.kind}, {len(points):,} points)"]
    else:
        side = 64
        axis = (torch.arange(side, dtype=torch.float32) * 2 + 1) / side - 1
        u, v = torch.meshgrid(axis, axis, indexing="ij")
        coords = torch.stack([torch.zeros_like(u), u, v], -1).reshape(-1, 3)
        query = P.from_coords(coords)
        rgba = data.inputs(idx, coords)
        picture = (rgba[..., :3] * rgba[..., 3:]).reshape(len(idx), side, side, 3).numpy()
        truth = data.targets(idx, coords).reshape(len(idx), side, side).numpy()
        pred = model(x, points, query).reshape(len(idx), side, side).numpy()
        for i in range(len(idx)):
            rows.append([{"image": picture[i], "kind": "image"},
                         {"image": truth[i], "kind": "sdf"},
                         {"image": pred[i], "kind": "sdf"}])
        cols = ["input (z = 0)", "true SDF", f"predicted ({points.kind}, {len(points):,} pts)"]
    return plots.panels(rows, run / "examples.png", col_titles=cols,
                        title=f"{results['model']} — {data.task}")


# --- several runs -----------------------------------------------------------------------
def report(runs, points: int | None = None, out: str | Path | None = None) -> dict:
    """One cross-discretization table of several evaluated runs: a row per run (its
    training discretization), a column per test discretization, the primary metric at
    ``points`` test points (default: each run's training resolution); writes
    ``report.md`` and ``report.png`` (heat map) into ``out`` (default: the runs' common
    parent folder) and returns ``{"markdown", "rows", "columns", "values", "files"}``.
    """
    runs = [Path(r) for r in runs]
    if not runs:
        raise ValueError("dinet report needs at least one run folder")
    loaded = []
    for run in runs:
        path = run / "results.json"
        if not path.exists():
            raise ValueError(f"{run} has no results.json — run `dinet eval --run {run}` first")
        remedy = f"rerun `dinet eval --run {run}` to rewrite it"
        result = read_json(path, remedy, keys=("metrics",))
        metric = METRICS.get(result.get("task", "classify"), (None,))[0]
        table = result["metrics"].get(metric) if isinstance(result["metrics"], dict) else None
        if not isinstance(table, dict) or not table or not all(
                isinstance(row, dict) and row for row in table.values()):
            raise ValueError(f"{path} holds no {metric} table of the {result.get('task')!r} "
                             f"task — {remedy}")
        loaded.append(result)
    tasks = {r.get("task", "classify") for r in loaded}
    if len(tasks) > 1:
        raise ValueError(f"the runs are of different tasks ({', '.join(sorted(tasks))}); "
                         "report one task at a time")
    task = tasks.pop()
    metric = METRICS[task][0]
    lower = metric in _LOWER_IS_BETTER
    columns: list[str] = []
    for r in loaded:
        for kind in r["metrics"][metric]:
            if kind not in columns and not r.get("baseline"):
                columns.append(kind)
    rows, values, worst = [], [], []
    for run, r in zip(runs, loaded, strict=True):
        table = r["metrics"][metric]
        count = str(points or r.get("train_points"))
        if r.get("baseline"):
            count = next(iter(next(iter(table.values()))))
        evaluated = _counts(table)
        if count not in evaluated:
            raise ValueError(f"{run} was evaluated at {', '.join(evaluated)} points, not "
                             f"{count} — pass --points one of those, or re-evaluate")
        label = f"{r.get('model')} · {r.get('train_discretization')} @ {r.get('train_points')}"
        rows.append(label + (" (own grid)" if r.get("baseline") else ""))
        if r.get("baseline"):
            value = next(iter(table.values()))[count]
            values.append([value] * len(columns))
            worst.append(float("nan"))
            continue
        row = [table.get(k, {}).get(count, float("nan")) for k in columns]
        values.append(row)
        diagonal = table.get(r.get("train_discretization"), {}).get(count)
        finite = [v for v in row if not math.isnan(v)]
        if diagonal is None or not finite:
            worst.append(float("nan"))
        else:
            worst.append(max(finite) - diagonal if lower else diagonal - min(finite))
    head = f"{metric} at {'each run’s training resolution' if points is None else points}"
    lines = [f"{task}: {head}" + (" (lower is better)" if lower else ""), "",
             "| trained on ↓ / tested on → | " + " | ".join(columns)
             + " | worst vs own discretization |", "|---|" + "---|" * (len(columns) + 1)]
    for label, row, w in zip(rows, values, worst, strict=True):
        gap = "–" if math.isnan(w) else (f"{100 * w:.1f} pts" if metric in _PERCENT
                                          else f"{w:+.4f}")
        lines.append(f"| {label} | " + " | ".join(_fmt(metric, v) for v in row)
                     + f" | {gap} |")
    markdown = "\n".join(lines)
    out = Path(out if out is not None else os.path.commonpath([r.resolve().parent for r in runs]))
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [atomic_write_text(out / "report.md", markdown + "\n")]
    from . import plots

    scale = 100.0 if metric in _PERCENT else 1.0
    files.append(plots.heatmap(values, rows, columns, out / "report.png",
                               title=f"{task}: {metric}", row_title="trained on",
                               col_title="tested on", scale=scale,
                               fmt="{:.1f}" if scale == 100 else "{:.4f}",
                               higher_is_better=not lower))
    return {"markdown": markdown, "rows": rows, "columns": columns, "values": values,
            "worst": worst, "files": [str(f) for f in files]}

