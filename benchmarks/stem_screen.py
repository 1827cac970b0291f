"""Screen stems of ``dinet-res`` on Fashion-MNIST fields: each variant is registered as a
classify model, trained with ``dinet.tasks.train`` (mixed 256/512/1,024 Sobol points unless
the variant says otherwise, lr 2e-3) and evaluated on the test fields (sobol, grid, jittered,
shrunk at 256 and 1,024 points). Runs go to ``runs/i20/screen-<variant>-<epochs>``; one line
of results per variant is printed.

Usage: ``.venv/bin/python benchmarks/stem_screen.py EPOCHS VARIANT...`` with variants
``x-wide`` (format 1's stem: a two-pixel step, 16 basis functions), ``x-fine32`` (format
2's: one pixel, 32), ``x-linear`` (format 3's: the one-pixel stem integrating the points'
piecewise-linear interpolant) and ``x-linear-mix128`` (format 3 trained with 128 points among
the counts); e.g. ``benchmarks/stem_screen.py 3 x-fine32 x-wide`` (6 min a variant on
a 2-core CPU). Needs ``make fields``.
"""

from __future__ import annotations

import json
import sys
import time

from dinet.models import Classifier, register_model
from dinet.tasks.evaluate import evaluate
from dinet.tasks.train import TrainConfig, train

# variant -> (the stem's options, the other point counts a step may draw besides 1,024)
VARIANTS = {
    "x-wide": ({"stem_spacing": 4 / 32, "stem_basis": 16, "stem_quadrature": "weights"},
               (256, 512)),
    "x-fine32": ({"stem_spacing": 2 / 32, "stem_basis": 32, "stem_quadrature": "weights"},
                 (256, 512)),
    "x-linear": ({"stem_spacing": 2 / 32, "stem_basis": 32, "stem_quadrature": "linear"},
                 (256, 512)),
    "x-linear-mix128": ({"stem_spacing": 2 / 32, "stem_basis": 32,
                         "stem_quadrature": "linear"}, (128, 256, 512)),
}


def _builder(stem: dict):
    def build(*, in_channels, n_classes, base_spacing, kernel, quadrature, **_):
        return Classifier("dinet-res", in_channels=in_channels, n_classes=n_classes,
                          base_spacing=base_spacing, kernel=kernel, quadrature=quadrature,
                          **stem)
    return build


def main(epochs: int, names: list[str]) -> None:
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
        register_model("classify", name, _builder(VARIANTS[name][0]), pixels=2.0)
    for name in names:
        out = f"runs/i20/screen-{name}-{epochs}"
        start = time.perf_counter()
        train(TrainConfig(fields="data/fields/fashion-mnist-train", out=out, task="classify",
                          model=name, points=1024, mix_points=VARIANTS[name][1], epochs=epochs,
                          lr=2e-3), progress=False)
        seconds = time.perf_counter() - start
        results = evaluate(out, "data/fields/fashion-mnist-test",
                           discretizations=["sobol", "grid", "jittered", "shrunk"],
                           points=[256, 1024])
        print(name, f"train {seconds:.0f} s", json.dumps(results["metrics"]), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(int(sys.argv[1]), sys.argv[2:])
