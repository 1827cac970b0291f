"""Tasks end to end: what each task trains on, training, cross-discretization evaluation,
reports and figures.

A task is one module (:mod:`~dinet.tasks.classify`, :mod:`~dinet.tasks.segment`,
:mod:`~dinet.tasks.sdf`) holding a :class:`Task` — its data, loss, scorer, metrics and
pictures — registered by name; :func:`train`, :func:`evaluate`, :func:`report` and the command
line loop over the registry, so a task added with :func:`register_task` runs through them too.
"""

# The built-in tasks register themselves in the order the command line lists them.
# isort: off
from . import classify, segment, sdf  # noqa: F401
# isort: on
from .augment import Augment, derived_seed
from .base import (
    DEFAULT_TASK,
    FieldTaskData,
    Scorer,
    Task,
    TaskData,
    get_task,
    open_task_data,
    register_task,
    task_names,
)
from .discretize import (
    discretizations,
    is_randomised,
    make_points,
    point_sets,
    register_discretization,
)
from .evaluate import DEFAULT_POINTS, evaluate, report, results_table
from .from_cnn import FromCNNConfig, from_cnn_table, run_from_cnn, small_cnn
from .predict import Predictor
from .recalibrate import RecalibrateConfig, recalibrate_run
from .runs import RunFolder
from .train import TrainConfig, WeightAverage, build_model, train

__all__ = [
    "DEFAULT_POINTS",
    "DEFAULT_TASK",
    "Augment",
    "FieldTaskData",
    "FromCNNConfig",
    "Predictor",
    "RecalibrateConfig",
    "RunFolder",
    "Scorer",
    "Task",
    "TaskData",
    "TrainConfig",
    "WeightAverage",
    "build_model",
    "derived_seed",
    "discretizations",
    "evaluate",
    "from_cnn_table",
    "get_task",
    "is_randomised",
    "make_points",
    "open_task_data",
    "point_sets",
    "recalibrate_run",
    "register_discretization",
    "register_task",
    "report",
    "results_table",
    "run_from_cnn",
    "small_cnn",
    "task_names",
    "train",
]
