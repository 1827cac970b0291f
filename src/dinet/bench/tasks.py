"""``dinet bench fit`` and ``dinet bench train-step``: the costs a user's pipeline pays.

- ``fit``: fields per second of :func:`dinet.fields.fit_fields` with the default recipe on
  Fashion-MNIST images (scikit-learn digits when Fashion-MNIST is not installed).
- ``train-step``: one training step of the default classifier (``dinet-res``) at 1,024
  points, batch 64, on fixed points and on a fresh Sobol draw per step (as training draws
  them), its parts — reading the batch's fields at the points, forward, backward + AdamW —
  the epoch time on 60,000 fields this implies, and the share of a step that re-drawing the
  points (and building what depends on them) costs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.sources import load_source
from .common import machine_info, markdown_table, write_results

__all__ = ["bench_fit", "bench_train_step"]


def _images(n: int, data_dir=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """``n`` training images, labels and source record of Fashion-MNIST, or of digits if
    Fashion-MNIST is not installed."""
    try:
        return load_source("fashion-mnist", limit=n, data_dir=data_dir)
    except FileNotFoundError:
        return load_source("digits", limit=n)


def _report(payload: dict, out) -> dict:
    path = write_results(out, payload)
    print(payload["what"])
    print(payload["markdown"])
    print(f"written to {path}")
    return payload


def bench_fit(n: int = 256, chunk: int = 32, out="benchmarks/results/fit.json",
              data_dir=None) -> dict:
    """Fit ``n`` fields with the default recipe; fields/s and PSNR."""
    from ..fields import fit_fields

    images, _, info = _images(n, data_dir)
    source = info["source"]
    result = fit_fields(images, chunk=chunk, progress=True)
    row = {"source": source, "n": len(images), "size": list(images.shape[1:3]),
           "chunk": chunk, "seconds": result.seconds,
           "fields_per_s": result.fields_per_second,
           "psnr_grid_mean": float(result.psnr_grid.mean()),
           "psnr_offgrid_mean": float(result.psnr_offgrid.mean()),
           "mean_steps": float(result.steps.mean())}
    table = markdown_table(
        ["source", "fields", "fields/s", "grid PSNR dB", "off-grid PSNR dB", "mean steps"],
        [[source, f"{row['n']:,}", f"{row['fields_per_s']:.1f}", f"{row['psnr_grid_mean']:.2f}",
          f"{row['psnr_offgrid_mean']:.2f}", f"{row['mean_steps']:.1f}"]],
    )
    return _report({"benchmark": "fit",
                    "what": f"fit_fields, default SIREN recipe, {len(images)} {source} "
                            f"images {images.shape[1]}x{images.shape[2]}, chunks of {chunk}",
                    "machine": machine_info(), "results": [row], "markdown": table}, out)


def bench_train_step(points: int = 1024, batch: int = 64, steps: int = 10,
                     fields: str | Path | None = None, epoch_items: int = 60_000,
                     out="benchmarks/results/train_step.json", data_dir=None) -> dict:
    """Time the default classifier's training step and its parts (medians of ``steps``).

    ``fields`` is a classification field dataset; without one, ``batch`` images are fitted
    into a temporary folder first (not timed).
    """
    from ..fields import build_dataset
    from ..tasks import TrainConfig, build_model, open_task_data
    from ..tasks.discretize import make_points

    with tempfile.TemporaryDirectory() as tmp:
        if fields is None:
            images, labels, info = _images(batch, data_dir)
            fields = Path(tmp) / "fields"
            build_dataset(fields, images, labels, source=info, progress=False)
        data = open_task_data("classify", fields)
        config = TrainConfig(fields=str(fields), out="", points=points, batch_size=batch)
        config.check()  # resolves the default model
        torch.manual_seed(0)
        model = build_model(config, data)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        idx = np.arange(min(batch, len(data)))
        parts: dict[str, list[float]] = {k: [] for k in
                                         ("draw", "stencils", "read", "forward", "backward")}
        fixed = make_points("sobol", points, data.dim, seed=0)

        def step(pts, record: bool):
            t0 = time.perf_counter()
            x = data.inputs(idx, pts.coords)  # training reads at augmented coordinates
            t1 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x, pts), data.targets(idx))
            t2 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            t3 = time.perf_counter()
            if record:
                parts["read"].append(t1 - t0)
                parts["forward"].append(t2 - t1)
                parts["backward"].append(t3 - t2)

        step(fixed, False)  # warm-up: compiled kernels, the fixed set's stencils
        step(make_points("sobol", points, data.dim, seed=999), False)
        # Fixed-point and fresh-draw steps alternate, so that drift in the machine's speed
        # hits both alike. A fresh step draws its points and builds the stencils that depend
        # on them — timed as a one-item no-grad forward, an upper bound — before the step, as
        # training does; the stencils between the model's fixed lattices stay cached.
        fixed_s, fresh_s = [], []
        for s in tqdm(range(steps), desc="train-step (fixed, fresh)", unit="pair"):
            start = time.perf_counter()
            step(fixed, True)
            fixed_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            pts = make_points("sobol", points, data.dim, seed=1000 + s)
            t_draw = time.perf_counter()
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, points, data.in_channels), pts)
            model.train()
            t_stencils = time.perf_counter()
            step(pts, False)
            fresh_s.append(time.perf_counter() - start)
            parts["draw"].append(t_draw - start)
            parts["stencils"].append(t_stencils - t_draw)
    med = {k: float(np.median(v)) for k, v in parts.items()}
    row = {"points": points, "batch": batch, "model": config.model, "steps": steps,
           "fixed_step_s": float(np.median(fixed_s)), "fresh_step_s": float(np.median(fresh_s)),
           "parts_s": med}
    row["samples_per_s"] = batch / row["fresh_step_s"]
    row["epoch_minutes"] = epoch_items / row["samples_per_s"] / 60
    row["redraw_share"] = (med["draw"] + med["stencils"]) / row["fresh_step_s"]
    table = markdown_table(
        ["step (fresh draw) ms", "step (fixed points) ms", "draw ms", "stencils ms",
         "read fields ms", "forward ms", "backward+AdamW ms", "samples/s",
         f"epoch of {epoch_items:,} min", "re-draw share"],
        [[f"{row['fresh_step_s'] * 1e3:.0f}", f"{row['fixed_step_s'] * 1e3:.0f}",
          f"{med['draw'] * 1e3:.1f}", f"{med['stencils'] * 1e3:.1f}",
          f"{med['read'] * 1e3:.0f}", f"{med['forward'] * 1e3:.0f}",
          f"{med['backward'] * 1e3:.0f}", f"{row['samples_per_s']:.0f}",
          f"{row['epoch_minutes']:.1f}", f"{row['redraw_share']:.1%}"]],
    )
    return _report({"benchmark": "train-step",
                    "what": f"one training step of {config.model}, {points} scrambled Sobol "
                            f"points, batch {batch}; medians of {steps} steps on fixed points and "
                            f"{steps} on fresh draws, alternating (a fresh step draws its "
                            "points and builds the stencils that depend on them, as training "
                            "does; forward and backward are timed on the fixed-point steps)",
                    "machine": machine_info(), "results": [row], "markdown": table}, out)
