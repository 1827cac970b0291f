"""Turning a stack of images into a :class:`FieldDataset`, shard by shard, resumably."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from tqdm import tqdm

from .. import distributed
from . import fit as fit_module
from .dataset import DatasetError, FieldDataset
from .models import build_field
from .shards import (
    MANIFEST,
    SHARD_PATTERN,
    plan_digest,
    read_shard_entry,
    shard_metadata,
    write_manifest,
    write_shard,
)

__all__ = ["build_dataset", "source_checksum"]


def source_checksum(images: np.ndarray, labels: np.ndarray | None) -> str:
    """SHA-256 of the source pixels (float32) and labels: what the dataset was fitted to."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    h.update(str(images.shape).encode())
    if labels is not None:
        h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def build_dataset(
    out: str | Path,
    images,
    labels=None,
    *,
    source: dict | None = None,
    split: str | None = None,
    arch: str = "siren",
    arch_hparams: dict | None = None,
    fit_options: dict | None = None,
    shard_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> FieldDataset:
    """Fit one field per image and write them as a dataset folder; resumable.

    Shard k holds images [k·shard_size, (k+1)·shard_size) and is fitted with seed
    ``seed + k``, so every shard is reproducible on its own. Rerunning with the same
    arguments keeps every intact shard of the same plan and fits only the missing or
    damaged ones; the result equals an uninterrupted run. A folder holding another dataset
    (a different plan) is refused rather than overwritten.

    In a process group (``torchrun``; see :mod:`dinet.distributed`) every rank calls this
    with the same arguments: rank r fits the shards k with k % world_size == r that are not
    on disk yet, all ranks wait for each other, and rank 0 writes the manifest — the same
    dataset as one process writes, shard for shard. A rank that died leaves its missing
    shards to the next run.

    Args:
        out: the dataset folder (created if needed).
        images: ``(N, H, W, C)`` floats in [0, 1].
        labels: ``(N,)`` ints, or ``None``.
        source: a JSON-able description of where the images came from (recorded).
        split: e.g. ``"train"`` (recorded).
        arch, arch_hparams: the field architecture and its hyper-parameters.
        fit_options: keyword arguments of :func:`~dinet.fields.fit_fields`.
        shard_size: fields per shard file.
        seed: base seed.
        progress: show progress bars.
        device: where the fields are fitted (default: the CPU). Not part of the plan: a
            shard fitted on a GPU is kept by a rerun on the CPU (they agree to rounding).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C); got shape {images.shape}")
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    if labels is not None and labels.shape[:1] != images.shape[:1]:
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer; got {shard_size!r}")
    arch_hparams = dict(arch_hparams or {})
    fit_options = dict(fit_options or {})
    out = Path(out)
    checksum = source_checksum(images, labels)
    plan = {"source_checksum": checksum, "arch": arch, "arch_hparams": arch_hparams,
            "fit": fit_options, "shard_size": shard_size, "seed": seed,
            "shape": list(images.shape)}
    digest = plan_digest(plan)
    _refuse_other_dataset(out, digest)

    n = len(images)
    n_shards = -(-n // shard_size)
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    mine = [k for k in range(n_shards) if k % world == rank]
    shown = sum(min(n, (k + 1) * shard_size) - k * shard_size for k in mine)
    bar = tqdm(total=shown, desc=f"fit {out.name}" + (f" (rank {rank}/{world})" if world > 1
                                                      else ""),
               unit="field", disable=not progress)
    for k in mine:
        start, stop = k * shard_size, min(n, (k + 1) * shard_size)
        if read_shard_entry(out, k, digest, start, stop - start) is None:
            result = fit_module.fit_fields(images[start:stop], arch, seed=seed + k,
                                           progress=False, device=device, **arch_hparams,
                                           **fit_options)
            write_shard(out, k, start, result.fields.state_dict(), result.psnr_grid,
                        result.psnr_offgrid, None if labels is None else labels[start:stop],
                        digest)
            bar.set_postfix(psnr=f"{float(result.psnr_grid.mean()):.1f}dB")
        bar.update(stop - start)
    bar.close()
    distributed.barrier()  # every rank's shards are on disk
    if not main:
        distributed.barrier()  # rank 0 writes the manifest
        return FieldDataset.open(out)
    entries, psnr_grid, psnr_offgrid = [], np.zeros(n), np.zeros(n)
    for k in range(n_shards):
        start, stop = k * shard_size, min(n, (k + 1) * shard_size)
        entry = read_shard_entry(out, k, digest, start, stop - start)
        if entry is None:
            raise DatasetError(f"{out}: shard {k} is missing or damaged after fitting — "
                               "rerun the same command to fit it")
        tensors = st_load((out / entry["file"]).read_bytes())
        psnr_grid[start:stop] = tensors["psnr_grid"].double().numpy()
        psnr_offgrid[start:stop] = tensors["psnr_offgrid"].double().numpy()
        entries.append(entry)
    # The hyper-parameters fit_fields used: its defaults, the caller's, and the image shape.
    template = build_field(arch, 1, in_dim=2, out_dim=int(images.shape[-1]),
                           **{**fit_module.DEFAULT_ARCH_HPARAMS.get(arch, {}), **arch_hparams})
    hparams = {k: v for k, v in template.hparams().items() if k != "n_fields"}
    write_manifest(out, {
        "plan": digest,
        "arch": arch,
        "hparams": hparams,
        "n_fields": n,
        "shard_size": shard_size,
        "split": split,
        "source": {**(source or {}), "checksum": checksum,
                   "image_shape": list(images.shape[1:])},
        "fit": {**fit_options, "seed": seed},
        "labels": None if labels is None else labels.tolist(),
        "psnr_grid": np.round(psnr_grid, 3).tolist(),
        "psnr_offgrid": np.round(psnr_offgrid, 3).tolist(),
        "shards": entries,
    })
    distributed.barrier()  # the manifest is written
    return FieldDataset.open(out)


def _refuse_other_dataset(out: Path, digest: str) -> None:
    """Refuse a folder holding anything but (part of) this very dataset."""
    if not out.exists():
        return
    manifest = out / MANIFEST
    other = None
    if manifest.exists():
        try:
            other = json.loads(manifest.read_text()).get("plan")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            other = None
        if other != digest:
            raise DatasetError(
                f"{out} already holds a different field dataset ({manifest} has plan "
                f"{other!r}, these arguments give {digest!r}) — choose another --out, or "
                "delete the folder to refit"
            )
    for path in out.iterdir():
        if path.name == MANIFEST or path.name.startswith("."):
            continue
        meta = shard_metadata(path) if path.name.startswith("shard-") else None
        if meta is None and other == digest and SHARD_PATTERN.fullmatch(path.name):
            continue  # a shard of this dataset whose header is damaged: refitted below
        if not meta or meta.get("plan") != digest:
            raise DatasetError(
                f"{out} holds {path.name}, which is not part of this dataset (or its header "
                "is damaged) — choose another --out, or delete that file or the folder to refit"
            )
