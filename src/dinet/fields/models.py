"""Neural fields: callables ``coords (…, N, d) → values (…, N, C)`` on the domain [-1, 1]^d.

The learned fields (:class:`SirenField`, :class:`FourierFeatureField`) are *batches* of
independent networks held in one module, evaluated with batched matmuls. Their state dict
is a flat dict of tensors whose first axis is the field index — the on-disk format of
:class:`~dinet.fields.dataset.FieldDataset` — so ``select`` and ``stack`` are slicing and
concatenation of that dict. :class:`ImageField` and :class:`AnalyticField` wrap arrays and
functions behind the same interface.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FIELD_ARCHS",
    "AnalyticField",
    "BatchedLinear",
    "FourierFeatureField",
    "ImageField",
    "SirenField",
    "build_field",
]


class BatchedLinear(nn.Module):
    """``B`` independent affine maps ``y_b = x_b W_b + c_b`` applied with one ``baddbmm``.

    Parameters: ``weight (B, fan_in, fan_out)``, ``bias (B, 1, fan_out)``.

    Shapes: ``x: (B, N, fan_in)`` or shared ``(N, fan_in)`` → ``(B, N, fan_out)``.
    """

    def __init__(self, n_fields: int, fan_in: int, fan_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_fields, fan_in, fan_out))
        self.bias = nn.Parameter(torch.empty(n_fields, 1, fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.weight.shape[0], -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        b, fan_in, fan_out = self.weight.shape
        return f"n_fields={b}, fan_in={fan_in}, fan_out={fan_out}"


def _check_coords(coords: torch.Tensor, n_fields: int, in_dim: int) -> torch.Tensor:
    if coords.dim() not in (2, 3) or coords.shape[-1] != in_dim:
        raise ValueError(
            f"coords must be (N, {in_dim}) shared or ({n_fields}, N, {in_dim}) per field; "
            f"got {tuple(coords.shape)}"
        )
    if coords.dim() == 3 and coords.shape[0] != n_fields:
        raise ValueError(
            f"per-field coords have batch {coords.shape[0]} but the module holds {n_fields} "
            "fields — pass (N, d) to share the points or one point set per field"
        )
    return coords


class _BatchedField(nn.Module):
    """Shared machinery of the batched learned fields: ``hparams``, ``select``, ``stack``."""

    n_fields: int

    def hparams(self) -> dict[str, Any]:
        """The constructor arguments other than ``n_fields`` (JSON-able)."""
        raise NotImplementedError

    def select(self, indices: Sequence[int] | torch.Tensor) -> _BatchedField:
        """A new module holding copies of the fields ``indices`` (in that order)."""
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        out = type(self)(len(index), **self.hparams())
        state = {k: v.detach()[index.to(v.device)].clone() for k, v in self.state_dict().items()}
        out.load_state_dict(state)
        return out.to(next(self.parameters()).device)

    @classmethod
    def stack(cls, fields: Sequence[_BatchedField]) -> _BatchedField:
        """Concatenate batches of fields of one architecture (same ``hparams``)."""
        fields = list(fields)
        if not fields:
            raise ValueError(f"{cls.__name__}.stack needs at least one field batch")
        hp = fields[0].hparams()
        for f in fields:
            if not isinstance(f, cls) or f.hparams() != hp:
                raise ValueError(
                    f"cannot stack {type(f).__name__}{f.hparams() if hasattr(f, 'hparams') else ''}"
                    f" with {cls.__name__}{hp}: all batches need the same class and hparams"
                )
        out = cls(sum(f.n_fields for f in fields), **hp)
        states = [f.state_dict() for f in fields]
        out.load_state_dict({k: torch.cat([s[k].detach() for s in states]) for k in states[0]})
        return out.to(next(fields[0].parameters()).device)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hparams().items())
        return f"n_fields={self.n_fields}, {args}"


def _batched_layers(n_fields: int, in_dim: int, width: int, depth: int,
                    out_dim: int) -> nn.ModuleList:
    """``depth`` hidden layers of ``width`` and a linear output, batched over the fields."""
    dims = [in_dim] + [width] * depth + [out_dim]
    return nn.ModuleList(
        BatchedLinear(n_fields, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
    )


class SirenField(_BatchedField):
    """A batch of SIRENs (Sitzmann et al., NeurIPS 2020, arXiv 2006.09661).

    Each field computes ``h_0 = x``, ``h_{l+1} = sin(h_l W_l + b_l)`` for ``l < depth``, and
    ``f(x) = h_depth W_depth + b_depth``. The frequency ω0 is *folded into* the weights and
    biases of the sine layers (the usual ``sin(ω0 (h W + b))`` with ``W, b`` scaled by ω0), so
    the forward pass has no multiply. Initialisation (in unfolded terms, as in the paper):
    first layer ``W ~ U(−1/fan_in, 1/fan_in)``, hidden and last layer
    ``W ~ U(−√(6/fan_in)/ω0, √(6/fan_in)/ω0)``, biases ``U(−1/√fan_in, 1/√fan_in)``.

    Args:
        n_fields: number of independent fields B in the batch.
        in_dim: coordinate dimension d (default 2).
        out_dim: channels C (default 1).
        width: hidden width (default 64).
        depth: number of sine layers (default 3); there are ``depth + 1`` layers in all.
        omega0: SIREN frequency ω0 (default 30.0).

    Parameters are ``layers.{i}.weight (B, fan_in, fan_out)`` and ``layers.{i}.bias
    (B, 1, fan_out)`` — the on-disk format.

    Shapes: ``coords: (N, d)`` shared or ``(B, N, d)`` per field → ``(B, N, out_dim)``.
    """

    def __init__(
        self,
        n_fields: int,
        in_dim: int = 2,
        out_dim: int = 1,
        width: int = 64,
        depth: int = 3,
        omega0: float = 30.0,
    ):
        super().__init__()
        if n_fields < 1 or depth < 1 or width < 1:
            raise ValueError(
                f"SirenField needs n_fields, depth, width >= 1; got {n_fields}, {depth}, {width}"
            )
        self.n_fields, self.in_dim, self.out_dim = int(n_fields), int(in_dim), int(out_dim)
        self.width, self.depth, self.omega0 = int(width), int(depth), float(omega0)
        self.layers = _batched_layers(self.n_fields, self.in_dim, self.width, self.depth,
                                      self.out_dim)
        self.reset_parameters()

    def hparams(self) -> dict[str, Any]:
        return {
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            "width": self.width,
            "depth": self.depth,
            "omega0": self.omega0,
        }

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """SIREN initialisation with ω0 folded in; ``generator`` makes it reproducible."""
        w0 = self.omega0
        for i, layer in enumerate(self.layers):
            fan_in = layer.weight.shape[1]
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / w0
            scale = 1.0 if i == self.depth else w0  # the last layer is linear: no folding
            layer.weight.uniform_(-bound, bound, generator=generator).mul_(scale)
            b = 1.0 / math.sqrt(fan_in)
            layer.bias.uniform_(-b, b, generator=generator).mul_(scale)

    def lr_scales(self) -> dict[str, float]:
        """Per-parameter factor that turns an Adam step size for the unfolded SIREN into one
        for these folded parameters (ω0 for the sine layers, 1 for the last layer)."""
        return {
            name: (1.0 if name.startswith(f"layers.{self.depth}.") else self.omega0)
            for name, _ in self.named_parameters()
        }

    def features(self, coords: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``h_depth``, ``(B, N, width)``."""
        h = _check_coords(coords, self.n_fields, self.in_dim)
        for layer in self.layers[:-1]:
            h = torch.sin(layer(h))
        return h

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.layers[-1](self.features(coords))


