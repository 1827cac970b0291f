"""Predictions of a trained run on new inputs (``dinet predict``).

A DI-Net reads a field at whatever points it is given, so a trained run answers for

- a field dataset (``dinet fit``, labelled or not) read at any discretization,
- your own samples: values measured at your coordinates (``.npz`` with ``coords`` and
  ``values``), weighted by :func:`dinet.points.from_coords`,
- images (PNG/JPEG, ``.npy`` arrays or ``.npz`` archives), read at their own pixel centres,
  at any resolution.

:class:`Predictor` is the Python entry point; :func:`read_fields`, :func:`load_samples` and
:func:`load_images` read the three inputs; :mod:`~dinet.tasks.answers` prints, writes and
draws the answers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import distributed
from .. import points as P
from .._io import read_arrays
from ..points import PointSet
from .base import Task, class_names_of, get_task, open_field_dataset
from .discretize import FILE_PREFIX, components, file_points, fixed_points
from .evaluate import load_run

__all__ = ["Predictor", "image_values", "load_images", "load_samples", "read_fields"]

SAMPLES_REMEDY = ("save them with numpy.savez(path, coords=coords, values=values): coords "
                  "(N, d) in [-1, 1]^d, values (N, C) or (B, N, C), optional weights (N,)")


class Predictor:
    """A trained run's model, ready to answer for any point set.

    Args:
        run: a folder written by ``dinet train``.
        device: where the model runs: ``cpu`` (default), ``cuda`` or ``auto``.

    Attributes:
        task: the run's :class:`~dinet.tasks.Task`.
        model: the trained model (in eval mode, on ``device``).
        config: the run's ``config.json``.
        class_names: a name per class as the training data named them, or None (runs
            trained before names were recorded, or data without names).
        size: pixels (voxels) per axis of the training images, or None where unknown; the
            grid of a field-valued output when no query is given.
        in_channels, dim: what the model reads: channels per point, domain dimension.

    Example::

        predictor = Predictor("runs/demo/dinet-res-sobol")  # after `make demo`
        points = dinet.points.sobol(1024, 2, seed=0)
        out = predictor(values, points)          # classify: out["label"], out["probability"]
    """

    def __init__(self, run: str | os.PathLike, device: str = "cpu") -> None:
        self.run = Path(run)
        self.config, model = load_run(self.run)
        self.task = get_task(self.config["task"])
        extra = getattr(model, "checkpoint_extra", None) or {}
        # Runs trained before the names and size were recorded with the model: from the
        # manifest of their training data, where it is still there.
        source = {} if {"class_names", "size"} <= set(extra) else _training_source(self.config)
        names = (extra.get("class_names")
                 or class_names_of(source, model.config.get("n_classes", 0)))
        self.class_names = tuple(map(str, names)) if names else None
        size = (extra.get("size") or model.config.get("size")
                or (source.get("image_shape") or [None])[0])
        self.size = int(size) if size else None
        self.in_channels = int(model.config["in_channels"])
        self.dim = self.task.dim
        self.device = distributed.select_device(device)
        self.model = model.eval().to(self.device)

    def input_points(self, kind: str | None = None, n: int | None = None,
                     seed: int = 0) -> PointSet:
        """Where a field dataset is read: ``kind`` (a discretization name or ``npz:FILE``)
        with ``n`` points and ``seed``'s draw; by default the run's own training
        discretization (the first kind of a mixture) and count."""
        if kind is None:  # the training discretization; of a mixture, its first kind
            kind = components(self.config.get("discretization") or "sobol")[0]
        n = n or int(self.config.get("points") or self.task.default_points)
        return fixed_points(kind, n, self.dim, seed)

    def query_points(self, kind: str | None = None, n: int | None = None, seed: int = 1,
                     shape: tuple[int, ...] | None = None) -> PointSet | None:
        """Where a field-valued output (segment, sdf) is read: ``kind`` (a discretization
        name or ``npz:FILE``) with ``n`` points (default: one per training pixel); by default
        the pixel centres of ``shape``, or of the training images' grid. None for a task
        with one answer per item (a ``kind`` for one is an error)."""
        if not self.task.reads_queries:
            if kind is not None:
                raise ValueError(f"a {self.task.name} model gives one answer per item; query "
                                 "points are for tasks whose output is a field (segment, sdf)")
            return None
        if kind is None:
            return P.grid(tuple(shape) if shape else (self._known_size(),) * self.dim)
        return fixed_points(kind, n or self._known_size() ** self.dim, self.dim, seed)

    def _known_size(self) -> int:
        if self.size is None:
            raise ValueError(f"{self.run}: the run does not record its images' size (trained "
                             "before dinet recorded it, its training data gone) — give the "
                             "query points explicitly (--query KIND --query-points N)")
        return self.size

    @torch.no_grad()
    def __call__(self, values, points: PointSet, query: PointSet | None = None,
                 batch_size: int = 64, progress: bool = False) -> dict[str, np.ndarray]:
        """The task's named outputs (:meth:`Task.predict`) for fields read at ``points``.

        Args:
            values: ``(B, N, C)`` (or ``(N, C)`` for one item) field values at ``points``.
            points: the ``N`` points the values were read at.
            query: where a field-valued output is read (segment, sdf); default
                :meth:`query_points`. A task with one answer per item takes none.
            batch_size: items per forward pass.
            progress: show a progress bar over the batches (when there are several).

        Returns:
            numpy arrays, items first (classify: ``label``, ``probability``; segment:
            ``label``, ``confidence`` per query point; sdf: ``sdf``), and ``query_coords``
            ``(M, d)`` where there is a query. On a lattice query (a grid: the default)
            the per-point outputs are images ``(B, *shape)`` and ``query_coords`` is
            ``(*shape, d)``, row-major: ``label[b, i, j]`` is pixel (i, j).
        """
        values = torch.as_tensor(np.asarray(values), dtype=torch.float32)
        if values.ndim == 2:
            values = values[None]
        if values.ndim != 3 or values.shape[1:] != (len(points), self.in_channels):
            raise ValueError(
                f"values must be (B, N, C) = (items, {len(points)} points, {self.in_channels} "
                f"channel{'s' * (self.in_channels != 1)}) for this run's model; got "
                f"{tuple(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError("values hold NaN or infinite numbers")
        if points.dim != self.dim:
            raise ValueError(f"the run's model reads {self.dim}-D points; got {points.dim}-D")
        if query is not None and not self.task.reads_queries:
            raise ValueError(f"a {self.task.name} model gives one answer per item; query "
                             "points are for tasks whose output is a field (segment, sdf)")
        query = query if query is not None else self.query_points()
        parts = []
        starts = range(0, len(values), batch_size)
        for start in tqdm(starts, desc="predict", unit="batch",
                          disable=not progress or len(starts) < 2):
            x = values[start:start + batch_size].to(self.device)
            out = self.task.predict(self.model, x, points, query)
            parts.append({k: v.detach().cpu() for k, v in out.items()})
        result = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
        if query is None:
            return result
        coords = query.coords.numpy()
        if query.shape is not None:  # a lattice: outputs as images, (B, *shape, ...)
            order = np.argsort(P.lattice_index(query).numpy())  # row-major pixel -> point
            m = len(query)
            result = {k: v[:, order].reshape(len(v), *query.shape, *v.shape[2:])
                      if v.shape[1:2] == (m,) else v for k, v in result.items()}
            coords = coords[order].reshape(*query.shape, self.dim)
        return {**result, "query_coords": coords}


def _training_source(config: dict) -> dict:
    """The ``source`` record in the manifest of the dataset a run was trained on, or {}."""
    manifest = Path(str(config.get("fields", ""))) / "manifest.json"
    try:
        source = json.loads(manifest.read_text())["source"]
        return source if isinstance(source, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_fields(spec: str, task: Task, items, points: PointSet) -> tuple[np.ndarray, list[str]]:
    """Values ``(B, N, C)`` of the fields ``items`` (indices; None: all) of ``spec`` — a field
    dataset folder, labelled or not, or what ``task`` reads (``balls:N:SEED`` for sdf) — at
    ``points``, and the items' names ("item 7")."""
    if Path(spec).is_dir():
        dataset = open_field_dataset(spec, task.name)
        count = len(dataset)

        def sample(idx, points):  # the items asked for, no cache of every field
            return dataset.values(idx, points.coords)

    else:
        data = task.open_data(spec)
        count, sample = len(data), data.sample
    idx = np.arange(count) if items is None else np.asarray(items, dtype=np.int64)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= count:
        raise ValueError(f"--items must pick items 0 to {count - 1} of {spec}; got "
                         f"{'nothing' if idx.size == 0 else f'{idx.min()} to {idx.max()}'}")
    return sample(idx, points).numpy(), [f"item {i}" for i in idx]


