"""Tasks end to end: named discretizations, training, cross-discretization evaluation."""

from .discretize import DISCRETIZATIONS, RANDOMISED, make_points
from .evaluate import evaluate, results_table
from .train import TrainConfig, train

__all__ = [
    "DISCRETIZATIONS",
    "RANDOMISED",
    "TrainConfig",
    "evaluate",
    "make_points",
    "results_table",
    "train",
]
