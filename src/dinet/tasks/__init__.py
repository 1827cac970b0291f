"""Tasks end to end: discretizations, training (and, to come, evaluation and reports)."""

from .discretize import DISCRETIZATIONS, RANDOMISED, make_points
from .train import TrainConfig, train

__all__ = ["DISCRETIZATIONS", "RANDOMISED", "TrainConfig", "make_points", "train"]
