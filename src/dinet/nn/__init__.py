"""Discretization-invariant layers: ``torch.nn.Module``s acting on ``(values, PointSet)``."""

from .attention import DIAttention
from .base import DIModule
from .compose import Coarsened, DIChain, DISequential, Residual, SkipConcat, apply_module
from .conv import DIConv
from .functional import reference_conv, sparse_matmul, stencil_conv
from .kernels import MLPBasis
from .norm import DIBatchNorm, DIInstanceNorm, DILayerNorm
from .pointwise import PointwiseLinear, PointwiseMLP, PositionalEncoding
from .pool import DIAvgPool, DIMaxPool, GlobalAvgPool, GlobalMaxPool
from .resample import Resample

__all__ = [
    "Coarsened",
    "DIAttention",
    "DIAvgPool",
    "DIBatchNorm",
    "DIChain",
    "DIConv",
    "DIInstanceNorm",
    "DILayerNorm",
    "DIMaxPool",
    "DIModule",
    "DISequential",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "MLPBasis",
    "PointwiseLinear",
    "PointwiseMLP",
    "PositionalEncoding",
    "Residual",
    "Resample",
    "SkipConcat",
    "apply_module",
    "reference_conv",
    "sparse_matmul",
    "stencil_conv",
]
