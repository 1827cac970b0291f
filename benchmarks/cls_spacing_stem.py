"""An experiment: does ``dinet-res`` hold sparse, uneven points (shrunk at 256) better when
its stem also reads each node's distance to the nearest input point?

``dinet-unet``'s stem reads that distance (``spacing_input``, issue 21; it lifted shrunk
points at 256 from 63.6 to 67.5% mIoU). ``dinet-res``'s stem integrates the points'
piecewise-linear interpolant read on a fixed grid; here that grid also carries each node's
distance to the nearest point, in the grid's steps (0 where a point sits on the node), as a
second input channel of the stem, whose weights for it start at zero — so the model starts
exactly as the run it is initialised from.

The model is registered as ``dinet-res-spacing`` by importing this script (dinet is not
edited; ``dinet --plugin benchmarks/cls_spacing_stem.py eval --run OUT ...`` scores its run) and
trained like ``runs/i20/linear-20-low3`` (docs/classifier-experiments.md: Sobol draws of
1,024 / 512 / 256 / 128 points, 3 epochs, lr 5e-4, from INIT), then scored at 256 and
1,024 points of the five test discretizations.

Usage: ``.venv/bin/python benchmarks/cls_spacing_stem.py TRAIN TEST INIT OUT [EPOCHS]``
(TRAIN, TEST: Fashion-MNIST field datasets; INIT: a ``dinet-res`` run on them).
"""

from __future__ import annotations

import sys

import torch

from dinet.models import Classifier, register_model
from dinet.models.segmenter import node_spacing
from dinet.nn import DIConv
from dinet.tasks import TrainConfig, evaluate, train


class SpacingClassifier(Classifier):
    """``dinet-res`` (linear stem) whose stem reads the spacing channel after the values."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        old = self.stem
        self.stem = DIConv(old.in_channels + 1, old.out_channels, 5, spacing=old.spacing[0],
                           bias=False, kernel="mlp", n_basis=self.config["stem_basis"],
                           grid_fast_path=True)

    def start_from(self, source):
        plain = Classifier(**self.config)
        plain.start_from(source)
        state = plain.state_dict()
        w = state["stem.weight"]  # (out, in, basis): the spacing channel's weights are zero
        state["stem.weight"] = torch.cat([w, w.new_zeros(w.shape[0], 1, w.shape[2])], 1)
        self.load_state_dict(state)

    def forward(self, x, points):
        points = self.prepare_points(points)
        x = self.interpolant(x, points, self.interpolant_grid)
        x = torch.cat([x, node_spacing(points, self.interpolant_grid).to(x).expand(
            len(x), -1, -1)], -1)
        x = torch.relu(self.stem_norm(self.stem(x, self.interpolant_grid, self.lattice),
                                      self.lattice))
        logits, _ = self.net(x, self.lattice)
        return logits


register_model("classify", "dinet-res-spacing", lambda *, in_channels, n_classes, base_spacing,
               kernel, quadrature, **_: SpacingClassifier(
                   "dinet-res", in_channels=in_channels, n_classes=n_classes,
                   base_spacing=base_spacing, kernel=kernel, quadrature=quadrature),
               pixels=2.0)


def main(train_fields: str, test_fields: str, init: str, out: str, epochs: int = 3) -> None:
    train(TrainConfig(fields=train_fields, out=out, model="dinet-res-spacing",
                      discretization="sobol", points=1024, mix_points=(128, 256, 512),
                      epochs=epochs, batch_size=64, lr=5e-4, init=init))
    results = evaluate(out, test_fields, ("sobol", "grid", "shrunk", "random", "jittered"),
                       (256, 1024), plots=False)
    for kind, row in results["metrics"]["accuracy"].items():
        print(f"{kind}: 256 {100 * row['256']:.1f}%  1,024 {100 * row['1024']:.1f}%  "
              f"gap {100 * (row['256'] - row['1024']):+.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:5], *(int(a) for a in sys.argv[5:6]))
