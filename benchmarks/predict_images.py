"""Classifiers trained on fitted fields, reading the raw Fashion-MNIST test images instead,
at several resolutions, through `dinet predict --images`.

For each size the 10,000 test images (28×28; other sizes resized bilinearly, as `dinet fit`
resizes) are written to an `.npz` archive with their labels, and each run predicts them with
`dinet predict --run RUN --images ARCHIVE --out ANSWERS.npz`; the accuracy is computed from
the answers written. A discrete CNN reads its own grid only, so it answers at its size and
refuses the others (shown as "refused").

    .venv/bin/python benchmarks/predict_images.py runs/i20/linear-20 runs/i20/cnn-res-grid-20

Writes benchmarks/results/predict_images.json and prints a Markdown table.
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

from dinet.cli import main as dinet
from dinet.data import load_fashion_mnist, resize_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="classification run folders")
    parser.add_argument("--sizes", default="14,28,32,56,112",
                        help="image sides, comma-separated (28: the raw images)")
    parser.add_argument("--limit", type=int, default=None, help="first N test images")
    parser.add_argument("--out", default="benchmarks/results/predict_images.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    images, labels = load_fashion_mnist("test", limit=args.limit)
    results = {"images": len(images), "sizes": sizes, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        archives = {}
        for size in sizes:
            archives[size] = Path(tmp) / f"fashion-mnist-test-{size}.npz"
            np.savez(archives[size], images=resize_images(images, size), labels=labels)
        for run in args.runs:
            row = results["runs"][run] = {}
            for size in sizes:
                answers = Path(tmp) / "answers.npz"
                err = io.StringIO()
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    code = dinet(["predict", "--run", run, "--images", str(archives[size]),
                                  "--out", str(answers)])
                seconds = time.perf_counter() - start
                if code != 0:
                    row[str(size)] = {"refused": err.getvalue().strip()}
                    continue
                accuracy = float((np.load(answers)["label"] == labels).mean())
                row[str(size)] = {"accuracy": accuracy, "seconds": round(seconds, 1)}
                print(f"{run} at {size}x{size}: {accuracy:.2%} ({seconds:.0f} s)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print()
    print("| run | " + " | ".join(f"{s}×{s}" + (" (raw)" if s == 28 else "")
                                   for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for run, row in results["runs"].items():
        cells = [f"{row[str(s)]['accuracy']:.1%}" if "accuracy" in row[str(s)] else "refused"
                 for s in sizes]
        print(f"| `{run}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
