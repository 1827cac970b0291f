"""How close can a DI layer on a grid get to ``conv2d`` on this CPU? The layout question.

A (B, N, C) tensor of values on a grid stored in raster order *is* a channels-last image, so
a grid fast path without any reordering would run ``conv2d`` on that channels-last view. This
script times, forward + backward (64 → 64 channels, batch 8, 3 × 3, a 128 × 128 grid):

- ``conv2d`` on an NCHW image (the baseline, timed before and after the others);
- ``conv2d`` on the channels-last view of (B, N, C) raster-ordered values;
- the same with one row gather in and one out (values stored in another point order).

    .venv/bin/python benchmarks/channels_last_conv2d.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F


def median_ms(fn, repeats: int = 7) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main(batch: int = 8, channels: int = 64, side: int = 128) -> None:
    torch.manual_seed(0)
    n = side * side
    weight = torch.randn(channels, channels, 3, 3, requires_grad=True)
    image = torch.randn(batch, channels, side, side, requires_grad=True)
    values = torch.randn(batch, n, channels, requires_grad=True)
    order = torch.randperm(n)
    back = torch.argsort(order)

    def nchw():
        y = F.conv2d(image, weight, padding=1)
        y.backward(torch.ones_like(y))

    def channels_last(gather: bool):
        def run():
            x = values[:, order] if gather else values
            y = F.conv2d(x.view(batch, side, side, channels).permute(0, 3, 1, 2), weight,
                         padding=1)
            y = y.permute(0, 2, 3, 1).reshape(batch, n, channels)
            y = y[:, back] if gather else y
            y.backward(torch.ones_like(y))
        return run

    before = median_ms(nchw)
    plain = median_ms(channels_last(False))
    gathered = median_ms(channels_last(True))
    base = min(before, median_ms(nchw))  # the faster of two baselines: ratios err high
    print(f"conv2d NCHW: {base:.0f} ms; channels-last view of (B, N, C): {plain:.0f} ms "
          f"({plain / base:.2f}x); with a row gather in and out: {gathered:.0f} ms "
          f"({gathered / base:.2f}x)  [torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads]")


if __name__ == "__main__":
    main()
