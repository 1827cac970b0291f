"""Normalization layers whose statistics are integrals over the domain.

A mean over "all pixels" becomes the average value of the field, ∫ f / ∫ 1, approximated by
quadrature with the point set's weights: Σ_j w_j f(y_j) / Σ_j w_j. With uniform weights (grids,
Sobol, …) this is the plain mean, so on a grid :class:`DIBatchNorm`, :class:`DIInstanceNorm`
and :class:`DILayerNorm` equal ``nn.BatchNorm2d``, ``nn.InstanceNorm2d`` and
``nn.GroupNorm(1, C)``; with non-uniform points (denser in some region) the weights stop that
region from dominating the statistics, and duplicating points changes nothing.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from ..points import PointSet
from .base import DIModule, check_points, check_values
from .pointwise import check_same_points

__all__ = [
    "DIBatchNorm",
    "DIInstanceNorm",
    "DILayerNorm",
    "effective_sample_size",
    "synced_batch_moments",
    "weighted_moments",
]


def _check_num_features(num_features) -> int:
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
        raise ValueError(
            f"num_features must be a positive integer (the channel count C); got {num_features!r}"
        )
    return num_features


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number; got {eps!r}")
    return float(eps)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics of half-precision values are accumulated in float32."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def weighted_moments(
    x: torch.Tensor, points: PointSet, dims: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Quadrature-weighted mean and biased variance of ``x`` over ``dims``.

    Reduces ``x`` of shape ``(B, N, C)`` over ``dims`` (which must include the point axis 1):
    points count with their normalised weights :math:`p_j = w_j / \sum_k w_k`, every entry of
    the other reduced axes equally. The variance is two-pass, Σ p (x − mean)², which stays
    accurate when the mean is large compared with the spread.

    Returns:
        ``(mean, centred, var)``: ``mean`` and ``var`` with the reduced axes kept (size 1),
        and ``centred = x - mean``, all in ``x``'s dtype.
    """
    if 1 not in dims:
        raise ValueError(f"weighted_moments reduces over the point axis 1; got dims={dims}")
    weights = points.weights.to(device=x.device, dtype=x.dtype)
    prob = (weights / weights.sum()).reshape(1, -1, 1)
    count = math.prod(x.shape[d] for d in dims if d != 1)
    mean = (x * prob).sum(dims, keepdim=True) / count
    centred = x - mean
    var = (centred.square() * prob).sum(dims, keepdim=True) / count
    return mean, centred, var


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of every rank's input is the sum of
    the gradients reaching every rank's output (the backward is an all-reduce too)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def _several_ranks() -> bool:
    """Whether a default process group of more than one rank exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def synced_batch_moments(
    x: torch.Tensor, points: PointSet
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    r""":func:`weighted_moments` over ``dims=(0, 1)`` of the batch split across all ranks.

    Each rank holds a slice ``(B_r, N, C)`` of one global batch read on the same points.
    The weighted sums :math:`\sum_t \sum_j p_j x_{tjc}` and the counts B_r are summed over
    the ranks (one all-reduce), then the centred squares (a second one): the mean and the
    two-pass variance of the whole batch, with gradients that flow back to every rank's
    values. A rank's slice may be empty.

    Returns:
        ``(mean, centred, var, batch)`` as :func:`weighted_moments`, plus the global batch
        size.
    """
    weights = points.weights.to(device=x.device, dtype=x.dtype)
    prob = (weights / weights.sum()).reshape(1, -1, 1)
    local = torch.cat([(x * prob).sum((0, 1)), x.new_full((1,), x.shape[0])])
    total = _AllReduceSum.apply(local)
    batch = total[-1].detach()
    mean = (total[:-1] / batch).reshape(1, 1, -1)
    centred = x - mean
    var = (_AllReduceSum.apply((centred.square() * prob).sum((0, 1))) / batch).reshape(1, 1, -1)
    return mean, centred, var, int(batch)


def effective_sample_size(points: PointSet) -> torch.Tensor:
    r"""Kish's effective sample size :math:`(\sum_j w_j)^2 / \sum_j w_j^2` (a 0-d tensor).

    N for uniform weights; smaller when a few points carry most of the weight. It is the n
    of the unbiased variance correction n / (n − 1) for weighted samples.
    """
    weights = points.weights
    if weights.device.type != "mps":  # MPS has no float64
        weights = weights.double()
    return weights.sum().square() / weights.square().sum()


class _PointNorm(DIModule):
    """What the three norms share: arguments, the affine parameters and input checks."""

    def __init__(self, num_features: int, eps: float, affine: bool) -> None:
        super().__init__()
        self.num_features = _check_num_features(num_features)
        self.eps = _check_eps(eps)
        self.affine = bool(affine)
        if self.affine:
            self.weight = nn.Parameter(torch.empty(num_features))
            self.bias = nn.Parameter(torch.empty(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def _check_inputs(self, x: torch.Tensor, points_in: PointSet,
                      points_out: PointSet | None) -> None:
        check_points(points_in, name="points_in")
        check_values(x, points_in, self.num_features, module=self)
        check_same_points(points_in, points_out, type(self).__name__)

    def _normalise(self, x: torch.Tensor, centred: torch.Tensor,
                   var: torch.Tensor) -> torch.Tensor:
        y = centred * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class DIBatchNorm(_PointNorm):
    r"""Batch normalization with statistics integrated over the domain.

    For channel c, over the batch t = 1…B and the points y_j with quadrature weights w_j:

    .. math::
        \mu_c = \frac{\sum_t \sum_j w_j\, x_{tjc}}{B \sum_j w_j}, \qquad
        \sigma_c^2 = \frac{\sum_t \sum_j w_j\, (x_{tjc} - \mu_c)^2}{B \sum_j w_j}, \qquad
        y_{tjc} = \gamma_c \frac{x_{tjc} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c

    In training the batch statistics normalise and update the running statistics with
    torch's convention, ``running = (1 − momentum)·running + momentum·new`` (a cumulative
    average over ``num_batches_tracked`` batches when ``momentum=None``), the variance as the
    unbiased estimate :math:`\sigma_c^2\, n / (n - 1)` with :math:`n = B\, n_{eff}` and
    :math:`n_{eff} = (\sum_j w_j)^2 / \sum_j w_j^2` (Kish's effective sample size, exactly N
    for uniform weights). In eval mode the running statistics normalise. On a grid the layer
    therefore **is** ``nn.BatchNorm2d`` (or 1d/3d), buffers included; parameter and buffer
    names are torch's, so a ``BatchNorm2d`` state dict loads as it is
    (:meth:`from_batchnorm`).

    Under ``torch.distributed`` (a default process group of several ranks, e.g. training
    with DDP) the training statistics are those of the **global** batch: every rank's
    weighted sums are all-reduced (:func:`synced_batch_moments`), so K ranks holding a slice
    each compute what one process holding the whole batch would, gradients included. A
    training-mode forward is then a collective: every rank must make it.

    Args:
        num_features: C.
        eps: ε added to the variance. Default 1e-5.
        momentum: weight of the new statistics in the running average, or ``None`` for a
            cumulative average. Default 0.1.
        affine: learn γ (init 1) and β (init 0). Default ``True``.
        track_running_stats: keep running statistics and use them in eval mode; when
            ``False`` batch statistics are used in both modes. Default ``True``.

    Shapes:
        - x: ``(B, N, C)``
        - points_in: ``PointSet(N)``; points_out: ``None`` or points_in
        - output: ``(B, N, C)``
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps, affine)
        if momentum is not None and (isinstance(momentum, bool)
                                     or not isinstance(momentum, (int, float))
                                     or not 0.0 <= momentum <= 1.0):
            raise ValueError(
                f"momentum must be in [0, 1] or None (cumulative average); got {momentum!r}"
            )
        self.momentum = None if momentum is None else float(momentum)
        self.track_running_stats = bool(track_running_stats)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        super().reset_parameters()

    def forward(self, x: torch.Tensor, points_in: PointSet,
                points_out: PointSet | None = None) -> torch.Tensor:
        self._check_inputs(x, points_in, points_out)
        xc = x.to(_compute_dtype(x))
        update = self.training and self.track_running_stats
        if not (self.training or self.running_mean is None):
            mean = self.running_mean.to(xc.dtype)
            return self._normalise(x, xc - mean, self.running_var.to(xc.dtype))

        if self.training and _several_ranks():  # DDP: statistics of the global batch
            mean, centred, var, batch = synced_batch_moments(xc, points_in)
        else:
            if self.training and x.shape[0] * x.shape[1] == 1:
                raise ValueError(
                    "DIBatchNorm needs more than one value per channel in training; got a "
                    "batch of 1 sample on 1 point — use a larger batch or point set, or eval "
                    "mode"
                )
            mean, centred, var = weighted_moments(xc, points_in, (0, 1))
            batch = x.shape[0]
        if update:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked)
                else:
                    factor = self.momentum
                n = batch * effective_sample_size(points_in).to(x.device)
                # n / (n − 1), bounded where the effective sample size nears 1 (one weight
                # dominating a batch of one): equal for n ≥ 2, and never inf.
                unbiased = var.reshape(-1) * (n / (n - 1).clamp(min=1.0)).to(var.dtype)
                self.running_mean.lerp_(mean.reshape(-1).to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return self._normalise(x, centred, var)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, momentum={self.momentum}, "
                f"track_running_stats={self.track_running_stats}")

    @classmethod
    def from_batchnorm(cls, bn: nn.Module) -> DIBatchNorm:
        """Exact conversion of an ``nn.BatchNorm1d/2d/3d``: γ, β, the running statistics,
        ``num_batches_tracked``, eps, momentum and the train/eval mode are copied."""
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"from_batchnorm converts nn.BatchNorm1d/2d/3d; got {type(bn).__name__}"
            )
        if isinstance(bn, nn.modules.lazy.LazyModuleMixin) and bn.has_uninitialized_params():
            raise ValueError(
                f"{type(bn).__name__} is not initialised yet — run one batch through it first"
            )
        layer = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                    track_running_stats=bn.track_running_stats)
        state = bn.state_dict()
        reference = next((t for t in state.values() if t.is_floating_point()), None)
        if reference is not None:
            layer = layer.to(device=reference.device, dtype=reference.dtype)
            layer.load_state_dict(state)
        return layer.train(bn.training)


