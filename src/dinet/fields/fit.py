"""Fitting batches of neural fields to images: :func:`fit_fields`.

The recipe (all of it inside :func:`fit_fields`, deterministic for a seed on CPU, no network):

1. **Shared meta-learned initialisation** (Reptile, Nichol et al. 2018, as in Tancik et al.,
   "Learned initializations for optimizing coordinate-based neural representations",
   CVPR 2021). Starting from the seeded architecture initialisation, ``meta_steps`` Reptile
   iterations are run on ``meta_images`` images spread evenly through the input: each
   iteration fits copies of the current initialisation to those images for ``meta_inner``
   Adam steps and moves the initialisation a fraction ``meta_lr`` towards their mean. It is
   computed once per call (its cost is included in ``FitResult.seconds``) and returned as
   ``FitResult.init``.
2. **Closed-form last layer.** Before the first step, every field's linear last layer is
   replaced by the ridge least-squares solution on its own image (a batched Cholesky solve
   on the last hidden features).
3. **Batched Adam** on all parameters, full batch of the pixel-centre coordinates, step size
   ``lr`` given for the *unfolded* SIREN (sine layers get ``lr·ω0``, see
   :meth:`SirenField.lr_scales`), cosine-decayed to ``lr/10`` over ``max_steps``.
4. **Early stopping.** A field stops as soon as its PSNR on the grid reaches
   ``target_psnr`` and is removed from the batch, so the remaining ones run faster; every
   field keeps the parameters of its best grid PSNR.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import points as P
from .models import FIELD_ARCHS, ImageField, build_field

__all__ = ["DEFAULT_ARCH_HPARAMS", "FitResult", "fit_fields", "offgrid_points", "psnr"]

# Architecture defaults of the fitting recipe (overridable through ``**arch_hparams``): a
# small SIREN is both faster (the sines dominate the cost on CPU) and smoother between pixel
# centres than the 3×64 default of :class:`SirenField` (see benchmarks/field_study.py).
DEFAULT_ARCH_HPARAMS: dict[str, dict[str, Any]] = {
    "siren": {"width": 32, "depth": 2, "omega0": 30.0},
    "fourier": {},
}


@dataclass
class FitResult:
    """What :func:`fit_fields` returns.

    Attributes:
        fields: the fitted batch (one module, ``n_fields == N``, in input order).
        psnr_grid: ``(N,)`` PSNR in dB at the pixel centres.
        psnr_offgrid: ``(N,)`` PSNR in dB against bilinear interpolation of the image at
            :func:`offgrid_points` (points between pixel centres).
        steps: ``(N,)`` Adam steps taken to reach each field's kept parameters.
        seconds: wall-clock time of the whole fit, meta-initialisation included.
        init: the shared initialisation every field started from (one field).
    """

    fields: nn.Module
    psnr_grid: np.ndarray
    psnr_offgrid: np.ndarray
    steps: np.ndarray
    seconds: float
    init: nn.Module | None = None

    @property
    def fields_per_second(self) -> float:
        return len(self.psnr_grid) / max(self.seconds, 1e-9)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for signals in [0, 1], per leading index: ``(B, N, C)`` pairs → ``(B,)``."""
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-20))


def offgrid_points(shape: tuple[int, int], n: int = 1024, seed: int = 0) -> torch.Tensor:
    """``(n, 2)`` off-grid evaluation points for an H×W image.

    A scrambled Sobol' set (``seed``) scaled into the hull of the pixel centres,
    ``[−1 + 1/H, 1 − 1/H] × [−1 + 1/W, 1 − 1/W]`` (the domain minus a half-pixel border), so
    bilinear interpolation there is a true interpolation, never an edge clamp. Almost surely
    no point falls on a pixel centre.
    """
    coords = P.sobol(n, len(shape), seed=seed).coords.float()
    half = torch.tensor([1.0 - 1.0 / s for s in shape])
    return coords * half


def _as_images(images) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if images.dim() != 4:
        raise ValueError(
            f"fit_fields takes images of shape (N, H, W, C) with values in [0, 1]; got "
            f"{tuple(images.shape)} — add a channel axis for grayscale (images[..., None])"
        )
    if images.shape[0] == 0:
        raise ValueError("fit_fields got zero images")
    return images.float()


class _Adam:
    """Adam over a list of batched tensors whose first axis is the field; rows can be
    dropped (:meth:`keep`) when their fields stop."""

    def __init__(self, params: list[torch.Tensor], lrs: list[float], betas=(0.9, 0.999)):
        self.params, self.lrs, self.betas, self.t = params, lrs, betas, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, factor: float = 1.0, eps: float = 1e-8) -> None:
        b1, b2 = self.betas
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v, lr in zip(self.params, self.m, self.v, self.lrs, strict=True):
            g = p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / c2).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr * factor / c1)
            p.grad = None

    def keep(self, index: torch.Tensor, params: list[torch.Tensor]) -> None:
        self.params = params
        self.m = [m[index] for m in self.m]
        self.v = [v[index] for v in self.v]


