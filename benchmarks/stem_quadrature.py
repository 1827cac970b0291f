"""How far is ``dinet-res``'s stem from its continuum integral, read from 256 or 1,024 points?

For a trained run, the stem's output on the lattice for 64 test fields, computed (a) as the
weighted sum over the points (``stem_quadrature="weights"``, formats 1–2) and (b) from the
points' piecewise-linear Delaunay interpolant on the 48×48 grid (``"linear"``, format 3;
SIZE: another grid), against the same stem integrated over a 128×128 grid of the field's
exact values. Prints the relative L2 error per discretization and point count — the noise
each quadrature feeds the rest of the network.

Usage: ``.venv/bin/python benchmarks/stem_quadrature.py RUN [SIZE=48]`` (a ``dinet-res``
run, e.g. ``runs/i20/fine-20``; seconds on a 2-core CPU). Needs ``make fields``.
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

KINDS = ("sobol", "grid", "jittered", "shrunk", "random")


@torch.no_grad()
def main(run: str, size: int = 48) -> None:
    model = load_model(f"{run}/model.pt").eval()
    test = open_task_data("classify", "data/fields/fashion-mnist-test")
    idx = np.arange(64)
    stem, lattice = model.stem, model.lattice
    reference = P.grid((128, 128))
    truth = stem(test.inputs(idx, reference.coords), reference, lattice)
    fine = P.grid((size, size))
    interpolate = Resample("delaunay")

    def error(y):
        return float((y - truth).norm() / truth.norm())

    print("| discretization | points | weights | linear interpolant |\n|---|---|---|---|")
    for count in (256, 1024):
        for kind in KINDS:
            points = make_points(kind, count, 2, seed=1234)
            x = test.inputs(idx, points.coords)
            weighted = stem(x, points, lattice)
            linear = stem(interpolate(x, points, fine), fine, lattice)
            print(f"| {kind} | {count:,} | {error(weighted):.3f} | {error(linear):.3f} |",
                  flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
