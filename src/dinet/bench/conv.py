"""``dinet bench conv``: DIConv beside ``F.conv2d`` and its peers, in one run.

For every N (a perfect square) and the same channels, batch and 3×3-pixel kernel:

- ``F.conv2d`` on the √N × √N grid (the baseline every ratio is taken to);
- DIConv, sparse stencil, on N scrambled Sobol points;
- DIConv on the √N × √N grid points, by its sparse stencil and by the grid fast path
  (``F.conv2d`` on the rasterised kernel plus two reorderings);
- the released DI-Net algorithm (:mod:`dinet.bench.released`: dense all-pairs tables), where
  its tables fit in memory;
- neuraloperator's ``DiscreteContinuousConv2d`` (DISCO, which precomputes all N × N pairs)
  when neuraloperator and torch-harmonics are installed (``make bench-peers``).
"""

from __future__ import annotations

import copy
import gc
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import points as P
from ..neighbors import stencil_cache
from ..nn import DIConv
from ..nn.functional import scratch_bytes
from .common import (
    available_memory,
    machine_info,
    markdown_table,
    median_time,
    peak_memory,
    release_free_heap,
    write_results,
)
from .released import ReleasedDIConv, released_table_bytes

__all__ = ["bench_conv", "stencil_build_time"]

#: Peak bytes per point pair of DISCO's setup with float32 points (~1 GiB at N = 4,096,
#: ~17 GiB at 16,384); used to skip it where it cannot fit.
_DISCO_BYTES_PER_PAIR = 68


def _fwd_bwd(call, tensors: list[torch.Tensor], sync):
    """A closure running forward + backward of ``call()`` (gradients reset first)."""
    def run():
        for t in tensors:
            t.grad = None
        out = call()
        out.backward(torch.ones_like(out))
        sync()
    return run


