"""Synthetic segmentation scenes: several Fashion-MNIST items on one canvas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .fashion_mnist import load_fashion_mnist, resize_images

#: The segmentation benchmark's scenes (README, "Segmentation"): one item of 0.75–1.0 of a
#: 32×32 canvas — 24–32 pixels, about Fashion-MNIST's own 28, so the garment class is
#: readable, at a random place — scenes on which a pixel U-Net passes 0.80 mIoU within the
#: hour on a 2-core CPU (one or two overlapping items of 0.6–1.0 gave 0.74 with 40,000 scenes:
#: docs/segmentation-experiments.md).
SCENE_DEFAULTS = {"scale": (0.75, 1.0), "items": (1, 1)}
#: What ``dinet fit --source scenes`` made before the options were recorded (a 64×64
#: canvas by default): manifests without ``scale``/``items`` were made with these.
FORMER_SCENE_OPTIONS = {"scale": (0.3, 0.6), "items": (2, 3)}


@dataclass(frozen=True)
class Scenes:
    """Segmentation scenes with per-pixel labels.

    Attributes:
        images: ``(n, size, size, 1)`` float32 in [0, 1].
        labels: ``(n, size, size)`` int64; 0 = background, ``k + 1`` = an item of class k.
        num_items: ``(n,)`` int64, how many items were pasted into each scene (some may be
            hidden by later ones).
        num_classes: number of label values, background included (11 for Fashion-MNIST).
    """

    images: np.ndarray
    labels: np.ndarray
    num_items: np.ndarray
    num_classes: int = 11

    def __len__(self) -> int:
        return len(self.images)

    def label_field(
        self,
        index: int | Sequence[int] | np.ndarray | torch.Tensor,
        coords: np.ndarray | torch.Tensor,
    ) -> np.ndarray | torch.Tensor:
        """Labels of scene(s) at arbitrary points of [-1, 1]^2, by nearest pixel.

        Pixel (i, j) of a size x size scene covers the cell around its centre
        (−1 + (2i+1)/size, −1 + (2j+1)/size); ``coords[..., 0]`` is the row axis. A point
        gets the label of the cell it falls in (cell edges go to the higher index; points
        outside the domain are clamped to the border pixel).

        Shapes:
            ``index`` an int: ``coords (..., N, 2)`` → ``(..., N)``.
            ``index`` of shape ``(B,)``: ``coords (N, 2)`` or ``(B, N, 2)`` → ``(B, N)``.

        Returns int64 labels, as a torch tensor on ``coords``' device if ``coords`` is one.
        """
        as_torch = isinstance(coords, torch.Tensor)
        device = coords.device if as_torch else None
        points = coords.detach().cpu().numpy() if as_torch else np.asarray(coords)
        if points.shape[-1] != 2:
            raise ValueError(f"coords must have shape (..., N, 2); got {points.shape}")
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        size_h, size_w = self.labels.shape[1:]
        rows = np.clip(np.floor((points[..., 0] + 1.0) * 0.5 * size_h), 0, size_h - 1)
        cols = np.clip(np.floor((points[..., 1] + 1.0) * 0.5 * size_w), 0, size_w - 1)
        rows, cols = rows.astype(np.int64), cols.astype(np.int64)
        if np.ndim(index) == 0:
            out = self.labels[int(index)][rows, cols]
        else:
            scene = np.asarray(index, dtype=np.int64)
            if scene.ndim != 1:
                raise ValueError(f"index must be an int or 1-D; got shape {scene.shape}")
            if points.ndim == 2:
                rows, cols = (np.broadcast_to(a, (len(scene), *a.shape)) for a in (rows, cols))
            elif points.ndim != 3 or points.shape[0] != len(scene):
                raise ValueError(
                    f"with {len(scene)} scenes coords must be (N, 2) or ({len(scene)}, N, 2); "
                    f"got {points.shape}"
                )
            out = self.labels[scene[:, None], rows, cols]
        return torch.from_numpy(np.ascontiguousarray(out)).to(device) if as_torch else out


def make_scenes(
    n: int,
    seed: int,
    size: int = 32,
    items: tuple[int, int] = SCENE_DEFAULTS["items"],
    source: tuple[np.ndarray, np.ndarray] | None = None,
    scale: tuple[float, float] = SCENE_DEFAULTS["scale"],
    threshold: float = 0.1,
) -> Scenes:
    """Composite ``n`` scenes of several items at random positions and scales.

    Each scene draws a count in ``items`` (inclusive), then for each item a random source
    image, a side of ``scale * size`` pixels (uniform) and a position keeping it inside the
    canvas. Items are pasted in order, later ones on top: where an item's (resized)
    intensity exceeds ``threshold`` its pixels replace the canvas and its label
    (class + 1) replaces the label; fainter pixels leave what is below visible.
    Deterministic for a seed.

    Args:
        n: number of scenes.
        seed: random seed.
        size: canvas side in pixels.
        items: (min, max) number of items per scene.
        source: ``(images (M, h, w, 1 or 3), labels (M,))`` with labels in 0..9; by default
            the Fashion-MNIST training split (see :func:`load_fashion_mnist`).
        scale: (min, max) item side as a fraction of ``size``.
        threshold: intensity above which an item pixel counts as the item.

    Returns:
        :class:`Scenes` with 11 label values (0 = background).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    low_items, high_items = items
    if not 1 <= low_items <= high_items:
        raise ValueError(f"items must be (min, max) with 1 <= min <= max; got {items}")
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"scale must be (min, max) with 0 < min <= max <= 1; got {scale}")
    images, classes = source if source is not None else load_fashion_mnist("train")
    images = np.asarray(images, dtype=np.float32)
    classes = np.asarray(classes, dtype=np.int64)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) != len(classes):
        raise ValueError(
            f"source must be (images (M, h, w, 1 or 3), labels (M,)); got {images.shape} "
            f"and {classes.shape}"
        )
    if len(images) == 0:
        raise ValueError("source holds no images")
    if images.shape[-1] == 3:
        images = images.mean(axis=-1, keepdims=True)
    num_classes = max(10, int(classes.max()) + 1) + 1

    rng = np.random.default_rng(seed)
    canvases = np.zeros((n, size, size, 1), dtype=np.float32)
    label_maps = np.zeros((n, size, size), dtype=np.int64)
    counts = rng.integers(low_items, high_items + 1, size=n)
    min_side = max(1, round(scale[0] * size))
    max_side = max(min_side, round(scale[1] * size))
    for s in range(n):
        for _ in range(counts[s]):
            pick = int(rng.integers(len(images)))
            side = int(rng.integers(min_side, max_side + 1))
            top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            patch = resize_images(images[pick : pick + 1], side)[0]
            mask = patch[..., 0] > threshold
            window = (slice(top, top + side), slice(left, left + side))
            canvases[s][window][mask] = patch[mask]
            label_maps[s][window][mask] = classes[pick] + 1
    return Scenes(canvases, label_maps, counts.astype(np.int64), num_classes)
