"""``dinet train``, ``dinet eval``, ``dinet report``, ``dinet predict`` and ``dinet
recalibrate``: training runs, their tables, their answers on new inputs, and their
batch-norm statistics for other points."""

from __future__ import annotations

from pathlib import Path

from .options import (
    int_list,
    item_list,
    kinds_help,
    model_option,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = ["add_parsers"]


def add_parsers(commands) -> None:
    """Add ``train``, ``eval``, ``report``, ``predict`` and ``recalibrate`` to the ``dinet``
    sub-commands."""
    for add in (_train_parser, _eval_parser, _report_parser, _predict_parser,
                _recalibrate_parser):
        add(commands)


def _train_parser(commands) -> None:
    """``dinet train``."""
    from ..distributed import DEVICES
    from ..models import QUADRATURES, model_entry
    from ..nn import kernel_families
    from ..tasks import DEFAULT_TASK, get_task, task_names

    tasks = [get_task(name) for name in task_names()]

    tr = commands.add_parser(
        "train",
        help="train a DI-Net (or a grid CNN baseline) to classify, segment or predict SDF",
        description="Train a model on a task, drawing a fresh discretization per step when it "
        "is randomised. Writes config.json, metrics.jsonl (one line per epoch), model.pt and "
        "train_state.pt (atomically, every epoch) under --out.",
    )
    tr.add_argument("--task", default=DEFAULT_TASK, choices=task_names(),
                    help="; ".join(t.help or t.name for t in tasks).replace("%", "%%"))
    tr.add_argument("--fields", required=True,
                    help="; ".join(f"{t.name}: {t.data_help}" for t in tasks).replace("%", "%%"))
    tr.add_argument("--discretization", default="sobol",
                    help=f"{kinds_help()} (default: sobol)")
    tr.add_argument("--points", type=positive_int, default=None,
                    help="points per field (default: " + ", ".join(
                        f"{t.default_points} for {t.name}" for t in tasks) + ")")
    tr.add_argument("--mix-points", type=int_list, default=(),
                    help="other point counts, comma-separated (e.g. 256): each step draws "
                    "one of --points and these, so the model learns to read coarse and fine "
                    "discretizations alike")
    tr.add_argument("--model", default=None,
                    help="; ".join(f"{t.name}: {t.models[0]} (default)" + "".join(
                        f" | {m}" for m in t.models[1:]) for t in tasks if t.models)
                    + " (cnn = the discrete grid baseline, with --discretization grid)")
    tr.add_argument("--model-option", type=model_option, action="append", default=[],
                    metavar="NAME=VALUE",
                    help="one of the model's own constructor options (see its docstring), "
                    "VALUE as JSON or text, e.g. spacing_input=false or widths=[16,32,64,128]; "
                    "repeat for more. " + "; ".join(
                        f"{t.name} {m}: {', '.join(model_entry(t.name, m).options)}"
                        for t in tasks for m in t.models if model_entry(t.name, m).options))
    tr.add_argument("--epochs", type=positive_int, default=1, help="epochs (default: 1)")
    tr.add_argument("--batch-size", type=positive_int, default=64,
                    help="fields per step (default: 64)")
    tr.add_argument("--lr", type=positive_float, default=1e-3,
                    help="AdamW learning rate (1e-3)")
    tr.add_argument("--weight-decay", type=non_negative_float, default=1e-3,
                    help="AdamW weight decay (1e-3)")
    tr.add_argument("--quadrature", default="weights", choices=QUADRATURES,
                    help="'none' drops the quadrature weights (the paper's plain sums)")
    tr.add_argument("--kernel", default="spline", choices=kernel_families(),
                    help="convolution kernel family (default: spline)")
    tr.add_argument("--base-spacing", type=positive_float, default=None,
                    help="finest kernel lattice step in domain units (default: 2 / image size)")
    tr.add_argument("--init", default=None, metavar="RUN",
                    help="start from the weights of RUN's model (the same model on the same "
                    "data), e.g. to go on with other point counts, or start segment's "
                    "dinet-unet from a --model cnn run (the same network: exact on the "
                    "grid); the optimizer and the learning-rate schedule start afresh")
    tr.add_argument("--distill", default=None, metavar="RUN",
                    help="also learn RUN's predictions (distillation): RUN's model, frozen, "
                    "reads each item at its own points (a cnn run: its grid; else the pixel "
                    "grid) and the loss follows its output at the same query points")
    tr.add_argument("--distill-weight", type=float, default=0.5,
                    help="the teacher's share of the loss with --distill, in (0, 1] "
                    "(default: 0.5; the labels get the rest)")
    tr.add_argument("--ema", type=float, default=None, metavar="DECAY",
                    help="also keep an exponential moving average of the weights with this "
                    "decay per step, in (0, 1) (e.g. 0.999: about the last 1,000 steps, after a "
                    "warm-up of min(DECAY, (1+t)/(10+t)) at step t); model.pt then holds the "
                    "average, which eval and predict read")
    tr.add_argument("--no-augment", action="store_true", help="no field augmentations")
    tr.add_argument("--limit", type=positive_int, default=None,
                    help="train on the first N fields")
    tr.add_argument("--seed", type=non_negative_int, default=0,
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
    from ..distributed import DEVICES

    ev = commands.add_parser(
        "eval",
        help="metrics of a trained run on every discretization and number of points",
        description="Evaluate a run's model on test data for each discretization and number of "
        "points; writes results.json, results.md and PNG plots (heat map, metric vs points, "
        "and for segment/sdf input | truth | prediction pictures) into the run folder.",
    )
    ev.add_argument("--run", required=True, help="run folder written by `dinet train`")
    ev.add_argument("--fields", required=True,
                    help="test data: a field dataset folder (dinet fit), or balls:N:SEED for "
                    "sdf")
    ev.add_argument("--discretizations", default="sobol,grid,shrunk,random,jittered",
                    help="comma-separated, each one of: " + kinds_help() + "; npz:FILE is "
                    "scored once, at its own number of points (default: "
                    "sobol,grid,shrunk,random,jittered)")
    ev.add_argument("--points", type=int_list, default=None,
                    help="comma-separated point counts, perfect squares (cubes) for grid and "
                    "jittered (default: 256,1024,4096 in 2-D; 1728,4096,13824 in 3-D)")
    ev.add_argument("--limit", type=positive_int, default=None,
                    help="evaluate on the first N items")
    ev.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    ev.add_argument("--device", default="auto", choices=DEVICES,
                    help="where the model runs (default: auto, CUDA when available)")
    ev.set_defaults(handler=_eval)


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
    rep.add_argument("--points", type=positive_int, default=None,
                     help="test point count to report (default: each run's training count)")
    rep.add_argument("--out", default=None,
                     help="folder for report.md and report.png (default: the runs' parent)")
    rep.set_defaults(handler=_report)


def _predict_parser(commands) -> None:
    """``dinet predict``."""
    from ..distributed import DEVICES

    pr = commands.add_parser(
        "predict",
        help="a trained run's answers for new inputs: fields, your own samples, or images",
        description="Run a trained model on new inputs and print (and write) its answers: the "
        "class and its probability per item (classify), the label at every query point "
        "(segment) or the signed distance there (sdf). The inputs are read at any points — "
        "a field dataset at any discretization, values measured at your own coordinates, or "
        "images at their own pixel centres, of any resolution.",
    )
    source = pr.add_mutually_exclusive_group(required=True)
    source.add_argument("--fields", help="a field dataset folder (dinet fit; labels not "
                        "needed), or balls:N:SEED for sdf")
    source.add_argument("--samples", metavar="FILE.npz",
                        help="your own samples: coords (N, d) in [-1, 1]^d, values (N, C) or "
                        "(B, N, C), optional weights (N,) (default: Voronoi cell measures)")
    source.add_argument("--images", nargs="+", metavar="FILE",
                        help="images of one size, read at their pixel centres: PNG/JPEG, "
                        ".npy arrays, or .npz archives of images (N, H, W[, C]) and optional "
                        "labels (N,) — then the accuracy is printed too")
    pr.add_argument("--run", required=True, help="run folder written by `dinet train`")
    pr.add_argument("--items", type=item_list, default=None,
                    help="with --fields: the items to predict, e.g. 0:16 or 3,5,9 (default: "
                    "all)")
    pr.add_argument("--discretization", default=None,
                    help="with --fields: where the fields are read (one kind, not a mixture): "
                    + kinds_help()
                    + " (default: the run's training discretization)")
    pr.add_argument("--points", type=positive_int, default=None,
                    help="with --fields: points per field (default: the run's training count)")
    pr.add_argument("--seed", type=non_negative_int, default=0,
                    help="the draw of a randomised --discretization; a randomised --query "
                    "takes SEED + 1 (default: 0)")
    pr.add_argument("--query", default=None,
                    help="segment and sdf: where the output is read, one discretization name "
                    "or npz:FILE (default: the pixel centres of the images, or of the training "
                    "images' grid)")
    pr.add_argument("--query-points", type=positive_int, default=None,
                    help="query points with --query KIND (default: one per training pixel)")
    pr.add_argument("--out", default=None, metavar="FILE",
                    help="write every answer to FILE: .npz (arrays) or .json (lists)")
    pr.add_argument("--picture", default=None, metavar="FILE.png",
                    help="2-D tasks: draw the first items' inputs with their answers")
    pr.add_argument("--show", type=non_negative_int, default=10,
                    help="items printed (default: 10)")
    pr.add_argument("--batch-size", type=positive_int, default=64,
                    help="items per forward pass (default: 64)")
    pr.add_argument("--device", default="cpu", choices=DEVICES,
                    help="where the model runs (default: cpu)")
    pr.set_defaults(handler=_predict)


def _recalibrate_parser(commands) -> None:
    """``dinet recalibrate``."""
    from ..distributed import DEVICES

    rc = commands.add_parser(
        "recalibrate",
        help="re-estimate a run's batch-norm statistics for the points it will read (no "
        "labels, no gradient step)",
        description="Read fields at draws of a discretization, run the model forward, and "
        "replace its batch norms' running statistics with their average over those batches; "
        "the weights stay the run's. Writes model.pt and config.json (the run's, with a "
        "'recalibrated' record) into a new --out folder, which eval, predict and train "
        "--init read like any run.",
    )
    rc.add_argument("--run", required=True, help="run folder written by `dinet train`")
    rc.add_argument("--fields", required=True,
                    help="fields to read (labels are not used): a field dataset folder "
                    "(dinet fit), or balls:N:SEED for sdf")
    rc.add_argument("--out", required=True, help="the new run folder")
    rc.add_argument("--discretization", default="sobol",
                    help=f"where the fields are read: {kinds_help()} (default: sobol)")
    rc.add_argument("--points", type=positive_int, default=None,
                    help="points per field (default: the run's training count; npz:FILE: "
                    "its own)")
    rc.add_argument("--mix-points", type=int_list, default=(),
                    help="other point counts, comma-separated: the batches take --points and "
                    "these in turn")
    rc.add_argument("--batches", type=positive_int, default=50,
                    help="batches the statistics average over (default: 50)")
    rc.add_argument("--batch-size", type=positive_int, default=64,
                    help="items per batch (default: 64)")
    rc.add_argument("--seed", type=non_negative_int, default=0,
                    help="the items and the point draws (default: 0)")
    rc.add_argument("--device", default="auto", choices=DEVICES,
                    help="where the model runs (default: auto, CUDA when available)")
    rc.set_defaults(handler=_recalibrate)


def _recalibrate(args) -> None:
    from ..tasks import RecalibrateConfig, recalibrate_run

    record = recalibrate_run(RecalibrateConfig(
        run=args.run, fields=args.fields, out=args.out, discretization=args.discretization,
        points=args.points, mix_points=tuple(args.mix_points), batches=args.batches,
        batch_size=args.batch_size, seed=args.seed, device=args.device))
    counts = " / ".join(f"{c:,}" for c in record["points"])
    print(f"{args.out}: batch norms of {args.run} re-estimated over {record['batches']} "
          f"batches of {record['batch_size']} fields at {args.discretization} ({counts} "
          "points)")


def _eval(args) -> None:
    from ..tasks import evaluate, results_table

    kinds = tuple(k.strip() for k in args.discretizations.split(",") if k.strip())
    results = evaluate(args.run, args.fields, kinds, args.points, limit=args.limit,
                       plots=not args.no_plots, device=args.device)
    print(results_table(results))
    print(f"written to {args.run}/results.json and results.md"
          + "".join(f", {Path(p).name}" for p in results["plots"]))


def _report(args) -> None:
    from ..tasks import report

    result = report(args.runs, points=args.points, out=args.out)
    print(result["markdown"])
    print("written to " + " and ".join(result["files"]))


def _train(args) -> None:
    from .. import distributed
    from ..tasks import TrainConfig, get_task, train

    config = TrainConfig(
        fields=args.fields, out=args.out, task=args.task, model=args.model,
        discretization=args.discretization, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        augment=not args.no_augment, quadrature=args.quadrature, kernel=args.kernel,
        base_spacing=args.base_spacing, limit=args.limit,
        points=args.points or get_task(args.task).default_points,
        mix_points=tuple(args.mix_points), device=args.device, bf16=args.bf16,
        init=args.init, distill=args.distill, distill_weight=args.distill_weight,
        model_options=dict(args.model_option), ema=args.ema,
    )
    with distributed.session(args.device):
        last = train(config, resume=args.resume)
        main = distributed.is_main()
    if main:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in last.items()
                          if k in ("loss", get_task(args.task).epoch_metric))
        print(f"{args.out}: epoch {last.get('epoch', -1) + 1}: {shown}")


def _predict(args) -> None:
    from .._io import check_writable
    from ..tasks.answers import draw_predictions, summary_lines, write_predictions
    from ..tasks.predict import Predictor, load_images, load_samples, read_fields

    for flag, path, suffixes in (("--out", args.out, (".npz", ".json")),
                                 ("--picture", args.picture, (".png",))):
        if path is not None:  # before any work: the answers must have somewhere to go
            if Path(path).suffix not in suffixes:
                raise ValueError(f"{flag} {path}: expected a {' or '.join(suffixes)} file name")
            check_writable(Path(path).parent, flag)
    if args.fields is None and (args.items is not None or args.discretization or args.points):
        raise ValueError("--items, --discretization and --points choose what --fields are "
                         "read at; --samples and --images bring their own points")
    predictor = Predictor(args.run, device=args.device)
    shape = names = labels = None
    if args.images is not None:
        values, points, names, labels = load_images(args.images, predictor.in_channels)
        shape = points.shape
        classes = len(predictor.class_names or ())
        if labels is not None and classes and int(labels.max()) >= classes:
            raise ValueError(f"--images: labels go up to {int(labels.max())}, but the run's "
                             f"model tells {classes} classes (labels 0 to {classes - 1})")
    query = predictor.query_points(args.query, args.query_points, args.seed + 1, shape)
    if args.samples is not None:
        values, points = load_samples(args.samples, predictor.dim)
    elif args.fields is not None:
        points = predictor.input_points(args.discretization, args.points, args.seed)
        values, names = read_fields(args.fields, predictor.task, args.items, points)
    result = predictor(values, points, query, batch_size=args.batch_size, progress=True)
    where = (f"their {'x'.join(map(str, shape))} pixel centres" if shape is not None
             else f"the {len(points):,} points of {Path(args.samples).name}" if args.samples
             else f"{len(points):,} {points.kind} points")
    print(f"{args.run} ({predictor.task.name}) on {len(values):,} item"
          f"{'s' * (len(values) != 1)} at {where}")
    for line in summary_lines(result, predictor.class_names, names, args.show):
        print("  " + line)
    if labels is not None and result.get("label") is not None and result["label"].ndim == 1:
        right = int((result["label"] == labels).sum())
        print(f"accuracy against the archive's labels: {right / len(labels):.2%} "
              f"({right:,} of {len(labels):,})")
    if args.out is not None:
        print(f"written to {write_predictions(args.out, result, predictor.class_names, names)}")
    if args.picture is not None:
        path = draw_predictions(args.picture, result, values, points, predictor, names, shape,
                                title=f"{Path(args.run).name} at {where}")
        print(f"picture: {path}")
