"""Segmentation: a field dataset of scenes in, a label at every query point out.

The data come from ``dinet fit --source scenes``; the target of a point is the label of the
pixel cell it falls in (the label maps are regenerated from the seed recorded in the
manifest and checked against the fitted images' checksum). The loss is the integral of the
per-point cross-entropy over the domain; the metrics are the mean IoU and the pixel
accuracy, at scrambled-Sobol query points and at the pixel centres.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import points as P
from ..fields import FieldDataset
from ..points import values_to_image
from .base import (
    FieldTaskData,
    Scorer,
    Task,
    class_names_of,
    open_field_dataset,
    register_task,
    source_name,
)
from .discretize import make_points
from .metrics import confusion, mean_iou, pixel_accuracy

__all__ = ["SegmentData", "SegmentTask"]


class SegmentData(FieldTaskData):
    """Scene fields and their label maps (``targets(idx, coords)``: ``(B, N)`` int64)."""

    def __init__(self, dataset: FieldDataset, spec: str, scenes) -> None:
        super().__init__("segment", dataset, spec)
        self.scenes = scenes
        self.n_classes = int(scenes.num_classes)
        self.class_names = class_names_of(dataset.manifest.get("source", {}), self.n_classes)

    def targets(self, idx, coords=None):
        return self.scenes.label_field(np.asarray(idx), coords)


class _ConfusionScorer(Scorer):
    """Confusion matrices at Sobol query points (one per pixel) and at the pixel centres."""

    def __init__(self, data: SegmentData, model, seed: int) -> None:
        self.data, self.model = data, model
        side = data.size
        self.queries = {"": make_points("sobol", side * side, seed=seed + 1),
                        "_pixel_centres": P.grid((side, side))}
        self.conf = {k: torch.zeros(data.n_classes, data.n_classes, dtype=torch.long)
                     for k in self.queries}

    def add(self, idx, x, points):
        for key, query in self.queries.items():
            pred = self.model(x, points, query).argmax(-1)
            self.conf[key] += confusion(pred, self.data.targets(idx, query.coords),
                                        self.data.n_classes)

    def result(self):
        out = {}
        for key, conf in self.conf.items():
            out["miou" + key] = mean_iou(conf)
            out["pixel_accuracy" + key] = pixel_accuracy(conf)
        return out


class SegmentTask(Task):
    name = "segment"
    help = "segment: a `dinet fit --source scenes` dataset"
    metrics = ("miou", "pixel_accuracy", "miou_pixel_centres", "pixel_accuracy_pixel_centres")
    table_metrics = ("miou", "miou_pixel_centres")
    train_metric = "accuracy"
    percent = frozenset(metrics)
    reads_queries = True

    def open_data(self, spec: str) -> SegmentData:
        dataset = open_field_dataset(spec, self.name)
        source = source_name(dataset)
        if source != "scenes":
            raise ValueError(
                f"{spec} holds {source} fields, not segmentation scenes — make scenes with "
                "`dinet fit --source scenes --out FOLDER`" +
                (", or use --task classify for this one" if dataset.labels is not None
                 else ""))
        return SegmentData(dataset, spec, _regenerate_scenes(dataset, spec))

    def forward(self, model, x, points, seed, data):
        """The logits where the loss integrates exactly, if there is such a rule: the labels
        are constant on each pixel, and so are the logits of a model that reads them by
        lattice cell (``read="cell"``, the segmenters' default), so the pixel centres, each
        pixel once, give the integral of the loss over the domain; a model whose output varies
        inside a pixel is read at its input points, their quadrature weights the rule."""
        config = getattr(model, "module", model).config  # DDP wraps the model
        query = P.grid((data.size, data.size)) if config.get("read") == "cell" else points
        return model(x, points, query), query

    def loss(self, out, data, idx, where, points, query):
        target = data.targets(idx, where(query.coords)).to(out.device)
        # The loss is the integral of the per-point loss: quadrature-weighted.
        per_point = F.cross_entropy(out.transpose(1, 2), target, reduction="none")
        w = (query.weights / query.weights.sum()).to(out.device)
        return ((per_point * w).sum(1).mean(), int((out.argmax(-1) == target).sum()),
                target.numel())

    def predict(self, model, x, points, query):
        confidence, label = model(x, points, query).softmax(-1).max(-1)
        return {"label": label, "confidence": confidence}

    def scorer(self, data, model, seed):
        return _ConfusionScorer(data, model, seed)

    def example_panels(self, data, model, idx, points):
        """Input | true labels | predicted labels at the pixel centres."""
        side = data.size
        pixels = P.grid((side, side))
        image = values_to_image(data.sample(idx, pixels), pixels)[:, 0].numpy()
        pred = model(data.sample(idx, points), points, pixels).argmax(-1)
        pred = values_to_image(pred[..., None].float(), pixels)[:, 0].long().numpy()
        truth = data.targets(idx, pixels.coords)
        truth = values_to_image(truth[..., None].float(), pixels)[:, 0].long().numpy()
        rows = [[{"image": image[i], "kind": "image"}, {"image": truth[i], "kind": "labels"},
                 {"image": pred[i], "kind": "labels"}] for i in range(len(idx))]
        return rows, ["input field", "truth",
                      f"prediction ({points.kind}, {len(points):,} points)"]


def _regenerate_scenes(dataset: FieldDataset, spec: str):
    """The scenes a ``dinet fit --source scenes`` dataset was fitted to, rebuilt from the
    recorded count, seed, size, item scale and item count (datasets that predate the last two
    were made with :data:`~dinet.data.scenes.FORMER_SCENE_OPTIONS`), and checked against the
    recorded source checksum."""
    from .. import data
    from ..data.scenes import FORMER_SCENE_OPTIONS
    from ..fields.build import source_checksum

    info = dataset.manifest.get("source", {})
    try:
        items = data.load_fashion_mnist(info.get("split", "train"))
        options = {k: tuple(info.get(k, v)) for k, v in FORMER_SCENE_OPTIONS.items()}
        scenes = data.make_scenes(int(info["n"]), seed=int(info["seed"]), size=int(info["size"]),
                                  source=items, **options)
    except KeyError as err:
        raise ValueError(f"{spec}: the manifest does not record the scenes' {err} — refit "
                         "it with `dinet fit --source scenes`") from None
    if "checksum" in info and source_checksum(scenes.images, None) != info["checksum"]:
        raise ValueError(
            f"{spec}: the scenes rebuilt from the recorded seed differ from the ones that "
            "were fitted (another Fashion-MNIST copy or dinet version?) — refit the dataset")
    return scenes


register_task(SegmentTask())
