"""``dinet recalibrate``: a trained run's batch-norm statistics re-estimated for the points it
will read — no labels, no gradient step.

A model normalises its features with running statistics gathered while it trained. Read at
other points (another kind, another count, your own coordinates) the features shift, and
after a training phase that mixed very different point sets (e.g. shrunk 256-point draws
among Sobol 1,024) the statistics are a blend that fits none of them. Re-estimating them
over a few batches of fields read where the model will be used
(:func:`dinet.nn.reestimate_batchnorm`) changes nothing else: the weights are the run's.
The result is a new run folder, which ``dinet eval``, ``predict`` and ``train --init`` read
like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import distributed
from .._io import atomic_write_text, check_writable
from ..models import model_entry
from ..nn import reestimate_batchnorm
from .augment import derived_seed
from .base import get_task
from .discretize import check_discretization, components, file_points, make_points
from .evaluate import load_run

__all__ = ["RecalibrateConfig", "recalibrate_run"]


@dataclass
class RecalibrateConfig:
    """What ``dinet recalibrate`` reads and writes (each field is its option)."""

    run: str  # the trained run folder, left untouched
    fields: str  # fields to read (a field dataset folder, or balls:N:SEED for sdf); no labels
    out: str  # the new run folder
    discretization: str = "sobol"  # where the fields are read: a kind, a mixture or npz:FILE
    points: int | None = None  # points per field (default: the run's training count)
    mix_points: tuple[int, ...] = ()  # other counts, taken in turn with points
    batches: int = 50  # batches of items the statistics average over
    batch_size: int = 64  # items per batch
    seed: int = 0  # the items and the point draws
    device: str = "auto"  # where the model runs

    def check(self) -> None:
        check_discretization(self.discretization)
        for name in ("batches", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.discretization.startswith("npz:") and self.mix_points:
            raise ValueError(f"{self.discretization} is one fixed point set: drop --mix-points")
        if Path(self.out).resolve() == Path(self.run).resolve():
            raise ValueError(f"--out {self.out} is the run itself: write the recalibrated "
                             "model to a new folder (the run's model.pt is what its results "
                             "and later runs' --init refer to)")


def recalibrate_run(config: RecalibrateConfig, progress: bool = True) -> dict:
    """Re-estimate the batch-norm statistics of ``config.run``'s model on ``config.batches``
    batches of ``config.fields`` read at draws of ``config.discretization`` (the counts
    ``points, *mix_points`` in turn, a fresh draw per batch where the kind is randomised),
    and write the model to ``config.out`` with the run's ``config.json`` plus a
    ``recalibrated`` record. Returns that record.
    """
    config.check()
    run, out = Path(config.run), Path(config.out)
    if (out / "model.pt").exists():
        raise ValueError(f"{out} already holds a model.pt — choose another --out, or remove "
                         "that folder first")
    check_writable(out, "--out")  # before any work: nothing is created when refused
    train_config, model = load_run(run)
    task = get_task(train_config["task"])
    if model_entry(task.name, train_config.get("model") or task.models[0]).grid_baseline:
        raise ValueError(f"{run} is a grid CNN baseline: it reads the fields on its own grid "
                         "only, so there are no other points to recalibrate it for")
    data = task.open_data(str(config.fields))
    channels = int(model.config["in_channels"])
    if data.in_channels != channels:
        raise ValueError(f"{config.fields} holds fields of {data.in_channels} channels; "
                         f"{run}'s model reads {channels}")
    kind = config.discretization
    if kind.startswith("npz:"):
        counts = (len(file_points(kind, data.dim)),)
    else:
        counts = (config.points or int(train_config.get("points") or task.default_points),
                  *config.mix_points)
        for part in set(components(kind)):  # an impossible count fails before any work
            for n in counts:
                make_points(part, n, data.dim)
    size = min(config.batch_size, len(data))
    order = np.random.default_rng(config.seed)
    device = distributed.select_device(config.device)
    model.to(device)

    def batches():
        for k in tqdm(range(config.batches), unit="batch", disable=not progress,
                      desc=f"recalibrate {run.name}"):
            seed = derived_seed(config.seed, k)
            points = make_points(kind, counts[k % len(counts)], data.dim, seed=seed)
            idx = np.sort(order.choice(len(data), size, replace=False))
            yield data.inputs(idx, points.coords).to(device), points, seed

    used = reestimate_batchnorm(
        model, batches(), forward=lambda m, b: task.forward(m, b[0], b[1], b[2], data))
    record = {"from": str(run), "fields": str(config.fields), "discretization": kind,
              "points": list(counts), "batches": used, "batch_size": size,
              "seed": config.seed}
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(getattr(model, "checkpoint_extra", None) or {})
    model.cpu().save(out / "model.pt", extra={**extra, "recalibrated": record})
    atomic_write_text(out / "config.json", json.dumps(
        {**train_config, "recalibrated": record}, indent=1) + "\n")
    return record
