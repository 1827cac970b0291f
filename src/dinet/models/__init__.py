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
from .registry import (
    STANDARD_OPTIONS,
    ModelEntry,
    create_model,
    model_entry,
    model_names,
    register_model,
)
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
    integrates at one pixel); the others start at one pixel. Each registers the constructor
    options ``--model-option`` may set."""
    for preset in ("dinet-res", *(p for p in PRESETS if p != "dinet-res")):
        register_model("classify", preset, _builder(Classifier, preset),
                       pixels=2.0 if preset == "dinet-res" else 1.0,
                       options=("stem_spacing", "stem_basis", "stem_quadrature")
                       if preset == "dinet-res" else ())
    for preset in ("dinet-unet", *(p for p in SEGMENTER_PRESETS if p != "dinet-unet")):
        register_model("segment", preset, _builder(Segmenter, preset),
                       options=("widths", "stem_quadrature", "spacing_input", "lattice_net",
                                "read") if preset == "dinet-unet" else ())
    register_model("sdf", "sdfnet", _builder(SDFNet, uses=("in_channels", "quadrature",
                                                            "base_spacing", "kernel")),
                   options=("width", "scale", "coarse"))
    on_pixels = ("in_channels", "n_classes", "quadrature", "size")
    register_model("classify", "cnn", _builder(GridCNNClassifier, uses=on_pixels),
                   grid_baseline=True)
    register_model("segment", "cnn", _builder(GridUNetSegmenter, uses=on_pixels),
                   grid_baseline=True, options=("widths", "read"))
    register_model("segment", "cnn-small", _builder(GridCNNSegmenter, uses=on_pixels),
                   grid_baseline=True)
    register_model("classify", "cnn-res", _builder(GridResNetClassifier, uses=on_pixels),
                   grid_baseline=True)
    register_model("sdf", "cnn", _builder(VoxelCNN3d, uses=("in_channels", "quadrature", "size")),
                   grid_baseline=True, options=("width", "scale"))


#: The standard options a model on fields takes (see :func:`create_model`).
_FIELD = ("in_channels", "n_classes", "quadrature", "base_spacing", "kernel")


def _builder(cls, preset: str | None = None, uses: tuple[str, ...] = _FIELD):
    """A builder of ``cls`` (with its ``preset``) from the standard options in ``uses`` and
    the model's own options as given."""
    def build(**given):
        standard = {k: given.pop(k) for k in STANDARD_OPTIONS}
        return cls(*(() if preset is None else (preset,)), **{k: standard[k] for k in uses},
                   **given)

    return build


_register_builtins()
