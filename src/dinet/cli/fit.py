"""``dinet fit``: images to a field dataset."""

from __future__ import annotations

from .options import non_negative_int, number_range, positive_float, positive_int

__all__ = ["add_parsers"]


def add_parsers(commands) -> None:
    """``dinet fit``: images to a field dataset."""
    from ..distributed import DEVICES
    from ..fields.models import FIELD_ARCHS

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
    fit.add_argument("--limit", type=positive_int, default=None,
                     help="use the first N images (scenes: how many to make)")
    fit.add_argument("--size", type=positive_int, default=None,
                     help="resize images to SIZE x SIZE before fitting (default: 32; scenes: "
                     "the canvas side, default 32)")
    fit.add_argument("--scene-scale", type=number_range(float, 1e-6, 1.0, "0 < MIN <= MAX <= 1"),
                     default=None, metavar="MIN,MAX",
                     help="scenes: an item's side as a fraction of the canvas (default 0.75,1.0)")
    fit.add_argument("--scene-items", type=number_range(int, 1, 64, "1 <= MIN <= MAX <= 64"),
                     default=None, metavar="MIN,MAX",
                     help="scenes: how many items each scene draws (default 1,1)")
    fit.add_argument("--out", required=True, help="dataset folder to write")
    fit.add_argument("--data", default=None,
                     help="folder holding the Fashion-MNIST files (default: $DINET_DATA, then "
                     "/usr/share/datasets/fashion-mnist)")
    fit.add_argument("--arch", default="siren", choices=tuple(FIELD_ARCHS),
                     help="field architecture (default: siren)")
    fit.add_argument("--width", type=positive_int, default=None, help="hidden width")
    fit.add_argument("--depth", type=positive_int, default=None, help="number of layers")
    fit.add_argument("--omega0", type=positive_float, default=None,
                     help="SIREN frequency ω0")
    fit.add_argument("--max-steps", type=positive_int, default=None,
                     help="step budget per field")
    fit.add_argument("--target-psnr", type=positive_float, default=None,
                     help="stop a field once it reaches this PSNR on the grid (dB)")
    fit.add_argument("--shard-size", type=positive_int, default=256,
                     help="fields per shard file (default: 256)")
    fit.add_argument("--seed", type=non_negative_int, default=0,
                     help="base seed, an integer >= 0 (default: 0)")
    fit.add_argument("--device", default="auto", choices=DEVICES,
                     help="where the fields are fitted: auto (default; CUDA when available), "
                     "cpu or cuda; use a large --shard-size (e.g. 4096) on a GPU, which fits "
                     "a whole shard at once")
    fit.epilog = ("Under torchrun (torchrun --nproc_per_node=K -m dinet fit ...) rank r fits the "
                  "shards k with k % K == r and rank 0 writes the manifest.")
    fit.set_defaults(handler=_fit)


def _fit(args) -> None:
    from ..data.fit import fit_source

    ds = fit_source(
        args.source, args.out, split=args.split, limit=args.limit, size=args.size,
        data_dir=args.data, seed=args.seed, arch=args.arch, shard_size=args.shard_size,
        device=args.device,
        scenes={k: v for k, v in (("scale", args.scene_scale), ("items", args.scene_items))
                if v is not None},
        arch_hparams={k: v for k, v in (("width", args.width), ("depth", args.depth),
                                        ("omega0", args.omega0)) if v is not None},
        fit_options={k: v for k, v in (("max_steps", args.max_steps),
                                       ("target_psnr", args.target_psnr)) if v is not None})
    if ds is not None:
        print(f"{ds}: PSNR on the grid {ds.psnr_grid.mean():.2f} dB (min "
              f"{ds.psnr_grid.min():.2f}), off the grid {ds.psnr_offgrid.mean():.2f} dB")
