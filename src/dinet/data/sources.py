"""Image sources: ``.npz`` archives, folders of PNG/JPEG files (one per class), and
:func:`load_source`, which names every source ``dinet fit`` reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._io import read_arrays
from ..fields.dataset import MAX_CLASSES
from .fashion_mnist import resize_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The largest image side ``dinet fit --size`` takes (a field per image is fitted to it).
MAX_SIZE = 4096


def to_unit_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    """Validate images and convert them to float32 ``(N, H, W, C)`` in [0, 1].

    Accepts ``(N, H, W)`` or ``(N, H, W, C)`` with C = 1 or 3; integer values are read as
    0..255 (and must lie there), floats must already lie in [0, 1] and be finite.

    Raises:
        ValueError: wrong shape, channel count, dtype or range; the message says which.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must have shape (N, H, W) or (N, H, W, C) with C = 1 or 3; got {images.shape}"
        )
    if min(images.shape[:3]) < 1:
        raise ValueError(f"{name} is empty: shape {images.shape}")
    if images.dtype == np.bool_ or not (
        np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)
    ):
        raise ValueError(f"{name} must be uint8 (0..255) or float (0..1); got dtype {images.dtype}")
    if np.issubdtype(images.dtype, np.integer):
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"integer {name} must lie in 0..255; got {low}..{high} (dtype {images.dtype})"
            )
        return images.astype(np.float32) / 255.0
    if not np.isfinite(images).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"float {name} must lie in [0, 1]; got {low:g}..{high:g} — divide 0..255 data by "
            f"255 or store it as uint8"
        )
    return images.astype(np.float32)


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Load images (and optional labels) from a ``.npz`` archive.

    The archive holds ``images`` of shape ``(N, H, W)`` or ``(N, H, W, C)`` (C = 1 or 3),
    uint8 in 0..255 or float in [0, 1], and optionally ``labels`` of shape ``(N,)`` holding
    non-negative integers.

    Returns:
        images ``(N, H, W, C)`` float32 in [0, 1] and labels ``(N,)`` int64, or ``None``.

    Raises:
        ValueError: a missing ``images`` array or a bad array, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no file at {path} — pass npz:FILE with an existing .npz archive "
                         "holding an 'images' array (and optionally 'labels')")
    remedy = "save it with numpy.savez(path, images=..., labels=...)"
    archive = read_arrays(path, remedy)
    if "" in archive:
        raise ValueError(f"{path} is a .npy file holding one array, not a .npz archive — "
                         f"{remedy}")
    if "images" not in archive:
        raise ValueError(f"{path}: no array named 'images' (found {sorted(archive)}); {remedy}")
    raw_images, raw_labels = archive["images"], archive.get("labels")
    try:
        images = to_unit_images(raw_images)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    if raw_labels is None:
        return images, None
    labels = np.asarray(raw_labels)
    if labels.shape != (len(images),):
        raise ValueError(
            f"{path}: labels must have shape ({len(images)},) to match images; got {labels.shape}"
        )
    if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        raise ValueError(f"{path}: labels must be integers; got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: labels must be >= 0; got {int(labels.min())}")
    if labels.size and labels.max() >= MAX_CLASSES:
        raise ValueError(f"{path}: labels are class indices below {MAX_CLASSES}; got "
                         f"{int(labels.max())} — number your classes 0, 1, 2, ...")
    return images, labels.astype(np.int64)