class DIInstanceNorm(_PointNorm):
    r"""Instance normalization: each sample and channel normalised by its own field statistics.

    .. math::
        \mu_{tc} = \frac{\sum_j w_j\, x_{tjc}}{\sum_j w_j}, \qquad
        \sigma_{tc}^2 = \frac{\sum_j w_j\, (x_{tjc} - \mu_{tc})^2}{\sum_j w_j}, \qquad
        y_{tjc} = \gamma_c \frac{x_{tjc} - \mu_{tc}}{\sqrt{\sigma_{tc}^2 + \epsilon}} + \beta_c

    The mean and variance of the field over the domain, by quadrature. On a grid this is
    ``nn.InstanceNorm2d`` (without running statistics).

    Args:
        num_features: C.
        eps: ε added to the variance. Default 1e-5.
        affine: learn γ (init 1) and β (init 0). Default ``False``, as in torch.

    Shapes:
        - x: ``(B, N, C)``
        - points_in: ``PointSet(N)``; points_out: ``None`` or points_in
        - output: ``(B, N, C)``
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False) -> None:
        super().__init__(num_features, eps, affine)
        self.reset_parameters()

    def forward(self, x: torch.Tensor, points_in: PointSet,
                points_out: PointSet | None = None) -> torch.Tensor:
        self._check_inputs(x, points_in, points_out)
        _, centred, var = weighted_moments(x.to(_compute_dtype(x)), points_in, (1,))
        return self._normalise(x, centred, var)


class DILayerNorm(_PointNorm):
    r"""Layer normalization over the whole field: each sample normalised by the statistics of
    all its channels over the domain, then a per-channel affine map.

    .. math::
        \mu_t = \frac{\sum_c \sum_j w_j\, x_{tjc}}{C \sum_j w_j}, \qquad
        \sigma_t^2 = \frac{\sum_c \sum_j w_j\, (x_{tjc} - \mu_t)^2}{C \sum_j w_j}, \qquad
        y_{tjc} = \gamma_c \frac{x_{tjc} - \mu_t}{\sqrt{\sigma_t^2 + \epsilon}} + \beta_c

    On a grid this is ``nn.GroupNorm(1, C)``. A layer norm *per point*, over the channels
    only, needs no integral at all: it is ``nn.LayerNorm(C)`` applied to ``(B, N, C)``.

    Args:
        num_features: C.
        eps: ε added to the variance. Default 1e-5.
        affine: learn γ (init 1) and β (init 0), one per channel. Default ``True``.

    Shapes:
        - x: ``(B, N, C)``
        - points_in: ``PointSet(N)``; points_out: ``None`` or points_in
        - output: ``(B, N, C)``
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps, affine)
        self.reset_parameters()

    def forward(self, x: torch.Tensor, points_in: PointSet,
                points_out: PointSet | None = None) -> torch.Tensor:
        self._check_inputs(x, points_in, points_out)
        _, centred, var = weighted_moments(x.to(_compute_dtype(x)), points_in, (1, 2))
        return self._normalise(x, centred, var)