@torch.no_grad()
def _solve_last_layer(field, coords: torch.Tensor, targets: torch.Tensor, ridge: float) -> None:
    """Set every field's last (linear) layer to its ridge least-squares fit on ``targets``."""
    feats = field.features(coords)
    feats = torch.cat([feats, torch.ones_like(feats[..., :1])], dim=-1).double()
    gram = feats.transpose(1, 2) @ feats
    gram.diagonal(dim1=1, dim2=2).add_(ridge * feats.shape[1])
    rhs = feats.transpose(1, 2) @ targets.double()
    sol = torch.cholesky_solve(rhs, torch.linalg.cholesky(gram)).float()
    last = field.layers[-1]
    last.weight.copy_(sol[:, :-1])
    last.bias.copy_(sol[:, -1:])


def _fit_batch(
    field,
    coords: torch.Tensor,
    targets: torch.Tensor,
    *,
    max_steps: int,
    target_psnr: float,
    lr: float,
    solve_last: bool,
    ridge: float,
    forward=None,
    on_done=None,
):
    """Fit the fields of ``field`` (B of them) to ``targets (B, N, C)``; returns the module
    with each field's best parameters, its best grid PSNR ``(B,)`` and step counts ``(B,)``."""
    b, device = targets.shape[0], targets.device
    if solve_last:
        _solve_last_layer(field, coords, targets, ridge)
    names = [n for n, _ in field.named_parameters()]
    scales = field.lr_scales()
    params = [p for _, p in field.named_parameters()]
    opt = _Adam(params, [lr * scales[n] for n in names])
    best = [p.detach().clone() for p in params]
    best_psnr = torch.full((b,), -math.inf, device=device)
    best_step = torch.zeros(b, dtype=torch.long, device=device)
    active = torch.arange(b, device=device)  # original index of every row still being fitted
    live, live_targets = field, targets
    forward = forward or (lambda module, x: module(x))
    for step in range(max_steps + 1):
        pred = forward(live, coords)
        per_field = (pred - live_targets).pow(2).flatten(1).mean(1)
        with torch.no_grad():
            cur = -10.0 * torch.log10(per_field.detach().clamp_min(1e-20))
            better = cur > best_psnr[active]
            if better.any():
                rows = active[better]
                best_psnr[rows] = cur[better]
                best_step[rows] = step
                for kept, p in zip(best, live.parameters(), strict=True):
                    kept[rows] = p.detach()[better]
            done = cur >= target_psnr
        if step == max_steps:
            break
        if done.any():
            if on_done is not None:
                on_done(int(done.sum()))
            keep = (~done).nonzero().squeeze(1)
            if len(keep) == 0:
                break
            live = live.select(keep)
            live_targets, active = live_targets[keep], active[keep]
            for p in live.parameters():
                p.requires_grad_(True)
            opt.keep(keep, list(live.parameters()))
            pred = forward(live, coords)
            per_field = (pred - live_targets).pow(2).flatten(1).mean(1)
        per_field.sum().backward()
        # cosine decay from lr to lr/10 over the step budget
        opt.step(0.55 + 0.45 * math.cos(math.pi * step / max_steps))
    if on_done is not None:
        on_done(int((best_psnr < target_psnr).sum()))
    with torch.no_grad():
        for p, kept in zip(field.parameters(), best, strict=True):
            p.copy_(kept)
    return field, best_psnr, best_step


def _meta_init(field, coords, targets, *, steps, inner, lr, meta_lr, forward):
    """Reptile: move the one-field ``field`` towards the inner-loop solutions on ``targets``."""
    init = [p.detach().clone() for p in field.parameters()]
    m = targets.shape[0]
    names = [n for n, _ in field.named_parameters()]
    scales = field.lr_scales()
    for _ in range(steps):
        batch = field.select([0] * m)
        with torch.no_grad():
            for p, p0 in zip(batch.parameters(), init, strict=True):
                p.copy_(p0.expand_as(p))
        params = list(batch.parameters())
        opt = _Adam(params, [lr * scales[n] for n in names])
        for _ in range(inner):
            loss = (forward(batch, coords) - targets).pow(2).flatten(1).mean(1).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for p0, p in zip(init, params, strict=True):
                p0.add_(p.mean(0, keepdim=True) - p0, alpha=meta_lr)
    with torch.no_grad():
        for p, p0 in zip(field.parameters(), init, strict=True):
            p.copy_(p0)
    return field


