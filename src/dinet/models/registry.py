"""Which models each task trains, by name: the registry ``dinet train --model`` reads.

A model is registered for a task with a builder that takes keyword arguments and returns a
:class:`~dinet.models.DIModel`; :func:`create_model` passes it every option below, so a
builder takes what it needs and ``**_`` for the rest:

- ``in_channels``, ``n_classes``: the data's input channels and target classes;
- ``base_spacing``: the finest kernel lattice step in domain units (the user's, or
  ``pixels`` pixels of the source images: ``pixels * 2 / image_size``);
- ``kernel``, ``quadrature``: the convolution kernel family and the quadrature mode;
- ``size``: the grid a discrete baseline reads (``points ** (1 / dim)`` per axis);

and then the model's own options a user set (``dinet train --model-option NAME=VALUE``),
each of them one of the names registered as its ``options`` — names the builder must not
swallow with ``**_`` but pass on.

Register your own from anywhere (no edit of dinet)::

    from dinet.models import register_model
    register_model("classify", "tiny", lambda in_channels, n_classes, **_: Tiny(...))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import DIModel

__all__ = ["ModelEntry", "create_model", "model_entry", "model_names", "register_model"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and what the training loop must know of it.

    Attributes:
        builder: ``builder(**options) -> DIModel`` (see the module docstring).
        pixels: the default finest kernel spacing, in pixels of the source images.
        grid_baseline: a discrete CNN that reads the field on its own grid only (trained
            with ``--discretization grid``, scored once on that grid).
        options: the builder's own keyword options a user may set (``--model-option``).
    """

    builder: Callable[..., DIModel]
    pixels: float = 1.0
    grid_baseline: bool = False
    options: tuple[str, ...] = ()


_MODELS: dict[str, dict[str, ModelEntry]] = {}
#: What :func:`create_model` passes every builder.
STANDARD_OPTIONS = ("in_channels", "n_classes", "base_spacing", "kernel", "quadrature", "size")


def register_model(task: str, name: str, builder: Callable[..., DIModel], *,
                   default: bool = False, pixels: float = 1.0,
                   grid_baseline: bool = False, options: tuple[str, ...] = ()) -> None:
    """Make ``name`` a model of ``task`` (``default``: the one trained when none is named;
    ``options``: the keyword options of ``builder`` beyond the standard ones that a user may
    set, see :func:`create_model`).

    Registering a name again replaces it.
    """
    if not callable(builder):
        raise TypeError(f"the builder of model {name!r} must be callable; got {builder!r}")
    clash = sorted(set(options) & set(STANDARD_OPTIONS))
    if clash:
        raise ValueError(f"model {name!r}: {', '.join(clash)} are passed to every builder; "
                         "they cannot be its own options")
    entries = _MODELS.setdefault(task, {})
    entry = ModelEntry(builder, float(pixels), bool(grid_baseline), tuple(options))
    if default:
        entries.pop(name, None)
        _MODELS[task] = {name: entry, **entries}
    else:
        entries[name] = entry


def model_names(task: str) -> tuple[str, ...]:
    """The models registered for ``task``, the default first."""
    return tuple(_MODELS.get(task, ()))


def model_entry(task: str, name: str) -> ModelEntry:
    """The registered model ``name`` of ``task``, or a ValueError naming the valid ones."""
    entries = _MODELS.get(task, {})
    if name not in entries:
        raise ValueError(f"unknown {task} model {name!r}; valid: "
                         f"{', '.join(entries) or '(none registered)'}")
    return entries[name]


def create_model(task: str, name: str, *, in_channels: int, n_classes: int, image_size: int,
                 points: int, dim: int, base_spacing: float | None = None,
                 kernel: str = "spline", quadrature: str = "weights",
                 options: Mapping[str, Any] | None = None) -> DIModel:
    """Build the model ``name`` of ``task`` for data of ``in_channels`` channels and
    ``n_classes`` classes, from ``image_size``-pixel sources read at ``points`` points in
    ``dim`` dimensions; ``options``: the model's own options (names it registered), e.g.
    ``{"spacing_input": False}`` for ``dinet-unet``."""
    entry = model_entry(task, name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        valid = ", ".join(entry.options) or "none"
        raise ValueError(f"the {task} model {name!r} has no option "
                         f"{', '.join(map(repr, unknown))}; its options: {valid}")
    spacing = base_spacing or entry.pixels * 2.0 / image_size
    try:
        return entry.builder(in_channels=in_channels, n_classes=n_classes,
                             base_spacing=spacing, kernel=kernel, quadrature=quadrature,
                             size=round(points ** (1.0 / dim)), **options)
    except (TypeError, RuntimeError, MemoryError) as err:  # e.g. a builder's own keyword
        if not options:  # of another type, or more channels or grid nodes than fit in memory
            raise
        raise ValueError(f"the {task} model {name!r} cannot take the options {options}: "
                         f"{str(err).splitlines()[0]}") from None
