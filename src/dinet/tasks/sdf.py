"""Signed distance: synthetic 3-D ball scenes in, the signed distance at query points out.

The data are named ``balls:N[:SEED]`` (:func:`dinet.data.make_balls`); the input is their
exact RGBA field and the target the exact signed distance, so nothing is fitted. A training
step reads the prediction at a fresh scrambled-Sobol draw of :data:`SDF_QUERIES` points per
item; the loss is the mean squared error, the metrics the mean squared and absolute errors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import points as P
from .augment import derived_seed
from .base import BALLS, Scorer, Task, TaskData, register_task
from .discretize import make_points

__all__ = ["SDFData", "SDFTask", "SDF_QUERIES"]

#: Query points per item and training step (fresh scrambled Sobol each step).
SDF_QUERIES = 2048
#: Query points per item when scoring.
SCORE_QUERIES = 4096


class SDFData(TaskData):
    """Ball scenes (``dinet.data.make_balls``): RGBA in, signed distance ``(B, N, 1)`` out."""

    dim = 3

    def __init__(self, n: int, seed: int, size: int = 16) -> None:
        from ..data import make_balls

        self.task, self.spec = "sdf", f"balls:{n}:{seed}"
        self.balls = make_balls(n, seed=seed)
        self.in_channels, self.n_classes, self.size = 4, 1, size

    def __len__(self) -> int:
        return len(self.balls)

    def inputs(self, idx, coords):
        return self.balls.rgba(np.asarray(idx), coords)

    def targets(self, idx, coords=None):
        return self.balls.sdf(np.asarray(idx), coords)


class _ErrorScorer(Scorer):
    def __init__(self, data: SDFData, model, seed: int) -> None:
        self.data, self.model = data, model
        self.query = make_points("sobol", SCORE_QUERIES, 3, seed=seed + 1)
        self.se = self.ae = 0.0
        self.count = 0

    def add(self, idx, x, points):
        err = self.model(x, points, self.query) - self.data.targets(idx, self.query.coords)
        self.se += float(err.square().sum())
        self.ae += float(err.abs().sum())
        self.count += err.numel()

    def result(self):
        return {"mse": self.se / self.count, "mae": self.ae / self.count}


class SDFTask(Task):
    name = "sdf"
    help = "sdf: synthetic balls, --fields balls:N[:SEED]"
    data_help = "balls:N[:SEED] (synthetic 3-D ball scenes)"
    dim = 3
    default_points = 4096
    metrics = ("mse", "mae")
    lower_is_better = frozenset(metrics)
    input_noise = 0.0
    reads_queries = True

    def open_data(self, spec: str) -> SDFData:
        match = BALLS.match(spec)
        if match is None:
            raise ValueError(
                f"the sdf task reads synthetic ball scenes, named balls:N[:SEED] (e.g. "
                f"--fields balls:2000 to train, balls:500:1 to test); got {spec!r}")
        return SDFData(int(match.group(1)), int(match.group(2) or 0))

    def forward(self, model, x, points, seed, data):
        query = make_points("sobol", SDF_QUERIES, 3, seed=derived_seed(seed, 1))
        return model(x, points, query), query

    def distill_loss(self, out, teacher, query):
        """The mean squared difference from the teacher's signed distances."""
        return F.mse_loss(out, teacher)

    def loss(self, out, data, idx, where, points, query):
        target = data.targets(idx, where(query.coords)).to(out.device)
        err = F.mse_loss(out, target)
        return err, float(err.detach()) * target.numel(), target.numel()

    def predict(self, model, x, points, query):
        return {"sdf": model(x, points, query)[..., 0]}

    def scorer(self, data, model, seed):
        return _ErrorScorer(data, model, seed)

    def example_panels(self, data, model, idx, points):
        """Input | true SDF | predicted SDF on the z = 0 slice (array axis 0 = 0), 64 × 64."""
        side = 64
        axis = (torch.arange(side, dtype=torch.float32) * 2 + 1) / side - 1
        u, v = torch.meshgrid(axis, axis, indexing="ij")
        coords = torch.stack([torch.zeros_like(u), u, v], -1).reshape(-1, 3)
        rgba = data.inputs(idx, coords)
        picture = (rgba[..., :3] * rgba[..., 3:]).reshape(len(idx), side, side, 3).numpy()
        truth = data.targets(idx, coords).reshape(len(idx), side, side).numpy()
        pred = model(data.sample(idx, points), points, P.from_coords(coords))
        pred = pred.reshape(len(idx), side, side).numpy()
        rows = [[{"image": picture[i], "kind": "image"}, {"image": truth[i], "kind": "sdf"},
                 {"image": pred[i], "kind": "sdf"}] for i in range(len(idx))]
        return rows, ["input (z = 0)", "true SDF",
                      f"predicted ({points.kind}, {len(points):,} pts)"]


register_task(SDFTask())
