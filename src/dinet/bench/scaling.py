"""``dinet bench scaling``: time and memory per point from a thousand to a million points.

Three workloads, each at N = 2^k scrambled Sobol points with a kernel of fixed size in
*pixels* (the spacing shrinks as N grows, so every point has the same number of neighbours,
as when a finer image is convolved):

- the 2-D spline DIConv (3×3, ``channels`` → ``channels``, batch ``batch``), forward+backward,
  N = 2^10 … 2^20;
- the 3-D DIConv (3×3×3), N = 2^12 … 2^18;
- the default classifier (``dinet-res``, 1 input channel) forward+backward at a fixed
  spacing, where only the stem reads all N points — the cost of more points to a model —
  N = 2^10 … 2^20 (its MLP-kernel stem evaluates the basis MLP on every (point, lattice
  node) pair; beyond 2^16 pairs it recomputes them in backward rather than storing them).

Time per point should stay flat (the sparse work is linear in the stencil's non-zeros) and
memory should be linear in the non-zeros; both are tabled and plotted.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import points as P
from ..neighbors import set_memory_budget, stencil_cache
from ..nn import DIConv
from .common import (
    available_memory,
    machine_info,
    markdown_table,
    median_time,
    peak_memory,
    release_free_heap,
    write_results,
)

__all__ = ["bench_scaling"]


def _conv_case(n: int, dim: int, channels: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    points = P.sobol(n, dim, seed=0)
    spacing = 2.0 / n ** (1.0 / dim)
    conv = DIConv(channels, channels, 3, spacing=spacing, dim=dim)
    stencil_cache.clear()
    start = time.perf_counter()
    stencil = conv.stencil(points)
    build_s = time.perf_counter() - start
    x = torch.randn(batch, n, channels, requires_grad=True)

    def run():
        x.grad = None
        conv.zero_grad(set_to_none=True)
        y = conv(x, points)
        y.backward(torch.ones_like(y))

    seconds = median_time(run, repeats=repeats, warmup=1)
    peak = peak_memory(run)
    return {"workload": f"conv {dim}-D", "n": n, "nnz": stencil.nnz,
            "stencil_bytes": stencil.nbytes(), "build_s": build_s, "fwd_bwd_s": seconds,
            "peak_bytes": peak, "s_per_point": seconds / n,
            "stencil_bytes_per_nnz": stencil.nbytes() / stencil.nnz}


def _classifier_case(n: int, batch: int, repeats: int) -> dict:
    from ..models import Classifier

    torch.manual_seed(0)
    points = P.sobol(n, 2, seed=0)
    model = Classifier("dinet-res", n_classes=10, in_channels=1, base_spacing=4.0 / 32)
    stencil_cache.clear()
    start = time.perf_counter()
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, n, 1), points)  # builds the stencils
    build_s = time.perf_counter() - start
    model.train()
    x = torch.randn(batch, n, 1)
    target = torch.zeros(batch, dtype=torch.long)

    def run():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x, points), target).backward()

    seconds = median_time(run, repeats=repeats, warmup=1)
    return {"workload": "classifier dinet-res", "n": n, "build_s": build_s,
            "fwd_bwd_s": seconds, "peak_bytes": peak_memory(run), "s_per_point": seconds / n}


def _plot(results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
    for workload in dict.fromkeys(r["workload"] for r in results):
        rows = [r for r in results if r["workload"] == workload]
        ns = [r["n"] for r in rows]
        ax_t.plot(ns, [r["s_per_point"] * 1e6 for r in rows], "o-", label=workload)
        if all(r.get("peak_bytes") for r in rows):
            ax_m.plot(ns, [r["peak_bytes"] / r["n"] / 1024 for r in rows], "o-", label=workload)
    for ax, label in ((ax_t, "fwd+bwd time per point (µs)"),
                      (ax_m, "peak memory per point (KiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("points N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    from ..tasks.plots import save_figure

    save_figure(fig, path)  # atomically
    plt.close(fig)
    return path


def bench_scaling(
    sizes_2d=tuple(2**k for k in range(10, 21)),
    sizes_3d=tuple(2**k for k in range(12, 19)),
    sizes_model=tuple(2**k for k in range(10, 21, 2)),
    channels: int = 16,
    batch: int = 2,
    repeats: int = 3,
    out: str | Path = "benchmarks/results/scaling.json",
) -> dict:
    """Run the three workloads over their sizes; print a table, write JSON and a PNG."""
    cases = ([("conv", n, 2) for n in sizes_2d] + [("conv", n, 3) for n in sizes_3d]
             + [("model", n, 2) for n in sizes_model])
    results = []
    # A stress test: a stencil may take up to 90% of the memory available when the run starts
    # (the library's default budget is half of it, which refuses the classifier at 2^20).
    available = available_memory()
    previous = set_memory_budget(None if available is None else int(0.9 * available))
    try:
        for kind, n, dim in tqdm(cases, desc="bench scaling", unit="case"):
            if kind == "conv":
                results.append(_conv_case(n, dim, channels, batch, repeats))
            else:
                results.append(_classifier_case(n, batch, repeats))
            # Rows so far, so that a case that runs out of memory loses only itself.
            write_results(out, {"benchmark": "scaling", "complete": False, "results": results})
            gc.collect()
            release_free_heap()
    finally:
        set_memory_budget(previous)
    flat = {}
    for workload in dict.fromkeys(r["workload"] for r in results):
        per_point = [r["s_per_point"] for r in results
                     if r["workload"] == workload and r["n"] >= 2**12]
        flat[workload] = max(per_point) / min(per_point) if per_point else None

    def mib(v):
        return "n/a" if v is None else f"{v / 2**20:,.0f}"

    table = markdown_table(
        ["workload", "N", "fwd+bwd ms", "µs / point", "stencil build ms", "nnz",
         "peak MiB", "peak bytes / nnz"],
        [[r["workload"], f"{r['n']:,}", f"{r['fwd_bwd_s'] * 1e3:.1f}",
          f"{r['s_per_point'] * 1e6:.2f}", f"{r['build_s'] * 1e3:.0f}",
          f"{r['nnz']:,}" if "nnz" in r else "—", mib(r["peak_bytes"]),
          f"{r['peak_bytes'] / r['nnz']:.0f}" if r.get("peak_bytes") and "nnz" in r else "—"]
         for r in results],
    )
    spread = ", ".join(f"{w}: {v:.2f}×" for w, v in flat.items() if v is not None)
    plot = _plot(results, Path(out).with_suffix(".png"))
    payload = {
        "benchmark": "scaling",
        "what": (f"forward+backward on N scrambled Sobol points, kernels of 3 pixels (spacing "
                 f"2/N^(1/d)), {channels} channels, batch {batch}; classifier dinet-res at its "
                 f"fixed spacing, batch {batch}; medians of {repeats} runs"),
        "machine": machine_info(),
        "results": results,
        "per_point_spread_from_4096": flat,
        "plot": str(plot),
        "markdown": table + f"\n\nTime per point, max / min over N ≥ 4,096: {spread}.",
    }
    path = write_results(out, payload)
    print(payload["what"])
    print(payload["markdown"])
    print(f"written to {path} and {plot}")
    return payload
