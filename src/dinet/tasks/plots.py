"""PNG figures for cross-discretization evaluation: heat maps, metric-vs-points curves, panels.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no backend switch)
and written atomically. matplotlib is imported lazily so ``import dinet`` stays fast.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dinet._io import atomic_write_bytes

__all__ = ["heatmap", "label_key", "metric_vs_points", "panels", "save_figure"]

_DPI = 120
_PANEL_KINDS = ("image", "labels", "sdf")


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Render ``fig`` as PNG into memory and write it to ``path`` atomically.

    Args:
        fig: A :class:`matplotlib.figure.Figure`.
        path: Destination file; parent folders are created.

    Returns:
        The path written.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return atomic_write_bytes(path, buffer.getvalue())


def _label_colormap():
    """Black for label 0 (background), then the 19 first "tab20" colours."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    return ListedColormap([(0.0, 0.0, 0.0, 1.0), *colormaps["tab20"].colors[:19]])


def heatmap(values, row_labels: Sequence[str], col_labels: Sequence[str],
            path: str | os.PathLike, *, title: str = "", row_title: str = "",
            col_title: str = "", fmt: str = "{:.1f}", scale: float = 1.0,
            higher_is_better: bool = True) -> Path:
    """Draw an annotated heat map (e.g. train discretization x test discretization accuracy).

    Args:
        values: 2-D array-like of shape ``(len(row_labels), len(col_labels))``; NaN cells are
            drawn grey and annotated "–".
        row_labels: Labels of the rows (y axis).
        col_labels: Labels of the columns (x axis).
        path: Destination PNG file.
        title: Figure title.
        row_title: Title of the y axis.
        col_title: Title of the x axis.
        fmt: Format string for each annotation, applied to ``scale * value``.
        scale: Factor applied to values before colouring and annotating (e.g. 100 for %).
        higher_is_better: Colour map "viridis" if True, else "viridis_r".

    Returns:
        The path written.
    """
    import matplotlib
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    data = scale * np.asarray(values, dtype=float)
    rows, cols = [str(s) for s in row_labels], [str(s) for s in col_labels]
    if data.ndim != 2 or data.size == 0:
        raise ValueError(f"values must be a non-empty 2-D array, got shape {data.shape}")
    if data.shape != (len(rows), len(cols)):
        raise ValueError(f"values has shape {data.shape}, expected (len(row_labels), "
                         f"len(col_labels)) = ({len(rows)}, {len(cols)})")
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    norm = Normalize(lo, hi)
    cmap = matplotlib.colormaps["viridis" if higher_is_better else "viridis_r"]
    cmap = cmap.with_extremes(bad="lightgrey")

    label_w = 0.09 * max(len(s) for s in rows)
    width = 2.5 + label_w + max(0.9, 0.09 * max(len(s) for s in cols)) * len(cols)
    height = 1.6 + 0.5 * len(rows) + 0.07 * max(len(s) for s in cols)
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto",
                      interpolation="nearest")
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            r, g, b, _ = cmap(norm(v))
            colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            ax.text(j, i, fmt.format(v), ha="center", va="center", color=colour)
        else:
            ax.text(j, i, "–", ha="center", va="center", color="black")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30 if len(cols) > 4 else 0,
                  ha="right" if len(cols) > 4 else "center")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)