class FourierFeatureField(_BatchedField):
    """A batch of ReLU MLPs on random Fourier features (Tancik et al., NeurIPS 2020).

    ``γ(x) = [sin(2π x B), cos(2π x B)]`` with ``B ∈ R^{d × n_features}``, entries
    ``N(0, scale²)`` drawn from ``seed`` and shared by the whole batch (a non-persistent
    buffer: it is rebuilt from the hparams), then ``depth`` ReLU layers of ``width`` and a
    linear output layer, one set of weights per field (PyTorch ``nn.Linear`` initialisation).

    Args:
        n_fields: number of fields B.
        in_dim: coordinate dimension d (default 2).
        out_dim: channels C (default 1).
        n_features: number of frequencies (γ has ``2 n_features`` entries; default 128).
        scale: standard deviation of the frequencies, in cycles per unit (default 10.0).
        width: hidden width (default 64).
        depth: number of ReLU layers (default 2).
        seed: seed of the frequency matrix B (default 0).

    Shapes: ``coords: (N, d)`` or ``(B, N, d)`` → ``(B, N, out_dim)``.
    """

    def __init__(
        self,
        n_fields: int,
        in_dim: int = 2,
        out_dim: int = 1,
        n_features: int = 128,
        scale: float = 10.0,
        width: int = 64,
        depth: int = 2,
        seed: int = 0,
    ):
        super().__init__()
        if n_fields < 1 or depth < 1 or width < 1 or n_features < 1:
            raise ValueError(
                "FourierFeatureField needs n_fields, n_features, width, depth >= 1; got "
                f"{n_fields}, {n_features}, {width}, {depth}"
            )
        self.n_fields, self.in_dim, self.out_dim = int(n_fields), int(in_dim), int(out_dim)
        self.n_features, self.scale = int(n_features), float(scale)
        self.width, self.depth, self.seed = int(width), int(depth), int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        freqs = torch.randn(self.in_dim, self.n_features, generator=gen) * self.scale
        self.register_buffer("frequencies", freqs, persistent=False)
        self.layers = _batched_layers(self.n_fields, 2 * self.n_features, self.width,
                                      self.depth, self.out_dim)
        self.reset_parameters()

    def hparams(self) -> dict[str, Any]:
        return {
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            "n_features": self.n_features,
            "scale": self.scale,
            "width": self.width,
            "depth": self.depth,
            "seed": self.seed,
        }

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for layer in self.layers:
            bound = 1.0 / math.sqrt(layer.weight.shape[1])
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)

    def lr_scales(self) -> dict[str, float]:
        return {name: 1.0 for name, _ in self.named_parameters()}

    def features(self, coords: torch.Tensor) -> torch.Tensor:
        coords = _check_coords(coords, self.n_fields, self.in_dim)
        angles = (2.0 * math.pi) * (coords @ self.frequencies)
        h = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        for layer in self.layers[:-1]:
            h = torch.relu(layer(h))
        return h

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.layers[-1](self.features(coords))


