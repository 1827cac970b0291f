"""Evaluating a trained classifier on every discretization: ``dinet eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write_text
from ..fields import FieldDataset
from ..models import load_model
from .discretize import DISCRETIZATIONS, make_points

__all__ = ["evaluate", "results_table"]


@torch.no_grad()
def evaluate(run: str | Path, fields: str | Path,
             discretizations=("sobol", "grid", "shrunk", "random", "jittered"),
             points=(256, 1024, 4096), batch_size: int = 256, seed: int = 1234,
             limit: int | None = None) -> dict:
    """Accuracy of the run's model on the field dataset ``fields`` for every discretization
    and number of points; writes ``results.json`` and ``results.md`` into the run folder.

    Each (discretization, N) uses one fixed draw (``seed``), so results are reproducible;
    fields are sampled once per point set (cached by :class:`FieldDataset`).
    """
    run = Path(run)
    for kind in discretizations:
        if kind not in DISCRETIZATIONS:
            raise ValueError(f"unknown discretization {kind!r}; valid: "
                             f"{', '.join(DISCRETIZATIONS)}")
    model_path = run / "model.pt"
    if not model_path.exists():
        raise ValueError(f"{run} holds no model.pt — pass a run folder written by `dinet train`")
    model = load_model(model_path)
    model.eval()
    dataset = FieldDataset.open(fields)
    if dataset.labels is None:
        raise ValueError(f"{fields} has no labels — evaluation needs a labelled field dataset")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    labels = torch.from_numpy(dataset.labels[:n])
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() \
        else {}
    accuracy: dict[str, dict[str, float]] = {}
    for kind in discretizations:
        accuracy[kind] = {}
        for count in points:
            point_set = make_points(kind, int(count), seed=seed)
            correct = 0
            for start in range(0, n, batch_size):
                idx = np.arange(start, min(n, start + batch_size))
                logits = model(dataset.sample(idx, point_set), point_set)
                correct += int((logits.argmax(1) == labels[idx]).sum())
            accuracy[kind][str(count)] = correct / n
    results = {"run": str(run), "fields": str(fields), "n_fields": n,
               "train_discretization": config.get("discretization"),
               "train_points": config.get("points"), "model": config.get("model"),
               "accuracy": accuracy}
    atomic_write_text(run / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(run / "results.md", results_table(results) + "\n")
    return results


def results_table(results: dict) -> str:
    """Markdown: one row per test discretization, one column per number of points."""
    accuracy = results["accuracy"]
    counts = list(next(iter(accuracy.values())))
    lines = [f"trained on {results.get('train_discretization')} "
             f"({results.get('train_points')} points), model {results.get('model')}, "
             f"{results['n_fields']} test fields", "",
             "| test discretization | " + " | ".join(f"{int(c):,} points" for c in counts) + " |",
             "|---|" + "---|" * len(counts)]
    for kind, row in accuracy.items():
        lines.append(f"| {kind} | " + " | ".join(f"{100 * row[c]:.1f}%" for c in counts) + " |")
    return "\n".join(lines)
