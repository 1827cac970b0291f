"""``FieldDataset``: many fitted fields on disk — safetensors shards and a JSON manifest.

Layout of a dataset folder::

    manifest.json            format, field architecture and hyper-parameters, labels,
                             split, per-field PSNRs, source checksum, one entry per shard
    shard-00000.safetensors  the parameters of fields [0, shard_size), their PSNRs and labels
    shard-00001.safetensors  ...

Every file is written to a temporary name and renamed into place, so a crash leaves either
the old file or the new one. Each shard also carries, in its safetensors metadata, the
digest of the *plan* that produced it (source checksum, architecture, fitting settings,
shard layout): a rerun keeps the shards whose plan digest and checksum match and fits only
the others. Loading checks the format version, the manifest's own digest, and each shard's
SHA-256 before using it; a damaged file raises an error naming it and the remedy, and the
other shards still load.

This module reads and validates a dataset; the format constants and the writers
(:func:`write_shard`, :func:`write_manifest`, ...) live in :mod:`dinet.fields.shards` and are
re-exported here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from .._cache import LRUCache
from .._io import content_digest
from .._memory import available_memory, format_bytes
from ..points import PointSet
from .models import FIELD_ARCHS, build_field
from .shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SHARD_PATTERN,  # noqa: F401  (re-exported: part of this module's names)
    plan_digest,
    read_shard_entry,
    sha256_hex,
    shard_metadata,
    shard_name,
    write_manifest,
    write_shard,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "MAX_CLASSES", "DatasetError", "FieldDataset",
           "plan_digest",
           "read_shard_entry", "shard_metadata", "shard_name", "write_manifest", "write_shard"]

#: Labels are class indices in [0, MAX_CLASSES): a classifier's head has one output per class.
MAX_CLASSES = 65536
#: The most fields one dataset may hold (a manifest claiming more is refused before any
#: allocation).
MAX_FIELDS = 2**31 - 1
#: Bytes the hidden activations of one chunk of a field evaluation may take (fields × points ×
#: the widest layer): larger evaluations are split over fields, then over points.
CHUNK_BYTES = 2**28


class DatasetError(ValueError):
    """A dataset file is missing, damaged or of another format; the message names it."""


def _checked_manifest(manifest, path: Path) -> dict:
    """The manifest, checked field by field: format, digest, architecture, counts, labels,
    and shards that are this folder's own files covering [0, n_fields) in order."""
    def bad(what: str) -> DatasetError:
        return DatasetError(f"{path} {what} — delete it and rerun `dinet fit` with the same "
                            "arguments: the intact shards are kept and the manifest is rewritten")

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DatasetError(f"{path} is not a {FORMAT} manifest (format={found!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format version {manifest.get('format_version')!r}; this "
            f"dinet reads version {FORMAT_VERSION} — refit the dataset with this version "
            "(`dinet fit ...`) or use the dinet release that wrote it"
        )
    manifest = dict(manifest)
    recorded = manifest.pop("sha256", None)
    if recorded is None:
        raise bad("records no SHA-256 of its contents, so its integrity cannot be checked")
    if recorded != content_digest(manifest):
        raise DatasetError(
            f"{path} is damaged (its contents do not match the SHA-256 recorded in "
            "it) — delete it and rerun `dinet fit` with the same arguments: the intact "
            "shards are kept and the manifest is rewritten"
        )
    arch, hparams = manifest.get("arch"), manifest.get("hparams")
    if arch not in FIELD_ARCHS:
        raise bad(f"names the field architecture {arch!r}; valid: {sorted(FIELD_ARCHS)}")
    if not isinstance(hparams, dict):
        raise bad(f"has hparams {hparams!r}; expected a JSON object")
    try:
        build_field(arch, 1, **hparams)
    except (TypeError, ValueError) as err:
        raise bad(f"has hyper-parameters a {arch} field does not take ({err})") from None
    n = manifest.get("n_fields")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_FIELDS:
        raise bad(f"has n_fields {n!r}; expected an integer in [1, {MAX_FIELDS}]")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise bad(f"has shards {shards!r:.60}; expected a list of shard entries")
    total = 0
    for k, entry in enumerate(shards):
        if not isinstance(entry, dict):
            raise bad(f"has shard entry {k} = {entry!r:.60}; expected a JSON object")
        if entry.get("file") != shard_name(k):
            # also what keeps every read inside the dataset folder
            raise bad(f"lists file {entry.get('file')!r} for shard {k}; expected "
                      f"{shard_name(k)!r}")
        start, count, digest = entry.get("start"), entry.get("count"), entry.get("sha256")
        if start != total or isinstance(start, bool):
            raise bad(f"says shard {k} starts at field {start!r}; the shards before it end at "
                      f"{total}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise bad(f"says shard {k} holds {count!r} fields; expected a positive integer")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise bad(f"records no valid SHA-256 for shard {k}")
        total += count
    if total != n:
        raise bad(f"says it holds {n} fields but its shards hold {total}")
    labels = manifest.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or len(labels) != n:
            raise bad(f"has {len(labels) if isinstance(labels, list) else labels!r} labels "
                      f"for {n} fields")
        if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < MAX_CLASSES
               for v in labels):
            raise bad(f"has labels outside the class indices [0, {MAX_CLASSES})")
    for key in ("psnr_grid", "psnr_offgrid"):
        values = manifest.get(key, [])
        if not isinstance(values, list) or len(values) not in (0, n) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            raise bad(f"has a malformed {key} (one number per field expected)")
    return manifest


