"""How far a converted 3×3 conv lands from the CNN's own sum off the grid, for the linear hat
(``kernel="spline"``) and Keys' cubic (``kernel="cubic"``): a smooth two-channel field with
detail at a few pixels' scale (angular frequency ``w`` in domain units; a 16×16 grid), read on
N scrambled Sobol points, compared with ``conv2d`` of the field at the pixel centres (the
outermost two pixels left out). Prints the worst error relative to the output's range.

Usage: ``.venv/bin/python benchmarks/cubic_kernel.py [N]`` (default N = 65536).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import dinet.points as P
from dinet.nn import DIConv


def main(n: int = 65536) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    side, grid, points = 16, P.grid((16, 16)), P.sobol(n, seed=0)
    layers = {k: DIConv.from_conv(conv, (side, side), kernel=k) for k in ("spline", "cubic")}
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    print(f"N = {n:,} Sobol points; worst |DI - conv2d| / max |conv2d|")
    print("| w | spline | cubic |\n|---|---|---|")
    for w in (3.0, 6.0, 9.0, 12.0):
        def field(c, w=w):
            return torch.stack([torch.sin(w * c[..., 0] + 0.7 * w * c[..., 1]),
                                torch.cos(0.8 * w * c[..., 1] - 0.3 * w * c[..., 0])], -1)

        with torch.no_grad():
            ref = conv(P.values_to_image(field(grid.coords.double())[None], grid))
            errors = []
            for layer, out in layers.values():
                y = P.values_to_image(layer.double()(field(points.coords.double())[None],
                                                     points, out), out)
                errors.append(float((y - ref)[inner].abs().max() / ref[inner].abs().max()))
        print(f"| {w:g} | " + " | ".join(f"{100 * e:.1f}%" for e in errors) + " |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 65536)
