"""Does re-estimating the batch-norm statistics for a test discretization recover what a
trained classifier loses at low point counts? For each discretization, the run's model on the
10k test fields at N points (the draw `dinet eval` uses, seed 1234) as trained, and after
:func:`dinet.nn.reestimate_batchnorm` on 20 batches of 64 training fields read at fresh draws
of the same discretization and N (no gradient step).

Usage: ``.venv/bin/python benchmarks/bn_per_discretization.py RUN [N]`` (default N = 256),
e.g. ``benchmarks/bn_per_discretization.py runs/i20/fine-20`` (under a minute on a 2-core CPU).
Needs ``make fields``.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch

from dinet.models import load_model
from dinet.nn import reestimate_batchnorm
from dinet.tasks.base import open_task_data
from dinet.tasks.discretize import make_points


@torch.no_grad()
def _accuracy(model, data, points, batch: int = 500) -> float:
    correct = 0
    for start in range(0, len(data), batch):
        idx = np.arange(start, min(len(data), start + batch))
        logits = model(data.inputs(idx, points.coords), points)
        correct += int((logits.argmax(1) == data.targets(idx)).sum())
    return correct / len(data)


def main(run: str, count: int = 256) -> None:
    torch.manual_seed(0)
    model = load_model(f"{run}/model.pt").eval()
    train = open_task_data("classify", "data/fields/fashion-mnist-train")
    test = open_task_data("classify", "data/fields/fashion-mnist-test")
    rng = np.random.default_rng(0)
    print(f"| discretization @ {count} | as trained | batch norms re-estimated |\n|---|---|---|")
    for kind in ("sobol", "shrunk", "jittered"):
        points = make_points(kind, count, 2, seed=1234)

        def batches(kind=kind):
            for k in range(20):
                draw = make_points(kind, count, 2, seed=1000 + k)
                idx = rng.choice(len(train), 64, replace=False)
                yield train.inputs(idx, draw.coords), draw

        adapted = copy.deepcopy(model)
        reestimate_batchnorm(adapted, batches())
        print(f"| {kind} | {100 * _accuracy(model, test, points):.2f}% | "
              f"{100 * _accuracy(adapted, test, points):.2f}% |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
