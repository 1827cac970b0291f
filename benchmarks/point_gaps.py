"""How far the pixels of a 32x32 image are from the nearest input point, per discretization.

A segmenter reads the field only at its input points; a pixel far from every point is one
whose label it has to guess from the neighbours. For each discretization and count this
prints, over DRAWS draws (seeds 0..DRAWS-1, the draws of ``dinet``'s ``make_points``), the
mean distance from a pixel centre to its nearest point, in pixels, and the share of pixels
more than 1 and 1.5 pixels from every point.

Usage: ``.venv/bin/python benchmarks/point_gaps.py [SIDE] [DRAWS]`` (defaults 32 20; a few
seconds).
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.spatial import cKDTree

import dinet.points as P
from dinet.tasks.discretize import make_points


def main(side: int = 32, draws: int = 20) -> None:
    centres = P.grid((side, side)).coords.numpy()
    pixel = 2.0 / side
    print("| points | discretization | mean distance (px) | > 1 px | > 1.5 px |")
    print("|---|---|---|---|---|")
    for n in (side * side, side * side // 4):
        for kind in ("sobol", "grid", "shrunk", "random", "jittered"):
            d = np.concatenate([cKDTree(make_points(kind, n, 2, seed).coords.numpy())
                                .query(centres)[0] / pixel for seed in range(draws)])
            print(f"| {n:,} | {kind} | {d.mean():.2f} | {100 * (d > 1).mean():.1f}% | "
                  f"{100 * (d > 1.5).mean():.1f}% |")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