def stencil_build_time(n: int, kernel_size: int = 3, draws: int = 5) -> dict:
    """Median time to build the 3×3-pixel stencil of a fresh scrambled Sobol draw of ``n``
    points (the cost of re-drawing points every training step), and of the draw itself."""
    conv = DIConv(1, 1, kernel_size, spacing=2.0 / math.isqrt(n))
    conv.stencil(P.sobol(n, 2, seed=10_000))  # compile the kernels outside the timing
    draw_s, build_s = [], []
    for seed in range(draws):
        start = time.perf_counter()
        points = P.sobol(n, 2, seed=seed)
        draw_s.append(time.perf_counter() - start)
        stencil_cache.clear()
        start = time.perf_counter()
        conv.stencil(points)
        build_s.append(time.perf_counter() - start)
    return {"n": n, "draw_s": sorted(draw_s)[draws // 2], "build_s": sorted(build_s)[draws // 2]}


def _disco(channels: int, kernel_size: int, points, spacing: float, device):
    """neuraloperator's DISCO conv on ``points`` (its own N × N setup), or the reason it is
    not available."""
    try:
        from neuralop.layers.discrete_continuous_convolution import DiscreteContinuousConv2d
    except Exception as err:  # ImportError, or a broken optional install
        return None, (f"neuraloperator/torch-harmonics not importable ({type(err).__name__}); "
                      "make bench-peers installs them")
    coords = points.coords.t().contiguous()  # float32, as the layer computes
    conv = DiscreteContinuousConv2d(
        channels, channels, coords, coords, kernel_size,
        quadrature_weights=points.weights, radius_cutoff=(kernel_size / 2) * spacing,
    )
    return conv.float().to(device), None


def _peer(name: str, make, run_of, repeats: int, device, sync) -> dict:
    """Set up a peer (timed, with peak memory) and time its forward+backward."""
    gc.collect()
    box = {}

    def setup():
        box["module"], box["reason"] = make()

    start = time.perf_counter()
    setup_mem = peak_memory(setup, device)
    setup_s = time.perf_counter() - start
    if box["module"] is None:
        return {"name": name, "skipped": box["reason"]}
    run = run_of(box["module"])
    seconds = median_time(run, repeats=repeats, warmup=1 if repeats > 1 else 0)
    result = {"name": name, "setup_s": setup_s, "setup_peak_bytes": setup_mem,
              "fwd_bwd_s": seconds, "peak_bytes": peak_memory(run, device)}
    box.clear()  # drop the peer (its N × N tables) before the next measurement
    gc.collect()
    return result


def bench_one(n: int, channels: int, batch: int, kernel_size: int, repeats: int,
              device: torch.device, dense_max: int, disco_max: int) -> dict:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"N must be a perfect square to compare with an H×W grid; got {n}")
    torch.manual_seed(0)
    spacing = 2.0 / side
    points = P.sobol(n, 2, seed=0)
    grid = P.grid((side, side))
    conv = DIConv(channels, channels, kernel_size, spacing=spacing).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    stencil = conv.stencil(points)  # cold builds are timed by stencil_build_time
    start = time.perf_counter()
    conv.stencil(points)
    hit_s = time.perf_counter() - start

    x = torch.randn(batch, n, channels, device=device, requires_grad=True)
    img = torch.randn(batch, channels, side, side, device=device, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_(True)
    bias = conv.bias.detach().clone().requires_grad_(True)
    pad = kernel_size // 2
    params = [x, conv.weight, conv.bias]

    def timed(run):
        return median_time(run, repeats=repeats, warmup=1)

    fast = copy.deepcopy(conv)
    fast.grid_fast_path = True
    conv.grid_fast_path = False
    runs = {
        "conv2d": _fwd_bwd(lambda: F.conv2d(img, weight, bias, padding=pad),
                           [img, weight, bias], sync),
        "dinet": _fwd_bwd(lambda: conv(x, points), params, sync),
        "dinet_grid_stencil": _fwd_bwd(lambda: conv(x, grid), params, sync),
        "dinet_grid": _fwd_bwd(lambda: fast(x, grid), [x, fast.weight, fast.bias], sync),
    }
    if device.type == "cuda":  # the default (fused Triton kernels) against the sparse path
        sparse = copy.deepcopy(conv)
        sparse.backend = "sparse"
        runs["dinet_sparse"] = _fwd_bwd(lambda: sparse(x, points),
                                        [x, sparse.weight, sparse.bias], sync)
    result = {"n": n, "grid": [side, side], "channels": channels, "batch": batch,
              "kernel_size": kernel_size, "nnz": stencil.nnz,
              "stencil_bytes": stencil.nbytes(), "stencil_cache_hit_s": hit_s}
    for name, run in runs.items():
        result[f"{name}_fwd_bwd_s"] = timed(run)
        result[f"{name}_peak_bytes"] = peak_memory(run, device)
    base = result["conv2d_fwd_bwd_s"]
    result["ratio"] = result["dinet_fwd_bwd_s"] / base
    result["grid_ratio"] = result["dinet_grid_fwd_bwd_s"] / base
    result["grid_stencil_ratio"] = result["dinet_grid_stencil_fwd_bwd_s"] / base
    if "dinet_sparse_fwd_bwd_s" in result:
        result["sparse_ratio"] = result["dinet_sparse_fwd_bwd_s"] / base
    result["scratch_bytes"] = scratch_bytes()

    # DISCO first (its setup holds ~68 bytes per point pair), then the released algorithm,
    # each followed by handing the freed heap back, so neither sits on the other's memory.
    peers = []
    disco_bytes = _DISCO_BYTES_PER_PAIR * n * n
    if n > disco_max or disco_bytes > 0.9 * available_memory():
        peers.append({"name": "disco", "skipped": (
            f"its N × N setup needs ~{disco_bytes / 2**30:.0f} GiB; run up to N = {disco_max} "
            "where memory allows")})
    else:
        x_cf = torch.randn(batch, channels, n, device=device, requires_grad=True)
        peers.append(_peer(
            "disco", lambda: _disco(channels, kernel_size, points, spacing, device),
            lambda m: _fwd_bwd(lambda: m(x_cf), [x_cf, m.weight], sync),
            min(repeats, 3), device, sync))
        del x_cf
    release_free_heap()
    table = released_table_bytes(n, n)
    if n > dense_max or table > 0.6 * available_memory():
        peers.append({"name": "released", "skipped": (
            f"its dense tables need {table / 2**30:.1f} GiB (N_out·N_in pairs); "
            f"run up to N = {dense_max}")})
    else:
        dense = ReleasedDIConv(channels, channels, kernel_size, spacing).to(device)
        peers.append(_peer(
            "released", lambda: (dense, None),
            lambda m: _fwd_bwd(lambda: m(x, points), [x, m.weight, m.bias], sync),
            1, device, sync))
    release_free_heap()
    for peer in peers:
        if "fwd_bwd_s" in peer:
            peer["ratio"] = peer["fwd_bwd_s"] / base
            peer["dinet_speedup"] = peer["fwd_bwd_s"] / result["dinet_fwd_bwd_s"]
    result["peers"] = peers
    return result


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def _peer_cell(result: dict, name: str) -> str:
    peer = next(p for p in result["peers"] if p["name"] == name)
    if "skipped" in peer:
        return "—"
    ratio = f"{peer['ratio']:.1f}" if peer["ratio"] < 10 else f"{peer['ratio']:.0f}"
    return (f"{ratio}× ({peer['fwd_bwd_s']:.1f} s; setup {peer['setup_s']:.1f} s, "
            f"{_mib(max(peer['setup_peak_bytes'] or 0, peer['peak_bytes'] or 0))} MiB)")


def bench_conv(
    sizes=(4096, 16384, 65536),
    channels: int = 64,
    batch: int = 8,
    kernel_size: int = 3,
    repeats: int = 5,
    device: str = "cpu",
    out: str | Path = "benchmarks/results/conv.json",
    dense_max: int = 16384,
    disco_max: int = 16384,
) -> dict:
    """Run the benchmark, print Markdown tables and write JSON to ``out``."""
    device = torch.device(device)
    # Load the compiled kernels once, so "cold" below means a stencil-cache miss, not a JIT.
    warm = P.sobol(256, 2, seed=0)
    DIConv(1, 1, kernel_size, spacing=0.1)(torch.ones(1, 256, 1), warm).sum().backward()
    results = [bench_one(n, channels, batch, kernel_size, repeats, device, dense_max, disco_max)
               for n in tqdm(sizes, desc="bench conv", unit="size")]
    builds = [stencil_build_time(n, kernel_size) for n in sizes]
    payload = {
        "benchmark": "conv",
        "what": (f"forward+backward, {channels}->{channels} channels, batch {batch}, "
                 f"{kernel_size}x{kernel_size} pixels; F.conv2d on the sqrt(N) x sqrt(N) grid "
                 "vs DIConv on N scrambled Sobol points (sparse) and on the grid's points "
                 "(fast path), the released DI-Net algorithm (dense) and DISCO; medians of "
                 f"{repeats} runs after a warm-up (dense and DISCO: fewer)"),
        "machine": machine_info(device),
        "results": results,
        "stencil_builds": builds,
    }
    main = markdown_table(
        ["N", "conv2d ms", "DIConv Sobol ms", "× conv2d", "DIConv grid (stencil) ms",
         "× conv2d", "DIConv grid (fast path) ms", "× conv2d", "DIConv peak MiB (+ scratch)",
         "conv2d peak MiB", "stencil nnz"],
        [[f"{r['n']:,}", f"{r['conv2d_fwd_bwd_s'] * 1e3:.0f}",
          f"{r['dinet_fwd_bwd_s'] * 1e3:.0f}", f"{r['ratio']:.2f}×",
          f"{r['dinet_grid_stencil_fwd_bwd_s'] * 1e3:.0f}", f"{r['grid_stencil_ratio']:.2f}×",
          f"{r['dinet_grid_fwd_bwd_s'] * 1e3:.0f}", f"{r['grid_ratio']:.2f}×",
          f"{_mib(r['dinet_peak_bytes'])} (+{_mib(r['scratch_bytes'])})",
          _mib(r["conv2d_peak_bytes"]), f"{r['nnz']:,}"]
         for r in results],
    )
    peers = markdown_table(
        ["N", "dinet (× conv2d)", "released DI-Net (× conv2d)", "DISCO (× conv2d)"],
        [[f"{r['n']:,}", f"{r['ratio']:.2f}×", _peer_cell(r, "released"),
          _peer_cell(r, "disco")] for r in results],
    )
    stencils = markdown_table(
        ["N", "fresh Sobol draw ms", "stencil build ms", "cache hit µs"],
        [[f"{b['n']:,}", f"{b['draw_s'] * 1e3:.1f}", f"{b['build_s'] * 1e3:.1f}",
          f"{r['stencil_cache_hit_s'] * 1e6:.0f}"] for b, r in zip(builds, results, strict=True)],
    )
    if any("sparse_ratio" in r for r in results):
        main += "\n\n" + markdown_table(
            ["N", "DIConv Sobol, fused (default) × conv2d", "sparse path × conv2d"],
            [[f"{r['n']:,}", f"{r['ratio']:.2f}×", f"{r['sparse_ratio']:.2f}×"]
             for r in results])
    skipped = sorted({f"{p['name']}: {p['skipped']}" for r in results for p in r["peers"]
                      if "skipped" in p})
    payload["markdown"] = "\n\n".join([main, peers, stencils] + (
        ["Skipped: " + "; ".join(skipped)] if skipped else []))
    path = write_results(out, payload)
    print(payload["what"])
    print(f"machine: {payload['machine']['cpu']}, {payload['machine']['torch_threads']} threads, "
          f"torch {payload['machine']['torch']}, {device}")
    print(payload["markdown"])
    print(f"written to {path}")
    return payload
