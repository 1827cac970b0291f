"""The ``dinet`` command line. The only module that parses arguments."""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, described as ``what`` in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")


def _odd_positive_int(text: str) -> int:
    value = _positive_int(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"expected an odd kernel size, got {value}")
    return value
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _float_above(minimum: float, inclusive: bool, what: str):
    """An argparse type: a finite float > ``minimum`` (>= when ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


_positive_float = _float_above(0.0, False, "a positive number")
_non_negative_float = _float_above(0.0, True, "a number >= 0")
_DEVICE = re.compile(r"(cpu|cuda|mps|xpu)(:\d+)?")


def _device(text: str) -> str:
    """An argparse type: a torch device string such as cpu, cuda or cuda:1."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a torch device such as cpu, cuda or cuda:1; got {text!r}")
    return text


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


def _bench_options(parser: argparse.ArgumentParser, repeats: int, out: str) -> None:
    """The options every benchmark suite shares."""
    parser.add_argument("--channels", type=_positive_int, default=64,
                        help="input = output channels (default: 64)")
    parser.add_argument("--batch", type=_positive_int, default=8,
                        help="batch size (default: 8)")
    parser.add_argument("--repeats", type=_positive_int, default=repeats,
                        help=f"timed runs after one warm-up; the median is reported "
                        f"(default: {repeats})")
    parser.add_argument("--device", type=_device, default="cpu",
                        help="torch device: cpu, cuda, cuda:N (default: cpu)")
    parser.add_argument("--out", default=out, help=f"JSON output path (default: {out})")


def _kinds_help() -> str:
    """The registered discretizations, for help texts (``dinet.tasks.discretize``)."""
    from .tasks.discretize import FILE_PREFIX, describe

    text = (f"{describe()}; {FILE_PREFIX}FILE: your own (N, d) coordinates (key 'coords', "
            "optional 'weights'; Voronoi weights otherwise)")
    return text.replace("%", "%%")  # argparse formats help with %


def build_parser() -> argparse.ArgumentParser:
    """The ``dinet`` command line: one function per command adds its parser and binds its
    handler; every choice comes from the registry or constant that owns it."""
    parser = argparse.ArgumentParser(
        prog="dinet",
        description="Discretization-invariant deep learning on neural fields (DI-Net).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_bench_parser, _fit_parser, _train_parser, _eval_parser, _demo_parser,
                _report_parser, _experiment_parser):
        add(commands)
    return parser


