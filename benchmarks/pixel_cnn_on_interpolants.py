"""How much of a 256-point set's loss is the information the points hold? The pixel network
``cnn-res``, trained on its 32×32 grid, reads the piecewise-linear (Delaunay) interpolant of
the test fields' values at N points of each discretization, resampled onto its grid — the
same reconstruction ``dinet-res``'s stem integrates (format 3). Where the pixel network also
loses accuracy, the points lack the detail; where only the DI model does, the model is at
fault.

Usage: ``.venv/bin/python benchmarks/pixel_cnn_on_interpolants.py CNN_RUN [N...]`` (default
N = 256 1024), e.g. ``benchmarks/pixel_cnn_on_interpolants.py runs/i20/cnn-res-grid-20``
(about a minute on a 2-core CPU). Needs ``make fields``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import dinet.points as P
from dinet.models import load_model
from dinet.nn import Resample
from dinet.tasks.base import open_task_data
from dinet.tasks.discretize import make_points

KINDS = ("sobol", "grid", "shrunk", "random", "jittered")


@torch.no_grad()
def main(run: str, counts: tuple[int, ...] = (256, 1024)) -> None:
    model = load_model(f"{run}/model.pt").eval()
    test = open_task_data("classify", "data/fields/fashion-mnist-test")
    pixels = P.grid((model.size, model.size))
    interpolate = Resample("delaunay")
    print("| discretization | " + " | ".join(f"{n:,} points" for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for kind in KINDS:
        row = []
        for count in counts:
            points = make_points(kind, count, 2, seed=1234)  # the draw `dinet eval` uses
            correct = 0
            for start in range(0, len(test), 500):
                idx = np.arange(start, min(len(test), start + 500))
                x = interpolate(test.inputs(idx, points.coords), points, pixels)
                correct += int((model(x, pixels).argmax(1) == test.targets(idx)).sum())
            row.append(f"{100 * correct / len(test):.1f}%")
        print(f"| {kind} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], tuple(int(a) for a in sys.argv[2:]) or (256, 1024))
