"""Summarise a run of ``benchmarks/gpu_suite.sh``: per phase its wall time, throughput and
the GPU's mean utilisation (from the sampled ``util.csv``), the conv ratios against cuDNN and
the accuracy table; writes ``summary.json`` and ``summary.md`` into the suite's folder.

Usage: ``python benchmarks/gpu_summary.py OUT``.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

RATE_UNITS = {"fit-train": "fields/s", "fit-test": "fields/s", "train": "samples/s",
              "eval": "test fields/s", "predict": "test fields/s"}


def _utilisation(path: Path) -> list[tuple[float, float]]:
    """``(unix time, percent busy)`` samples of ``nvidia-smi --query-gpu=timestamp,...``."""
    samples = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            stamp, busy = (part.strip() for part in line.split(","))
            when = datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f")
            samples.append((when.timestamp(), float(busy)))
        except ValueError:
            continue  # a header, a note or a torn last line
    return samples


def summarise(out: Path) -> dict:
    samples = _utilisation(out / "util.csv")
    phases = []
    for line in (out / "phases.tsv").read_text().splitlines():
        name, start, end, count = line.split("\t")
        start, end, count = float(start), float(end), int(count)
        busy = [b for t, b in samples if start <= t <= end]
        phase = {"name": name, "seconds": end - start,
                 "gpu_busy_mean": sum(busy) / len(busy) if busy else None,
                 "gpu_samples": len(busy)}
        if count:
            phase.update(count=count, rate=count / (end - start), unit=RATE_UNITS.get(name))
        phases.append(phase)
    summary = {"card": (out / "card.csv").read_text().strip(), "phases": phases}
    conv = out / "conv.json"
    if conv.exists():
        summary["conv"] = [
            {k: r.get(k) for k in ("n", "ratio", "sparse_ratio", "grid_ratio",
                                    "conv2d_fwd_bwd_s", "dinet_fwd_bwd_s")}
            for r in json.loads(conv.read_text())["results"]]
    layers = out / "layers.json"
    if layers.exists():
        summary["layers"] = json.loads(layers.read_text()).get("markdown")
    results = out / "run" / "results.md"
    if results.exists():
        summary["accuracy"] = results.read_text()
    return summary


def markdown(summary: dict) -> str:
    lines = [f"GPU: {summary['card']}", "",
             "| phase | wall s | throughput | GPU busy (mean of samples) |", "|---|---|---|---|"]
    for p in summary["phases"]:
        rate = f"{p['rate']:,.0f} {p['unit']}" if "rate" in p else ""
        busy = "–" if p["gpu_busy_mean"] is None else f"{p['gpu_busy_mean']:.0f}%"
        lines.append(f"| {p['name']} | {p['seconds']:.1f} | {rate} | {busy} |")
    if "conv" in summary:
        lines += ["", "DIConv forward+backward on scrambled Sobol points, × cuDNN conv2d "
                  "(64→64 channels, batch 8, 3×3):", "",
                  "| N | fused (default) | sparse path | grid fast path |", "|---|---|---|---|"]
        for r in summary["conv"]:
            sparse = "–" if r["sparse_ratio"] is None else f"{r['sparse_ratio']:.2f}×"
            lines.append(f"| {r['n']:,} | {r['ratio']:.2f}× | {sparse} | "
                         f"{r['grid_ratio']:.2f}× |")
    for key in ("layers", "accuracy"):
        if summary.get(key):
            lines += ["", summary[key].strip()]
    return "\n".join(lines) + "\n"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/gpu")
    summary = summarise(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = markdown(summary)
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