def _bench_parser(commands) -> None:
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
    conv.add_argument("--sizes", type=_int_list, default=[4096, 16384, 65536],
                      help="comma-separated point counts, perfect squares (default: "
                      "4096,16384,65536)")
    conv.add_argument("--kernel-size", type=_odd_positive_int, default=3,
                      help="odd kernel size (default: 3)")
    _bench_options(conv, repeats=5, out="benchmarks/results/conv.json")

    layers = suites.add_parser(
        "layers",
        help="forward+backward time of every DI layer next to the spline DIConv",
        description="Forward+backward time and peak memory of every DI layer (convs, pools, "
        "norms, resampling, attention) on N Sobol points, with the ratio to the spline "
        "DIConv. Prints a Markdown table and writes JSON.",
    )
    layers.add_argument("--points", type=_positive_int, default=16384,
                        help="number of points, a perfect square (default: 16384)")
    layers.add_argument("--global-attention", action="store_true",
                        help="also time global attention (N x N scores; slow on a CPU)")
    _bench_options(layers, repeats=3, out="benchmarks/results/layers.json")

    bfit = suites.add_parser(
        "fit",
        help="fields per second of the default field-fitting recipe",
        description="Fit N Fashion-MNIST images (scikit-learn digits when Fashion-MNIST is "
        "not installed) with the default SIREN recipe; fields/s and PSNR. Writes JSON.",
    )
    bfit.add_argument("--n", type=_positive_int, default=256,
                      help="number of images (default: 256)")
    bfit.add_argument("--out", default="benchmarks/results/fit.json",
                      help="JSON output path (default: benchmarks/results/fit.json)")

    bstep = suites.add_parser(
        "train-step",
        help="one training step of the default classifier, split into its parts",
        description="Time one training step of dinet-res (fresh Sobol draw, stencils, "
        "reading the fields, forward, backward + AdamW) and the epoch time it implies.",
    )
    bstep.add_argument("--points", type=_positive_int, default=1024,
                       help="points per step (default: 1024)")
    bstep.add_argument("--batch", type=_positive_int, default=64,
                       help="batch size (default: 64)")
    bstep.add_argument("--steps", type=_positive_int, default=10,
                       help="timed steps; medians are reported (default: 10)")
    bstep.add_argument("--fields", default=None,
                       help="a classification field dataset (default: fit one batch of "
                       "images into a temporary folder)")
    bstep.add_argument("--out", default="benchmarks/results/train_step.json",
                       help="JSON output path (default: benchmarks/results/train_step.json)")

    bscale = suites.add_parser(
        "scaling",
        help="time and memory per point, 2^10 to 2^20 points (2-D), 2^12 to 2^18 (3-D)",
        description="Forward+backward time and peak memory per point of the 2-D and 3-D "
        "DIConv (3-pixel kernels) and of the default classifier, over N = 2^k Sobol points. "
        "Prints a table, writes JSON and a PNG plot beside it.",
    )
    bscale.add_argument("--max-2d", type=_int_at_least(10, "an exponent of at least 10"),
                        default=20,
                        help="largest 2-D size as a power of two (default: 20)")
    bscale.add_argument("--max-3d", type=_int_at_least(12, "an exponent of at least 12"),
                        default=18,
                        help="largest 3-D size as a power of two (default: 18)")
    bscale.add_argument("--channels", type=_positive_int, default=16,
                        help="conv channels (default: 16)")
    bscale.add_argument("--batch", type=_positive_int, default=2, help="batch (default: 2)")
    bscale.add_argument("--repeats", type=_positive_int, default=3,
                        help="timed runs after one warm-up (default: 3)")
    bscale.add_argument("--out", default="benchmarks/results/scaling.json",
                        help="JSON output path (default: benchmarks/results/scaling.json)")

    ball = suites.add_parser(
        "all",
        help="every suite (conv, layers, fit, train-step, scaling) and a summary.md",
        description="Run every benchmark suite with its defaults; JSON files and summary.md "
        "under --out-dir.",
    )
    ball.add_argument("--out-dir", default="benchmarks/results",
                      help="folder of the results (default: benchmarks/results)")
    ball.add_argument("--device", type=_device, default="cpu",
                      help="torch device of the conv and layer suites: cpu, cuda, cuda:N "
                      "(default: cpu)")
    ball.add_argument("--quick", action="store_true",
                      help="tiny sizes: checks that every suite runs, in seconds")
    for sub, run in ((conv, _bench_conv), (layers, _bench_layers), (bfit, _bench_fit),
                     (bstep, _bench_train_step), (bscale, _bench_scaling), (ball, _bench_all)):
        sub.set_defaults(handler=run)


