"""``make demo`` / ``dinet demo``: the whole story on the embedded default data.

Fit neural fields to a few thousand Fashion-MNIST images (scikit-learn's digits when the
Fashion-MNIST package is not installed), train the default classifier once on scrambled
Sobol points and once on the pixel grid — each step reads N or N/4 points, the mixed counts
of the full-scale recipe — evaluate both on every discretization at 256,
1,024 and 4,096 points, and print the train × test table. Every step is resumable: a
second run reuses the finished fields and runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data import load_source
from ..fields.build import build_dataset
from .evaluate import evaluate, report, results_table
from .train import TrainConfig, train

__all__ = ["demo"]


def _source(data_dir) -> str:
    from ..data import load_fashion_mnist

    try:
        load_fashion_mnist("test", data_dir=data_dir, limit=1)
        return "fashion-mnist"
    except (FileNotFoundError, ValueError) as err:
        if data_dir is not None:  # asked for explicitly: no silent substitute
            raise ValueError(f"--data {data_dir}: {str(err).splitlines()[0]}") from None
        print(f"notice: Fashion-MNIST is not available ({str(err).splitlines()[0]}); the demo "
              "uses scikit-learn's 8x8 digits instead (install it with `apt-get install "
              "dataset-fashion-mnist`, or run `make setup` as root)")
        return "digits"


def demo(out: str | Path = "runs/demo", n_train: int = 4096, n_test: int = 1024,
         epochs: int = 10, points: int = 1024, data_dir=None, progress: bool = True) -> dict:
    """Run the demo into ``out``; returns :func:`~dinet.tasks.report`'s result."""
    out = Path(out)
    start = time.perf_counter()
    source = _source(data_dir)
    fields = {}
    for split, limit in (("train", n_train), ("test", n_test)):
        images, labels, info = load_source(source, split=split, limit=limit, data_dir=data_dir)
        print(f"[fields] fitting {len(images)} {source} {split} images as SIREN fields "
              f"→ {out / f'fields-{split}'}")
        build_dataset(out / f"fields-{split}", images, labels, source=info, split=split,
                      progress=progress)
        fields[split] = out / f"fields-{split}"
    runs = []
    mix = (points // 4,)  # a quarter of the points: a grid of half the side
    for kind in ("sobol", "grid"):
        run = out / f"dinet-res-{kind}"
        config = TrainConfig(fields=str(fields["train"]), out=str(run), model="dinet-res",
                             discretization=kind, points=points, mix_points=mix, epochs=epochs)
        print(f"[train] dinet-res on {kind} points ({points} or {points // 4}/field), "
              f"{epochs} epochs → {run}")
        resume = (run / "config.json").exists()
        train(config, resume=resume, progress=progress)
        print(f"[eval] {run} on every discretization at 256, 1,024 and 4,096 points")
        results = evaluate(run, fields["test"])
        print(results_table(results))
        runs.append(run)
    result = report(runs, out=out)
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{result['markdown']}\n")
    print(f"done in {minutes:.1f} min. Tables: {out / 'report.md'}, "
          f"{runs[0] / 'results.md'}, {runs[1] / 'results.md'}; plots: {out / 'report.png'} "
          f"and heatmap.png / vs_points.png in each run folder")
    return result
