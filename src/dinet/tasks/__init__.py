"""Tasks end to end: what each task trains on, training, cross-discretization evaluation,
reports and figures."""

from .data import TASKS, TaskData, open_task_data
from .discretize import DISCRETIZATIONS, RANDOMISED, make_points
from .evaluate import DEFAULT_POINTS, METRICS, evaluate, report, results_table
from .from_cnn import FromCNNConfig, from_cnn_table, run_from_cnn, small_cnn
from .train import MODELS, TrainConfig, build_model, train

__all__ = [
    "DEFAULT_POINTS",
    "DISCRETIZATIONS",
    "FromCNNConfig",
    "METRICS",
    "MODELS",
    "RANDOMISED",
    "TASKS",
    "TaskData",
    "TrainConfig",
    "build_model",
    "evaluate",
    "from_cnn_table",
    "make_points",
    "open_task_data",
    "report",
    "results_table",
    "run_from_cnn",
    "small_cnn",
    "train",
]
