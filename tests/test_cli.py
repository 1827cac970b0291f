"""The command line: help, validation, and a tiny `dinet bench conv` run end to end."""

from __future__ import annotations

import json

import pytest

from dinet.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "bench" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [(["bench", "conv", "--sizes", "-4"], "positive"),
     (["bench", "conv", "--sizes", "abc"], "comma-separated"),
     (["bench", "conv", "--batch", "0"], "positive integer"),
     (["bench", "conv", "--kernel-size", "4"], "odd"),
     (["bench", "nope"], "invalid choice")],
)
def test_bad_flags_exit_non_zero_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err


def test_non_square_size_is_an_error(tmp_path, capsys):
    assert main(["bench", "conv", "--sizes", "1000", "--out", str(tmp_path / "r.json")]) == 2
    assert "perfect square" in capsys.readouterr().err


def test_bench_conv_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "conv.json"
    code = main(["bench", "conv", "--sizes", "256", "--channels", "4", "--batch", "2",
                 "--repeats", "1", "--out", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    (row,) = payload["results"]
    assert row["n"] == 256 and row["grid"] == [16, 16]
    assert row["dinet_fwd_bwd_s"] > 0 and row["conv2d_fwd_bwd_s"] > 0
    assert row["ratio"] == pytest.approx(row["dinet_fwd_bwd_s"] / row["conv2d_fwd_bwd_s"])
    assert row["nnz"] > 0
    assert payload["machine"]["torch"]
    assert "| 256 |" in capsys.readouterr().out


def test_bench_layers_writes_every_layer(tmp_path, capsys):
    out = tmp_path / "layers.json"
    code = main(["bench", "layers", "--points", "256", "--channels", "8", "--batch", "2",
                 "--repeats", "1", "--out", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    names = [r["layer"] for r in payload["results"]]
    assert names[0].startswith("DIConv spline") and any("mlp" in n for n in names)
    assert payload["results"][0]["ratio_to_spline_conv"] == pytest.approx(1.0)
    assert all(r["fwd_bwd_s"] > 0 for r in payload["results"])
    assert "DIMaxPool" in capsys.readouterr().out
