"""How ``dinet predict`` shows a :class:`~dinet.tasks.Predictor`'s answers: lines for the
terminal (:func:`summary_lines`), a file of every answer (:func:`write_predictions`) and a
picture of the first items (:func:`draw_predictions`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes, atomic_write_text
from ..points import PointSet
from .predict import Predictor

__all__ = ["draw_predictions", "render", "summary_lines", "write_predictions"]


def render(values: np.ndarray, coords, shape: tuple[int, int]) -> np.ndarray:
    """Values ``(N,)`` or ``(N, C)`` at 2-D points ``coords`` ``(N, 2)`` drawn on the pixel
    centres of ``shape``, each pixel taking the value of its nearest point (exact for a grid
    of that shape): ``(H, W)``, or ``(H, W, 3)`` for three channels (else the first)."""
    from scipy.spatial import cKDTree

    centres = [(2 * np.arange(n) + 1) / n - 1 for n in shape]  # coords[:, k] = array axis k
    pixels = np.stack(np.meshgrid(*centres, indexing="ij"), -1).reshape(-1, len(shape))
    _, nearest = cKDTree(np.asarray(coords, dtype=np.float64)).query(pixels)
    picture = np.asarray(values)[nearest]
    picture = picture if picture.ndim == 1 or picture.shape[-1] == 3 else picture[:, 0]
    return picture.reshape(*shape, *picture.shape[1:])


def draw_predictions(path: str | os.PathLike, result: dict[str, np.ndarray], values: np.ndarray,
                     points: PointSet, predictor: Predictor, names: list[str] | None = None,
                     shape: tuple[int, int] | None = None, items: int = 8,
                     title: str | None = None) -> Path:
    """A PNG of the first ``items`` items (2-D tasks): each input drawn on a pixel grid
    (``shape``; default the training images' grid, else 64 × 64), under its class and
    probability (classify, four to a row) or beside its labels at the query points
    (segment, one item a row)."""
    from .plots import panels

    if predictor.dim != 2:
        raise ValueError(f"--picture draws 2-D inputs; the {predictor.task.name} task is "
                         f"{predictor.dim}-D — read the answers from --out")
    shape = tuple(shape) if shape else (predictor.size,) * 2 if predictor.size else (64, 64)
    label, names = result.get("label"), names or [f"item {i}" for i in range(len(values))]
    per_item = label is not None and label.ndim == 1
    items = min(len(values), items)
    columns = items if items <= 5 or not per_item else 4  # classify: up to four a row
    coords, cells = points.coords.numpy(), []
    for i in range(items - items % columns if per_item else items):
        cell = [{"image": render(values[i], coords, shape), "kind": "image", "title": names[i]}]
        if per_item:
            cell[0]["title"] += (f"\n{_name(predictor.class_names, int(label[i]))} "
                                 f"{result['probability'][i, label[i]]:.0%}")
        elif label is not None:
            found, counts = np.unique(label[i], return_counts=True)
            top = found[np.argsort(-counts)][:3]
            cell.append({"kind": "labels", "title": ", ".join(
                _name(predictor.class_names, int(k)) for k in top),
                "image": render(label[i].reshape(-1), result["query_coords"].reshape(-1, 2),
                                shape)})
        cells.append(cell)
    if per_item:  # one panel an item: `columns` items a row
        cells = [sum(cells[r:r + columns], []) for r in range(0, len(cells), columns)]
    queries = result["query_coords"].size // 2 if "query_coords" in result else 0
    titles = (["input", f"labels ({queries:,} query points)"]
              if label is not None and not per_item else None)
    return panels(cells, path, col_titles=titles, label_names=predictor.class_names,
                  title=title or f"{predictor.run.name}: {len(points):,} {points.kind} points")


def _name(names, label: int) -> str:
    return names[label] if names and label < len(names) else str(label)


def _class(names, label: int) -> str:
    return f"{_name(names, label)} ({label})" if names and label < len(names) else str(label)


def summary_lines(result: dict[str, np.ndarray], class_names=None,
                  names: list[str] | None = None, show: int = 10) -> list[str]:
    """A few lines per item for the terminal: the class and its probability; the share of
    each label among the query points; or the range of a numeric output."""
    label = result.get("label")
    count = len(next(iter(result.values())))
    lines = []
    for i in range(min(count, show)):
        head = (names[i] if names else f"item {i}") + ": "
        if label is not None and label.ndim == 1:
            p = result["probability"][i, label[i]]
            lines.append(f"{head}{_class(class_names, int(label[i]))}, probability {p:.1%}")
        elif label is not None:
            found, counts = np.unique(label[i], return_counts=True)
            order = np.argsort(-counts)[:4]
            lines.append(head + ", ".join(f"{_class(class_names, int(found[k]))} "
                                          f"{counts[k] / label[i].size:.1%}" for k in order)
                         + (" ..." if len(found) > 4 else ""))
        else:
            key = next(k for k in result if k != "query_coords")
            v = result[key][i]
            lines.append(f"{head}{key} min {v.min():.4g}, mean {v.mean():.4g}, max "
                         f"{v.max():.4g}")
    if count > show:
        lines.append(f"... {count - show:,} more items")
    return lines


def write_predictions(path: str | os.PathLike, result: dict[str, np.ndarray],
                      class_names=None, names: list[str] | None = None) -> Path:
    """Write ``result`` (and the class names, and the items' names: dataset indices or file
    names) to ``.npz`` (the arrays) or ``.json`` (lists; ``class`` per item where the
    labels have names)."""
    path = Path(path)
    extra = {}
    if class_names:
        extra["class_names"] = np.array(class_names)
    if names:
        extra["items"] = np.array(names)
    if path.suffix == ".npz":
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **result, **extra)
        return atomic_write_bytes(path, buffer.getvalue())
    if path.suffix == ".json":
        doc = {k: v.tolist() for k, v in {**result, **extra}.items()}
        label = result.get("label")
        if class_names and label is not None and label.ndim == 1:
            doc["class"] = [_name(class_names, int(k)) for k in label]
        return atomic_write_text(path, json.dumps(doc) + "\n")
    raise ValueError(f"--out {path}: expected a .npz or .json file name")
