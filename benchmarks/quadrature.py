"""Quadrature weights for point sets given by their coordinates: accuracy and cost.

Two tables, printed as markdown and written to ``benchmarks/results/quadrature.json``:

1. Relative error of ∫ f over [-1, 1]^d (sums of Gaussian bumps, exact by erf) with
   ``from_coords`` weights — Voronoi cells (the default) against the k-NN estimate — on
   ~4,096 points (2-D) and ~8,000 points (3-D) of every layout, worst of three seeds.
2. Time to compute the weights of 16,384 Sobol points (median of 5 uncached calls):
   Voronoi, Qhull's own Delaunay triangulation / Voronoi diagram of the same points for
   scale, k-NN, and a cached Voronoi call.

    .venv/bin/python benchmarks/quadrature.py
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from scipy.spatial import Delaunay, Voronoi

import dinet.points as P
import dinet.points.voronoi as V

BUMPS = {2: [((0.3, -0.2), 0.35, 1.0), ((-0.5, 0.4), 0.25, 0.8), ((0.1, 0.6), 0.45, 0.6),
             ((-0.6, -0.6), 0.3, 0.5)],
         3: [((0.3, -0.2, 0.1), 0.35, 1.0), ((-0.5, 0.4, -0.3), 0.3, 0.8),
             ((0.1, 0.6, 0.5), 0.45, 0.6)]}


def f(c: np.ndarray) -> np.ndarray:
    d = c.shape[1]
    return sum(amp * np.exp(-((c - np.array(m)) ** 2).sum(1) / (2 * s * s))
               for m, s, amp in BUMPS[d])


def exact(d: int) -> float:
    def axis(m, s):
        z = s * math.sqrt(2.0)
        return s * math.sqrt(math.pi / 2.0) * (math.erf((1 - m) / z) - math.erf((-1 - m) / z))

    return sum(amp * math.prod(axis(m, s) for m in centre) for centre, s, amp in BUMPS[d])


def anisotropic(n: int, d: int, seed: int) -> np.ndarray:
    """A lattice whose cells are ~2.3x longer along axis 0 than along the others."""
    side = round((n / 2.3 ** (d - 1)) ** (1 / d))
    sizes = [side] + [round(side * 2.3)] * (d - 1)
    axes = [-1.0 + (2.0 * np.arange(s) + 1.0) / s for s in sizes]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)


LAYOUTS = {
    "sobol": lambda n, d, s: P.sobol(n, d, seed=s).coords.double().numpy(),
    "random": lambda n, d, s: P.random(n, d, seed=s).coords.double().numpy(),
    "grid (pixel centres)": lambda n, d, s: P.grid((round(n ** (1 / d)),) * d).coords.double()
    .numpy(),
    "anisotropic grid": anisotropic,
    "rotated grid": lambda n, d, s: P.rotated_grid(n, d, seed=s).coords.double().numpy(),
    "hexagonal": lambda n, d, s: P.hexagonal(n, d, seed=s).coords.double().numpy(),
    "poisson": lambda n, d, s: P.poisson(n, d, seed=s).coords.double().numpy(),
    "foveated": lambda n, d, s: P.foveated(n, d, seed=s).coords.double().numpy(),
    "clustered": lambda n, d, s: P.clustered(n, d, seed=s).coords.double().numpy(),
}


def accuracy() -> dict:
    table = {}
    for d, n in ((2, 4096), (3, 8000)):
        for name, make in LAYOUTS.items():
            worst = {"voronoi": 0.0, "knn": 0.0}
            for seed in range(3):
                coords = make(n, d, seed)
                for method in worst:
                    ps = P.from_coords(coords, weights=method)
                    value = float(ps.weights.double().numpy() @ f(ps.coords.double().numpy()))
                    worst[method] = max(worst[method], abs(value - exact(d)) / exact(d))
            table[f"{d}-D {name}"] = worst
            print(f"{d}-D {name:22s} voronoi {100 * worst['voronoi']:.3f}%  "
                  f"knn {100 * worst['knn']:.2f}%", flush=True)
    return table


def median_s(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        V._CACHE.clear()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def timing() -> dict:
    out = {}
    for d in (2, 3):
        coords = P.sobol(16384, d, seed=0).coords.double().numpy()
        out[f"{d}-D"] = {
            "voronoi": median_s(lambda c=coords: P.voronoi_weights(c)),
            "qhull delaunay": median_s(lambda c=coords: Delaunay(c)),
            "qhull voronoi": median_s(lambda c=coords: Voronoi(c)),
            "knn": median_s(lambda c=coords: P.knn_weights(c)),
        }
        P.voronoi_weights(coords)
        start = time.perf_counter()
        P.voronoi_weights(coords)  # the same points again: from the cache
        out[f"{d}-D"]["cached"] = time.perf_counter() - start
        print(f"{d}-D, 16,384 points: " + ", ".join(f"{k} {v:.3f} s"
                                                    for k, v in out[f"{d}-D"].items()), flush=True)
    return out


def main() -> None:
    results = {"accuracy": accuracy(), "time_16384": timing()}
    lines = ["| layout | Voronoi (default) | k-NN |", "|---|---|---|"]
    for name, row in results["accuracy"].items():
        lines.append(f"| {name} | {100 * row['voronoi']:.3f}% | {100 * row['knn']:.2f}% |")
    lines += ["", "| 16,384 points | Voronoi weights | Qhull Delaunay | Qhull Voronoi | k-NN "
              "| Voronoi, cached |", "|---|---|---|---|---|---|"]
    for d, row in results["time_16384"].items():
        lines.append(f"| {d} | {row['voronoi']:.2f} s | {row['qhull delaunay']:.2f} s | "
                     f"{row['qhull voronoi']:.2f} s | {row['knn']:.3f} s | "
                     f"{1e3 * row['cached']:.1f} ms |")
    print("\n" + "\n".join(lines))
    path = Path(__file__).parent / "results" / "quadrature.json"
    path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