def read_image(path: str | os.PathLike, channels: int | None = None) -> np.ndarray:
    """One PNG/JPEG image as float32 ``(H, W, C)`` in [0, 1], converted to ``channels``
    (1: gray, 3: RGB; None: its own, gray or RGB); a file that is not an image raises a
    ValueError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            wide = image.mode.startswith("I") or image.mode == "F"  # 16/32-bit or float gray
            gray = wide or image.mode in ("1", "L", "LA")
            wanted = channels if channels is not None else (1 if gray else 3)
            if wide:
                # 16-bit PNGs open as I;16 or I: scale 0..65535 to [0, 1] (converting to
                # 8 bits would clip everything above 255 to white); float images are
                # taken as [0, 1].
                array = np.asarray(image, dtype=np.float32)
                array = np.clip(array / (1.0 if image.mode == "F" else 65535.0), 0.0, 1.0)
                array = np.repeat(array[..., None], wanted, axis=-1)
                return array
            # RGBA / LA lose their alpha here (no compositing over a background).
            array = np.asarray(image.convert("L" if wanted == 1 else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
    if array.ndim == 2:
        array = array[..., None]
    return array.astype(np.float32) / 255.0


def load_image_folder(
    path: str | os.PathLike, size: int, channels: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load PNG/JPEG images laid out as ``path/<class name>/<image>``.

    Class names are sorted and numbered from 0; files within a class are read in sorted
    order. Every image is converted to a common channel count — RGB if any image is in
    colour (grayscale ones are replicated), unless ``channels`` says otherwise — and resized
    to ``size x size`` with :func:`resize_images` (bilinear, antialiased when shrinking;
    the aspect ratio is not kept). Needs Pillow.

    Args:
        path: the root folder.
        size: output side in pixels.
        channels: 1 or 3 to force the channel count; ``None`` picks it as above.

    Returns:
        images ``(N, size, size, C)`` float32 in [0, 1], labels ``(N,)`` int64 and the
        sorted class names.

    Raises:
        ValueError: a missing or empty folder or class, or an unreadable file (named).
    """
    root = Path(path)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3; got {channels}")
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a folder")
    # Hidden folders (.ipynb_checkpoints, .git, ...) and files are not data.
    classes = sorted(entry.name for entry in root.iterdir()
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise ValueError(
            f"image folder {root} has no class sub-folders; lay it out as "
            f"{root}/<class name>/<image>.png"
        )
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        members = sorted(
            f for f in (root / name).iterdir()
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
        )
        if not members:
            raise ValueError(
                f"class folder {root / name} holds no {'/'.join(IMAGE_SUFFIXES)} images"
            )
        files += [(f, label) for f in members]

    arrays = [read_image(f, channels) for f, _ in files]
    common = channels if channels is not None else max(a.shape[-1] for a in arrays)
    images = np.empty((len(arrays), size, size, common), dtype=np.float32)
    for k, array in enumerate(arrays):
        if array.shape[-1] != common:
            array = np.repeat(array, common, axis=-1)
        images[k] = resize_images(array[None], size)[0]
    labels = np.array([label for _, label in files], dtype=np.int64)
    return images, labels, classes


SOURCES = ("fashion-mnist", "digits", "scenes", "npz:FILE", "folder:DIR")


def load_source(spec: str, split: str = "train", limit: int | None = None,
                size: int | None = None, data_dir=None, seed: int = 0,
                scenes: dict | None = None):
    """Images, labels and a record of the source, for a source name of :data:`SOURCES`.

    Args:
        spec: ``fashion-mnist``, ``digits`` (scikit-learn's, a fixed 80/20 split: index % 5
            == 0 is test), ``scenes`` (segmentation scenes of Fashion-MNIST items of the
            split, ``limit`` of them, default 1000, made with ``seed``), ``npz:FILE`` or
            ``folder:DIR``.
        split: ``train`` or ``test`` (Fashion-MNIST, digits, and the scenes' items).
        limit: keep the first ``limit`` images.
        size: resize to ``size × size`` (default 32; scenes: the canvas side, default 32).
        data_dir: folder of the Fashion-MNIST files (see ``load_fashion_mnist``).
        seed: the scenes' seed.
        scenes: options of :func:`~dinet.data.make_scenes` for the scenes (``scale``,
            ``items``); the values used are recorded in ``info``.

    Returns:
        ``(images (N, H, W, C) float32 in [0, 1], labels (N,) int64 or None, info)``; ``info``
        is JSON-able and is recorded in the dataset's manifest.
    """
    from . import fashion_mnist
    from .scenes import SCENE_DEFAULTS, make_scenes

    if scenes and spec != "scenes":
        raise ValueError(f"scene options ({', '.join(scenes)}) apply to the scenes source only; "
                         f"got source {spec!r}")
    if size is None:
        size = 32
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise ValueError(f"--size must be an integer in [1, {MAX_SIZE}]; got {size!r}")
    info = {"source": spec, "split": split, "limit": limit, "size": size}
    if spec == "fashion-mnist":
        images, labels = fashion_mnist.load_fashion_mnist(split, data_dir=data_dir, limit=limit)
    elif spec == "digits":
        images, labels = fashion_mnist.load_digits()
        test = np.arange(len(images)) % 5 == 0  # a fixed 80/20 split
        keep = test if split == "test" else ~test
        images, labels = images[keep][:limit], labels[keep][:limit]
        info["split_rule"] = "index % 5 == 0 is test"
    elif spec == "scenes":
        items = fashion_mnist.load_fashion_mnist(split, data_dir=data_dir)
        options = {**SCENE_DEFAULTS, **(scenes or {})}
        made = make_scenes(limit or 1000, seed=seed, size=size, source=items, **options)
        return made.images, None, {**info, "n": len(made.images), "seed": seed,
                                   **{k: list(v) for k, v in options.items()}}
    elif spec.startswith("npz:"):
        images, labels = load_npz(spec[4:])
        images, labels = images[:limit], None if labels is None else labels[:limit]
    elif spec.startswith("folder:"):
        images, labels, classes = load_image_folder(spec[7:], size)
        images, labels = images[:limit], labels[:limit]
        info["classes"] = list(classes)
    else:
        raise ValueError(f"unknown source {spec!r}; valid: {', '.join(SOURCES)}")
    if images.shape[1:3] != (size, size):
        _check_memory(len(images) * size * size * images.shape[-1] * 4 * 3, f"--size {size}")
        images = resize_images(images, size)
    return images, labels, info


def _check_memory(needed: int, what: str) -> None:
    """Refuse an allocation of ``needed`` bytes that the machine does not have."""
    from .._memory import available_memory

    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(f"{what} needs ~{needed / 2**30:.1f} GiB for the images, more than "
                         f"the {available / 2**30:.1f} GiB available — use a smaller size or "
                         "--limit")
