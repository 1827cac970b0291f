"""Evaluating a trained run on every discretization (``dinet eval``) and assembling several
runs into one cross-discretization table (``dinet report``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import distributed
from .. import points as P
from .._io import atomic_write_text, check_writable, read_json
from ..models import load_model, model_entry, model_names
from ..points import PointSet
from .base import DEFAULT_TASK, Task, TaskData, get_task, task_names
from .discretize import make_points, point_sets

__all__ = ["DEFAULT_POINTS", "evaluate", "load_run", "report", "results_table"]

#: Test point counts per domain dimension (3-D: 12³, 16³, 24³ so the grid is defined).
DEFAULT_POINTS = {2: (256, 1024, 4096), 3: (1728, 4096, 13824)}


def _fmt(task: Task, metric: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}%" if metric in task.percent else f"{value:.4f}"


class _OnDevice:
    """A model run on ``device`` with CPU tensors in and out: evaluation reads its data and
    scores on the CPU. Other attributes are the model's."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model.to(device), device

    def __call__(self, x: torch.Tensor, *point_sets: PointSet) -> torch.Tensor:
        return self.model(x.to(self.device), *point_sets).cpu()

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def load_run(run: Path) -> tuple[dict, object]:
    """A run's config and model, with errors that say what a run folder holds."""
    if not (run / "model.pt").exists():
        raise ValueError(f"{run} holds no model.pt — pass a run folder written by `dinet train`")
    config = read_json(run / "config.json", "restore it, or rerun `dinet train`") if (
        run / "config.json").exists() else {}
    config.setdefault("task", DEFAULT_TASK)
    if config["task"] not in task_names():
        raise ValueError(f"{run / 'config.json'} names the task {config['task']!r}; valid: "
                         f"{', '.join(task_names())} — restore it, or rerun `dinet train`")
    model = load_model(run / "model.pt")
    extra = getattr(model, "checkpoint_extra", None) or {}
    task = extra.get("task", config["task"])
    if task != config["task"]:
        raise ValueError(f"{run}/model.pt was trained for the {task} task but config.json "
                         f"says {config['task']} — the folder mixes two runs")
    name = config.get("model")
    if name is not None and name not in model_names(task):
        raise ValueError(f"{run}: unknown {task} model {name!r}; valid: "
                         f"{', '.join(model_names(task))}")
    return config, model