def _fit_parser(commands) -> None:
    """``dinet fit``: images to a field dataset."""
    from .fields.models import FIELD_ARCHS

    fit = commands.add_parser(
        "fit",
        help="fit one neural field per image and write a field dataset (resumable)",
        description="Fit one neural field (SIREN by default) per image of a source and write "
        "a FieldDataset folder: safetensors shards and manifest.json. Rerunning the same "
        "command after an interruption keeps the finished shards and fits the rest.",
    )
    fit.add_argument("--source", required=True,
                     help="fashion-mnist | digits | scenes | npz:FILE (arrays 'images' (N,H,W) "
                     "or (N,H,W,C), optional 'labels') | folder:DIR (one sub-folder of "
                     "PNG/JPEG files per class)")
    fit.add_argument("--split", default="train", choices=["train", "test"],
                     help="which split of fashion-mnist or digits (default: train)")
    fit.add_argument("--limit", type=_positive_int, default=None,
                     help="use the first N images (scenes: how many to make)")
    fit.add_argument("--size", type=_positive_int, default=None,
                     help="resize images to SIZE x SIZE before fitting (default: 32; scenes: 64)")
    fit.add_argument("--out", required=True, help="dataset folder to write")
    fit.add_argument("--data", default=None,
                     help="folder holding the Fashion-MNIST files (default: $DINET_DATA, then "
                     "/usr/share/datasets/fashion-mnist)")
    fit.add_argument("--arch", default="siren", choices=tuple(FIELD_ARCHS),
                     help="field architecture (default: siren)")
    fit.add_argument("--width", type=_positive_int, default=None, help="hidden width")
    fit.add_argument("--depth", type=_positive_int, default=None, help="number of layers")
    fit.add_argument("--omega0", type=_positive_float, default=None,
                     help="SIREN frequency ω0")
    fit.add_argument("--max-steps", type=_positive_int, default=None,
                     help="step budget per field")
    fit.add_argument("--target-psnr", type=_positive_float, default=None,
                     help="stop a field once it reaches this PSNR on the grid (dB)")
    fit.add_argument("--shard-size", type=_positive_int, default=256,
                     help="fields per shard file (default: 256)")
    fit.add_argument("--seed", type=_non_negative_int, default=0,
                     help="base seed, an integer >= 0 (default: 0)")
    fit.epilog = ("Under torchrun (torchrun --nproc_per_node=K -m dinet fit ...) rank r fits the "
                  "shards k with k % K == r and rank 0 writes the manifest.")
    fit.set_defaults(handler=_fit)


def _train_parser(commands) -> None:
    """``dinet train``."""
    from .distributed import DEVICES
    from .models import QUADRATURES
    from .nn import kernel_families
    from .tasks.data import TASKS

    tr = commands.add_parser(
        "train",
        help="train a DI-Net (or a grid CNN baseline) to classify, segment or predict SDF",
        description="Train a model on a task, drawing a fresh discretization per step when it "
        "is randomised. Writes config.json, metrics.jsonl (one line per epoch), model.pt and "
        "train_state.pt (atomically, every epoch) under --out.",
    )
    tr.add_argument("--task", default="classify", choices=TASKS,
                    help="classify (a labelled field dataset), segment (a `dinet fit --source "
                    "scenes` dataset) or sdf (synthetic balls, --fields balls:N[:SEED])")
    tr.add_argument("--fields", required=True,
                    help="field dataset folder (`dinet fit`), or balls:N[:SEED] for sdf")
    tr.add_argument("--discretization", default="sobol",
                    help=f"{_kinds_help()} (default: sobol)")
    tr.add_argument("--points", type=_positive_int, default=None,
                    help="points per field (default: 1024 in 2-D, 4096 = 16³ for sdf)")
    tr.add_argument("--mix-points", type=_int_list, default=(),
                    help="other point counts, comma-separated (e.g. 256): each step draws "
                    "one of --points and these, so the model learns to read coarse and fine "
                    "discretizations alike")
    tr.add_argument("--model", default=None,
                    help="classify: dinet-res (default) | dinet2 | dinet4 | cnn; segment: "
                    "dinet-unet (default) | dinet3 | dinet5 | cnn; sdf: sdfnet (default) | cnn "
                    "(cnn = the discrete grid baseline, with --discretization grid)")
    tr.add_argument("--epochs", type=_positive_int, default=1, help="epochs (default: 1)")
    tr.add_argument("--batch-size", type=_positive_int, default=64,
                    help="fields per step (default: 64)")
    tr.add_argument("--lr", type=_positive_float, default=1e-3,
                    help="AdamW learning rate (1e-3)")
    tr.add_argument("--weight-decay", type=_non_negative_float, default=1e-3,
                    help="AdamW weight decay (1e-3)")
    tr.add_argument("--quadrature", default="weights", choices=QUADRATURES,
                    help="'none' drops the quadrature weights (the paper's plain sums)")
    tr.add_argument("--kernel", default="spline", choices=kernel_families(),
                    help="convolution kernel family (default: spline)")
    tr.add_argument("--base-spacing", type=_positive_float, default=None,
                    help="finest kernel lattice step in domain units (default: 2 / image size)")
    tr.add_argument("--no-augment", action="store_true", help="no field augmentations")
    tr.add_argument("--limit", type=_positive_int, default=None,
                    help="train on the first N fields")
    tr.add_argument("--seed", type=_non_negative_int, default=0,
                    help="seed, an integer >= 0 (default: 0)")
    tr.add_argument("--out", required=True, help="run folder")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its last finished epoch")
    tr.add_argument("--device", default="auto", choices=DEVICES,
                    help="auto (default): CUDA when available, else the CPU; under torchrun "
                    "each process takes the GPU of its LOCAL_RANK")
    tr.add_argument("--bf16", action="store_true",
                    help="bfloat16 autocast (CUDA only; refused on the CPU)")
    tr.epilog = ("Under torchrun (torchrun --nproc_per_node=K -m dinet train ...) the K "
                 "processes train one model with DistributedDataParallel (gloo on the CPU, "
                 "NCCL on CUDA); --batch-size is the global batch, and the run equals a "
                 "one-process run to float rounding.")
    tr.set_defaults(handler=_train)


