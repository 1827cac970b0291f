"""The ``dinet`` command line: the only package that parses arguments.

One module per command group (:mod:`~dinet.cli.fit`, :mod:`~dinet.cli.runs` for train, eval
and report, :mod:`~dinet.cli.experiments` for demo and experiment, :mod:`~dinet.cli.bench`);
each adds its parsers and binds every command's handler with ``set_defaults(handler=...)``.
Every choice is read from the registry or constant that owns it; a handler maps the flags
onto a library function and prints.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from . import bench, experiments, fit, runs

__all__ = ["build_parser", "load_plugin", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``dinet`` argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="dinet",
        description="Discretization-invariant deep learning on neural fields (DI-Net).",
    )
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a module name, or a .py file) before anything "
                        "else, so the tasks, models, kernel families and discretizations it "
                        "registers are choices of every command (repeat for more; give it "
                        "before the command)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (bench, fit, runs, experiments):
        group.add_parsers(commands)
    return parser


def load_plugin(name: str) -> None:
    """Import ``name``: a module on the path (``mypackage.models``) or a ``.py`` file, run
    once per process. A missing module or file is a ValueError naming it; an error inside
    the plugin is the plugin's and propagates as it is."""
    path = Path(name)
    if name.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ValueError(f"--plugin {name}: no such file")
        key = "dinet_plugin_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        if key in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(key, path)
        if spec is None:  # a file Python cannot import (not a .py source)
            raise ValueError(f"--plugin {name}: not a Python source file — pass a .py file "
                             "or a module name on the Python path")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
        return
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
            raise  # the plugin itself imports something missing: its own traceback
        raise ValueError(f"--plugin {name}: {err} (a module on the Python path, or a .py "
                         "file)") from None


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; every failure is one line on stderr and exit 2.
    ``--plugin MODULE`` flags before the command are imported first, so the parser's
    choices include what they register."""
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins, _ = _plugin_parser().parse_known_args(_before_command(argv))
    try:
        for name in plugins.plugin:
            load_plugin(name)
    except ValueError as err:
        print(f"dinet: error: {err}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, OSError) as err:  # OSError: the file system refused (named in it)
        print(f"dinet: error: {err}", file=sys.stderr)
        return 2
    return 0


def _plugin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--plugin", action="append", default=[])
    return parser


def _before_command(argv: list[str]) -> list[str]:
    """The global options: what comes before the first word that is not an option's."""
    for i, word in enumerate(argv):
        if not word.startswith("-") and (i == 0 or argv[i - 1] != "--plugin"):
            return argv[:i]
    return argv
