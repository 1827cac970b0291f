"""An experiment: does ``dinet-unet`` read sparse, uneven points better when its stem also
sees each lattice node's K nearest input points?

``dinet-unet``'s stem reads the points' Delaunay interpolant at its lattice nodes (and each
node's distance to the nearest point). Here a small learned kernel adds F channels per input
channel: Σ_j φ(δ_j) (f(y_j) − f̃(node)) / K over the node's K nearest points y_j, φ an MLP of
the offset δ_j (pixels) and its length — a kernel whose support adapts to the local spacing,
which can learn more than a linear reconstruction where the points are sparse. Its stem
weights start at zero, so ``--init`` from the pixel U-Net is exact on the grid as before.

The model is registered as ``dinet-unet-knn`` by importing this script (dinet is not edited;
``dinet --plugin benchmarks/seg_knn_stem.py eval --run OUT ...`` scores its run), trained
like README's ``runs/i21/seg1-rand`` (random 1,024 points, 4 epochs, batch 64, lr 2e-4,
started from and taught by the pixel U-Net run CNN) and scored at 1,024 Sobol, random and
shrunk points.

Usage: ``.venv/bin/python benchmarks/seg_knn_stem.py TRAIN TEST CNN OUT [EPOCHS]`` (TRAIN,
TEST: scene field datasets; CNN: a ``--model cnn`` run on them; OUT: the new run folder).
"""

from __future__ import annotations

import sys

import torch
from scipy.spatial import cKDTree
from torch import nn

from dinet.models import Segmenter, register_model
from dinet.nn import DIConv
from dinet.tasks import TrainConfig, evaluate, train

K, FEATURES = 8, 8  # neighbours per node, learned channels per input channel (fixed: a
# checkpoint of KnnUNet rebuilds with these)


class NeighbourStem(nn.Module):
    """The interpolant at the nodes, then F learned neighbour features per channel."""

    def __init__(self, interpolant: nn.Module, step: float, hidden: int = 32) -> None:
        super().__init__()
        self.interpolant, self.step, self.k = interpolant, step, K
        self.phi = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, FEATURES))

    def forward(self, x, points, nodes):
        filled = self.interpolant(x, points, nodes)  # (B, M, C)
        dist, idx = cKDTree(points.coords.double().cpu().numpy()).query(
            nodes.coords.double().cpu().numpy(), self.k)
        idx = torch.as_tensor(idx, device=x.device)
        offset = (points.coords.to(x)[idx] - nodes.coords.to(x)[:, None]) / self.step
        geometry = torch.cat([offset, torch.as_tensor(dist, dtype=x.dtype, device=x.device)
                              [..., None] / self.step], -1)  # (M, K, 3)
        weight = self.phi(geometry)  # (M, K, F)
        diff = x[:, idx] - filled[:, :, None]  # (B, M, K, C)
        feats = torch.einsum("mkf,bmkc->bmfc", weight, diff) / self.k
        return torch.cat([filled, feats.flatten(2)], -1)


class KnnUNet(Segmenter):
    """dinet-unet with :class:`NeighbourStem`: the stem's input channels are the
    interpolant's C, the F·C neighbour features, then the spacing channel."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        c, width = self.config["in_channels"], self.config["widths"][0]
        self.features = FEATURES * c
        step = 2.0 / self.lattice.shape[0]
        self.interpolant = NeighbourStem(self.interpolant, step)
        self.stem = DIConv(c + self.features + 1, width, 3, spacing=step, bias=False)

    def start_from(self, source):
        # load into a plain dinet-unet, then widen its stem with zero weights
        plain = Segmenter("dinet-unet", **{k: v for k, v in self.config.items()
                                           if k in ("in_channels", "n_classes", "base_spacing",
                                                    "quadrature", "kernel", "widths")})
        plain.start_from(source)
        state = plain.state_dict()
        stem = state["stem.weight"]
        c = self.config["in_channels"]
        state["stem.weight"] = torch.cat([stem[:, :c], stem.new_zeros(
            stem.shape[0], self.features, *stem.shape[2:]), stem[:, c:]], 1)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or any(not m.startswith("interpolant.phi") for m in missing):
            raise ValueError(f"unexpected state: missing {missing}, unexpected {unexpected}")


register_model("segment", "dinet-unet-knn", lambda *, in_channels, n_classes, base_spacing,
               kernel, quadrature, **_: KnnUNet(
                   "dinet-unet", in_channels=in_channels, n_classes=n_classes,
                   base_spacing=base_spacing, kernel=kernel, quadrature=quadrature))


def main(train_fields: str, test_fields: str, cnn: str, out: str, epochs: int = 4) -> None:
    train(TrainConfig(fields=train_fields, out=out, task="segment", model="dinet-unet-knn",
                      discretization="random", points=1024, epochs=epochs, batch_size=64,
                      lr=2e-4, init=cnn, distill=cnn))
    results = evaluate(out, test_fields, ("sobol", "random", "shrunk"), (1024,), plots=False)
    for metric in ("miou", "miou_pixel_centres"):
        print(metric, {kind: round(100 * v["1024"], 1)
                       for kind, v in results["metrics"][metric].items()})


if __name__ == "__main__":
    main(*sys.argv[1:5], *(int(a) for a in sys.argv[5:6]))
