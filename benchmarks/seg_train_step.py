"""A segmentation training step (forward, backward, AdamW) of the pixel U-Net (``cnn``),
``dinet-unet`` (its U-Net as conv2d on the lattice, the default) and ``dinet-unet`` with the
U-Net built of DI layers (``lattice_net="di"``), on one thread, batch 32, a 32×32 lattice,
1,024 fresh Sobol input and query points per step (the pixel U-Net reads its grid). Prints
the median of the timed steps and the ratio to ``cnn``.

Usage: ``.venv/bin/python benchmarks/seg_train_step.py [STEPS=5]`` (about a minute).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import dinet.points as P
from dinet.models import GridUNetSegmenter, Segmenter


def median_step(model, points, steps: int, batch: int = 32) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.rand(batch, 1024, 1)
    times = []
    for i in range(steps + 1):  # the first step builds caches: not timed
        inputs = points if points is not None else P.sobol(1024, 2, seed=i)
        query = P.sobol(1024, 2, seed=100 + i)
        start = time.perf_counter()
        loss = model(x, inputs, query).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(steps: int = 5) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cnn = median_step(GridUNetSegmenter(), P.grid((32, 32)), steps)
    print(f"cnn: {cnn:.3f} s")
    for name, model in (("dinet-unet", Segmenter()),
                        ("dinet-unet lattice_net=di", Segmenter(lattice_net="di"))):
        t = median_step(model, None, steps)
        print(f"{name}: {t:.3f} s ({t / cnn:.1f}x cnn)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
