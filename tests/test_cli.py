"""The command line: help, validation, and a tiny `dinet bench conv` run end to end."""

from __future__ import annotations

import argparse
import json

import pytest

from dinet.cli import build_parser, main


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
     (["bench", "nope"], "invalid choice"),
     (["bench", "conv", "--device", "gpu0"], "torch device such as cpu, cuda or cuda:1"),
     (["train", "--fields", "f", "--out", "o", "--lr", "-1"], "positive number"),
     (["train", "--fields", "f", "--out", "o", "--lr", "nan"], "positive number"),
     (["train", "--fields", "f", "--out", "o", "--weight-decay", "-0.1"], "number >= 0"),
     (["train", "--fields", "f", "--out", "o", "--base-spacing", "0"], "positive number"),
     (["train", "--fields", "f", "--out", "o", "--seed", "-3"], "integer >= 0"),
     (["train", "--fields", "f", "--out", "o", "--task", "detect"],
      "choose from 'classify', 'segment', 'sdf'"),
     (["train", "--fields", "f", "--out", "o", "--device", "tpu"],
      "choose from 'auto', 'cpu', 'cuda'"),
     (["fit", "--source", "digits", "--out", "o", "--arch", "mlp"],
      "choose from 'siren', 'fourier'"),
     (["fit", "--source", "digits", "--out", "o", "--target-psnr", "0"], "positive number"),
     (["fit", "--source", "digits"], "the following arguments are required: --out"),
     (["fit", "--source", "scenes", "--out", "o", "--scene-scale", "0.9,0.5"],
      "expected MIN,MAX with 0 < MIN <= MAX <= 1; got '0.9,0.5'"),
     (["fit", "--source", "scenes", "--out", "o", "--scene-items", "2"],
      "expected MIN,MAX with 1 <= MIN <= MAX <= 64"),
     (["fit", "--source", "scenes", "--out", "o", "--scene-items", "1,x"], "MIN,MAX"),
     (["train", "--fields", "f", "--out", "o", "--model-option", "widths"], "NAME=VALUE"),
     (["eval", "--run", "r", "--fields", "f", "--points", "0"], "positive integers"),
     (["predict", "--run", "r", "--fields", "f", "--items", "3:1"], "item indices >= 0"),
     (["predict", "--run", "r", "--fields", "f", "--items", "0:100000001"], "at most 100,000,000"),
     (["predict", "--run", "r", "--fields", "f", "--items", "-1"], "item indices >= 0"),
     (["predict", "--run", "r"], "one of the arguments --fields --samples --images is required")],
)
def test_bad_flags_exit_non_zero_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err


def _commands(parser, path=()):
    """Every (sub)command's parser with its argv prefix, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_command_and_flag_has_help(capsys):
    parser = build_parser()
    commands = list(_commands(parser))
    assert len(commands) >= 12  # bench ×7, fit, train, eval, demo, report, experiment ×2
    for path, sub in commands:
        for action in sub._actions:
            if action.dest != "help" and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"dinet {' '.join(path)} {action.option_strings} has no help"
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith("usage: dinet")


def test_choices_come_from_the_library(capsys):
    """Every CLI choice is read from the registry or constant that owns it."""
    from dinet.distributed import DEVICES
    from dinet.fields import FIELD_ARCHS
    from dinet.models import QUADRATURES
    from dinet.nn import kernel_families
    from dinet.tasks import discretizations, task_names

    parser = build_parser()
    actions = {(cmd, a.dest): a for cmd, sub in parser._subparsers._group_actions[0]
               .choices.items() for a in sub._actions}
    assert tuple(actions["fit", "arch"].choices) == tuple(FIELD_ARCHS)
    assert tuple(actions["train", "task"].choices) == task_names() == ("classify", "segment", "sdf")
    assert tuple(actions["train", "kernel"].choices) == kernel_families()
    assert tuple(actions["train", "quadrature"].choices) == QUADRATURES
    assert tuple(actions["train", "device"].choices) == DEVICES
    assert tuple(actions["fit", "device"].choices) == DEVICES
    assert all(kind in actions["train", "discretization"].help for kind in discretizations())


def test_missing_inputs_are_errors_not_substitutes(tmp_path, capsys):
    assert main(["fit", "--source", f"npz:{tmp_path / 'no.npz'}", "--out",
                 str(tmp_path / "ds")]) == 2
    assert "no file at" in capsys.readouterr().err
    assert main(["demo", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")]) == 2
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists() and not (tmp_path / "d").exists()


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