class ImageField(nn.Module):
    """Interpolation of a batch of images (2-D) or volumes (3-D) as fields.

    Pixel (i, j) of an H×W image is the value at (−1 + (2i+1)/H, −1 + (2j+1)/W) (the
    ``align_corners=False`` convention); between centres the field is bilinear (trilinear)
    or bicubic (2-D only), and outside the hull of the centres it is edge-clamped
    (``padding_mode="border"``). Wraps :func:`torch.nn.functional.grid_sample`, whose last grid
    axis is x = W, so coordinates are flipped before sampling.

    Args:
        images: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        mode: "bilinear" (default) or "bicubic".

    Shapes: ``coords: (N, d)`` or ``(B, N, d)`` → ``(B, N, C)``.
    """

    def __init__(self, images: torch.Tensor, mode: str = "bilinear"):
        super().__init__()
        images = torch.as_tensor(images)
        if images.dim() not in (4, 5):
            raise ValueError(
                f"ImageField takes (B, C, H, W) or (B, C, D, H, W) images; got shape "
                f"{tuple(images.shape)}"
            )
        if mode not in ("bilinear", "bicubic"):
            raise ValueError(f"ImageField mode must be 'bilinear' or 'bicubic'; got {mode!r}")
        if mode == "bicubic" and images.dim() == 5:
            raise ValueError("bicubic interpolation is 2-D only; use mode='bilinear' for volumes")
        self.register_buffer("images", images if images.is_floating_point() else images.float())
        self.mode = mode
        self.n_fields, self.out_dim = images.shape[0], images.shape[1]
        self.in_dim = images.dim() - 2

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        coords = _check_coords(coords, self.n_fields, self.in_dim).to(self.images)
        if coords.dim() == 2:
            coords = coords.unsqueeze(0).expand(self.n_fields, -1, -1)
        b, n, d = coords.shape
        grid = coords.flip(-1).reshape(b, *([1] * (d - 1)), n, d)
        out = F.grid_sample(
            self.images, grid, mode=self.mode, padding_mode="border", align_corners=False
        )
        return out.reshape(b, self.out_dim, n).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"images={tuple(self.images.shape)}, mode={self.mode!r}"


class AnalyticField(nn.Module):
    """A field given by a function: ``f(coords (…, N, d)) → (…, N, out_dim)``.

    Args:
        fn: a function of the coordinates, e.g. ``lambda x: x.norm(dim=-1, keepdim=True) - 0.5``.
        out_dim: number of channels ``fn`` returns; checked on every call.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], out_dim: int):
        super().__init__()
        self.fn, self.out_dim = fn, int(out_dim)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        out = self.fn(coords)
        if out.shape[-1] != self.out_dim or out.shape[:-1] != coords.shape[:-1]:
            raise ValueError(
                f"AnalyticField function returned {tuple(out.shape)} for coords "
                f"{tuple(coords.shape)}; expected {(*coords.shape[:-1], self.out_dim)}"
            )
        return out


FIELD_ARCHS: dict[str, type[_BatchedField]] = {
    "siren": SirenField,
    "fourier": FourierFeatureField,
}


def build_field(arch: str, n_fields: int, **hparams: Any) -> _BatchedField:
    """A fresh batch of ``n_fields`` fields of architecture ``arch`` (a key of FIELD_ARCHS)."""
    if arch not in FIELD_ARCHS:
        raise ValueError(f"unknown field arch {arch!r}; valid archs: {sorted(FIELD_ARCHS)}")
    return FIELD_ARCHS[arch](n_fields, **hparams)
