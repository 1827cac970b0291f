"""Training a DI-Net classifier on a field dataset: ``dinet train --task classify``.

Every step draws the batch's discretization afresh when it is randomised (scrambled Sobol,
shrunk, random, jittered, mixed), evaluates the batch's fields on it — with the field
augmentations applied to the coordinates and values, not to the points the model sees — and
takes one AdamW step under a cosine schedule. Seeds are derived from (seed, epoch, step), so
a run is reproducible on CPU, and a run resumed from its last epoch checkpoint continues
exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .._io import atomic_torch_save, atomic_write_text
from ..fields import FieldDataset
from ..models import Classifier
from .discretize import DISCRETIZATIONS, RANDOMISED, make_points

__all__ = ["TrainConfig", "train"]

TASKS = ("classify",)


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded in ``config.json``)."""

    fields: str
    out: str
    task: str = "classify"
    model: str = "dinet2"
    discretization: str = "sobol"
    points: int = 1024
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0
    augment: bool = True
    quadrature: str = "weights"
    kernel: str = "spline"
    base_spacing: float | None = None  # None: 2 / (the fields' image size)
    limit: int | None = None

    def check(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid (so far): {', '.join(TASKS)}")
        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(f"unknown discretization {self.discretization!r}; valid: "
                             f"{', '.join(DISCRETIZATIONS)}")
        for name in ("points", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")


def _derived_seed(*keys: int) -> int:
    """A seed derived from non-negative integers (seed, epoch[, step])."""
    return int(np.random.SeedSequence([abs(k) for k in keys]).generate_state(1)[0])


def _augment(coords: torch.Tensor, gen: torch.Generator, batch: int):
    """Per-field flips (negate a coordinate) and small coordinate noise; returns the
    coordinates to evaluate each field at, ``(B, N, d)``."""
    d = coords.shape[1]
    flips = torch.where(torch.rand(batch, 1, d, generator=gen) < 0.5, -1.0, 1.0)
    noise = 0.01 * torch.randn(batch, 1, d, generator=gen)
    return (coords[None] * flips + noise).clamp(-1, 1)


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train per ``config``; write ``config.json``, ``metrics.jsonl``, ``model.pt`` and
    ``train_state.pt`` (optimizer, schedule, epoch) under ``config.out``.

    Returns the last epoch's metrics.
    """
    config.check()
    out = Path(config.out)
    dataset = FieldDataset.open(config.fields)
    if dataset.labels is None:
        raise ValueError(f"{config.fields} has no labels — classification needs a labelled "
                         "field dataset (e.g. `dinet fit --source fashion-mnist`)")
    n = len(dataset) if config.limit is None else min(config.limit, len(dataset))
    labels = torch.from_numpy(dataset.labels[:n])
    size = dataset.manifest.get("source", {}).get("image_shape", [32])[0]
    torch.manual_seed(config.seed)
    model = Classifier(config.model, in_channels=dataset.out_dim,
                       n_classes=int(dataset.labels.max()) + 1,
                       base_spacing=config.base_spacing or 2.0 / size,
                       quadrature=config.quadrature, kernel=config.kernel)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    state_path, first_epoch = out / "train_state.pt", 0
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise ValueError(f"{out} already holds a run — pass --resume to continue it, or "
                             "choose another --out")
        if not (out / "config.json").exists():
            raise ValueError(f"{out} is not a dinet run (no config.json) — choose another --out")
        saved = json.loads((out / "config.json").read_text())
        if {k: v for k, v in saved.items() if k != "epochs"} != {
                k: v for k, v in asdict(config).items() if k != "epochs"}:
            raise ValueError(f"{out} holds a run with other settings ({out / 'config.json'}); "
                             "resume with the same arguments")
        if state_path.exists():
            state = torch.load(state_path, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            first_epoch = int(state["epoch"]) + 1
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=1) + "\n")
    metrics_path = out / "metrics.jsonl"
    if first_epoch == 0 and metrics_path.exists():
        metrics_path.unlink()
    kept = metrics_path.read_text().splitlines()[:first_epoch] if metrics_path.exists() else []
    metrics_path.write_text("".join(line + "\n" for line in kept))

    fixed = None if config.discretization in RANDOMISED else make_points(
        config.discretization, config.points)
    last = {}
    for epoch in range(first_epoch, config.epochs):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            _derived_seed(config.seed, epoch)))
        totals = {"loss": 0.0, "correct": 0, "seen": 0}
        start = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   unit="step", disable=not progress)
        for step in bar:
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            seed = _derived_seed(config.seed, epoch, step)
            points = fixed if fixed is not None else make_points(
                config.discretization, config.points, seed=seed)
            gen = torch.Generator().manual_seed(seed)
            coords = points.coords
            with torch.no_grad():
                fields = dataset.fields(idx.numpy())
                if config.augment:
                    x = fields(_augment(coords, gen, len(idx)))
                    x = x + 0.02 * torch.randn(x.shape, generator=gen)
                else:
                    x = fields(coords)
            logits = model(x, points)
            loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            totals["loss"] += loss.item() * len(idx)
            totals["correct"] += int((logits.argmax(1) == labels[idx]).sum())
            totals["seen"] += len(idx)
            rate = totals["seen"] / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{totals['loss'] / totals['seen']:.3f}",
                            acc=f"{totals['correct'] / totals['seen']:.3f}",
                            samples_s=f"{rate:.0f}")
        last = {"epoch": epoch, "loss": totals["loss"] / totals["seen"],
                "accuracy": totals["correct"] / totals["seen"],
                "lr": schedule.get_last_lr()[0], "steps": steps_per_epoch * (epoch + 1)}
        with open(metrics_path, "a") as f:  # a resume keeps one line per finished epoch
            f.write(json.dumps(last) + "\n")
        model.save(out / "model.pt", extra={"epoch": epoch, "task": config.task})
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(), "epoch": epoch}, state_path)
    return last