def load_samples(path: str | os.PathLike, dim: int) -> tuple[np.ndarray, PointSet]:
    """Values measured at your own coordinates, from a ``.npz`` archive holding ``coords``
    ``(N, d)`` in [-1, 1]^d (``coords[:, k]`` = array axis k), ``values`` ``(N,)``, ``(N, C)``
    or ``(B, N, C)`` and optional ``weights`` ``(N,)`` (default: the Voronoi cell measures of
    :func:`dinet.points.from_coords`). Returns the values ``(B, N, C)`` float32 and the
    weighted point set."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--samples {path}: no such file — {SAMPLES_REMEDY}")
    arrays = read_arrays(path, SAMPLES_REMEDY)
    if "values" not in arrays or not ({"coords", "points"} & set(arrays)):
        raise ValueError(f"{path}: found arrays {sorted(arrays)}; {SAMPLES_REMEDY}")
    points = file_points(FILE_PREFIX + str(path), dim)
    values = np.asarray(arrays["values"])
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(f"{path}: values must be real numbers; got dtype {values.dtype}")
    values = values.reshape(1, -1, 1) if values.ndim == 1 else (
        values[None] if values.ndim == 2 else values)
    if values.ndim != 3 or values.shape[1] != len(points):
        raise ValueError(f"{path}: values must be (N,), (N, C) or (B, N, C) with N = "
                         f"{len(points)} (the number of coords); got {arrays['values'].shape}")
    return values.astype(np.float32), points


def load_images(paths, channels: int) -> tuple[np.ndarray, PointSet, list[str],
                                              np.ndarray | None]:
    """Images of one size as field values at their pixel centres.

    Args:
        paths: PNG/JPEG files, ``.npy`` arrays ``(H, W)`` / ``(H, W, C)``, or ``.npz``
            archives of ``images`` ``(N, H, W[, C])`` and optional ``labels`` ``(N,)`` (as
            ``dinet fit --source npz:FILE`` reads them); arrays hold uint8 0..255 or floats
            in [0, 1].
        channels: the channels the model reads (gray images are repeated to RGB, RGB
            averaged to gray).

    Returns:
        values ``(B, H·W, channels)`` at ``dinet.points.grid((H, W))``, the grid, a name per
        image (the file's, ``FILE[i]`` in an archive), and the labels when every file is a
        labelled archive (else None).
    """
    from ..data.sources import IMAGE_SUFFIXES, load_npz, read_image, to_unit_images

    images, names, labels = [], [], []
    for path in map(Path, paths):
        suffix = path.suffix.lower()
        if not path.is_file():
            raise ValueError(f"--images {path}: no such file")
        if suffix in IMAGE_SUFFIXES:
            if channels not in (1, 3):
                raise ValueError(f"{path}: the model reads {channels} channels, and an image "
                                 "gives 1 or 3 — pass --samples or --fields instead")
            images.append(read_image(path, channels)[None])
            names.append(path.name)
            labels.append(None)
            continue
        if suffix == ".npz":
            batch, batch_labels = load_npz(path)
        elif suffix == ".npy":
            array = read_arrays(path, "save one image with numpy.save")[""]
            try:
                batch, batch_labels = to_unit_images(array[None], str(path)), None
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        else:
            raise ValueError(f"--images {path}: expected .png, .jpg, .jpeg, .npy or .npz")
        if batch.shape[-1] != channels:
            if channels not in (1, 3):
                raise ValueError(f"{path}: the model reads {channels} channels; got "
                                 f"{batch.shape[-1]}")
            batch = (batch.mean(-1, keepdims=True) if channels == 1
                     else np.repeat(batch, 3, axis=-1))
        images.append(batch)
        names += [path.name] if suffix == ".npy" else [f"{path.name}[{i}]"
                                                       for i in range(len(batch))]
        labels.append(batch_labels)
    shapes = sorted({batch.shape[1:3] for batch in images})
    if len(shapes) > 1:
        sizes = ", ".join(f"{h}x{w}" for h, w in shapes)
        raise ValueError(f"the images have different sizes ({sizes}) — predict each size in "
                         "its own call")
    labels = None if any(k is None for k in labels) else np.concatenate(labels)
    return (*image_values(np.concatenate(images)), names, labels)


def image_values(images: np.ndarray) -> tuple[np.ndarray, PointSet]:
    """Images ``(B, H, W, C)`` as field values ``(B, H·W, C)`` at their pixel centres, and
    that grid (``dinet.points.grid((H, W))``, stored coarse to fine: the pixels are put in
    its order)."""
    grid = P.grid(tuple(images.shape[1:3]))
    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    return P.image_to_values(batch, grid).numpy(), grid
