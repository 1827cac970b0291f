"""Neural fields (SIREN, random Fourier features, image interpolation, analytic), batched
fitting of one field per image, and the on-disk :class:`FieldDataset`."""

from .build import build_dataset
from .dataset import DatasetError, FieldDataset
from .fit import DEFAULT_ARCH_HPARAMS, FitResult, fit_fields, offgrid_points, psnr
from .models import (
    FIELD_ARCHS,
    AnalyticField,
    BatchedLinear,
    FourierFeatureField,
    ImageField,
    SirenField,
    build_field,
)

__all__ = [
    "DEFAULT_ARCH_HPARAMS",
    "FIELD_ARCHS",
    "AnalyticField",
    "BatchedLinear",
    "DatasetError",
    "FieldDataset",
    "FitResult",
    "FourierFeatureField",
    "ImageField",
    "SirenField",
    "build_dataset",
    "build_field",
    "fit_fields",
    "offgrid_points",
    "psnr",
]
