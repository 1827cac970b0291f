"""PNG figures: written atomically as valid PNGs of plausible size, inputs validated, no pyplot."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dinet.tasks.plots import heatmap, label_key, metric_vs_points, panels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path):
    """Assert ``path`` is a PNG of plausible size; return (width, height)."""
    assert path.exists()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        assert im.format == "PNG"
        width, height = im.size
    assert width > 100 and height > 100
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no leftovers
    return width, height


def _sdf(n=24, radius=0.5, shift=0.0):
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    return np.hypot(x - shift, y) - radius


def test_heatmap_writes_png_and_grows_with_rows(tmp_path):
    rng = np.random.default_rng(0)
    cols = ["grid", "sobol", "uniform"]
    small = heatmap(rng.random((2, 3)), ["grid", "sobol"], cols, tmp_path / "a" / "small.png",
                    title="accuracy (%)", row_title="train", col_title="test", scale=100)
    assert small == tmp_path / "a" / "small.png"
    big = heatmap(rng.random((6, 3)), [f"disc{i}" for i in range(6)], cols,
                  tmp_path / "big.png", higher_is_better=False)
    assert _check_png(big)[1] > _check_png(small)[1]


def test_heatmap_accepts_nan(tmp_path):
    values = [[0.9, np.nan], [np.nan, 0.5]]
    _check_png(heatmap(values, ["r0", "r1"], ["c0", "c1"], tmp_path / "nan.png", fmt="{:.2f}"))
    _check_png(heatmap([[np.nan]], ["r"], ["c"], tmp_path / "all_nan.png"))


def test_heatmap_rejects_shape_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"expected .*\(2, 3\)"):
        heatmap(np.zeros((3, 2)), ["a", "b"], ["x", "y", "z"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="2-D"):
        heatmap(np.zeros(3), ["a"], ["x", "y", "z"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_metric_vs_points(tmp_path):
    series = {"sobol": {256: 0.8, 1024: 0.9, 4096: 0.91},
              "grid": {"256": 0.7, "1024": 0.85, "4096": 0.88}}
    path = metric_vs_points(series, tmp_path / "curve.png", title="cross-resolution",
                            scale=100, metric="accuracy (%)",
                            reference=(1024, "training resolution"))
    _check_png(path)
    with pytest.raises(ValueError, match="empty"):
        metric_vs_points({}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="empty"):
        metric_vs_points({"grid": {}}, tmp_path / "empty.png")


def test_panels_all_kinds(tmp_path):
    rng = np.random.default_rng(1)
    labels = (_sdf() < 0).astype(int) * 3
    rows = [
        [{"image": rng.random((24, 24)), "kind": "image", "title": "grey"},
         {"image": labels, "kind": "labels"},
         {"image": np.roll(labels, 2, axis=1), "kind": "labels", "title": "IoU 0.8"}],
        [{"image": rng.random((24, 24, 3)), "kind": "image"},
         {"image": _sdf(), "kind": "sdf"},
         {"image": _sdf(shift=0.2), "kind": "sdf"}],
    ]
    path = panels(rows, tmp_path / "panels.png", col_titles=["input", "truth", "prediction"],
                  title="segmentation")
    _check_png(path)
    # an SDF without a zero crossing draws no contour but still works
    _check_png(panels([[{"image": _sdf() + 5, "kind": "sdf"}]], tmp_path / "one.png"))


def test_panels_draw_a_key_of_the_labels_shown(tmp_path):
    labels = np.zeros((24, 24), int)
    labels[4:10, 4:10], labels[12:20, 12:20] = 3, 7
    rows = [[{"image": labels, "kind": "labels"}, {"image": labels % 7, "kind": "labels"}]]
    names = [f"class {k}" for k in range(11)]
    key = label_key(rows, names)
    assert [(k, name) for k, name, _ in key] == [(0, "class 0"), (3, "class 3"),
                                                 (7, "class 7")]
    assert key[0][2] == (0.0, 0.0, 0.0, 1.0)  # background black, as drawn
    assert label_key(rows, names[:5]) == key[:2]  # a label without a name: not in the key
    plain = _check_png(panels(rows, tmp_path / "plain.png"))
    keyed = _check_png(panels(rows, tmp_path / "keyed.png", label_names=names))
    assert keyed[1] > plain[1]  # the key takes a strip under the panels


def test_panels_rejects_bad_input(tmp_path):
    panel = {"image": np.zeros((8, 8)), "kind": "image"}
    with pytest.raises(ValueError, match="same number of panels"):
        panels([[panel, panel], [panel]], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="image, labels, sdf") as info:
        panels([[{"image": np.zeros((8, 8)), "kind": "contour"}]], tmp_path / "bad.png")
    assert "'contour'" in str(info.value)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        panels([[{"image": np.zeros((8, 8, 3)), "kind": "sdf"}]], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="empty"):
        panels([], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_no_pyplot_imported(tmp_path):
    code = (
        "import sys\n"
        "from dinet.tasks.plots import heatmap\n"
        f"heatmap([[1.0, 2.0]], ['r'], ['a', 'b'], {str(tmp_path / 'h.png')!r})\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    _check_png(tmp_path / "h.png")
