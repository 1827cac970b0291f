"""Does a segmenter trained on mixed point counts lose accuracy to its batch-norm statistics?
Its running statistics average over every count it was trained on, but the features of a
256-point interpolant are blurrier than those of a 4,096-point one. This scores RUN's model
on the test scenes (Sobol input and queries, the draws and scorer of ``dinet eval``)
as trained, then after re-estimating every batch norm (gradient-free,
:func:`dinet.nn.reestimate_batchnorm`) on BATCHES batches of 64 training scenes with fresh
Sobol draws of that count.

Usage: ``.venv/bin/python benchmarks/seg_bn_by_count.py RUN TRAIN_FIELDS TEST_FIELDS
[N...] [--batches 20]``, e.g. ``benchmarks/seg_bn_by_count.py runs/i21/seg1-unet
data/fields/scenes1-train data/fields/scenes1-test 256 1024 4096`` (about two minutes).
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch

from dinet.models import load_model
from dinet.nn import reestimate_batchnorm
from dinet.tasks import get_task
from dinet.tasks.base import open_task_data
from dinet.tasks.discretize import make_points


def score(model, test, points) -> float:
    """mIoU at the Sobol queries, exactly as ``dinet eval`` scores (its scorer and seed)."""
    scorer = get_task("segment").scorer(test, model, 1234)
    with torch.no_grad():
        for start in range(0, len(test), 100):
            idx = np.arange(start, min(start + 100, len(test)))
            scorer.add(idx, test.sample(idx, points), points)
    return scorer.result()["miou"]


def main(run: str, train_fields: str, test_fields: str, counts: list[int],
         batches: int = 20) -> None:
    model = load_model(f"{run}/model.pt").eval()
    train = open_task_data("segment", train_fields)
    test = open_task_data("segment", test_fields)
    gen = np.random.default_rng(0)
    print("| Sobol points | mIoU as trained | batch norms re-estimated at this count |")
    print("|---|---|---|")
    for count in counts:
        points = make_points("sobol", count, 2, seed=1234)  # the draw `dinet eval` uses
        before = score(model, test, points)
        tuned = copy.deepcopy(model)
        draws = [(gen.choice(len(train), 64, replace=False),
                  make_points("sobol", count, 2, seed=10_000 + i)) for i in range(batches)]
        reestimate_batchnorm(tuned, draws, forward=lambda m, b: m(train.sample(b[0], b[1]),
                                                                    b[1]))
        print(f"| {count:,} | {100 * before:.1f}% | {100 * score(tuned, test, points):.1f}% |",
              flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    n_batches = 20
    if "--batches" in args:
        i = args.index("--batches")
        n_batches = int(args[i + 1])
        del args[i:i + 2]
    main(args[0], args[1], args[2], [int(a) for a in args[3:]] or [256, 1024, 4096], n_batches)
