"""What each task trains on: inputs (field values at points) and targets, by task.

- ``classify``: a labelled field dataset (``dinet fit --source fashion-mnist``); the target
  is the field's class.
- ``segment``: a field dataset of segmentation scenes (``dinet fit --source scenes``); the
  target is the label of the pixel cell a point falls in (the label maps are regenerated
  from the seed recorded in the manifest and checked against the fitted images' checksum).
- ``sdf``: synthetic 3-D ball scenes, named ``balls:N[:SEED]``; the input is their exact
  RGBA field and the target the exact signed distance (no fitting needed).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..fields import FieldDataset
from ..fields.dataset import DatasetError
from ..points import PointSet

__all__ = ["TASKS", "TaskData", "open_task_data"]

TASKS = ("classify", "segment", "sdf")
_BALLS = re.compile(r"balls:(\d+)(?::(\d+))?$")


class TaskData:
    """The inputs and targets of one task's dataset.

    Attributes:
        task: one of :data:`TASKS`.
        dim: the domain's dimension.
        in_channels: channels of the input field.
        n_classes: classes of the target (``classify``, ``segment``), 1 for ``sdf``.
        size: pixels (voxels) per axis of the source images, which sets the models'
            finest kernel spacing ``2 / size``.
        spec: where the data came from (a folder, or ``balls:N:SEED``).
    """

    task: str
    dim: int = 2
    in_channels: int
    n_classes: int
    size: int
    spec: str

    def __len__(self) -> int:
        raise NotImplementedError

    def inputs(self, idx: np.ndarray, coords: torch.Tensor) -> torch.Tensor:
        """Field values ``(B, N, in_channels)`` of items ``idx`` at ``coords`` (``(N, d)``
        shared, or ``(B, N, d)`` per item)."""
        raise NotImplementedError

    def sample(self, idx: np.ndarray, points: PointSet) -> torch.Tensor:
        """:meth:`inputs` at ``points``' coordinates (cached where the data allow it)."""
        return self.inputs(idx, points.coords)

    def targets(self, idx: np.ndarray, coords: torch.Tensor | None = None) -> torch.Tensor:
        """Targets of items ``idx``: class ``(B,)``, labels ``(B, N)`` or distances
        ``(B, N, 1)`` at ``coords``."""
        raise NotImplementedError


class _FieldTaskData(TaskData):
    def __init__(self, task: str, dataset: FieldDataset, spec: str) -> None:
        self.task, self.dataset, self.spec = task, dataset, spec
        self.in_channels = dataset.out_dim
        shape = dataset.manifest.get("source", {}).get("image_shape", [32])
        self.size = int(shape[0])

    def __len__(self) -> int:
        return len(self.dataset)

    def inputs(self, idx, coords):
        with torch.no_grad():
            return self.dataset.fields(idx)(coords)

    def sample(self, idx, points):
        return self.dataset.sample(idx, points)


class ClassifyData(_FieldTaskData):
    def __init__(self, dataset: FieldDataset, spec: str) -> None:
        super().__init__("classify", dataset, spec)
        self.labels = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))
        self.n_classes = int(self.labels.max()) + 1

    def targets(self, idx, coords=None):
        return self.labels[torch.as_tensor(idx)]


class SegmentData(_FieldTaskData):
    def __init__(self, dataset: FieldDataset, spec: str, scenes) -> None:
        super().__init__("segment", dataset, spec)
        self.scenes = scenes
        self.n_classes = int(scenes.num_classes)

    def targets(self, idx, coords=None):
        return self.scenes.label_field(np.asarray(idx), coords)


class SDFData(TaskData):
    """Ball scenes (``dinet.data.make_balls``): RGBA in, signed distance out."""

    dim = 3

    def __init__(self, n: int, seed: int, size: int = 16) -> None:
        from ..data import make_balls

        self.task, self.spec = "sdf", f"balls:{n}:{seed}"
        self.balls = make_balls(n, seed=seed)
        self.in_channels, self.n_classes, self.size = 4, 1, size

    def __len__(self) -> int:
        return len(self.balls)

    def inputs(self, idx, coords):
        return self.balls.rgba(np.asarray(idx), coords)

    def targets(self, idx, coords=None):
        return self.balls.sdf(np.asarray(idx), coords)


def _source_name(dataset: FieldDataset) -> str:
    return str(dataset.manifest.get("source", {}).get("source", "unknown"))


def open_task_data(task: str, spec: str | Path) -> TaskData:
    """The data of ``task`` named by ``spec`` (a field dataset folder, or ``balls:N[:SEED]``
    for ``sdf``), with an error that says what to pass when they do not fit together."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    spec = str(spec)
    if task == "sdf":
        match = _BALLS.match(spec)
        if match is None:
            raise ValueError(
                f"the sdf task reads synthetic ball scenes, named balls:N[:SEED] (e.g. "
                f"--fields balls:2000 to train, balls:500:1 to test); got {spec!r}")
        return SDFData(int(match.group(1)), int(match.group(2) or 0))
    if _BALLS.match(spec):
        raise ValueError(f"{spec!r} names 3-D ball scenes, which only the sdf task reads; "
                         f"the {task} task needs a field dataset folder (dinet fit)")
    dataset = FieldDataset.open(spec)
    problems = dataset.verify()  # every shard, before anything is trained or written
    if problems:
        more = f" (and {len(problems) - 1} more damaged shards)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
    source = _source_name(dataset)
    if task == "classify":
        if dataset.labels is None:
            raise ValueError(
                f"{spec} holds {source} fields without labels, so it cannot train or test a "
                "classifier — use a labelled dataset (e.g. `dinet fit --source fashion-mnist`)"
                + (", or --task segment for scenes" if source == "scenes" else ""))
        return ClassifyData(dataset, spec)
    if source != "scenes":
        raise ValueError(
            f"{spec} holds {source} fields, not segmentation scenes — make scenes with "
            "`dinet fit --source scenes --out FOLDER`" +
            (", or use --task classify for this one" if dataset.labels is not None else ""))
    return SegmentData(dataset, spec, _regenerate_scenes(dataset, spec))


def _regenerate_scenes(dataset: FieldDataset, spec: str):
    """The scenes a ``dinet fit --source scenes`` dataset was fitted to, rebuilt from the
    recorded count, seed and size, and checked against the recorded source checksum."""
    from .. import data
    from ..fields.build import source_checksum

    info = dataset.manifest.get("source", {})
    try:
        items = data.load_fashion_mnist(info.get("split", "train"))
        scenes = data.make_scenes(int(info["n"]), seed=int(info["seed"]), size=int(info["size"]),
                                  source=items)
    except KeyError as err:
        raise ValueError(f"{spec}: the manifest does not record the scenes' {err} — refit "
                         "it with `dinet fit --source scenes`") from None
    if "checksum" in info and source_checksum(scenes.images, None) != info["checksum"]:
        raise ValueError(
            f"{spec}: the scenes rebuilt from the recorded seed differ from the ones that "
            "were fitted (another Fashion-MNIST copy or dinet version?) — refit the dataset")
    return scenes