def _eval_parser(commands) -> None:
    """``dinet eval``."""
    from .distributed import DEVICES

    ev = commands.add_parser(
        "eval",
        help="metrics of a trained run on every discretization and number of points",
        description="Evaluate a run's model on test data for each discretization and number of "
        "points; writes results.json, results.md and PNG plots (heat map, metric vs points, "
        "and for segment/sdf input | truth | prediction pictures) into the run folder.",
    )
    ev.add_argument("--run", required=True, help="run folder written by `dinet train`")
    ev.add_argument("--fields", required=True,
                    help="test data: a field dataset folder, or balls:N:SEED for sdf")
    ev.add_argument("--discretizations", default="sobol,grid,shrunk,random,jittered",
                    help="comma-separated, each one of: " + _kinds_help() + "; npz:FILE is "
                    "scored once, at its own number of points (default: "
                    "sobol,grid,shrunk,random,jittered)")
    ev.add_argument("--points", type=_int_list, default=None,
                    help="comma-separated point counts, perfect squares (cubes) for grid and "
                    "jittered (default: 256,1024,4096 in 2-D; 1728,4096,13824 in 3-D)")
    ev.add_argument("--limit", type=_positive_int, default=None,
                    help="evaluate on the first N items")
    ev.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    ev.add_argument("--device", default="auto", choices=DEVICES,
                    help="where the model runs (default: auto, CUDA when available)")
    ev.set_defaults(handler=_eval)


def _demo_parser(commands) -> None:
    """``dinet demo``."""

    dm = commands.add_parser(
        "demo",
        help="the whole story: fit fields, train on Sobol and on the grid, test everywhere",
        description="Fit fields to Fashion-MNIST (digits when it is not installed), train the "
        "default classifier on Sobol points and on the grid, evaluate both on every "
        "discretization at 256/1,024/4,096 points and print the train x test table. "
        "Resumable: rerun to continue.",
    )
    dm.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    dm.add_argument("--train", type=_positive_int, default=4096,
                    help="training images (default: 4096)")
    dm.add_argument("--test", type=_positive_int, default=1024,
                    help="test images (default: 1024)")
    dm.add_argument("--epochs", type=_positive_int, default=10, help="epochs (default: 10)")
    dm.add_argument("--data", default=None, help="folder holding the Fashion-MNIST files")
    dm.set_defaults(handler=_demo)


