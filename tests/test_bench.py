"""The benchmark suites' peers and plumbing (timings themselves are never asserted)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import dinet.points as P
from dinet.bench.released import ReleasedDIConv, released_table_bytes
from dinet.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_released_conv_is_conv2d_inside_the_grid():
    """On a grid of spacing h every full window holds exactly the k×k taps, so the plain
    mean times k² is conv2d's sum; border pixels (partial windows) differ by design."""
    torch.manual_seed(0)
    side, k = 10, 3
    points = P.grid((side, side))
    conv = ReleasedDIConv(2, 3, k, spacing=2 / side)
    img = torch.randn(2, 2, side, side)
    y = conv(P.image_to_values(img, points), points)
    weight = conv.weight.detach().reshape(k, k, 2, 3).permute(3, 2, 0, 1)
    ref = F.conv2d(img, weight, conv.bias.detach(), padding=1)
    got = P.values_to_image(y.detach(), points)
    torch.testing.assert_close(got[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_released_conv_gradient_matches_autograd():
    """The hand-written backward of the dense taps equals autograd through the dense
    matrices (float64, small N)."""
    torch.manual_seed(0)
    points = P.sobol(64, 2, seed=0)
    conv = ReleasedDIConv(2, 2, 3, spacing=0.3).double()
    x = torch.randn(2, 64, 2, dtype=torch.float64, requires_grad=True)
    conv(x, points).square().sum().backward()
    tap, inv = conv.tables(points, points)
    z = torch.stack([((tap == b).double() * inv.double()[:, None]) for b in range(9)])
    x2 = x.detach().clone().requires_grad_(True)
    y = torch.einsum("kij,bjc,kco->bio", z, x2, conv.weight.detach()) + conv.bias.detach()
    y.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_released_conv_builds_its_tables_on_the_inputs_device():
    """The peer's tables follow the values onto their device (it built them on the CPU
    and crashed beside CUDA inputs); the meta device stands in for a GPU here."""
    conv = ReleasedDIConv(3, 4, 3, spacing=0.1).to("meta")
    points = P.sobol(64, 2, seed=0)
    y = conv(torch.randn(2, 64, 3, device="meta"), points)
    assert y.device.type == "meta" and y.shape == (2, 64, 4)
    tap, inv = conv.tables(points, points, "meta")
    assert tap.device.type == inv.device.type == "meta"


def test_released_table_bytes_grows_with_pairs():
    assert released_table_bytes(65536, 65536) > 30 * 2**30  # the table that cannot fit
    assert released_table_bytes(100, 100) == 100 * 100 * 15


def test_bench_all_quick_writes_every_suite(tmp_path, capsys):
    assert main(["bench", "all", "--quick", "--out-dir", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    for name in ("conv", "layers", "fit", "train-step", "scaling"):
        assert f"## {name}" in summary
    conv = json.loads((tmp_path / "conv.json").read_text())["results"][0]
    assert {p["name"] for p in conv["peers"]} == {"released", "disco"}
    released = next(p for p in conv["peers"] if p["name"] == "released")
    assert released["fwd_bwd_s"] > 0 and released["dinet_speedup"] > 0
    assert conv["grid_ratio"] > 0
    scaling = json.loads((tmp_path / "scaling.json").read_text())
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert {r["workload"] for r in scaling["results"]} == {
        "conv 2-D", "conv 3-D", "classifier dinet-res"}
    step = json.loads((tmp_path / "train_step.json").read_text())["results"][0]
    assert 0 < step["redraw_share"] < 1 and step["samples_per_s"] > 0


@pytest.mark.parametrize("argv,message", [
    (["bench", "scaling", "--max-2d", "8"], "at least 10"),
    (["bench", "train-step", "--batch", "0"], "positive integer"),
    (["bench", "fit", "--n", "-1"], "positive integer"),
])
def test_bench_flags_are_validated(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_gpu_suite_summary_slices_utilisation_by_phase(tmp_path):
    """benchmarks/gpu_summary.py (run by benchmarks/gpu_suite.sh on a GPU machine): each
    phase's throughput and the mean of the utilisation samples inside its window."""
    import datetime
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "gpu_summary", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_summary.py")
    summary_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary_module)

    def stamp(text):
        return datetime.datetime.strptime(text, "%Y/%m/%d %H:%M:%S.%f").timestamp()

    (tmp_path / "card.csv").write_text("NVIDIA H200, 143771 MiB, 580.1\n")
    (tmp_path / "util.csv").write_text(
        "2026/11/30 03:00:00.000, 5\n2026/11/30 03:00:00.250, 80\n"
        "2026/11/30 03:00:01.000, 90\n2026/11/30 03:00:09.000, 40\ntorn line\n")
    (tmp_path / "phases.tsv").write_text(
        f"check\t{stamp('2026/11/30 03:00:00.000')}\t{stamp('2026/11/30 03:00:00.100')}\t0\n"
        f"fit-train\t{stamp('2026/11/30 03:00:00.200')}\t{stamp('2026/11/30 03:00:02.200')}"
        "\t6000\n")
    summary = summary_module.summarise(tmp_path)
    check, fit = summary["phases"]
    assert check["gpu_busy_mean"] == 5 and "rate" not in check
    assert fit["gpu_busy_mean"] == 85 and fit["rate"] == pytest.approx(3000)
    assert "| fit-train | 2.0 | 3,000 fields/s | 85% |" in summary_module.markdown(summary)
