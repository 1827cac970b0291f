"""Models on fields: classifier, segmenter and SDF networks (the paper's presets and ours),
discrete CNN baselines, and checkpoints that rebuild them."""

from .base import QUADRATURES, DIModel, check_quadrature, load_model, unweighted
from .baselines import (
    GridCNNClassifier,
    GridCNNSegmenter,
    GridResNetClassifier,
    GridUNetSegmenter,
    VoxelCNN3d,
)
from .classifier import PRESETS, Classifier
from .registry import ModelEntry, create_model, model_entry, model_names, register_model
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
    "GridResNetClassifier",
    "GridUNetSegmenter",
    "ModelEntry",
    "SDFNet",
    "Segmenter",
    "VoxelCNN3d",
    "check_quadrature",
    "create_model",
    "load_model",
    "model_entry",
    "model_names",
    "register_model",
    "unweighted",
]


def _register_builtins() -> None:
    """The built-in models of the built-in tasks (the first of each is its default; ``cnn``
    is the discrete grid baseline — for segmentation dinet-unet's own network on pixels,
    ``cnn-small`` the former two-level one — ``cnn-res`` dinet-res's own network on pixels,
    the same size). ``dinet-res``'s lattice network starts two pixels apart (its stem
    integrates at one pixel); the others start at one pixel."""
    for preset in ("dinet-res", *(p for p in PRESETS if p != "dinet-res")):
        register_model("classify", preset, _preset_builder(Classifier, preset),
                       pixels=2.0 if preset == "dinet-res" else 1.0)
    for preset in ("dinet-unet", *(p for p in SEGMENTER_PRESETS if p != "dinet-unet")):
        register_model("segment", preset, _preset_builder(Segmenter, preset))
    register_model("sdf", "sdfnet", lambda *, in_channels, base_spacing, kernel, quadrature,
                   **_: SDFNet(in_channels=in_channels, base_spacing=base_spacing,
                               kernel=kernel, quadrature=quadrature))
    for task, name, cnn in (("classify", "cnn", GridCNNClassifier),
                            ("segment", "cnn", GridUNetSegmenter),
                            ("segment", "cnn-small", GridCNNSegmenter)):
        register_model(task, name, lambda *, cnn=cnn, in_channels, n_classes, size,
                       quadrature, **_: cnn(in_channels=in_channels, n_classes=n_classes,
                                            size=size, quadrature=quadrature),
                       grid_baseline=True)
    register_model("classify", "cnn-res", lambda *, in_channels, n_classes, size, quadrature,
                   **_: GridResNetClassifier(in_channels=in_channels, n_classes=n_classes,
                                             size=size, quadrature=quadrature),
                   grid_baseline=True)
    register_model("sdf", "cnn", lambda *, in_channels, size, quadrature, **_: VoxelCNN3d(
        in_channels=in_channels, size=size, quadrature=quadrature), grid_baseline=True)


def _preset_builder(cls, preset: str):
    def build(*, in_channels, n_classes, base_spacing, kernel, quadrature, **_):
        return cls(preset, in_channels=in_channels, n_classes=n_classes,
                   base_spacing=base_spacing, kernel=kernel, quadrature=quadrature)

    return build


_register_builtins()