def _report_parser(commands) -> None:
    """``dinet report``."""

    rep = commands.add_parser(
        "report",
        help="one cross-discretization table (and heat map) from several evaluated runs",
        description="Assemble evaluated runs (one per training discretization) into a train x "
        "test table of the primary metric at each run's training resolution; prints Markdown "
        "and writes report.md and report.png.",
    )
    rep.add_argument("runs", nargs="+", help="run folders holding results.json")
    rep.add_argument("--points", type=_positive_int, default=None,
                     help="test point count to report (default: each run's training count)")
    rep.add_argument("--out", default=None,
                     help="folder for report.md and report.png (default: the runs' parent)")
    rep.set_defaults(handler=_report)




def _experiment_parser(commands) -> None:
    """``dinet experiment ...``: experiments that span more than one run."""
    experiment = commands.add_parser("experiment", help="experiments beyond a single run "
                                     "(from-cnn: convert a pixel CNN into a DI-Net)")
    experiments = experiment.add_subparsers(dest="experiment", metavar="EXPERIMENT",
                                            required=True)
    fc = experiments.add_parser(
        "from-cnn",
        help="train a CNN on pixels, convert it to a DI-Net, test it on fields zero-shot "
        "and after fine-tuning",
        description="Train a small CNN on the pixels the training fields were fitted to, "
        "convert it with dinet.convert.from_cnn, score it on the test fields on its own grid "
        "(where it equals the CNN) and on Sobol, shrunk and jittered points without any "
        "training, fine-tune it on the training fields (a fresh Sobol draw per step) and "
        "score it again. Writes results.json, results.md, cnn.pt and finetuned.pt into --out "
        "and prints the table.",
    )
    fc.add_argument("--train-fields", default="data/fields/fashion-mnist-train",
                    help="labelled training field dataset (default: "
                    "data/fields/fashion-mnist-train, made by `make fields`)")
    fc.add_argument("--test-fields", default="data/fields/fashion-mnist-test",
                    help="labelled test field dataset (default: data/fields/fashion-mnist-test)")
    fc.add_argument("--epochs", type=_positive_int, default=3,
                    help="CNN training epochs on pixels (default: 3)")
    fc.add_argument("--finetune-epochs", type=_non_negative_int, default=1,
                    help="fine-tuning epochs of the converted net on fields, 0 for none "
                    "(default: 1)")
    fc.add_argument("--points", type=_int_list, default=[4096, 1024],
                    help="comma-separated point counts of the Sobol, shrunk and jittered test "
                    "sets, perfect squares; the first is also the fine-tuning count "
                    "(default: 4096,1024)")
    fc.add_argument("--lr", type=_positive_float, default=3e-3,
                    help="CNN AdamW learning rate (3e-3)")
    fc.add_argument("--finetune-lr", type=_positive_float, default=3e-4,
                    help="fine-tuning AdamW learning rate (3e-4)")
    fc.add_argument("--limit", type=_positive_int, default=None,
                    help="use the first N training images and fields")
    fc.add_argument("--test-limit", type=_positive_int, default=None,
                    help="test on the first N test fields")
    fc.add_argument("--seed", type=_non_negative_int, default=0,
                    help="seed, an integer >= 0 (default: 0)")
    fc.add_argument("--out", default="runs/from-cnn",
                    help="output folder (default: runs/from-cnn)")
    fc.set_defaults(handler=_experiment)


def _experiment(args) -> None:
    from .tasks import FromCNNConfig, from_cnn_table, run_from_cnn

    config = FromCNNConfig(
        train_fields=args.train_fields, test_fields=args.test_fields, out=args.out,
        epochs=args.epochs, finetune_epochs=args.finetune_epochs, points=tuple(args.points),
        lr=args.lr, finetune_lr=args.finetune_lr, limit=args.limit, test_limit=args.test_limit,
        seed=args.seed,
    )
    results = run_from_cnn(config)
    print(from_cnn_table(results))
    print(f"written to {args.out}/results.json and results.md "
          f"({results['timings']['total']:.0f} s)")


