"""Argument types and shared options of the command line: every value is checked at parse
time, so a bad flag is an argparse error before any work starts."""

from __future__ import annotations

import argparse
import json
import math
import re

__all__: list[str] = []  # internal to dinet.cli


def int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, described as ``what`` in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
#: The most item indices ``--items`` takes.
MAX_ITEMS = 10**8
non_negative_int = int_at_least(0, "an integer >= 0")


def odd_positive_int(text: str) -> int:
    """An argparse type: an odd positive integer (a kernel size)."""
    value = positive_int(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"expected an odd kernel size, got {value}")
    return value


def float_above(minimum: float, inclusive: bool, what: str):
    """An argparse type: a finite float > ``minimum`` (>= when ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


positive_float = float_above(0.0, False, "a positive number")
non_negative_float = float_above(0.0, True, "a number >= 0")
DEVICE_PATTERN = re.compile(r"(cpu|cuda|mps|xpu)(:\d+)?")


def device(text: str) -> str:
    """An argparse type: a torch device string such as cpu, cuda or cuda:1."""
    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a torch device such as cpu, cuda or cuda:1; got {text!r}")
    return text


def number_range(kind, low: float, high: float, what: str):
    """An argparse type: ``MIN,MAX`` of ``kind`` (int or float) with low <= MIN <= MAX <= high,
    described as ``what`` in errors."""

    def parse(text: str) -> tuple:
        parts = text.split(",")
        try:
            lo, hi = (kind(v) for v in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            lo = hi = None
        if lo is None or not low <= lo <= hi <= high:
            raise argparse.ArgumentTypeError(f"expected MIN,MAX with {what}; got {text!r}")
        return lo, hi

    return parse


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 4096,16384; got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers; got {text!r}")
    return values


def item_list(text: str):
    """An argparse type: item indices (a numpy array), ``A:B`` (A to B - 1) or
    comma-separated (``0,5,9``) or both (``0:4,10``); at most :data:`MAX_ITEMS` in all."""
    import numpy as np

    parts, total = [], 0
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            first, colon, last = part.partition(":")
            start, stop = int(first), int(last) if colon else int(first) + 1
            total += stop - start
            if start < 0 or stop <= start or total > MAX_ITEMS:
                raise ValueError
            parts.append(np.arange(start, stop))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected item indices >= 0 such as 0:16 or 3,5,9 (at most {MAX_ITEMS:,}); got "
            f"{text!r}") from None
    if not parts:
        raise argparse.ArgumentTypeError(f"expected item indices such as 0:16; got {text!r}")
    return np.concatenate(parts)


def model_option(text: str) -> tuple[str, object]:
    """An argparse type: ``NAME=VALUE``, VALUE read as JSON when it is JSON (``false``, ``3``,
    ``[16,32,64,128]``), else as the text itself (``linear``)."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE such as spacing_input=false; got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def bench_options(parser: argparse.ArgumentParser, repeats: int, out: str) -> None:
    """The options every benchmark suite shares."""
    parser.add_argument("--channels", type=positive_int, default=64,
                        help="input = output channels (default: 64)")
    parser.add_argument("--batch", type=positive_int, default=8,
                        help="batch size (default: 8)")
    parser.add_argument("--repeats", type=positive_int, default=repeats,
                        help=f"timed runs after one warm-up; the median is reported "
                        f"(default: {repeats})")
    parser.add_argument("--device", type=device, default="cpu",
                        help="torch device: cpu, cuda, cuda:N (default: cpu)")
    json_out(parser, out)


def json_out(parser: argparse.ArgumentParser, path: str) -> None:
    """A benchmark's ``--out``: the JSON file it writes (default ``path``)."""
    parser.add_argument("--out", default=path, help=f"JSON output path (default: {path})")


def kinds_help() -> str:
    """The registered discretizations, for help texts (``dinet.tasks.discretize``)."""
    from ..tasks.discretize import FILE_PREFIX, MIX, describe

    text = (f"{describe()}; {FILE_PREFIX}FILE: your own (N, d) coordinates (key 'coords', "
            f"optional 'weights'; Voronoi weights otherwise); A{MIX}B{MIX}...: a mixture, each "
            f"draw one of the kinds (e.g. sobol{MIX}random; repeat a kind to draw it more)")
    return text.replace("%", "%%")  # argparse formats help with %
