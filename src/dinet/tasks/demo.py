"""``make demo`` / ``dinet demo``: the whole story on the embedded default data.

Fit neural fields to a few thousand Fashion-MNIST images (scikit-learn's digits when the
Fashion-MNIST package is not installed), train the default classifier once on scrambled
Sobol points and once on the pixel grid — each step reads N or N/4 points, the mixed counts
of the full-scale recipe — evaluate both on every discretization at 256,
1,024 and 4,096 points, and print the train × test table; last, the Sobol model reads the raw
test images themselves (no fields fitted) at their own pixels and at twice their side. Every
step is resumable: a second run reuses the finished fields and runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data import load_source, resize_images
from ..fields.build import build_dataset
from .answers import draw_predictions
from .evaluate import evaluate, report, results_table
from .predict import Predictor, image_values
from .train import TrainConfig, train

__all__ = ["demo"]

#: The side of each demo source's own images.
NATIVE_SIZE = {"fashion-mnist": 28, "digits": 8}


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
    print(f"\n{result['markdown']}\n")
    _raw_images(runs[0], source, n_test, data_dir, out / "predict.png")
    minutes = (time.perf_counter() - start) / 60
    print(f"done in {minutes:.1f} min. Tables: {out / 'report.md'}, "
          f"{runs[0] / 'results.md'}, {runs[1] / 'results.md'}; plots: {out / 'report.png'}, "
          f"heatmap.png / vs_points.png in each run folder, {out / 'predict.png'}")
    return result


def _raw_images(run: Path, source: str, n: int, data_dir, picture: Path) -> None:
    """The run's model on the raw test images, read at their own pixel centres (28×28 for
    Fashion-MNIST) and resized to twice the side: no fields are fitted (`dinet predict
    --images` does the same for files)."""
    side = NATIVE_SIZE[source]
    images, labels, _ = load_source(source, split="test", limit=n, size=side, data_dir=data_dir)
    predictor, shown = Predictor(run), []
    for size in (side, 2 * side):
        values, grid = image_values(resize_images(images, size))
        answers = predictor(values, grid)
        shown.append(f"{size}×{size} pixels {(answers['label'] == labels).mean():.1%}")
        if size == side:
            draw_predictions(picture, answers, values, grid, predictor, items=8,
                             title=f"{run.name} on the raw test images ({size}×{size} pixels)")
    print(f"[predict] {run.name} reads the raw {source} test images themselves, no fields "
          f"fitted: {', '.join(shown)} ({picture})\n")
