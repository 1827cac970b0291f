"""Classification: a labelled field dataset in, the field's class out.

The data come from ``dinet fit --source fashion-mnist`` (or any labelled source); the loss is
the cross-entropy of the model's logits, the metric the accuracy over items.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..fields import FieldDataset
from .base import (
    FieldTaskData,
    Scorer,
    Task,
    class_names_of,
    open_field_dataset,
    register_task,
    source_name,
)

__all__ = ["ClassifyData", "ClassifyTask"]


class ClassifyData(FieldTaskData):
    """Fields and their class labels (``targets(idx)``: ``(B,)`` int64)."""

    def __init__(self, dataset: FieldDataset, spec: str) -> None:
        super().__init__("classify", dataset, spec)
        self.labels = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))
        self.n_classes = int(self.labels.max()) + 1
        self.class_names = class_names_of(dataset.manifest.get("source", {}), self.n_classes)

    def targets(self, idx, coords=None):
        return self.labels[torch.as_tensor(idx)]


class _AccuracyScorer(Scorer):
    def __init__(self, data: ClassifyData, model) -> None:
        self.data, self.model = data, model
        self.correct = self.count = 0

    def add(self, idx, x, points):
        self.correct += int((self.model(x, points).argmax(1) == self.data.targets(idx)).sum())
        self.count += len(idx)

    def result(self):
        return {"accuracy": self.correct / self.count}


class ClassifyTask(Task):
    name = "classify"
    help = "classify: a labelled field dataset"
    metrics = ("accuracy",)
    percent = frozenset(metrics)

    def open_data(self, spec: str) -> ClassifyData:
        dataset = open_field_dataset(spec, self.name)
        if dataset.labels is None:
            source = source_name(dataset)
            raise ValueError(
                f"{spec} holds {source} fields without labels, so it cannot train or test a "
                "classifier — use a labelled dataset (e.g. `dinet fit --source fashion-mnist`)"
                + (", or --task segment for scenes" if source == "scenes" else ""))
        return ClassifyData(dataset, spec)

    def loss(self, out, data, idx, where, points, query):
        target = data.targets(idx).to(out.device)
        return F.cross_entropy(out, target), int((out.argmax(1) == target).sum()), len(idx)

    def predict(self, model, x, points, query):
        probability = model(x, points).softmax(-1)
        return {"label": probability.argmax(-1), "probability": probability}

    def scorer(self, data, model, seed):
        return _AccuracyScorer(data, model)


register_task(ClassifyTask())
