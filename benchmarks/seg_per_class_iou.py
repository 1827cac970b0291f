"""Per-class IoU of a segmentation run on a scenes test set: which labels hold the mIoU down.

The run's model reads each test field at N points of one discretization (the grid baseline:
its own grid) and predicts the labels at the pixel centres; one confusion matrix over all
test scenes gives the IoU of every label (background first, then the ten garments).

Usage: ``.venv/bin/python benchmarks/seg_per_class_iou.py RUN FIELDS [DISCRETIZATION=grid]
[N=1024]``, e.g. ``benchmarks/seg_per_class_iou.py runs/i21/seg-cnn data/fields/scenes-test``
(about half a minute for 2,000 scenes on a 2-core CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import dinet.points as P
from dinet.models import load_model
from dinet.tasks import open_task_data
from dinet.tasks.discretize import make_points
from dinet.tasks.metrics import confusion

LABELS = ("background", "T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
          "sneaker", "bag", "ankle boot")


def main(run: str, fields: str, kind: str = "grid", n: int = 1024) -> None:
    model = load_model(Path(run) / "model.pt").eval()
    data = open_task_data("segment", fields)
    points = make_points(kind, n, seed=1234)  # the draw `dinet eval` uses
    pixels = P.grid((data.size, data.size))
    conf = torch.zeros(data.n_classes, data.n_classes, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(data), 100):
            idx = list(range(start, min(len(data), start + 100)))
            pred = model(data.sample(idx, points), points, pixels).argmax(-1)
            conf += confusion(pred, data.targets(idx, pixels.coords), data.n_classes)
    c = conf.double()
    iou = c.diagonal() / (c.sum(0) + c.sum(1) - c.diagonal())
    print(f"{run} on {fields} ({kind}, {n} points), labels at the pixel centres: "
          f"mIoU {float(iou.mean()):.4f}")
    names = LABELS if data.n_classes == len(LABELS) else range(data.n_classes)
    print(", ".join(f"{name} {float(v):.2f}" for name, v in zip(names, iou, strict=True)))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*args[:3], *(int(a) for a in args[3:4]))
