"""What a task is, and the registry of tasks that ``dinet train``, ``eval``, ``report`` and the
command line loop over.

A :class:`Task` says everything the generic code needs: the data it opens (a
:class:`TaskData`), the forward pass and loss of a training step, the metrics it reports
and how they are accumulated over a test set (a :class:`Scorer`), and the example pictures
``dinet eval`` draws. Its models are registered in :mod:`dinet.models.registry` under the
task's name. The built-in tasks live one module each: :mod:`~dinet.tasks.classify`,
:mod:`~dinet.tasks.segment`, :mod:`~dinet.tasks.sdf`. A task defined elsewhere is added with
:func:`register_task` (and its models with :func:`dinet.models.register_model`) and then
trains and evaluates through the same entry points.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..data import FASHION_MNIST_CLASSES
from ..fields import FieldDataset
from ..fields.dataset import DatasetError
from ..models import model_names
from ..points import PointSet

__all__ = ["DEFAULT_TASK", "FieldTaskData", "Scorer", "Task", "TaskData", "class_names_of",
           "get_task", "open_field_dataset", "open_task_data", "register_task", "source_name",
           "task_names"]

#: The task of runs that do not record one (the first dinet versions only classified).
DEFAULT_TASK = "classify"
#: The name of synthetic 3-D ball scenes, ``balls:N[:SEED]`` (:mod:`dinet.tasks.sdf`).
BALLS = re.compile(r"balls:(\d+)(?::(\d+))?$")


class TaskData:
    """The inputs and targets of one task's dataset.

    Attributes:
        task: the task's name.
        dim: the domain's dimension.
        in_channels: channels of the input field.
        n_classes: classes of the target (1 where the target is a number).
        size: pixels (voxels) per axis of the source images, which sets the models'
            finest kernel spacing ``2 / size``.
        spec: where the data came from (a folder, or ``balls:N:SEED``).
        class_names: a name per class where the source has them (Fashion-MNIST's garments,
            a ``folder:`` source's folders), else None; recorded with a trained model so
            ``dinet predict`` can name what it finds.
    """

    task: str
    dim: int = 2
    in_channels: int
    n_classes: int
    size: int
    spec: str
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def inputs(self, idx: np.ndarray, coords: torch.Tensor) -> torch.Tensor:
        """Field values ``(B, N, in_channels)`` of items ``idx`` at ``coords`` (``(N, d)``
        shared, or ``(B, N, d)`` per item)."""
        raise NotImplementedError

    def sample(self, idx: np.ndarray, points: PointSet) -> torch.Tensor:
        """:meth:`inputs` at ``points``' coordinates (cached where the data allow it)."""
        return self.inputs(idx, points.coords)

    def to(self, device: torch.device) -> TaskData:
        """Compute :meth:`inputs` on ``device`` where the data allow it (fitted fields are
        evaluated where the model runs); the default keeps them where they are."""
        return self

    def targets(self, idx: np.ndarray, coords: torch.Tensor | None = None) -> torch.Tensor:
        """Targets of items ``idx`` (at ``coords`` where the target is a field)."""
        raise NotImplementedError


class FieldTaskData(TaskData):
    """A task's data read from a fitted field dataset (``dinet fit``)."""

    def __init__(self, task: str, dataset: FieldDataset, spec: str) -> None:
        self.task, self.dataset, self.spec = task, dataset, spec
        self.in_channels = dataset.out_dim
        shape = dataset.manifest.get("source", {}).get("image_shape", [32])
        self.size = int(shape[0])

    def __len__(self) -> int:
        return len(self.dataset)

    def to(self, device):
        self.dataset.to(device)
        return self

    def inputs(self, idx, coords):
        with torch.no_grad():
            return self.dataset.fields(idx)(coords.to(self.dataset.device))

    def sample(self, idx, points):
        return self.dataset.sample(idx, points)


def source_name(dataset: FieldDataset) -> str:
    """The source a dataset's fields were fitted to (``fashion-mnist``, ``scenes``, ...)."""
    return str(dataset.manifest.get("source", {}).get("source", "unknown"))


def class_names_of(source: dict, n_classes: int) -> tuple[str, ...] | None:
    """The names of ``n_classes`` classes of data fitted from ``source`` (a manifest's
    ``source`` record): Fashion-MNIST's garments (scenes: "background" first, as label k + 1
    is an item of class k), the digits, a ``folder:`` source's folders; None where the
    source names none (an ``npz:`` archive's integer labels)."""
    kind = source.get("source")
    names = (("background", *FASHION_MNIST_CLASSES) if kind == "scenes"
             else FASHION_MNIST_CLASSES if kind == "fashion-mnist"
             else tuple(map(str, range(10))) if kind == "digits"
             else tuple(map(str, source.get("classes") or ())))
    return names[:n_classes] if len(names) >= n_classes else None


def open_field_dataset(spec: str, task: str) -> FieldDataset:
    """The field dataset folder ``spec`` of ``task``, every shard verified before anything
    is trained on it or written."""
    if BALLS.match(spec):
        raise ValueError(f"{spec!r} names 3-D ball scenes, which only the sdf task reads; "
                         f"the {task} task needs a field dataset folder (dinet fit)")
    dataset = FieldDataset.open(spec)
    problems = dataset.verify()
    if problems:
        more = f" (and {len(problems) - 1} more damaged shards)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
    return dataset


class Scorer:
    """Accumulates a task's metrics over the batches of one test point set."""

    def add(self, idx: np.ndarray, x: torch.Tensor, points: PointSet) -> None:
        """Score items ``idx`` whose fields read ``x`` (``(B, N, C)``) at ``points``."""
        raise NotImplementedError

    def result(self) -> dict[str, float]:
        """Every metric of :attr:`Task.metrics` over what was added."""
        raise NotImplementedError


class Task:
    """A task: its data, its training step, its metrics and its pictures.

    Attributes:
        name: the name ``--task`` takes.
        help: one line for ``dinet train --help``: what the task reads.
        data_help: what ``--fields`` names for this task.
        dim: the domain's dimension.
        default_points: training points per item when ``--points`` is not given.
        metrics: metric names, the primary one first (tables, heat maps, reports).
        table_metrics: the metrics ``results.md`` shows (default: the primary one).
        train_metric: the metric each epoch reports (in ``metrics.jsonl`` and the bar;
            default: the primary one).
        lower_is_better: metrics where less is better (errors).
        percent: metrics shown as percentages.
        input_noise: standard deviation of the noise added to the inputs when training
            with augmentation (0: none).
        reads_queries: whether the output is a field read at query points (segment, sdf)
            rather than one answer per item (classify).
    """

    name: str
    help: str = ""
    data_help: str = "a field dataset folder (dinet fit)"
    dim: int = 2
    default_points: int = 1024
    metrics: tuple[str, ...] = ()
    table_metrics: tuple[str, ...] = ()
    train_metric: str = ""
    lower_is_better: frozenset[str] = frozenset()
    percent: frozenset[str] = frozenset()
    input_noise: float = 0.02
    reads_queries: bool = False

    @property
    def epoch_metric(self) -> str:
        """The name of the metric each training epoch reports."""
        return self.train_metric or self.metrics[0]

    @property
    def shown_metrics(self) -> tuple[str, ...]:
        """The metrics ``results.md`` shows."""
        return self.table_metrics or self.metrics[:1]

    @property
    def models(self) -> tuple[str, ...]:
        """The models registered for this task (:func:`dinet.models.register_model`), the
        default first."""
        return model_names(self.name)

    def open_data(self, spec: str) -> TaskData:
        """The data named by ``spec``, or a ValueError that says what to pass."""
        raise NotImplementedError

    def forward(self, model, x: torch.Tensor, points: PointSet, seed: int,
                data: TaskData) -> tuple[torch.Tensor, PointSet | None]:
        """A training step's forward pass on ``data``'s items: the output and the query points
        it was read at (None where the output is not a field). ``seed`` draws anything
        random."""
        return model(x, points), None

    def loss(self, out: torch.Tensor, data: TaskData, idx: np.ndarray, where,
             points: PointSet, query: PointSet | None) -> tuple[torch.Tensor, float, int]:
        """The mean loss of items ``idx`` given the model's output ``out``, the summed
        :attr:`train_metric` and its count. ``where(coords)`` maps coordinates to where the
        (augmented) items are read, for targets that are fields."""
        raise NotImplementedError

    def distill_loss(self, out: torch.Tensor, teacher: torch.Tensor,
                     query: PointSet | None) -> torch.Tensor:
        """How far the output ``out`` is from a teacher's ``teacher`` at the same items and
        query points (``dinet train --distill``): the cross-entropy of the student's classes
        under the teacher's probabilities, over the last axis, averaged with the query's
        quadrature weights when the output is a field, then over the items."""
        per = -(teacher.softmax(-1) * out.log_softmax(-1)).sum(-1)
        if query is not None:
            w = (query.weights / query.weights.sum()).to(out.device)
            per = (per * w).sum(-1)
        return per.mean()

    def predict(self, model, x: torch.Tensor, points: PointSet,
                query: PointSet | None) -> dict[str, torch.Tensor]:
        """Named outputs of ``model`` reading ``x`` at ``points`` (and at ``query`` when
        :attr:`reads_queries`), each with the items first — what ``dinet predict`` writes.
        The default is the raw ``output``; the built-in tasks name labels and
        probabilities."""
        return {"output": model(x, points) if query is None else model(x, points, query)}

    def scorer(self, data: TaskData, model, seed: int) -> Scorer:
        """A fresh :class:`Scorer` of ``model`` on ``data`` (``seed``: its query points)."""
        raise NotImplementedError

    def example_panels(self, data: TaskData, model, idx: np.ndarray,
                       points: PointSet) -> tuple[list, list[str]] | None:
        """Rows of ``dinet.tasks.plots.panels`` (input | truth | prediction per item, the
        model reading items ``idx`` at ``points``) and their column titles, or None when the
        task has no picture to show (then nothing is sampled)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` (replacing one of the same name); returns it, so it can decorate an
    instance's creation."""
    if not isinstance(task, Task) or not getattr(task, "name", ""):
        raise TypeError(f"register_task takes a named Task instance; got {task!r}")
    if not task.metrics:
        raise ValueError(f"task {task.name!r} must name its metrics (the primary one first)")
    _TASKS[task.name] = task
    return task


def task_names() -> tuple[str, ...]:
    """The registered tasks, built-in ones first."""
    return tuple(_TASKS)


def get_task(name: str) -> Task:
    """The registered task ``name``, or a ValueError naming the valid ones."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(_TASKS)}")
    return _TASKS[name]


def open_task_data(task: str, spec: str | Path) -> TaskData:
    """The data of ``task`` named by ``spec`` (a field dataset folder, or ``balls:N[:SEED]``
    for ``sdf``), with an error that says what to pass when they do not fit together."""
    return get_task(task).open_data(str(spec))
