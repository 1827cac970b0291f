"""``dinet demo`` and ``dinet experiment``: the stories that span several runs."""

from __future__ import annotations

from .options import int_list, non_negative_int, positive_float, positive_int

__all__ = ["add_parsers"]


def add_parsers(commands) -> None:
    """Add ``demo`` and ``experiment`` to the ``dinet`` sub-commands."""
    _demo_parser(commands)
    _experiment_parser(commands)


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
    dm.add_argument("--train", type=positive_int, default=4096,
                    help="training images (default: 4096)")
    dm.add_argument("--test", type=positive_int, default=1024,
                    help="test images (default: 1024)")
    dm.add_argument("--epochs", type=positive_int, default=10, help="epochs (default: 10)")
    dm.add_argument("--data", default=None, help="folder holding the Fashion-MNIST files")
    dm.set_defaults(handler=_demo)


def _experiment_parser(commands) -> None:
    """``dinet experiment ...``: experiments that span more than one run."""
    from ..nn import kernel_families

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
    fc.add_argument("--epochs", type=positive_int, default=3,
                    help="CNN training epochs on pixels (default: 3)")
    fc.add_argument("--finetune-epochs", type=non_negative_int, default=1,
                    help="fine-tuning epochs of the converted net on fields, 0 for none "
                    "(default: 1)")
    fc.add_argument("--points", type=int_list, default=[4096, 1024],
                    help="comma-separated point counts of the Sobol, shrunk and jittered test "
                    "sets, perfect squares; the first is also the fine-tuning count "
                    "(default: 4096,1024)")
    fc.add_argument("--lr", type=positive_float, default=3e-3,
                    help="CNN AdamW learning rate (3e-3)")
    fc.add_argument("--finetune-lr", type=positive_float, default=3e-4,
                    help="fine-tuning AdamW learning rate (3e-4)")
    fc.add_argument("--limit", type=positive_int, default=None,
                    help="use the first N training images and fields")
    fc.add_argument("--test-limit", type=positive_int, default=None,
                    help="test on the first N test fields")
    fc.add_argument("--kernel", default="spline", choices=kernel_families(),
                    help="kernel family of the converted convolutions: spline (linear hats) or "
                    "cubic (Keys' cubic, smooth between the taps); both exact on the grid")
    fc.add_argument("--bn-batches", type=non_negative_int, default=0,
                    help="re-estimate the converted net's batch-norm statistics on this many "
                    "batches of training fields before fine-tuning, gradient-free (default: 0)")
    fc.add_argument("--lattice", action="store_true",
                    help="convert with lattice=True: the first convolution integrates the "
                    "field onto the CNN's own grid and every later layer runs there")
    fc.add_argument("--seed", type=non_negative_int, default=0,
                    help="seed, an integer >= 0 (default: 0)")
    fc.add_argument("--out", default="runs/from-cnn",
                    help="output folder (default: runs/from-cnn)")
    fc.set_defaults(handler=_experiment)


def _experiment(args) -> None:
    from ..tasks import FromCNNConfig, from_cnn_table, run_from_cnn

    config = FromCNNConfig(
        train_fields=args.train_fields, test_fields=args.test_fields, out=args.out,
        epochs=args.epochs, finetune_epochs=args.finetune_epochs, points=tuple(args.points),
        lr=args.lr, finetune_lr=args.finetune_lr, limit=args.limit, test_limit=args.test_limit,
        kernel=args.kernel, bn_batches=args.bn_batches, lattice=args.lattice, seed=args.seed,
    )
    results = run_from_cnn(config)
    print(from_cnn_table(results))
    print(f"written to {args.out}/results.json and results.md "
          f"({results['timings']['total']:.0f} s)")


def _demo(args) -> None:
    from ..tasks.demo import demo

    demo(args.out, n_train=args.train, n_test=args.test, epochs=args.epochs, data_dir=args.data)
