"""Study of the field-fitting recipe on 32×32 Fashion-MNIST: grid / off-grid PSNR and
fields/s for several SIREN ω0.

    python benchmarks/field_study.py --n 256 --omegas 10 20 30

Reads the Debian package's IDX files (``--path``), resizes 28→32 bilinearly, and prints a
Markdown table. Extra ``--set key=value`` pairs are passed to ``fit_fields``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from dinet.fields import fit_fields

DEFAULT_PATH = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def load_images(path: str, n: int) -> np.ndarray:
    """The first ``n`` images, resized to 32×32, as ``(n, 32, 32, 1)`` floats in [0, 1]."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        header = np.frombuffer(f.read(16), dtype=">i4")
        count, rows, cols = int(header[1]), int(header[2]), int(header[3])
        n = min(n, count)
        raw = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8).reshape(n, 1, rows, cols)
    x = torch.from_numpy(raw.astype(np.float32) / 255.0)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.permute(0, 2, 3, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="number of images")
    parser.add_argument("--omegas", type=float, nargs="+", default=[10.0, 20.0, 30.0])
    parser.add_argument("--path", default=DEFAULT_PATH)
    parser.add_argument("--set", nargs="*", default=[], help="fit_fields overrides, key=value")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    images = load_images(args.path, args.n)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    print(f"{len(images)} images 32×32, overrides {overrides}\n")
    print("| ω0 | grid PSNR mean | ≥ 30 dB | off-grid PSNR mean | off-grid median "
          "| mean steps | fields/s |")
    print("|---|---|---|---|---|---|---|")
    for omega in args.omegas:
        res = fit_fields(images, "siren", omega0=omega, progress=False, **overrides)
        print(
            f"| {omega:g} | {res.psnr_grid.mean():.2f} | {(res.psnr_grid >= 30).mean():.1%} "
            f"| {res.psnr_offgrid.mean():.2f} | {np.median(res.psnr_offgrid):.2f} "
            f"| {res.steps.mean():.1f} | {res.fields_per_second:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
