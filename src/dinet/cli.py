"""The ``dinet`` command line. The only module that parses arguments."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 4096,16384; got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dinet",
        description="Discretization-invariant deep learning on neural fields (DI-Net).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bench = commands.add_parser("bench", help="run benchmarks and write JSON results")
    suites = bench.add_subparsers(dest="suite", metavar="SUITE", required=True)
    conv = suites.add_parser(
        "conv",
        help="DIConv forward+backward on Sobol points vs F.conv2d on the same-size grid",
        description="DIConv forward+backward on N scrambled Sobol points against F.conv2d "
        "forward+backward on the sqrt(N) x sqrt(N) grid, same channels, kernel and spacing. "
        "Prints a Markdown table and writes JSON.",
    )
    conv.add_argument("--sizes", type=_int_list, default=[4096, 16384, 65536],
                      help="comma-separated point counts, perfect squares (default: "
                      "4096,16384,65536)")
    conv.add_argument("--channels", type=_positive_int, default=64,
                      help="input = output channels (default: 64)")
    conv.add_argument("--batch", type=_positive_int, default=8, help="batch size (default: 8)")
    conv.add_argument("--kernel-size", type=_positive_int, default=3,
                      help="odd kernel size (default: 3)")
    conv.add_argument("--repeats", type=_positive_int, default=5,
                      help="timed runs after one warm-up; the median is reported (default: 5)")
    conv.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    conv.add_argument("--out", default="benchmarks/results/conv.json",
                      help="JSON output path (default: benchmarks/results/conv.json)")

    layers = suites.add_parser(
        "layers",
        help="forward+backward time of every DI layer next to the spline DIConv",
        description="Forward+backward time and peak memory of every DI layer (convs, pools, "
        "norms, resampling, attention) on N Sobol points, with the ratio to the spline "
        "DIConv. Prints a Markdown table and writes JSON.",
    )
    layers.add_argument("--points", type=_positive_int, default=16384,
                        help="number of points, a perfect square (default: 16384)")
    layers.add_argument("--channels", type=_positive_int, default=64,
                        help="channels (default: 64)")
    layers.add_argument("--batch", type=_positive_int, default=8, help="batch size (default: 8)")
    layers.add_argument("--repeats", type=_positive_int, default=3,
                        help="timed runs after one warm-up (default: 3)")
    layers.add_argument("--global-attention", action="store_true",
                        help="also time global attention (N x N scores; slow on a CPU)")
    layers.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    layers.add_argument("--out", default="benchmarks/results/layers.json",
                        help="JSON output path (default: benchmarks/results/layers.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "bench" and args.suite == "conv":
            from .bench.conv import bench_conv

            if args.kernel_size % 2 == 0:
                parser.error(f"--kernel-size must be odd; got {args.kernel_size}")
            bench_conv(
                sizes=args.sizes, channels=args.channels, batch=args.batch,
                kernel_size=args.kernel_size, repeats=args.repeats, device=args.device,
                out=args.out,
            )
        elif args.command == "bench" and args.suite == "layers":
            from .bench.layers import bench_layers

            bench_layers(
                n=args.points, channels=args.channels, batch=args.batch, repeats=args.repeats,
                include_global_attention=args.global_attention, device=args.device,
                out=args.out,
            )
    except ValueError as err:
        print(f"dinet: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
