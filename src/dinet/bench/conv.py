"""``dinet bench conv``: DIConv on Sobol points against ``F.conv2d`` on the same-size grid."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import points as P
from ..neighbors import stencil_cache
from ..nn import DIConv
from .common import machine_info, markdown_table, median_time, peak_memory, write_results

__all__ = ["bench_conv"]


def _fwd_bwd(module_call, inputs: list[torch.Tensor]):
    def run():
        for t in inputs:
            t.grad = None
        out = module_call()
        out.backward(torch.ones_like(out))
    return run


def bench_one(n: int, channels: int, batch: int, kernel_size: int, repeats: int,
              device: torch.device) -> dict:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"N must be a perfect square to compare with an H×W grid; got {n}")
    torch.manual_seed(0)
    spacing = 2.0 / side
    points = P.sobol(n, 2, seed=0)
    conv = DIConv(channels, channels, kernel_size, spacing=spacing).to(device)

    stencil_cache.clear()
    start = time.perf_counter()
    stencil = conv.stencil(points)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    stencil.tensors(device, torch.float32)
    stencil.tensors(device, torch.float32, transpose=True)
    tensors_s = time.perf_counter() - start
    start = time.perf_counter()
    conv.stencil(points)
    hit_s = time.perf_counter() - start

    x = torch.randn(batch, n, channels, device=device, requires_grad=True)
    di_run = _fwd_bwd(lambda: conv(x, points), [x, conv.weight, conv.bias])
    img = torch.randn(batch, channels, side, side, device=device, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_(True)
    bias = conv.bias.detach().clone().requires_grad_(True)
    pad = kernel_size // 2
    torch_run = _fwd_bwd(lambda: F.conv2d(img, weight, bias, padding=pad), [img, weight, bias])

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(run):
        return median_time(lambda: (run(), sync()), repeats=repeats, warmup=1)

    di_s, torch_s = timed(di_run), timed(torch_run)
    di_mem, torch_mem = peak_memory(di_run, device), peak_memory(torch_run, device)
    return {
        "n": n,
        "grid": [side, side],
        "channels": channels,
        "batch": batch,
        "kernel_size": kernel_size,
        "nnz": stencil.nnz,
        "dinet_fwd_bwd_s": di_s,
        "conv2d_fwd_bwd_s": torch_s,
        "ratio": di_s / torch_s,
        "dinet_peak_bytes": di_mem,
        "conv2d_peak_bytes": torch_mem,
        "stencil_bytes": stencil.nbytes(),
        "stencil_build_s": build_s,
        "stencil_tensors_s": tensors_s,
        "stencil_cache_hit_s": hit_s,
    }


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def bench_conv(
    sizes=(4096, 16384, 65536),
    channels: int = 64,
    batch: int = 8,
    kernel_size: int = 3,
    repeats: int = 5,
    device: str = "cpu",
    out: str | Path = "benchmarks/results/conv.json",
) -> dict:
    """Run the benchmark, print a Markdown table and write JSON to ``out``."""
    device = torch.device(device)
    # Load the compiled kernels once, so "cold" below means a stencil-cache miss, not a JIT.
    warm = P.sobol(256, 2, seed=0)
    DIConv(1, 1, kernel_size, spacing=0.1)(torch.ones(1, 256, 1), warm).sum().backward()
    results = []
    for n in tqdm(sizes, desc="bench conv", unit="size"):
        results.append(bench_one(n, channels, batch, kernel_size, repeats, device))
    payload = {
        "benchmark": "conv",
        "what": (f"forward+backward, {channels}->{channels} channels, batch {batch}, "
                 f"{kernel_size}x{kernel_size}; DIConv on N scrambled Sobol points vs "
                 "F.conv2d on the sqrt(N) x sqrt(N) grid; medians of "
                 f"{repeats} runs after a warm-up"),
        "machine": machine_info(device),
        "results": results,
    }
    rows = [
        [f"{r['n']:,}", f"{r['grid'][0]}×{r['grid'][1]}", f"{r['dinet_fwd_bwd_s'] * 1e3:.0f}",
         f"{r['conv2d_fwd_bwd_s'] * 1e3:.0f}", f"{r['ratio']:.2f}×",
         _mib(r["dinet_peak_bytes"]), _mib(r["conv2d_peak_bytes"]),
         f"{r['stencil_build_s'] * 1e3:.0f}", f"{r['stencil_cache_hit_s'] * 1e6:.0f}"]
        for r in results
    ]
    table = markdown_table(
        ["N", "grid", "DIConv ms", "conv2d ms", "ratio", "DIConv peak MiB",
         "conv2d peak MiB", "stencil build ms (cold)", "cache hit µs (warm)"],
        rows,
    )
    payload["markdown"] = table
    path = write_results(out, payload)
    print(payload["what"])
    print(f"machine: {payload['machine']['cpu']}, {payload['machine']['torch_threads']} threads, "
          f"torch {payload['machine']['torch']}, {device}")
    print(table)
    print(f"written to {path}")
    return payload
