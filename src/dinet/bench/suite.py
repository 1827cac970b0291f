"""``dinet bench all``: every suite in one run, and one Markdown summary of them."""

from __future__ import annotations

import time
from pathlib import Path

from .._io import atomic_write_text
from .common import machine_info

__all__ = ["bench_all"]


def bench_all(out_dir: str | Path = "benchmarks/results", device: str = "cpu",
              quick: bool = False) -> Path:
    """Run conv, layers, fit, train-step and scaling; write their JSON files and
    ``summary.md`` under ``out_dir``. ``quick`` shrinks every suite (a smoke test)."""
    from .conv import bench_conv
    from .layers import bench_layers
    from .scaling import bench_scaling
    from .tasks import bench_fit, bench_train_step

    out_dir = Path(out_dir)
    suffix = "" if device == "cpu" else "_" + device.replace(":", "")
    start = time.perf_counter()
    if quick:
        runs = [
            ("conv", lambda o: bench_conv(sizes=(1024,), channels=8, batch=2, repeats=1,
                                          device=device, out=o)),
            ("layers", lambda o: bench_layers(n=1024, channels=8, batch=2, repeats=1,
                                              device=device, out=o)),
            ("fit", lambda o: bench_fit(n=16, chunk=16, out=o)),
            ("train-step", lambda o: bench_train_step(points=256, batch=8, steps=2, out=o)),
            ("scaling", lambda o: bench_scaling(sizes_2d=(1024, 4096), sizes_3d=(4096,),
                                                sizes_model=(1024,), repeats=1, out=o)),
        ]
    else:
        runs = [
            ("conv", lambda o: bench_conv(device=device, out=o)),
            ("layers", lambda o: bench_layers(device=device, out=o)),
            ("fit", lambda o: bench_fit(out=o)),
            ("train-step", lambda o: bench_train_step(out=o)),
            ("scaling", lambda o: bench_scaling(out=o)),
        ]
    sections = []
    for name, run in runs:
        print(f"\n## dinet bench {name}")
        payload = run(out_dir / f"{name.replace('-', '_')}{suffix}.json")
        sections.append(f"## {name}\n\n{payload['what']}\n\n{payload['markdown']}\n")
    info = machine_info(device)
    header = (f"# dinet bench all{' (quick)' if quick else ''}\n\nMachine: {info['cpu']}, "
              f"{info['cpu_count']} CPUs, {info['torch_threads']} torch threads, torch "
              f"{info['torch']}, device {info['device']}"
              + (f" ({info['gpu']})" if "gpu" in info else "")
              + f"; {time.perf_counter() - start:.0f} s in all.\n\n")
    path = atomic_write_text(out_dir / f"summary{suffix}.md", header + "\n".join(sections))
    print(f"\nsummary written to {path}")
    return path
