"""``dinet bench layers``: forward+backward time of every DI layer, next to the spline conv."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .. import points as P
from ..nn import (
    DIAttention,
    DIAvgPool,
    DIBatchNorm,
    DIConv,
    DIInstanceNorm,
    DILayerNorm,
    DIMaxPool,
    GlobalAvgPool,
    GlobalMaxPool,
    PointwiseLinear,
    Resample,
)
from .common import machine_info, markdown_table, median_time, peak_memory, write_results

__all__ = ["bench_layers"]


def _cases(n: int, channels: int, include_global_attention: bool
           ) -> dict[str, tuple[nn.Module, Callable]]:
    """name → (module, call(module, x, points)); every layer at the 3x3-pixel scale."""
    h = 2.0 / math.isqrt(n)
    other = P.sobol(n, 2, seed=1)
    cases: dict[str, tuple[nn.Module, Callable]] = {
        "DIConv spline 3x3": (DIConv(channels, channels, 3, spacing=h), None),
        "DIConv mlp M=16": (DIConv(channels, channels, 3, spacing=h, kernel="mlp",
                                   n_basis=16), None),
        "DIAvgPool 3x3": (DIAvgPool(3, spacing=h), None),
        "DIMaxPool 3x3": (DIMaxPool(3, spacing=h), None),
        "GlobalAvgPool": (GlobalAvgPool(), None),
        "GlobalMaxPool": (GlobalMaxPool(), None),
        "DIBatchNorm": (DIBatchNorm(channels), None),
        "DIInstanceNorm": (DIInstanceNorm(channels), None),
        "DILayerNorm": (DILayerNorm(channels), None),
        "PointwiseLinear": (PointwiseLinear(channels, channels), None),
        "Resample linear (other 16k set)": (
            Resample("linear", support=2 * h), lambda m, x, p: m(x, p, other)),
        "DIAttention local (4 heads, 3x3 box)": (
            DIAttention(channels, 4, support=1.5 * h), None),
    }
    if include_global_attention:
        cases["DIAttention global (4 heads)"] = (DIAttention(channels, 4), None)
    return cases


def bench_layers(
    n: int = 16384,
    channels: int = 64,
    batch: int = 8,
    repeats: int = 3,
    include_global_attention: bool = False,
    device: str = "cpu",
    out: str | Path = "benchmarks/results/layers.json",
) -> dict:
    """Time forward+backward of each layer on ``n`` Sobol points; print and write JSON."""
    if math.isqrt(n) ** 2 != n:
        raise ValueError(f"N must be a perfect square (the 3x3 scale is 2/sqrt(N)); got {n}")
    device = torch.device(device)
    torch.manual_seed(0)
    points = P.sobol(n, 2, seed=0)
    x = torch.randn(batch, n, channels, device=device, requires_grad=True)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results = []
    for name, (module, call) in tqdm(_cases(n, channels, include_global_attention).items(),
                                     desc="bench layers", unit="layer"):
        module = module.to(device)
        call = call or (lambda m, x, p: m(x, p))

        def run(module=module, call=call):
            x.grad = None
            module.zero_grad(set_to_none=True)
            y = call(module, x, points)
            y.backward(torch.ones_like(y))
            sync()

        seconds = median_time(run, repeats=repeats, warmup=1)  # warm-up builds the stencil
        results.append({"layer": name, "fwd_bwd_s": seconds,
                        "peak_bytes": peak_memory(run, device)})
    spline = results[0]["fwd_bwd_s"]
    for r in results:
        r["ratio_to_spline_conv"] = r["fwd_bwd_s"] / spline
    table = markdown_table(
        ["layer", "fwd+bwd ms", "× spline DIConv", "peak MiB"],
        [[r["layer"], f"{r['fwd_bwd_s'] * 1e3:.1f}", f"{r['ratio_to_spline_conv']:.2f}",
          "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"]
         for r in results],
    )
    payload = {
        "benchmark": "layers",
        "what": (f"forward+backward of each layer on {n} scrambled Sobol points, {channels} "
                 f"channels, batch {batch}; medians of {repeats} runs after a warm-up "
                 "(stencils cached)"),
        "machine": machine_info(device),
        "results": results,
        "markdown": table,
    }
    path = write_results(out, payload)
    print(payload["what"])
    print(table)
    print(f"written to {path}")
    return payload
