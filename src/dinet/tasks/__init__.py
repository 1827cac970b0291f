"""Tasks end to end: what each task trains on, training, cross-discretization evaluation,
reports and figures."""

from .data import TASKS, TaskData, open_task_data
from .discretize import (
    discretizations,
    is_randomised,
    make_points,
    point_sets,
    register_discretization,
)
from .evaluate import DEFAULT_POINTS, METRICS, evaluate, report, results_table
from .from_cnn import FromCNNConfig, from_cnn_table, run_from_cnn, small_cnn
from .train import MODELS, TrainConfig, build_model, train

__all__ = [
    "DEFAULT_POINTS",
    "FromCNNConfig",
    "METRICS",
    "MODELS",
    "TASKS",
    "TaskData",
    "TrainConfig",
    "build_model",
    "discretizations",
    "evaluate",
    "from_cnn_table",
    "is_randomised",
    "make_points",
    "open_task_data",
    "point_sets",
    "register_discretization",
    "report",
    "results_table",
    "run_from_cnn",
    "small_cnn",
    "train",
]
