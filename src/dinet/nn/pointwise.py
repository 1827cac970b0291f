"""Pointwise layers: maps that act on the channel axis of every point on its own.

A pointwise map needs no integral, so it is discretization invariant for free: the value at
x depends only on f(x) (and, for :class:`PositionalEncoding`, on x itself). These are the 1×1
convolutions, MLP heads and coordinate encodings of a DI-Net.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..points import PointSet
from .base import DIModule, check_dtype, check_points, check_values

__all__ = ["PointwiseLinear", "PointwiseMLP", "PositionalEncoding", "check_same_points"]


def check_same_points(points_in: PointSet | None, points_out: PointSet | None,
                      layer: str) -> None:
    """A pointwise layer's output lives on its input points: ``points_out`` must be ``None``
    or equal to ``points_in``."""
    if points_out is None or points_out is points_in:
        return
    check_points(points_out, name="points_out")
    if points_in is None:
        raise ValueError(
            f"{layer} got points_out={points_out} but no points_in — a pointwise layer's "
            "output lives on its input points; pass points_in too, or leave points_out out"
        )
    if points_out != points_in:
        raise ValueError(
            f"{layer} is pointwise in space, so its output lives on points_in ({points_in}); "
            f"got points_out={points_out} — leave points_out=None and move the result to other "
            "points with a resampling layer"
        )


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def _check_channels_last(x: torch.Tensor, points_in: PointSet | None, channels: int,
                         layer: nn.Module) -> None:
    if points_in is not None:
        check_points(points_in, name="points_in")
        check_values(x, points_in, channels, module=layer)
        return
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{type(layer).__name__} expects x of shape (B, N, C); got {shape} — add a batch "
            "dimension with x.unsqueeze(0), or move channels last"
        )
    if x.shape[2] != channels:
        raise ValueError(f"x has C={x.shape[2]} channels but this {type(layer).__name__} "
                         f"expects {channels}")
    check_dtype(x, module=layer)


def _in_param_dtype(x: torch.Tensor, module: nn.Module, fn: Callable) -> torch.Tensor:
    """``fn(x)``; float16/bfloat16 values into a full-precision layer (outside autocast, which
    casts by itself) are computed in the parameters' dtype and returned in their own, as
    every sparse layer does on the CPU."""
    dtype = next(module.parameters()).dtype
    if (x.dtype in (torch.float16, torch.bfloat16) and x.dtype != dtype
            and not torch.is_autocast_enabled(x.device.type)):
        return fn(x.to(dtype)).to(x.dtype)
    return fn(x)


class PointwiseLinear(DIModule):
    r"""A linear map of the channels at every point: the DI form of a 1×1 convolution.

    .. math::
        y(x_i) = W f(x_i) + b, \qquad W \in \mathbb{R}^{C_{out} \times C_{in}}

    No integral is involved, so the point set only serves to check shapes. Initialised like
    ``nn.Linear`` (which is also how ``nn.Conv2d`` initialises a 1×1 kernel).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        bias: learn an additive bias. Default ``True``.

    Shapes:
        - x: ``(B, N, C_in)``
        - points_in: ``PointSet(N)`` or ``None``; points_out: ``None`` or points_in
        - output: ``(B, N, C_out)``

    Example:
        >>> layer = PointwiseLinear(3, 8)
        >>> layer(torch.randn(2, 100, 3)).shape
        torch.Size([2, 100, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.out_channels = _check_positive_int(out_channels, "out_channels")
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Linear`` / a 1×1 ``nn.Conv2d``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, points_in: PointSet | None = None,
                points_out: PointSet | None = None) -> torch.Tensor:
        _check_channels_last(x, points_in, self.in_channels, self)
        check_same_points(points_in, points_out, type(self).__name__)
        return _in_param_dtype(x, self, lambda v: F.linear(v, self.weight, self.bias))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, bias={self.bias is not None}"

    @classmethod
    def from_conv1x1(cls, conv: nn.Module) -> PointwiseLinear:
        """Exact conversion of an ``nn.Conv1d/2d/3d`` with kernel 1, stride 1, padding 0 and
        ``groups=1``: on any grid the layer's output equals the conv's output."""
        if not isinstance(conv, nn.modules.conv._ConvNd) or conv.transposed:
            raise ValueError(f"from_conv1x1 converts nn.Conv1d/2d/3d; got {type(conv).__name__}")
        # "same" and "valid" both mean no padding for a 1×1 kernel
        padding = (0,) if isinstance(conv.padding, str) else conv.padding
        problems = [
            f"{name}={value}" for name, value, ok in (
                ("kernel_size", conv.kernel_size, all(k == 1 for k in conv.kernel_size)),
                ("stride", conv.stride, all(s == 1 for s in conv.stride)),
                ("padding", conv.padding, all(p == 0 for p in padding)),
                ("groups", conv.groups, conv.groups == 1),
            ) if not ok
        ]
        if problems:
            raise ValueError(
                f"from_conv1x1 needs kernel_size 1, stride 1, padding 0 and groups 1; got "
                f"{', '.join(problems)} — convert this conv with DIConv.from_conv instead"
            )
        layer = cls(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
        layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight.reshape(conv.out_channels, conv.in_channels))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer


class PointwiseMLP(DIModule):
    r"""A multilayer perceptron applied to the channels of every point on its own.

    .. math::
        y(x_i) = W_L\, \sigma(\cdots \sigma(W_1 f(x_i) + b_1) \cdots) + b_L

    Args:
        in_channels: C_in.
        hidden_channels: width of the hidden layers (unused when ``num_layers=1``).
        out_channels: C_out.
        num_layers: number of linear layers L (≥ 1). Default 2.
        activation: the nonlinearity σ between linear layers (none after the last): a module
            class or factory called once per use, e.g. ``nn.ReLU``. Default ``nn.GELU``.

    Shapes:
        - x: ``(B, N, C_in)``
        - points_in: ``PointSet(N)`` or ``None``; points_out: ``None`` or points_in
        - output: ``(B, N, C_out)``
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 2,
                 activation: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.hidden_channels = _check_positive_int(hidden_channels, "hidden_channels")
        self.out_channels = _check_positive_int(out_channels, "out_channels")
        self.num_layers = _check_positive_int(num_layers, "num_layers")
        if isinstance(activation, nn.Module) or not callable(activation):
            raise ValueError(
                f"activation must be a module class or factory such as nn.GELU (not an "
                f"instance); got {activation!r}"
            )
        widths = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if i > 0:
                act = activation()
                if not isinstance(act, nn.Module):
                    raise ValueError(
                        f"activation() must return an nn.Module; got {type(act).__name__} — "
                        "pass the class (nn.GELU), not an instance or a function"
                    )
                layers.append(act)
            layers.append(nn.Linear(c_in, c_out))
        self.net = nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        for module in self.net:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, x: torch.Tensor, points_in: PointSet | None = None,
                points_out: PointSet | None = None) -> torch.Tensor:
        _check_channels_last(x, points_in, self.in_channels, self)
        check_same_points(points_in, points_out, type(self).__name__)
        return _in_param_dtype(x, self, self.net)


class PositionalEncoding(DIModule):
    r"""Append Fourier features of the point coordinates to the channels.

    For a point :math:`x \in [-1, 1]^d` the features are, in this order,

    .. math::
        [\,x\,,\ \sin(2^0 \pi x), \cos(2^0 \pi x),\ \dots,\
        \sin(2^{L-1} \pi x), \cos(2^{L-1} \pi x)\,]

    each term a block of d channels (one per coordinate axis); ``x`` itself is left out when
    ``include_input=False``. The output is ``cat([f(x_i), features(x_i)])`` on the channels.

    Args:
        dim: spatial dimension d of the points.
        num_frequencies: L, the number of octaves 2^0 … 2^{L-1} (≥ 0). Default 6.
        include_input: also append the raw coordinates. Default ``True``.

    Shapes:
        - x: ``(B, N, C)`` (C may be 0)
        - points_in: ``PointSet(N)`` of dimension d; points_out: ``None`` or points_in
        - output: ``(B, N, C + extra_channels)``
    """

    frequencies: torch.Tensor

    def __init__(self, dim: int, num_frequencies: int = 6, include_input: bool = True) -> None:
        super().__init__()
        self.dim = _check_positive_int(dim, "dim")
        if (isinstance(num_frequencies, bool) or not isinstance(num_frequencies, int)
                or num_frequencies < 0):
            raise ValueError(
                f"num_frequencies must be a non-negative integer; got {num_frequencies!r}"
            )
        self.num_frequencies = num_frequencies
        self.include_input = bool(include_input)
        if self.extra_channels == 0:
            raise ValueError(
                "PositionalEncoding with num_frequencies=0 and include_input=False adds no "
                "channels — use num_frequencies >= 1"
            )
        # Not persistent: it is fixed by the arguments, so checkpoints need not carry it.
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32),
            persistent=False,
        )

    @property
    def extra_channels(self) -> int:
        """How many channels the encoding appends: d·(2L + include_input)."""
        return self.dim * (2 * self.num_frequencies + int(self.include_input))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """The features of ``(N, d)`` coordinates, ``(N, extra_channels)``."""
        angles = coords[:, None, :] * self.frequencies.to(coords)[:, None]  # (N, L, d)
        blocks = torch.stack([angles.sin(), angles.cos()], dim=2)  # (N, L, 2, d)
        features = blocks.reshape(coords.shape[0], -1)
        return torch.cat([coords, features], dim=1) if self.include_input else features

    def forward(self, x: torch.Tensor, points_in: PointSet,
                points_out: PointSet | None = None) -> torch.Tensor:
        check_points(points_in, self.dim, name="points_in")
        check_values(x, points_in)
        check_same_points(points_in, points_out, type(self).__name__)
        # High octaves need at least float32 angles, whatever precision the values are in.
        dtype = x.dtype if x.dtype == torch.float64 else torch.float32
        coords = points_in.coords.to(device=x.device, dtype=dtype)
        features = self.encode(coords).to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x, features], dim=2)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_frequencies={self.num_frequencies}, "
                f"include_input={self.include_input}, extra_channels={self.extra_channels}")
