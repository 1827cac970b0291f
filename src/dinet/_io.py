"""Safe files: atomic writes (a temporary file in the same folder, flushed, then renamed into
place, so a crash at any moment leaves either the old file or the new one, never a torn one)
and content digests that let a reader detect a damaged file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "check_writable",
           "content_digest", "pop_verified_digest", "read_arrays", "read_json",
           "save_with_digest"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating the folder if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the permissions open() would (0666 & ~umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def content_digest(obj) -> str:
    """SHA-256 of a nest of dicts, lists, tensors and plain values, independent of how it was
    serialised: a checkpoint records it, and a reader recomputes it after loading.

    ``torch.load`` does not notice flipped bits inside tensor data (it returns other
    numbers), so this is how a damaged checkpoint is told from a good one.
    """
    h = hashlib.sha256()

    def walk(value) -> None:
        if isinstance(value, dict):
            h.update(b"{")
            for key in sorted(value, key=repr):
                h.update(repr(key).encode() + b":")
                walk(value[key])
            h.update(b"}")
        elif isinstance(value, (list, tuple)):
            h.update(b"[")
            for item in value:
                walk(item)
            h.update(b"]")
        elif isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"tensor({t.dtype},{tuple(t.shape)})".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode() + b";")

    walk(obj)
    return h.hexdigest()


def read_json(path: str | os.PathLike, remedy: str, *, keys: tuple[str, ...] = ()) -> dict:
    """The JSON object in the file at ``path``, holding at least ``keys``; a file that is not
    valid JSON (truncated, edited, another kind of file), not an object, or without one of
    ``keys`` raises a ValueError naming it and ``remedy``."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}) — {remedy}") from None
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({err.strerror}) — {remedy}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object — {remedy}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValueError(f"{path} has no {', '.join(map(repr, missing))} — {remedy}")
    return value


def read_arrays(path: str | os.PathLike, remedy: str) -> dict:
    """The arrays of a ``.npz`` archive by name — or ``{"": array}`` for a ``.npy`` file —
    read without pickles; a file numpy cannot read raises a ValueError naming it and
    ``remedy``."""
    import numpy as np

    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"": loaded}
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz archive ({err}) — {remedy}") from None


def check_writable(folder: str | os.PathLike, flag: str = "--out") -> Path:
    """Raise a ValueError naming ``folder`` (given as ``flag``) unless files can be written
    into it: it is a writable folder, or the nearest existing folder above it is one (it
    will be created). Nothing is created here, so a refused command leaves nothing behind."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{flag} {folder}: {probe} is a file, not a folder — choose another "
                         f"{flag}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {folder}: cannot write into {probe} (permission denied or a "
                         f"read-only file system) — choose another {flag}")
    return folder


def save_with_digest(payload: dict, path: str | os.PathLike) -> Path:
    """``atomic_torch_save`` of ``payload`` plus its :func:`content_digest` under ``"sha256"``
    (:func:`pop_verified_digest` checks it after loading)."""
    return atomic_torch_save({**payload, "sha256": content_digest(payload)}, path)


def pop_verified_digest(payload: dict, path: str | os.PathLike, remedy: str) -> dict:
    """Remove ``payload["sha256"]`` and check it against the rest (a file written before
    digests were recorded has none and passes); a mismatch raises a ValueError naming the
    file and ``remedy``."""
    recorded = payload.pop("sha256", None)
    if recorded is not None and recorded != content_digest(payload):
        raise ValueError(f"{path} is damaged: its contents do not match the SHA-256 recorded "
                         f"in it (bits changed on disk or in transfer) — {remedy}")
    return payload
