"""``dinet bench SUITE``: the benchmark suites; each handler maps the flags onto a benchmark
function and parses nothing itself."""

from __future__ import annotations

from .options import (
    bench_options,
    device,
    int_at_least,
    int_list,
    json_out,
    odd_positive_int,
    positive_int,
)

__all__ = ["add_parsers"]


def add_parsers(commands) -> None:
    """``dinet bench SUITE``: the benchmark suites."""

    bench = commands.add_parser("bench", help="run benchmarks and write JSON results")
    suites = bench.add_subparsers(dest="suite", metavar="SUITE", required=True)
    conv = suites.add_parser(
        "conv",
        help="DIConv forward+backward on Sobol points vs F.conv2d on the same-size grid",
        description="DIConv forward+backward on N scrambled Sobol points against F.conv2d "
        "forward+backward on the sqrt(N) x sqrt(N) grid, same channels, kernel and spacing. "
        "Prints a Markdown table and writes JSON.",
    )
    conv.add_argument("--sizes", type=int_list, default=[4096, 16384, 65536],
                      help="comma-separated point counts, perfect squares (default: "
                      "4096,16384,65536)")
    conv.add_argument("--kernel-size", type=odd_positive_int, default=3,
                      help="odd kernel size (default: 3)")
    bench_options(conv, repeats=5, out="benchmarks/results/conv.json")

    layers = suites.add_parser(
        "layers",
        help="forward+backward time of every DI layer next to the spline DIConv",
        description="Forward+backward time and peak memory of every DI layer (convs, pools, "
        "norms, resampling, attention) on N Sobol points, with the ratio to the spline "
        "DIConv. Prints a Markdown table and writes JSON.",
    )
    layers.add_argument("--points", type=positive_int, default=16384,
                        help="number of points, a perfect square (default: 16384)")
    layers.add_argument("--global-attention", action="store_true",
                        help="also time global attention (N x N scores; slow on a CPU)")
    bench_options(layers, repeats=3, out="benchmarks/results/layers.json")

    bfit = suites.add_parser(
        "fit",
        help="fields per second of the default field-fitting recipe",
        description="Fit N Fashion-MNIST images (scikit-learn digits when Fashion-MNIST is "
        "not installed) with the default SIREN recipe; fields/s and PSNR. Writes JSON.",
    )
    bfit.add_argument("--n", type=positive_int, default=256,
                      help="number of images (default: 256)")
    json_out(bfit, "benchmarks/results/fit.json")

    bstep = suites.add_parser(
        "train-step",
        help="one training step of the default classifier, split into its parts",
        description="Time one training step of dinet-res (fresh Sobol draw, stencils, "
        "reading the fields, forward, backward + AdamW) and the epoch time it implies.",
    )
    bstep.add_argument("--points", type=positive_int, default=1024,
                       help="points per step (default: 1024)")
    bstep.add_argument("--batch", type=positive_int, default=64,
                       help="batch size (default: 64)")
    bstep.add_argument("--steps", type=positive_int, default=10,
                       help="timed steps; medians are reported (default: 10)")
    bstep.add_argument("--fields", default=None,
                       help="a classification field dataset (default: fit one batch of "
                       "images into a temporary folder)")
    json_out(bstep, "benchmarks/results/train_step.json")

    bscale = suites.add_parser(
        "scaling",
        help="time and memory per point, 2^10 to 2^20 points (2-D), 2^12 to 2^18 (3-D)",
        description="Forward+backward time and peak memory per point of the 2-D and 3-D "
        "DIConv (3-pixel kernels) and of the default classifier, over N = 2^k Sobol points. "
        "Prints a table, writes JSON and a PNG plot beside it.",
    )
    bscale.add_argument("--max-2d", type=int_at_least(10, "an exponent of at least 10"),
                        default=20,
                        help="largest 2-D size as a power of two (default: 20)")
    bscale.add_argument("--max-3d", type=int_at_least(12, "an exponent of at least 12"),
                        default=18,
                        help="largest 3-D size as a power of two (default: 18)")
    bscale.add_argument("--channels", type=positive_int, default=16,
                        help="conv channels (default: 16)")
    bscale.add_argument("--batch", type=positive_int, default=2, help="batch (default: 2)")
    bscale.add_argument("--repeats", type=positive_int, default=3,
                        help="timed runs after one warm-up (default: 3)")
    json_out(bscale, "benchmarks/results/scaling.json")

    ball = suites.add_parser(
        "all",
        help="every suite (conv, layers, fit, train-step, scaling) and a summary.md",
        description="Run every benchmark suite with its defaults; JSON files and summary.md "
        "under --out-dir.",
    )
    ball.add_argument("--out-dir", default="benchmarks/results",
                      help="folder of the results (default: benchmarks/results)")
    ball.add_argument("--device", type=device, default="cpu",
                      help="torch device of the conv and layer suites: cpu, cuda, cuda:N "
                      "(default: cpu)")
    ball.add_argument("--quick", action="store_true",
                      help="tiny sizes: checks that every suite runs, in seconds")
    for sub, run in ((conv, _bench_conv), (layers, _bench_layers), (bfit, _bench_fit),
                     (bstep, _bench_train_step), (bscale, _bench_scaling), (ball, _bench_all)):
        sub.set_defaults(handler=run)


# --- bench suites: each parses nothing, it maps the flags onto a benchmark function ------
def _bench_conv(args) -> None:
    from ..bench.conv import bench_conv

    bench_conv(sizes=args.sizes, channels=args.channels, batch=args.batch,
               kernel_size=args.kernel_size, repeats=args.repeats, device=args.device,
               out=args.out)


def _bench_layers(args) -> None:
    from ..bench.layers import bench_layers

    bench_layers(n=args.points, channels=args.channels, batch=args.batch,
                 repeats=args.repeats, include_global_attention=args.global_attention,
                 device=args.device, out=args.out)


def _bench_fit(args) -> None:
    from ..bench.tasks import bench_fit

    bench_fit(n=args.n, out=args.out)


def _bench_train_step(args) -> None:
    from ..bench.tasks import bench_train_step

    bench_train_step(points=args.points, batch=args.batch, steps=args.steps,
                     fields=args.fields, out=args.out)


def _bench_scaling(args) -> None:
    from ..bench.scaling import bench_scaling

    bench_scaling(sizes_2d=tuple(2**k for k in range(10, args.max_2d + 1)),
                  sizes_3d=tuple(2**k for k in range(12, args.max_3d + 1)),
                  sizes_model=tuple(2**k for k in range(10, args.max_2d + 1, 2)),
                  channels=args.channels, batch=args.batch, repeats=args.repeats,
                  out=args.out)


def _bench_all(args) -> None:
    from ..bench.suite import bench_all

    bench_all(args.out_dir, device=args.device, quick=args.quick)
