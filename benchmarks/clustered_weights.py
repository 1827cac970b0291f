"""Why the clustered layout scores below Sobol: the same clustered points under three
weightings, and a clustered set with more background points.

Scores the mixed-count Fashion-MNIST classifier (``runs/fm-mix3-10``, README's command) on
the 10k test fields (``make fields``) at 1,024 points, the draw ``dinet eval`` uses
(seed 1234):

    .venv/bin/python benchmarks/clustered_weights.py
"""

from __future__ import annotations

import numpy as np
import torch

import dinet.points as P
from dinet.models import load_model
from dinet.tasks import open_task_data


def main(run: str = "runs/fm-mix3-10", fields: str = "data/fields/fashion-mnist-test") -> None:
    model = load_model(f"{run}/model.pt").eval()
    data = open_task_data("classify", fields)

    @torch.no_grad()
    def accuracy(points: P.PointSet) -> float:
        correct = 0
        for start in range(0, len(data), 250):
            idx = np.arange(start, min(len(data), start + 250))
            logits = model(data.sample(idx, points), points)
            correct += int((logits.argmax(1) == data.targets(idx)).sum())
        return correct / len(data)

    clustered = P.clustered(1024, 2, seed=1234)
    cases = {
        "clustered, Voronoi weights (default)": clustered,
        "clustered, k-NN weights": P.from_coords(clustered.coords, weights="knn"),
        "clustered, uniform weights": P.from_coords(clustered.coords, weights="uniform"),
        "clustered with background=0.5": P.clustered(1024, 2, seed=1234, background=0.5),
    }
    for name, points in cases.items():
        print(f"{name}: {100 * accuracy(points):.1f}%", flush=True)


if __name__ == "__main__":
    main()