def _eval(args) -> None:
    from .tasks import evaluate, results_table

    kinds = tuple(k.strip() for k in args.discretizations.split(",") if k.strip())
    results = evaluate(args.run, args.fields, kinds, args.points, limit=args.limit,
                       plots=not args.no_plots, device=args.device)
    print(results_table(results))
    print(f"written to {args.run}/results.json and results.md"
          + "".join(f", {Path(p).name}" for p in results["plots"]))


def _report(args) -> None:
    from .tasks import report

    result = report(args.runs, points=args.points, out=args.out)
    print(result["markdown"])
    print("written to " + " and ".join(result["files"]))


def _train(args) -> None:
    from . import distributed
    from .tasks import TrainConfig, train

    config = TrainConfig(
        fields=args.fields, out=args.out, task=args.task, model=args.model,
        discretization=args.discretization, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        augment=not args.no_augment, quadrature=args.quadrature, kernel=args.kernel,
        base_spacing=args.base_spacing, limit=args.limit,
        points=args.points or (4096 if args.task == "sdf" else 1024),
        mix_points=tuple(args.mix_points), device=args.device, bf16=args.bf16,
    )
    with distributed.session(args.device):
        last = train(config, resume=args.resume)
        main = distributed.is_main()
    if main:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in last.items()
                          if k in ("loss", "accuracy", "mse"))
        print(f"{args.out}: epoch {last.get('epoch', -1) + 1}: {shown}")


def _fit(args) -> None:
    from .data.fit import fit_source

    ds = fit_source(
        args.source, args.out, split=args.split, limit=args.limit, size=args.size,
        data_dir=args.data, seed=args.seed, arch=args.arch, shard_size=args.shard_size,
        arch_hparams={k: v for k, v in (("width", args.width), ("depth", args.depth),
                                        ("omega0", args.omega0)) if v is not None},
        fit_options={k: v for k, v in (("max_steps", args.max_steps),
                                       ("target_psnr", args.target_psnr)) if v is not None})
    if ds is not None:
        print(f"{ds}: PSNR on the grid {ds.psnr_grid.mean():.2f} dB (min "
              f"{ds.psnr_grid.min():.2f}), off the grid {ds.psnr_offgrid.mean():.2f} dB")


# --- bench suites: each parses nothing, it maps the flags onto a benchmark function ------
def _bench_conv(args) -> None:
    from .bench.conv import bench_conv

    bench_conv(sizes=args.sizes, channels=args.channels, batch=args.batch,
               kernel_size=args.kernel_size, repeats=args.repeats, device=args.device,
               out=args.out)


def _bench_layers(args) -> None:
    from .bench.layers import bench_layers

    bench_layers(n=args.points, channels=args.channels, batch=args.batch,
                 repeats=args.repeats, include_global_attention=args.global_attention,
                 device=args.device, out=args.out)


def _bench_fit(args) -> None:
    from .bench.tasks import bench_fit

    bench_fit(n=args.n, out=args.out)


def _bench_train_step(args) -> None:
    from .bench.tasks import bench_train_step

    bench_train_step(points=args.points, batch=args.batch, steps=args.steps,
                     fields=args.fields, out=args.out)


def _bench_scaling(args) -> None:
    from .bench.scaling import bench_scaling

    bench_scaling(sizes_2d=tuple(2**k for k in range(10, args.max_2d + 1)),
                  sizes_3d=tuple(2**k for k in range(12, args.max_3d + 1)),
                  sizes_model=tuple(2**k for k in range(10, args.max_2d + 1, 2)),
                  channels=args.channels, batch=args.batch, repeats=args.repeats,
                  out=args.out)


def _bench_all(args) -> None:
    from .bench.suite import bench_all

    bench_all(args.out_dir, device=args.device, quick=args.quick)


def _demo(args) -> None:
    from .tasks.demo import demo

    demo(args.out, n_train=args.train, n_test=args.test, epochs=args.epochs, data_dir=args.data)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; every failure is one line on stderr and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, OSError) as err:  # OSError: the file system refused (named in it)
        print(f"dinet: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