def fit_fields(
    images,
    arch: str = "siren",
    *,
    chunk: int | None = None,
    max_steps: int = 150,
    target_psnr: float = 30.0,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    meta_steps: int = 20,
    meta_images: int = 16,
    meta_inner: int = 5,
    meta_lr: float = 1.0,
    solve_last: bool = True,
    ridge: float = 1e-4,
    n_offgrid: int = 1024,
    compile: bool = False,
    device: str | torch.device | None = None,
    **arch_hparams: Any,
) -> FitResult:
    """Fit one neural field per image, ``chunk`` fields at a time (see the module docstring
    for the recipe: Reptile initialisation, closed-form last layer, Adam, early stopping).

    Args:
        images: ``(N, H, W, C)`` floats in [0, 1], numpy or torch.
        arch: a key of :data:`FIELD_ARCHS` ("siren" or "fourier").
        chunk: number of fields fitted together (default: 32 on the CPU, 4,096 on a GPU;
            the fields are independent, so it changes the speed, not the fit).
        max_steps: Adam step budget per field.
        target_psnr: a field stops once its grid PSNR reaches this (dB).
        lr: Adam step size (for the unfolded SIREN; sine layers get ``lr·ω0``).
        seed: seeds the architecture initialisation; the fit is deterministic on CPU.
        progress: show a tqdm bar with fields/s and mean grid PSNR.
        meta_steps: Reptile iterations for the shared initialisation (0: plain init).
        meta_images: images used by Reptile, spread evenly through ``images``.
        meta_inner: Adam steps per Reptile iteration.
        meta_lr: Reptile step (fraction of the way to the mean inner solution).
        solve_last: solve the last layer in closed form before the first step.
        ridge: ridge factor of that solve (times the number of pixels).
        n_offgrid: number of off-grid evaluation points (:func:`offgrid_points`, seed 0).
        compile: run the forward pass through ``torch.compile``.
        device: where the fitting runs (default: the CPU); the fields come back on the
            CPU. On a GPU the result equals the CPU's to float rounding.
        **arch_hparams: architecture hparams (``width``, ``depth``, ``omega0``, …) over
            :data:`DEFAULT_ARCH_HPARAMS` (SIREN: width 32, depth 2, ω0 30);
            ``in_dim=2`` and ``out_dim=C`` are set from the images.

    Returns:
        :class:`FitResult`. ``psnr_offgrid`` compares each field at :func:`offgrid_points`
        with bilinear interpolation of its image (:class:`ImageField`).
    """
    if arch not in FIELD_ARCHS:
        raise ValueError(f"unknown field arch {arch!r}; valid archs: {sorted(FIELD_ARCHS)}")
    device = torch.device("cpu" if device is None else device)
    imgs = _as_images(images).to(device)
    n, h, w, c = imgs.shape
    chunk = (32 if device.type == "cpu" else 4096) if chunk is None else chunk
    if chunk < 1 or max_steps < 0:
        raise ValueError(f"chunk must be >= 1 and max_steps >= 0; got {chunk}, {max_steps}")
    start = time.perf_counter()
    grid = P.grid((h, w))
    coords = grid.coords.float().to(device)
    targets = P.image_to_values(imgs.permute(0, 3, 1, 2), grid)  # (N, HW, C)
    off_coords = offgrid_points((h, w), n_offgrid).to(device)

    gen = torch.Generator().manual_seed(int(seed))
    hparams = {**DEFAULT_ARCH_HPARAMS.get(arch, {}), **arch_hparams}
    template = build_field(arch, 1, in_dim=2, out_dim=c, **hparams)
    template.reset_parameters(generator=gen)
    template = template.to(device)
    forward = (lambda module, x: module(x)) if not compile else torch.compile(
        lambda module, x: module(x), dynamic=True
    )
    if meta_steps > 0:
        meta_idx = np.unique(np.linspace(0, n - 1, min(meta_images, n)).round().astype(int))
        template = _meta_init(
            template, coords, targets[meta_idx], steps=meta_steps, inner=meta_inner, lr=lr,
            meta_lr=meta_lr, forward=forward,
        )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="field", desc=f"fit {arch}")
    pieces, grid_psnr, off_psnr, steps = [], [], [], []
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        field = template.select([0] * (hi - lo))
        for p in field.parameters():
            p.requires_grad_(True)
        field, best, best_step = _fit_batch(
            field, coords, targets[lo:hi], max_steps=max_steps, target_psnr=target_psnr,
            lr=lr, solve_last=solve_last, ridge=ridge, forward=forward,
            on_done=bar.update if bar is not None else None,
        )
        with torch.no_grad():
            ref = ImageField(imgs[lo:hi].permute(0, 3, 1, 2))(off_coords)
            off_psnr.append(psnr(field(off_coords), ref).cpu())
        field.requires_grad_(False)
        pieces.append(field.cpu())
        grid_psnr.append(best.cpu())
        steps.append(best_step.cpu())
        if bar is not None:
            done_psnr = torch.cat(grid_psnr)
            elapsed = time.perf_counter() - start
            bar.set_postfix(fields_s=f"{hi / elapsed:.1f}", psnr=f"{done_psnr.mean():.2f}")
    if bar is not None:
        bar.close()
    fields = type(template).stack(pieces)
    template.requires_grad_(False)
    return FitResult(
        fields=fields,
        psnr_grid=torch.cat(grid_psnr).numpy(),
        psnr_offgrid=torch.cat(off_psnr).numpy(),
        steps=torch.cat(steps).numpy(),
        seconds=time.perf_counter() - start,
        init=template.cpu(),
    )
