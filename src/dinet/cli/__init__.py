"""The ``dinet`` command line: the only package that parses arguments.

One module per command group (:mod:`~dinet.cli.fit`, :mod:`~dinet.cli.runs` for train, eval
and report, :mod:`~dinet.cli.experiments` for demo and experiment, :mod:`~dinet.cli.bench`);
each adds its parsers and binds every command's handler with ``set_defaults(handler=...)``.
Every choice is read from the registry or constant that owns it; a handler maps the flags
onto a library function and prints.
"""

from __future__ import annotations

import argparse
import sys

from . import bench, experiments, fit, runs

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``dinet`` argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="dinet",
        description="Discretization-invariant deep learning on neural fields (DI-Net).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (bench, fit, runs, experiments):
        group.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; every failure is one line on stderr and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, OSError) as err:  # OSError: the file system refused (named in it)
        print(f"dinet: error: {err}", file=sys.stderr)
        return 2
    return 0
