"""What every dinet model shares: recorded constructor arguments, checkpoints, quadrature.

A model subclasses :class:`DIModel` and passes its constructor arguments to
``DIModel.__init__`` as keywords; they are kept in ``model.config`` (plain JSON types) and
written with the weights by :meth:`DIModel.save`, so :meth:`DIModel.from_checkpoint` rebuilds
the model exactly. Checkpoints hold only plain types and tensors, so they load with
``torch.load(..., weights_only=True)`` (no arbitrary code runs when a file is read).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._cache import LRUCache
from .._io import pop_verified_digest, save_with_digest
from ..points import PointSet
from ..points.checks import check_count

__all__ = ["DIModel", "QUADRATURES", "check_counts", "check_flag", "check_quadrature", "load_model",
           "unweighted"]

CHECKPOINT_FORMAT = "dinet-model"
QUADRATURES = ("weights", "none")

# Every DIModel subclass, by class name, so a checkpoint can name the class that rebuilds it.
MODEL_CLASSES: dict[str, type[DIModel]] = {}

_UNWEIGHTED = LRUCache(64)


def check_quadrature(quadrature) -> str:
    """``quadrature`` must be one of :data:`QUADRATURES`."""
    if quadrature not in QUADRATURES:
        raise ValueError(
            f"unknown quadrature {quadrature!r}; valid: {', '.join(map(repr, QUADRATURES))} "
            "('weights' integrates with the point set's quadrature weights, 'none' reproduces "
            "the paper's unweighted sums)"
        )
    return quadrature


def check_counts(values, name: str) -> list[int]:
    """``values`` must be a non-empty list or tuple of positive integers (e.g. widths)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list of positive integers, e.g. "
                         f"[32, 64]; got {values!r}")
    return [check_count(v, name) for v in values]