class FieldDataset:
    """A dataset of fitted neural fields, opened from a folder written by ``dinet fit``.

    Shards are read (and their checksums verified) on first use. :meth:`sample` evaluates
    fields on a point set once and keeps the values in memory, keyed by the point set's
    content hash: sampling is the costly part, so an epoch over the same points costs a
    lookup.

    Args:
        path: the dataset folder.
        cache_point_sets: how many point sets' samples to keep (least recently used first
            out). Default 4.

    Attributes:
        manifest: the parsed ``manifest.json``.
        labels: ``(N,)`` int64 array, or ``None`` for unlabelled data.
        psnr_grid, psnr_offgrid: ``(N,)`` float arrays of the fits' PSNRs.
    """

    def __init__(self, path: str | Path, cache_point_sets: int = 4) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise DatasetError(f"{self.path} is not a folder — pass a dataset folder written "
                               "by `dinet fit`")
        if not manifest_path.exists():
            raise DatasetError(f"{manifest_path} is missing: {self.path} is not a field dataset "
                               "(or its `dinet fit` did not finish — rerun it to complete it)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DatasetError(f"{manifest_path} is not valid JSON ({err}) — rerun `dinet fit` "
                               "to rewrite it") from None
        self.manifest = _checked_manifest(manifest, manifest_path)
        self.arch = self.manifest["arch"]
        self.hparams = self.manifest["hparams"]
        self.labels = (None if self.manifest.get("labels") is None else
                       np.asarray(self.manifest["labels"], dtype=np.int64))
        self.psnr_grid = np.asarray(self.manifest.get("psnr_grid", []), dtype=np.float64)
        self.psnr_offgrid = np.asarray(self.manifest.get("psnr_offgrid", []), dtype=np.float64)
        self._shards = self.manifest["shards"]
        self._starts = np.asarray([s["start"] for s in self._shards], dtype=np.int64)
        self._template = {name: t.shape[1:] for name, t in
                          build_field(self.arch, 1, **self.hparams).state_dict().items()}
        # the widest layer of a field: what one point costs in a forward pass
        self._width = max((max(shape) for shape in self._template.values() if len(shape)),
                          default=1)
        self._loaded: dict[int, dict[str, torch.Tensor]] = {}
        self._samples = LRUCache(cache_point_sets)  # digest -> (values, done)
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> FieldDataset:
        """Keep the loaded fields on ``device`` and evaluate them there (:meth:`fields`
        returns modules on it; :meth:`sample` still returns CPU tensors). Returns self."""
        self.device = torch.device(device)
        self._loaded = {s: {k: v.to(self.device) for k, v in t.items()}
                        for s, t in self._loaded.items()}
        return self

    @classmethod
    def open(cls, path: str | Path, **kwargs) -> FieldDataset:
        return cls(path, **kwargs)

    def __len__(self) -> int:
        return int(self.manifest["n_fields"])

    def __repr__(self) -> str:
        return (f"FieldDataset({str(self.path)!r}, n={len(self)}, arch={self.arch!r}, "
                f"split={self.manifest.get('split')!r})")

    @property
    def out_dim(self) -> int:
        return int(self.hparams.get("out_dim", 1))

    def _shard(self, s: int) -> dict[str, torch.Tensor]:
        if s not in self._loaded:
            entry = self._shards[s]
            path = self.path / entry["file"]
            if not path.exists():
                raise DatasetError(f"{path} is missing — rerun `dinet fit` with the same "
                                   "arguments to refit it")
            data = path.read_bytes()
            if sha256_hex(data) != entry["sha256"]:
                raise DatasetError(
                    f"{path} is damaged (its SHA-256 does not match {MANIFEST}; truncated or "
                    "modified) — delete it and rerun `dinet fit` with the same arguments to "
                    "refit that shard"
                )
            try:
                tensors = st_load(data)
            except (ValueError, SafetensorError) as err:
                raise DatasetError(f"{path} cannot be read ({err})") from None
            self._check_shard(path, entry, tensors)
            self._loaded[s] = {k: v.to(self.device) for k, v in tensors.items()}
        return self._loaded[s]

    def _check_shard(self, path: Path, entry: dict, tensors: dict[str, torch.Tensor]) -> None:
        """The shard's tensors are the ones the manifest's architecture needs, float32 and
        finite, one row per field, and its labels are the manifest's."""
        count = entry["count"]

        def bad(what: str) -> DatasetError:
            return DatasetError(f"{path} {what} — delete it and rerun `dinet fit` with the same "
                                "arguments to refit that shard")

        expected = {f"field.{k}": (count, *shape) for k, shape in self._template.items()}
        expected["psnr_grid"] = expected["psnr_offgrid"] = (count,)
        if self.labels is not None:
            expected["labels"] = (count,)
        if set(tensors) != set(expected):
            missing = sorted(set(expected) - set(tensors))
            extra = sorted(set(tensors) - set(expected))
            raise bad(f"does not hold the tensors of a {self.arch} shard (missing {missing}, "
                      f"unexpected {extra})")
        for name, shape in expected.items():
            t = tensors[name]
            dtype = torch.int64 if name == "labels" else torch.float32
            if t.dtype != dtype or tuple(t.shape) != shape:
                raise bad(f"holds {name} as {t.dtype} {tuple(t.shape)}; expected {dtype} {shape}")
            if name.startswith("field.") and not bool(torch.isfinite(t).all()):
                raise bad(f"holds NaN or infinite values in {name}")
        if self.labels is not None:
            start = entry["start"]
            if not np.array_equal(tensors["labels"].numpy(), self.labels[start:start + count]):
                raise bad(f"holds other labels than {MANIFEST}")

    def _check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"field indices must be in [0, {len(self)}); got {idx.min()}.."
                             f"{idx.max()}")
        return idx

    def fields(self, indices: Sequence[int]) -> torch.nn.Module:
        """A batched field module holding the fields ``indices``, in that order (on
        :attr:`device`)."""
        idx = self._check_indices(indices)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        parts: dict[str, list[torch.Tensor]] = {}
        positions = []
        for s in np.unique(shard_of):
            where = np.flatnonzero(shard_of == s)
            rows = torch.from_numpy(idx[where] - self._starts[s]).to(self.device)
            positions.append(where)
            for name, t in self._shard(int(s)).items():
                if name.startswith("field."):
                    parts.setdefault(name[len("field."):], []).append(t[rows])
        inverse = torch.from_numpy(np.argsort(np.concatenate(positions))).to(self.device)
        module = build_field(self.arch, len(idx), **self.hparams).to(self.device)
        module.load_state_dict({name: torch.cat(p)[inverse] for name, p in parts.items()})
        return module

    @torch.no_grad()
    def sample(self, indices: Sequence[int], points: PointSet, chunk: int = 256) -> torch.Tensor:
        """Values of the fields ``indices`` at ``points``, ``(B, N, C)`` (float32, CPU).

        Values are computed once per (field, point set) and cached in memory — unless the
        cache, every field's values at ``points``, would take more than a quarter of the
        memory available: then only the fields asked for are evaluated (:meth:`values`).
        """
        idx = self._check_indices(indices)
        available = available_memory()
        if available is not None and len(self) * len(points) * self.out_dim * 4 > available / 4:
            return self.values(idx, points.coords)
        values, done = self._samples.get_or_build(points.digest, lambda: (
            torch.zeros(len(self), len(points), self.out_dim),
            torch.zeros(len(self), dtype=torch.bool)))
        missing = np.unique(idx[~done[torch.from_numpy(idx)].numpy()])
        for start in range(0, len(missing), chunk):
            part = missing[start:start + chunk]
            values[torch.from_numpy(part)] = self.values(part, points.coords)
            done[torch.from_numpy(part)] = True
        return values[torch.from_numpy(idx)]

    @torch.no_grad()
    def values(self, indices: Sequence[int], coords: torch.Tensor) -> torch.Tensor:
        """Values of the fields ``indices`` at ``coords`` ``(N, d)``, ``(B, N, C)`` (float32,
        CPU), uncached, evaluated in chunks of fields and of points whose hidden activations
        stay under :data:`CHUNK_BYTES`. A result larger than the memory available is a
        ValueError that says so, before anything is evaluated."""
        idx = self._check_indices(indices)
        n = len(coords)
        needed = len(idx) * n * self.out_dim * 4
        available = available_memory()
        if available is not None and needed > available:
            raise ValueError(f"the values of {len(idx):,} fields at {n:,} points take "
                             f"{format_bytes(needed)}, more than the {format_bytes(available)} "
                             "of memory available — use fewer points or fewer fields")
        per = 8 * self._width  # bytes per (field, point): a hidden layer and its input
        fields = max(1, min(len(idx), CHUNK_BYTES // (per * max(n, 1))))
        step = max(1, CHUNK_BYTES // (per * fields))
        out = torch.empty(len(idx), n, self.out_dim)
        coords = coords.to(self.device)
        for i in range(0, len(idx), fields):
            module = self.fields(idx[i:i + fields])
            for j in range(0, n, step):
                out[i:i + fields, j:j + step] = module(coords[j:j + step]).float().cpu()
        return out

    def verify(self) -> list[str]:
        """Check every shard; returns the problems found (empty when all is well)."""
        problems = []
        for s in range(len(self._shards)):
            try:
                self._shard(s)
            except DatasetError as err:
                problems.append(str(err))
        return problems
