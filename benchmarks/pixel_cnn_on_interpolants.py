"""How much of a point set's loss is the information the points hold? A pixel network
trained on its grid (``cnn-res`` for classification, ``cnn`` for segmentation) reads the
piecewise-linear (Delaunay) interpolant of the test fields' values at N points of each
discretization, resampled onto its grid — the same reconstruction the DI models' stems
integrate (``dinet-res`` format 3, ``dinet-unet`` format 2 on); for segmentation it is what
``dinet-unet``'s default ``"nodes"`` stem gives a converted ``cnn`` (``dinet train --init``)
before its first gradient step. Where the pixel network also
loses accuracy, the points lack the detail; where only the DI model does, the model is at
fault. Zero-shot: the pixel network never saw an interpolant, so this bounds what the points
hold from below.

Usage: ``.venv/bin/python benchmarks/pixel_cnn_on_interpolants.py CNN_RUN [N...]
[--fields TEST_FIELDS]`` (default N = 256 1024; default fields: the Fashion-MNIST test
fields), e.g. ``benchmarks/pixel_cnn_on_interpolants.py runs/i20/cnn-res-grid-20`` or
``benchmarks/pixel_cnn_on_interpolants.py runs/i21/seg1-cnn 256 1024 --fields
data/fields/scenes1-test`` (a minute or two on a 2-core CPU). Prints the task's primary
metric (accuracy, mIoU).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

import dinet.points as P
from dinet.models import load_model
from dinet.nn import Resample
from dinet.tasks import get_task
from dinet.tasks.discretize import make_points

KINDS = ("sobol", "grid", "shrunk", "random", "jittered")


class OnInterpolant(torch.nn.Module):
    """``pixel_model`` fed the Delaunay interpolant of its input, resampled onto its grid."""

    def __init__(self, pixel_model) -> None:
        super().__init__()
        self.model, self.interpolate = pixel_model, Resample("delaunay")
        self.pixels = P.grid((pixel_model.size, pixel_model.size))

    def forward(self, x, points, query=None):
        x = self.interpolate(x, points, self.pixels)
        return self.model(x, self.pixels) if query is None else self.model(x, self.pixels, query)


@torch.no_grad()
def main(run: str, counts: tuple[int, ...] = (256, 1024),
         fields: str = "data/fields/fashion-mnist-test") -> None:
    task = get_task(json.load(open(f"{run}/config.json"))["task"])
    model = OnInterpolant(load_model(f"{run}/model.pt").eval())
    test = task.open_data(fields)
    metric = task.metrics[0]
    print(f"{metric} of {run} on interpolants of {fields}")
    print("| discretization | " + " | ".join(f"{n:,} points" for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for kind in KINDS:
        row = []
        for count in counts:
            points = make_points(kind, count, 2, seed=1234)  # the draw `dinet eval` uses
            scorer = task.scorer(test, model, 1234)
            for start in range(0, len(test), 500):
                idx = np.arange(start, min(len(test), start + 500))
                scorer.add(idx, test.sample(idx, points), points)
            row.append(f"{100 * scorer.result()[metric]:.1f}%")
        print(f"| {kind} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    args = sys.argv[1:]
    options = {}
    if "--fields" in args:
        i = args.index("--fields")
        options["fields"] = args[i + 1]
        del args[i:i + 2]
    main(args[0], tuple(int(a) for a in args[1:]) or (256, 1024), **options)