def check_flag(value, name: str) -> bool:
    """``value`` must be True or False (not a string such as 'no')."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false; got {value!r}")
    return value


def unweighted(points: PointSet) -> PointSet:
    """The same coordinates with uniform weights 2^d / N: the paper's unweighted sums.

    Coarser levels of the result stay uniform (``weight_method="uniform"``). A set whose
    weights are already uniform 2^d / N is returned as it is, so ``quadrature="none"`` and
    ``"weights"`` agree exactly there. Results are cached by the input's content digest.
    """
    return _UNWEIGHTED.get_or_build(points.digest, lambda: _unweighted(points))


def _unweighted(points: PointSet) -> PointSet:
    n, d = len(points), points.dim
    uniform = 2.0**d / n
    weights = points.weights
    if points.weight_method in ("uniform", "lattice") and bool(
        torch.allclose(weights, torch.full_like(weights, uniform), rtol=1e-6, atol=0.0)
    ):
        result = points
    else:
        result = PointSet(points.coords, torch.full_like(weights, uniform), points.kind,
                          points.shape, weight_method="uniform")
    return result


def _check_jsonable(config: dict[str, Any], owner: str) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{owner} constructor arguments must be plain JSON types (numbers, strings, lists) "
            f"to be saved in a checkpoint; got {config!r} ({err})"
        ) from None


class DIModel(nn.Module):
    """Base class of dinet models: records its constructor arguments and saves checkpoints.

    Subclasses call ``super().__init__(**their_arguments)``. Every model accepts
    ``quadrature="weights" | "none"`` (see :meth:`prepare_points`).

    Attributes:
        config: the constructor arguments as plain JSON types.
        FORMAT_VERSION: the checkpoint layout version of this class; a file written with
            another version is refused with a clear error.
    """

    FORMAT_VERSION = 1

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        MODEL_CLASSES[cls.__name__] = cls

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = _check_jsonable(config, type(self).__name__)
        self.quadrature = check_quadrature(config.get("quadrature", "weights"))

    def prepare_points(self, points: PointSet) -> PointSet:
        """The point set the layers see: ``points`` itself, or :func:`unweighted` (points)
        when the model was built with ``quadrature="none"``."""
        if not isinstance(points, PointSet):
            raise ValueError(
                f"points must be a dinet.points.PointSet; got {type(points).__name__}"
            )
        return unweighted(points) if self.quadrature == "none" else points

    def start_from(self, source: DIModel) -> None:
        """Copy ``source``'s weights into this model (``dinet train --init``). ``source`` must
        be the same class built with the same arguments; a class that can also start from
        another model (an exact conversion) overrides this. Raises ValueError otherwise."""
        if type(source) is not type(self) or source.config != self.config:
            raise ValueError(f"its model ({type(source).__name__} {source.config}) is not this "
                             f"one ({type(self).__name__} {self.config})")
        self.load_state_dict(source.state_dict())

    # --- checkpoints ---------------------------------------------------------------------
    @classmethod
    def upgrade_config(cls, config: dict[str, Any], version) -> dict[str, Any] | None:
        """The constructor arguments that rebuild a checkpoint of format ``version`` with
        this class, or ``None`` when this version cannot read it. A class whose defaults
        change raises :attr:`FORMAT_VERSION` and spells out the old defaults here."""
        return config if version == cls.FORMAT_VERSION else None

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write ``{"format", "format_version", "class", "config", "state_dict", "extra",
        "sha256"}`` to ``path`` atomically (a temporary file in the same folder, then
        ``os.replace``); ``sha256`` is the :func:`~dinet._io.content_digest` of the rest,
        which loading verifies.

        ``extra`` (e.g. training metadata) must hold plain types and tensors only.
        """
        path = Path(path)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "format_version": self.FORMAT_VERSION,
            "class": type(self).__name__,
            "config": self.config,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "extra": extra,
        }
        save_with_digest(payload, path)
        return path

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location="cpu") -> DIModel:
        """Rebuild the model saved at ``path`` and load its weights.

        Raises ValueError (naming the file and the fix) for a file that is not a dinet
        model checkpoint, is truncated or damaged (its recorded SHA-256 does not match), was
        written with another format version, or holds
        a model of another class than ``cls``.
        """
        payload = read_checkpoint(path, map_location)
        name = payload["class"]
        if cls is not DIModel and name != cls.__name__:
            raise ValueError(
                f"{path} holds a {name}, not a {cls.__name__}; use {name}.from_checkpoint or "
                "dinet.models.load_model"
            )
        model_cls = MODEL_CLASSES.get(name)
        if model_cls is None:
            raise ValueError(
                f"{path} holds an unknown model class {name!r}; known: "
                f"{', '.join(sorted(MODEL_CLASSES))} — import the module that defines it "
                "first (a model of your own code; on the command line `dinet --plugin "
                "MODULE`), or was it written by a newer dinet?"
            )
        config = model_cls.upgrade_config(payload["config"], payload["format_version"])
        if config is None:
            raise ValueError(
                f"{path} is a {name} checkpoint of format version {payload['format_version']}, "
                f"but this dinet reads version {model_cls.FORMAT_VERSION} — load it with the "
                "dinet version that wrote it, or retrain"
            )
        try:
            model = model_cls(**config)
            model.load_state_dict(payload["state_dict"])
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"{path}: cannot rebuild {name} from its recorded config "
                f"{payload['config']!r}: {err}"
            ) from None
        model.checkpoint_extra = payload["extra"]
        if isinstance(map_location, (str, torch.device)):
            model = model.to(map_location)
        return model


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """The checked contents of a dinet model checkpoint (see :meth:`DIModel.save`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, corrupted, or not a torch file at all
        raise ValueError(
            f"{path} cannot be read as a dinet model checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no details'}) — it may be truncated "
            "or corrupted; save the model again with model.save(path)"
        ) from None
    keys = ("format_version", "class", "config", "state_dict")
    if (not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT
            or any(k not in payload for k in keys)):
        raise ValueError(
            f"{path} is not a dinet model checkpoint (no 'format': '{CHECKPOINT_FORMAT}' "
            "record) — write checkpoints with model.save(path), or load a bare state dict "
            "with model.load_state_dict(torch.load(path))"
        )
    pop_verified_digest(payload, path, "restore it from a copy, or retrain / save the model "
                        "again")
    payload.setdefault("extra", None)
    return payload


def load_model(path: str | os.PathLike, map_location="cpu") -> DIModel:
    """Rebuild whichever dinet model the checkpoint at ``path`` holds."""
    return DIModel.from_checkpoint(path, map_location)
