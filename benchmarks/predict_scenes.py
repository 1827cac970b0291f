"""Segmenters trained on fitted scene fields, reading the raw scene images instead, at their
own 32×32 pixels and enlarged, through `dinet predict --images`.

The test scenes are rebuilt from the field dataset's manifest (the images the fields were
fitted to, and their label maps); each size's images (resized bilinearly, as `dinet fit`
resizes) go to an `.npz` archive and each run labels them with `dinet predict --run RUN
--images ARCHIVE --out LABELS.npz` at the pixel centres of that size. A pixel of an enlarged
image lies inside one pixel of the 32×32 label map, whose label is its truth; mIoU is over
the confusion matrix of all test pixels. A discrete CNN reads its own grid only ("refused").

    .venv/bin/python benchmarks/predict_scenes.py data/fields/scenes1-test \
        runs/i21/seg1-distill-hi runs/i21/seg1-cnn

Writes benchmarks/results/predict_scenes.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dinet.cli import main as dinet
from dinet.data import resize_images
from dinet.tasks import open_task_data
from dinet.tasks.metrics import confusion, mean_iou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fields", help="the test scenes' field dataset (dinet fit)")
    parser.add_argument("runs", nargs="+", help="segmentation run folders")
    parser.add_argument("--scales", default="1,2,4", help="sides as multiples of 32")
    parser.add_argument("--out", default="benchmarks/results/predict_scenes.json")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    scenes = open_task_data("segment", args.fields).scenes
    side, n_classes = scenes.images.shape[1], int(scenes.num_classes)
    results = {"scenes": len(scenes.images), "sizes": [side * k for k in scales], "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            results["runs"][run] = {}
        for k in scales:
            size = side * k
            archive = Path(tmp) / f"scenes-{size}.npz"
            np.savez(archive, images=resize_images(scenes.images, size))
            truth = torch.from_numpy(np.repeat(np.repeat(scenes.labels, k, 1), k, 2))
            for run in args.runs:
                answers = Path(tmp) / "answers.npz"
                err = io.StringIO()
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    code = dinet(["predict", "--run", run, "--images", str(archive), "--out",
                                  str(answers)])
                seconds = time.perf_counter() - start
                if code != 0:
                    results["runs"][run][str(size)] = {"refused": err.getvalue().strip()}
                    continue
                label = torch.from_numpy(np.load(answers)["label"])
                miou = mean_iou(confusion(label, truth, n_classes))
                results["runs"][run][str(size)] = {"miou": miou, "seconds": round(seconds, 1)}
                print(f"{run} at {size}x{size}: mIoU {miou:.2%} ({seconds:.0f} s)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print()
    print("| run | " + " | ".join(f"{s}×{s}" + (" (raw)" if s == side else "")
                                   for s in results["sizes"]) + " |")
    print("|---|" + "---|" * len(scales))
    for run, row in results["runs"].items():
        cells = [f"{row[str(s)]['miou']:.1%}" if "miou" in row[str(s)] else "refused"
                 for s in results["sizes"]]
        print(f"| `{run}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
