"""A training run's folder: what ``dinet train`` writes, and how a run is resumed.

A run folder holds ``config.json`` (every setting), ``metrics.jsonl`` (one line per finished
epoch), ``model.pt`` (the last epoch's model) and ``train_state.pt`` (weights, optimizer,
schedule and epoch, with a content digest). Every file is replaced atomically and
``train_state.pt`` goes last, so a run killed anywhere resumes from the last epoch it fully
recorded, and continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .._io import (
    atomic_write_text,
    check_writable,
    pop_verified_digest,
    read_json,
    save_with_digest,
)

__all__ = ["STATE_FORMAT", "RunFolder"]

#: The ``format`` record of ``train_state.pt`` (optimizer, schedule, epoch, weights).
STATE_FORMAT = "dinet-train-state-1"


class RunFolder:
    """The folder ``path`` of a training run (checked writable when it is opened).

    Args:
        path: the run folder (``--out``).
        main: whether this process writes (rank 0 under torchrun); the others only read.
    """

    def __init__(self, path: str | Path, main: bool = True) -> None:
        self.path = check_writable(path)
        self.main = main
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.state_path = self.path / "train_state.pt"
        self.lines: list[str] = []  # metrics.jsonl, one line per finished epoch

    def previous_state(self, config: dict, defaults: dict, resume: bool,
                       free: tuple[str, ...] = ()) -> dict | None:
        """The training state to resume from (None: start afresh).

        A folder that already holds files is refused unless ``resume``, and then only when
        it is a run whose recorded config equals ``config`` except for the keys in ``free``
        (keys an older run did not record take their value from ``defaults``).
        """
        out = self.path
        if not out.exists() or not any(out.iterdir()):
            return None
        if not resume:
            raise ValueError(f"{out} already holds a run — pass --resume to continue it, or "
                             "choose another --out")
        if not self.config_path.exists():
            raise ValueError(f"{out} is not a dinet run (no config.json) — choose another --out")
        saved = read_json(self.config_path, "restore it, or start the run again in another "
                          "--out")
        differ = sorted(k for k, v in config.items()
                        if k not in free and _plain(saved.get(k, defaults[k])) != _plain(v))
        if differ:
            raise ValueError(f"{out} holds a run with other settings ({', '.join(differ)} "
                             f"differ; see {self.config_path}) — resume with the same "
                             "arguments")
        return read_state(self.state_path) if self.state_path.exists() else None

    def begin(self, config: dict, first_epoch: int) -> None:
        """Write ``config.json`` and keep the metrics of the epochs before ``first_epoch``."""
        if not self.main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, json.dumps(config, indent=1) + "\n")
        self.lines = (self.metrics_path.read_text().splitlines()[:first_epoch]
                      if self.metrics_path.exists() else [])
        self._write_metrics()

    def end_epoch(self, model, metrics: dict, state: dict, extra: dict) -> None:
        """Record a finished epoch: ``model.pt`` (with ``extra``), a metrics line, and
        ``state`` (moved to the CPU, so the run resumes on any device) last."""
        if not self.main:
            return
        model.save(self.path / "model.pt", extra=extra)
        self.lines.append(json.dumps(metrics))
        self._write_metrics()
        save_with_digest(on_cpu({"format": STATE_FORMAT, **state}), self.state_path)

    def _write_metrics(self) -> None:
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in self.lines))


def read_state(path: Path) -> dict:
    """The training state at ``path``, checked: readable, of this format, intact."""
    remedy = ("restore it from a copy, or start the run again in another --out (model.pt "
              "holds the last epoch's weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupted, or not a torch file
        raise ValueError(f"{path} cannot be read ({type(err).__name__}) — it is truncated or "
                         f"damaged; {remedy}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a {STATE_FORMAT} file of this dinet version; {remedy}")
    return pop_verified_digest(state, path, remedy)


def on_cpu(state):
    """A (nested) state dict with its tensors on the CPU: a checkpoint loads anywhere."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: on_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_cpu(v) for v in state)
    return state


def _plain(value):
    """A config value as JSON reads it back (tuples become lists, also inside dicts)."""
    return json.loads(json.dumps(value))
