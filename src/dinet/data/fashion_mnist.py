"""Fashion-MNIST from local IDX files, scikit-learn's digits, and image resizing.

Nothing here downloads: Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``
(or any folder holding the four IDX files), digits from the copy bundled with scikit-learn.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_ENV_VAR = "DINET_DATA"

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_IDX_UBYTE = 0x08  # the only element type Fashion-MNIST uses


def read_idx(path: str | os.PathLike, ndim: int, limit: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzip-compressed or not) into a uint8 array.

    The header is checked: two zero bytes, element type 0x08 (unsigned byte), ``ndim``
    dimensions; then the payload must hold exactly prod(dims) bytes. With ``limit`` only
    the first ``limit`` items are read (and trailing bytes are not checked).

    Args:
        path: the file; gzip is detected from its first bytes, not its name.
        ndim: expected number of dimensions (3 for images, 1 for labels).
        limit: read at most this many items along the first axis.

    Raises:
        ValueError: a bad header or a wrong size, naming the file.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(4)
            if len(header) < 4 or header[:2] != b"\x00\x00":
                raise ValueError(f"{path}: not an IDX file (magic bytes {header.hex() or 'empty'})")
            if header[2] != _IDX_UBYTE or header[3] != ndim:
                raise ValueError(
                    f"{path}: IDX header has element type 0x{header[2]:02x} and {header[3]} "
                    f"dimensions; expected type 0x08 (unsigned byte) and {ndim} dimensions"
                )
            dims_bytes = stream.read(4 * ndim)
            if len(dims_bytes) < 4 * ndim:
                raise ValueError(f"{path}: IDX header truncated")
            dims = [int(d) for d in np.frombuffer(dims_bytes, dtype=">u4")]
            count = dims[0] if limit is None else min(int(limit), dims[0])
            item_size = int(np.prod(dims[1:], dtype=np.int64))
            payload = stream.read(count * item_size)
            if len(payload) != count * item_size:
                raise ValueError(
                    f"{path}: IDX payload truncated: header promises {dims} "
                    f"({dims[0] * item_size} bytes), file holds fewer"
                )
            if limit is None and stream.read(1):
                raise ValueError(f"{path}: IDX file has bytes beyond the {dims} its header says")
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path}: cannot read as (gzipped) IDX: {error}") from error
    return np.frombuffer(payload, dtype=np.uint8).reshape([count, *dims[1:]])


def _candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    if data_dir is not None:
        roots = [Path(data_dir)]
    else:
        roots = [Path(os.environ[DATA_ENV_VAR])] if os.environ.get(DATA_ENV_VAR) else []
        roots.append(DEFAULT_DATA_DIR)
    # A general data root may hold the files in a fashion-mnist/ sub-folder.
    dirs: list[Path] = []
    for root in roots:
        dirs += [root, root / "fashion-mnist"]
    return dirs


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(
    split: str = "train", data_dir: str | os.PathLike | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split from the local IDX files.

    The files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
    ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``) are looked for in
    ``data_dir`` if given, else in ``$DINET_DATA`` (if set) and then
    ``/usr/share/datasets/fashion-mnist/``; each folder's ``fashion-mnist/`` sub-folder is
    tried too.

    Args:
        split: ``"train"`` (60 000 items) or ``"test"`` (10 000 items).
        data_dir: folder holding the four files.
        limit: keep only the first ``limit`` items (reads only those).

    Returns:
        images ``(N, 28, 28, 1)`` float32 in [0, 1] and labels ``(N,)`` int64 in 0..9
        (names in ``FASHION_MNIST_CLASSES``).

    Raises:
        FileNotFoundError: the files are in none of the folders searched.
        ValueError: a file is corrupt (it is named), or images and labels disagree.
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None; got {limit}")
    prefix = _SPLIT_PREFIX[split]
    image_stem, label_stem = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    searched = _candidate_dirs(data_dir)
    for folder in searched:
        image_path, label_path = _find_file(folder, image_stem), _find_file(folder, label_stem)
        if image_path is not None and label_path is not None:
            break
    else:
        folders = ", ".join(str(f) for f in searched)
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files ({image_stem}[.gz], {label_stem}[.gz]) not found in: "
            f"{folders}. Install them with `sudo apt-get install dataset-fashion-mnist`, or put "
            f"the IDX files in a folder and pass --data FOLDER (data_dir=...) or set "
            f"{DATA_ENV_VAR}=FOLDER."
        )
    images = read_idx(image_path, ndim=3, limit=limit)
    labels = read_idx(label_path, ndim=1, limit=limit)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: Fashion-MNIST images are 28x28; got {images.shape[1:]}")
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_path}: labels must lie in 0..9; got {int(labels.max())}")
    return (images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int64)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (bundled with it, no download).

    Returns:
        images ``(1797, 8, 8, 1)`` float32 in [0, 1] (the raw 0..16 values divided by 16)
        and labels ``(1797,)`` int64 in 0..9.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as error:
        raise ImportError("load_digits needs scikit-learn: `pip install scikit-learn`") from error
    bunch = sklearn_load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[..., None]
    return images, np.asarray(bunch.target, dtype=np.int64)


def resize_images(images: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Bilinear resize of ``(N, H, W, C)`` images to ``(N, size, size, C)``.

    Uses ``torch.nn.functional.interpolate`` with ``align_corners=False`` (the pixel-centre
    convention) and antialiasing when an axis shrinks. Output is float32, clipped to [0, 1].

    Args:
        images: ``(N, H, W, C)`` array in [0, 1].
        size: output side, or ``(height, width)``.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C); got {images.shape}")
    height, width = (int(size), int(size)) if np.isscalar(size) else (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive; got {size}")
    if images.shape[1:3] == (height, width):
        return images.astype(np.float32, copy=True)
    shrinking = height < images.shape[1] or width < images.shape[2]
    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    out = F.interpolate(
        batch, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking
    )
    return out.permute(0, 2, 3, 1).clamp_(0.0, 1.0).contiguous().numpy()
