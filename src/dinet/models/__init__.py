"""Models on fields: classifier, segmenter and SDF networks (the paper's presets and ours),
discrete CNN baselines, and checkpoints that rebuild them."""

from .base import QUADRATURES, DIModel, check_quadrature, load_model, unweighted
from .baselines import GridCNNClassifier, GridCNNSegmenter, VoxelCNN3d
from .classifier import PRESETS, Classifier
from .sdf import SDFNet
from .segmenter import SEGMENTER_PRESETS, Segmenter

__all__ = [
    "PRESETS",
    "QUADRATURES",
    "SEGMENTER_PRESETS",
    "Classifier",
    "DIModel",
    "GridCNNClassifier",
    "GridCNNSegmenter",
    "SDFNet",
    "Segmenter",
    "VoxelCNN3d",
    "check_quadrature",
    "load_model",
    "unweighted",
]
