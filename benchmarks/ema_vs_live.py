"""What does ``dinet train --ema`` give a classifier? One run answers it: its
``train_state.pt`` holds the last weights of the optimiser (what the same command without
``--ema`` trains: the average never feeds back into training) and ``model.pt`` their moving
average. Both read the test fields at the draws ``dinet eval`` uses (seed 1234), for each
discretization and point count; the table gives their accuracies and the difference.

Usage: ``.venv/bin/python benchmarks/ema_vs_live.py RUN TEST_FIELDS [KINDS] [COUNTS]``,
e.g. ``benchmarks/ema_vs_live.py runs/i20/ema-3 data/fields/fashion-mnist-test`` (KINDS
default to sobol,grid,shrunk,random,jittered, COUNTS to 256,1024; 6 min on a 2-core CPU).
Needs ``make fields`` and a run trained with ``--ema``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from dinet.models import load_model
from dinet.tasks.base import get_task, open_task_data
from dinet.tasks.discretize import make_points


@torch.no_grad()
def _accuracy(model, data, points, batch: int = 500) -> float:
    """The classify task's own scorer (what ``dinet eval`` reports) over every item."""
    scorer = get_task("classify").scorer(data, model, 0)
    for start in range(0, len(data), batch):
        idx = np.arange(start, min(len(data), start + batch))
        scorer.add(idx, data.sample(idx, points), points)  # cached: the second model reuses them
    return scorer.result()["accuracy"]


def main(run: str, fields: str, kinds: str = "sobol,grid,shrunk,random,jittered",
         counts: str = "256,1024") -> None:
    state = torch.load(f"{run}/train_state.pt", map_location="cpu", weights_only=True)
    if "ema" not in state:
        raise SystemExit(f"{run} was not trained with --ema: nothing to compare")
    average = load_model(f"{run}/model.pt").eval()
    live = load_model(f"{run}/model.pt").eval()
    live.load_state_dict(state["model"])
    data = open_task_data("classify", fields)
    print(f"{run}, {len(data):,} test fields\n")
    print("| discretization | points | last weights | moving average | difference |\n"
          "|---|---|---|---|---|")
    for kind in kinds.split(","):
        for count in (int(c) for c in counts.split(",")):
            points = make_points(kind, count, 2, seed=1234)
            a, b = _accuracy(live, data, points), _accuracy(average, data, points)
            print(f"| {kind} | {count:,} | {100 * a:.2f}% | {100 * b:.2f}% | "
                  f"{100 * (b - a):+.2f} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:5])