@torch.no_grad()
def evaluate(run: str | Path, fields: str | Path, discretizations=None, points=None,
             batch_size: int = 128, seed: int = 1234, limit: int | None = None,
             plots: bool = True, examples: int = 4, device: str = "cpu",
             progress: bool = True) -> dict:
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
        progress: show a progress bar over the point sets and their batches.
    """
    run = Path(run)
    check_writable(run, "--run")  # before any scoring: results are written into the run
    discretizations = tuple(discretizations or ("sobol", "grid", "shrunk", "random",
                                                "jittered"))
    config, model = load_run(run)
    task = get_task(config["task"])
    model.eval()
    data = task.open_data(str(fields))
    points = tuple(int(c) for c in (points or DEFAULT_POINTS[data.dim]))
    n = len(data) if limit is None else min(limit, len(data))
    baseline = model_entry(task.name, config.get("model") or task.models[0]).grid_baseline
    if baseline:  # a discrete CNN reads the field on its own grid only
        discretizations, points = ("grid",), (model.size ** data.dim,)
    model = _OnDevice(model, distributed.select_device(device))
    # Every point set up front: an unknown name or impossible count fails before any work.
    sets = point_sets(discretizations, points, data.dim, seed)
    metrics: dict[str, dict[str, dict[str, float]]] = {m: {} for m in task.metrics}
    starts = range(0, n, batch_size)
    bar = tqdm(total=len(sets) * len(starts), unit="batch", disable=not progress,
               desc=f"eval {run.name}")
    for (kind, count), point_set in sets.items():
        bar.set_postfix_str(f"{kind} @ {count:,}")
        scorer = task.scorer(data, model, seed)
        for start in starts:
            idx = np.arange(start, min(n, start + batch_size))
            scorer.add(idx, data.sample(idx, point_set), point_set)
            bar.update()
        for name, value in scorer.result().items():
            metrics[name].setdefault(kind, {})[str(count)] = value
    bar.close()
    results = {"task": task.name, "run": str(run), "fields": str(fields), "n_items": n,
               "train_discretization": config.get("discretization"),
               "train_points": config.get("points"), "model": config.get("model"),
               "baseline": baseline, "primary": task.metrics[0], "metrics": metrics,
               "plots": []}
    if plots:
        results["plots"] = _plots(run, results, task, data, model, seed, examples)
    atomic_write_text(run / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(run / "results.md", results_table(results) + "\n")
    return results


def results_table(results: dict, metrics=None) -> str:
    """Markdown: per metric, one row per test discretization, one column per point count."""
    task = get_task(results.get("task", DEFAULT_TASK))
    metrics = metrics or task.shown_metrics
    lines = [f"{task.name}: model {results.get('model')} trained on "
             f"{results.get('train_discretization')} ({results.get('train_points')} points), "
             f"{results['n_items']} test items"]
    for metric in metrics:
        table = results["metrics"][metric]
        counts = _counts(table)
        lines += ["", f"**{metric}**" + (" (lower is better)" if metric in task.lower_is_better
                                         else ""), "",
                  "| test discretization | " + " | ".join(f"{int(c):,} points" for c in counts)
                  + " |", "|---|" + "---|" * len(counts)]
        for kind, row in table.items():
            lines.append(f"| {'own grid' if results.get('baseline') else kind} | "
                         + " | ".join(_fmt(task, metric, row.get(c)) for c in counts) + " |")
    return "\n".join(lines)


def _counts(table: dict[str, dict[str, float]]) -> list[str]:
    """Every point count of a metric's table, increasing (a ``npz:FILE`` row has only its
    own)."""
    return sorted({c for row in table.values() for c in row}, key=int)


# --- figures ---------------------------------------------------------------------------
def _plots(run: Path, results: dict, task: Task, data: TaskData, model, seed: int,
           examples: int) -> list[str]:
    from . import plots

    metric = results["primary"]
    table = results["metrics"][metric]
    kinds, counts = list(table), _counts(table)
    scale = 100.0 if metric in task.percent else 1.0
    label = f"{metric} (%)" if scale == 100 else metric
    title = (f"{results['model']} trained on {results['train_discretization']} "
             f"@ {results['train_points']}")
    written = [plots.heatmap(
        [[table[k].get(c, math.nan) for c in counts] for k in kinds], kinds,
        [f"{int(c):,}" for c in counts],
        run / "heatmap.png", title=title, row_title="test discretization",
        col_title="test points", scale=scale, fmt="{:.1f}" if scale == 100 else "{:.4f}",
        higher_is_better=metric not in task.lower_is_better)]
    if len(counts) > 1:
        reference = None
        if results["train_points"] and not results["baseline"]:
            reference = (int(results["train_points"]), "training resolution")
        written.append(plots.metric_vs_points(
            {k: table[k] for k in kinds}, run / "vs_points.png", metric=label, title=title,
            scale=scale, reference=reference))
    if examples > 0:
        pictures = _example_pictures(run, results, task, data, model, seed, examples)
        written += [pictures] if pictures is not None else []
    return [str(p) for p in written]


def _example_pictures(run: Path, results: dict, task: Task, data: TaskData, model, seed: int,
                      examples: int) -> Path | None:
    """The task's input | truth | prediction panels for the first items, read from the
    training discretization (a baseline: its own grid); None when the task has none."""
    from . import plots

    idx = np.arange(min(examples, len(data)))
    if results["baseline"]:
        points = P.grid((model.size,) * data.dim)
    else:
        points = make_points(results["train_discretization"] or "sobol",
                             int(results["train_points"] or DEFAULT_POINTS[data.dim][1]),
                             data.dim, seed=seed)
    panels = task.example_panels(data, model, idx, points)
    if panels is None:
        return None
    rows, cols = panels
    return plots.panels(rows, run / "examples.png", col_titles=cols,
                        title=f"{results['model']} — {task.name}", label_names=data.class_names)


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
        name = result.get("task", DEFAULT_TASK)
        metric = get_task(name).metrics[0] if name in task_names() else None
        table = result["metrics"].get(metric) if isinstance(result["metrics"], dict) else None
        if not isinstance(table, dict) or not table or not all(
                isinstance(row, dict) and row for row in table.values()):
            raise ValueError(f"{path} holds no {metric} table of the {result.get('task')!r} "
                             f"task — {remedy}")
        loaded.append(result)
    tasks = {r.get("task", DEFAULT_TASK) for r in loaded}
    if len(tasks) > 1:
        raise ValueError(f"the runs are of different tasks ({', '.join(sorted(tasks))}); "
                         "report one task at a time")
    task = get_task(tasks.pop())
    metric = task.metrics[0]
    lower = metric in task.lower_is_better
    columns: list[str] = []
    for r in loaded:
        for kind in r["metrics"][metric]:
            if kind not in columns and not r.get("baseline"):
                columns.append(kind)
    labels = [f"{r.get('model')} · {r.get('train_discretization')} @ {r.get('train_points')}"
              + (" (own grid)" if r.get("baseline") else "") for r in loaded]
    # runs of the same settings (e.g. with and without --distill) are told apart by folder
    labels = [f"{label} ({run})" if labels.count(label) > 1 else label
              for run, label in zip(runs, labels, strict=True)]
    rows, values, worst = [], [], []
    for run, r, label in zip(runs, loaded, labels, strict=True):
        table = r["metrics"][metric]
        count = str(points or r.get("train_points"))
        if r.get("baseline"):
            count = next(iter(next(iter(table.values()))))
        evaluated = _counts(table)
        if count not in evaluated:
            raise ValueError(f"{run} was evaluated at {', '.join(evaluated)} points, not "
                             f"{count} — pass --points one of those, or re-evaluate")
        rows.append(label)
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
    lines = [f"{task.name}: {head}" + (" (lower is better)" if lower else ""), "",
             "| trained on ↓ / tested on → | " + " | ".join(columns)
             + " | worst vs own discretization |", "|---|" + "---|" * (len(columns) + 1)]
    for label, row, w in zip(rows, values, worst, strict=True):
        gap = "–" if math.isnan(w) else (f"{100 * w:.1f} pts" if metric in task.percent
                                          else f"{w:+.4f}")
        lines.append(f"| {label} | " + " | ".join(_fmt(task, metric, v) for v in row)
                     + f" | {gap} |")
    markdown = "\n".join(lines)
    out = Path(out if out is not None else os.path.commonpath([r.resolve().parent for r in runs]))
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [atomic_write_text(out / "report.md", markdown + "\n")]
    from . import plots

    scale = 100.0 if metric in task.percent else 1.0
    files.append(plots.heatmap(values, rows, columns, out / "report.png",
                               title=f"{task.name}: {metric}", row_title="trained on",
                               col_title="tested on", scale=scale,
                               fmt="{:.1f}" if scale == 100 else "{:.4f}",
                               higher_is_better=not lower))
    return {"markdown": markdown, "rows": rows, "columns": columns, "values": values,
            "worst": worst, "files": [str(f) for f in files]}

