"""The on-disk format of a field dataset: safetensors shards and the manifest, written.

Shards are serialized deterministically (sorted names and metadata keys), so the same
content gives the same bytes and checksum in every run; each records in its metadata the
plan digest that produced it and a digest of its own tensors. Every file is written to a
temporary name and renamed into place. Reading and validating a dataset is
:class:`~dinet.fields.dataset.FieldDataset`'s part (:mod:`dinet.fields.dataset`, which
re-exports the public names here).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from .._io import atomic_write_bytes, content_digest

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "SHARD_PATTERN", "plan_digest",
           "read_shard_entry", "shard_metadata", "shard_name", "write_manifest", "write_shard"]

FORMAT = "dinet-fields"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_PATTERN = re.compile(r"shard-\d{5}\.safetensors")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def plan_digest(plan: dict) -> str:
    """A stable digest of everything that decides a dataset's content."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:32]


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, as the hex string a manifest records per shard."""
    return hashlib.sha256(data).hexdigest()


_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
           torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8",
           torch.bool: "BOOL"}


def serialize_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors format, written deterministically (sorted names and metadata keys),
    so the same content gives the same bytes and the same checksum in every run."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 bytes
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def write_shard(folder: str | Path, index: int, start: int, state: dict[str, torch.Tensor],
                psnr_grid, psnr_offgrid, labels=None, plan: str = "") -> dict:
    """Write one shard atomically and return its manifest entry.

    Args:
        folder: the dataset folder.
        index: shard number; ``start``: index of its first field in the dataset.
        state: the fields' tensors (first axis = field), e.g. a batched field's state_dict.
        psnr_grid, psnr_offgrid: per-field PSNRs; ``labels``: per-field labels or ``None``.
        plan: the plan digest the shard belongs to.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = next(iter(state.values())).shape[0]
    tensors = {f"field.{k}": v.detach().cpu().contiguous() for k, v in state.items()}
    tensors["psnr_grid"] = torch.as_tensor(np.asarray(psnr_grid, dtype=np.float32))
    tensors["psnr_offgrid"] = torch.as_tensor(np.asarray(psnr_offgrid, dtype=np.float32))
    if labels is not None:
        tensors["labels"] = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    for name, t in tensors.items():
        if t.shape[0] != count:
            raise ValueError(f"shard tensor {name!r} has {t.shape[0]} rows, expected {count}")
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "start": str(start),
                "count": str(count), "plan": plan}
    metadata["sha256"] = _shard_digest(tensors, metadata)
    data = serialize_safetensors(tensors, metadata)
    name = shard_name(index)
    atomic_write_bytes(folder / name, data)
    return {"file": name, "start": int(start), "count": int(count), "sha256": sha256_hex(data)}


def shard_metadata(path: str | Path) -> dict | None:
    """The safetensors metadata of a shard file (read from its header alone), or ``None``
    when the header cannot be read."""
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len > 1 << 24:
                return None
            return json.loads(f.read(header_len)).get("__metadata__", {})
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _shard_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of a shard's tensors (names, dtypes, shapes, bytes) and its metadata other than
    the digest itself: recorded in the shard, so a shard vouches for itself even before (or
    without) a manifest."""
    return content_digest({"metadata": {k: v for k, v in metadata.items() if k != "sha256"},
                           "tensors": tensors})


def read_shard_entry(folder: str | Path, index: int, plan: str, start: int,
                     count: int) -> dict | None:
    """The manifest entry of shard ``index`` when it is on disk, of this plan, holds fields
    ``[start, start + count)`` and its contents match the digest it records; else ``None``
    (missing, damaged, another plan, or written before shards recorded a digest)."""
    path = Path(folder) / shard_name(index)
    meta = shard_metadata(path) if path.exists() else None
    if not meta or meta.get("plan") != plan or meta.get("format") != FORMAT:
        return None
    if meta.get("start") != str(start) or meta.get("count") != str(count):
        return None
    data = path.read_bytes()
    try:
        tensors = st_load(data)
    except (ValueError, SafetensorError):
        return None
    if meta.get("sha256") != _shard_digest(tensors, meta):
        return None
    return {"file": path.name, "start": start, "count": count, "sha256": sha256_hex(data)}


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (format, version and the content digest added)."""
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    manifest.pop("sha256", None)
    manifest["sha256"] = content_digest(json.loads(json.dumps(manifest)))
    path = Path(folder) / MANIFEST
    atomic_write_bytes(path, (json.dumps(manifest, indent=1) + "\n").encode())
    return path