def metric_vs_points(series: Mapping[str, Mapping[int | str, float]], path: str | os.PathLike,
                     *, metric: str = "accuracy", title: str = "", scale: float = 1.0,
                     reference: tuple[int, str] | None = None) -> Path:
    """Plot a metric against the number of points, one line per label, on a log2 x axis.

    Args:
        series: Maps a label (e.g. test discretization "sobol") to a mapping from number of
            points (int or str of int) to the metric value.
        path: Destination PNG file.
        metric: Y axis label.
        title: Figure title.
        scale: Factor applied to every value (e.g. 100 for %).
        reference: Optional ``(n_points, label)``: a dashed vertical line, e.g. at the
            training resolution.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    if not series:
        raise ValueError("series is empty: expected a dict label -> {n_points: value}")
    curves = {}
    for label, points in series.items():
        if not points:
            raise ValueError(f"series[{label!r}] is empty: expected {{n_points: value}}")
        try:
            pairs = sorted((int(n), scale * float(v)) for n, v in points.items())
        except (TypeError, ValueError) as e:
            raise ValueError(f"series[{label!r}]: expected int point counts and float "
                             f"values, got {dict(points)!r}") from e
        if pairs[0][0] <= 0:
            raise ValueError(f"series[{label!r}]: point counts must be positive, got {pairs}")
        curves[str(label)] = pairs
    counts = sorted({n for pairs in curves.values() for n, _ in pairs})

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    # Beyond ten curves the default colours repeat: take twenty, and vary the markers too.
    import matplotlib

    colours = matplotlib.colormaps["tab10" if len(curves) <= 10 else "tab20"].colors
    for k, (label, pairs) in enumerate(curves.items()):
        ax.plot(*zip(*pairs, strict=True), marker="osD^v"[k // 5 % 5], label=label,
                color=colours[k % len(colours)])
    if reference is not None:
        n_ref, ref_label = reference
        ax.axvline(int(n_ref), color="grey", linestyle="--", label=str(ref_label))
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, labels=[f"{n:,}" for n in counts])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("number of points")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


def label_key(rows: Sequence[Sequence[Mapping]],
              names: Sequence[str]) -> list[tuple[int, str, tuple]]:
    """``(label, name, RGBA colour)`` of every label value drawn in the "labels" panels of
    ``rows`` that ``names`` names, in label order: the colour key of :func:`panels`."""
    cmap = _label_colormap()
    present = set()
    for row in rows:
        for panel in row:
            if panel.get("kind") == "labels":
                present.update(int(v) for v in np.unique(np.asarray(panel["image"])))
    return [(k, str(names[k]), tuple(cmap.colors[k])) for k in sorted(present)
            if 0 <= k < min(len(names), len(cmap.colors))]


def panels(rows: Sequence[Sequence[Mapping]], path: str | os.PathLike, *,
           col_titles: Sequence[str] | None = None, title: str = "",
           label_names: Sequence[str] | None = None) -> Path:
    """Draw pictures side by side, e.g. input | truth | prediction, or SDF slices.

    Args:
        rows: List of rows, each a list of panel dicts with keys ``"image"`` (2-D array
            ``(H, W)``, or ``(H, W, 3)`` RGB for kind "image"), ``"kind"`` (``"image"``:
            intensities in [0, 1]; ``"labels"``: integer class map, 0 (background) black
            and 1–19 in fixed "tab20" colours;
            ``"sdf"``: signed distance, "RdBu" with symmetric limits shared by the row's SDF
            panels and a black zero contour) and optional ``"title"``. All rows must have the
            same number of panels.
        path: Destination PNG file.
        col_titles: Optional titles above the first row, one per column.
        title: Figure title.
        label_names: a name per label value: a colour key of the labels the "labels"
            panels show is drawn under the figure (:func:`label_key`).

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    if not rows or not rows[0]:
        raise ValueError("rows is empty: expected a non-empty list of non-empty panel lists")
    n_cols = len(rows[0])
    if any(len(row) != n_cols for row in rows):
        raise ValueError(f"all rows must have the same number of panels, got "
                         f"{[len(row) for row in rows]}")
    if col_titles is not None and len(col_titles) != n_cols:
        raise ValueError(f"col_titles has {len(col_titles)} entries, expected {n_cols}")
    arrays = []
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            kind, image = panel.get("kind"), np.asarray(panel.get("image"))
            if kind not in _PANEL_KINDS:
                raise ValueError(f"panel [{r}][{c}] has kind {kind!r}, expected one of "
                                 f"{', '.join(_PANEL_KINDS)}")
            rgb = kind == "image" and image.ndim == 3 and image.shape[2] == 3
            if not (image.ndim == 2 or rgb) or image.size == 0:
                raise ValueError(f"panel [{r}][{c}] ({kind}): image must be a non-empty (H, W)"
                                 f"{' or (H, W, 3)' if kind == 'image' else ''} array, got "
                                 f"shape {image.shape}")
            arrays.append(image)

    key = label_key(rows, label_names) if label_names is not None else []
    key_rows = -(-len(key) // 4)  # a strip under the panels, four names a line
    fig = Figure(figsize=(2.6 * n_cols, 2.6 * len(rows) + (0.4 if title else 0.0)
                          + 0.3 * key_rows), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, row in enumerate(rows):
        sdfs = [np.abs(np.asarray(p["image"], float)) for p in row if p["kind"] == "sdf"]
        finite = [a[np.isfinite(a)] for a in sdfs]
        limit = max((float(a.max()) for a in finite if a.size), default=0.0) or 1.0
        for c, panel in enumerate(row):
            ax, image, kind = axes[r, c], arrays[r * n_cols + c], panel["kind"]
            common = {"origin": "upper", "interpolation": "nearest"}
            if kind == "image":
                ax.imshow(np.clip(image.astype(float), 0, 1), cmap="gray", vmin=0, vmax=1,
                          **common)
            elif kind == "labels":
                ax.imshow(image.astype(int), cmap=_label_colormap(), vmin=-0.5, vmax=19.5,
                          **common)
            else:
                sdf = image.astype(float)
                ax.imshow(sdf, cmap="RdBu", vmin=-limit, vmax=limit, **common)
                if np.any(sdf < 0) and np.any(sdf > 0):
                    xlim, ylim = ax.get_xlim(), ax.get_ylim()
                    ax.contour(sdf, levels=[0.0], colors="black", linewidths=1.0)
                    ax.set_xlim(xlim)
                    ax.set_ylim(ylim)
            heading = [col_titles[c]] if col_titles is not None and r == 0 else []
            heading += [str(panel["title"])] if panel.get("title") else []
            if heading:
                ax.set_title("\n".join(heading), fontsize=10)
            ax.set_axis_off()
    if title:
        fig.suptitle(title)
    if key:
        from matplotlib.patches import Patch

        fig.legend(handles=[Patch(color=colour, label=name) for _, name, colour in key],
                   loc="outside lower center", ncols=min(len(key), 4), frameon=False)
    return save_figure(fig, path)
