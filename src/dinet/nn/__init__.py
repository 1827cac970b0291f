"""Discretization-invariant layers: ``torch.nn.Module``s acting on ``(values, PointSet)``."""

from .attention import DIAttention
from .base import DIModule
from .compose import Coarsened, DIChain, DISequential, Residual, SkipConcat, apply_module
from .conv import DIConv
from .families import KernelFamily, kernel_families, register_kernel_family
from .functional import reference_conv, sparse_matmul, stencil_conv
from .kernels import MLPBasis
from .norm import DIBatchNorm, DIInstanceNorm, DILayerNorm
from .pointwise import PointwiseLinear, PointwiseMLP, PositionalEncoding
from .pool import DIAvgPool, DIMaxPool, GlobalAvgPool, GlobalMaxPool
from .recalibrate import reestimate_batchnorm
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
    "KernelFamily",
    "MLPBasis",
    "PointwiseLinear",
    "PointwiseMLP",
    "PositionalEncoding",
    "Resample",
    "Residual",
    "SkipConcat",
    "apply_module",
    "kernel_families",
    "reference_conv",
    "reestimate_batchnorm",
    "register_kernel_family",
    "sparse_matmul",
    "stencil_conv",
]
