"""Named discretizations of the domain, drawn reproducibly for training and evaluation.

One registry that ``dinet train --discretization``, ``dinet eval --discretizations`` and the
CLI's help read their choices from. Add a kind with :func:`register_discretization`; a
user's own coordinates are the kind ``npz:FILE``; ``A+B+...`` is a mixture of registered kinds
(each seed draws one of them; see :func:`components`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import points as P
from .._io import read_arrays
from .._memory import available_memory, format_bytes

__all__ = [
    "FILE_PREFIX",
    "MIX",
    "check_discretization",
    "components",
    "discretizations",
    "fixed_points",
    "is_randomised",
    "make_points",
    "point_sets",
    "register_discretization",
]

#: ``npz:FILE`` — a user's point set: an ``(N, d)`` array (``coords`` or the only array),
#: optional ``weights`` ``(N,)``; without weights, their Voronoi cells (``from_coords``).
FILE_PREFIX = "npz:"

#: ``A+B+...`` — a mixture: each seed draws one of the kinds, uniformly (name a kind twice
#: to draw it twice as often).
MIX = "+"


@dataclass(frozen=True)
class _Kind:
    make: Callable[[int, int, int | None], P.PointSet]  # (n, dim, seed) -> points
    randomised: bool
    help: str


_KINDS: dict[str, _Kind] = {}


def register_discretization(name: str, make: Callable[[int, int, int | None], P.PointSet], *,
                            randomised: bool = True, help: str = "") -> None:
    """Make ``make(n, dim, seed)`` available as the discretization ``name`` everywhere
    (training, evaluation, the CLI). ``randomised``: a fresh draw per seed (``False``: the
    same points whatever the seed, like ``grid``)."""
    if not isinstance(name, str) or not name or any(c in name for c in ":," + MIX):
        raise ValueError(f"a discretization name is a non-empty string without ':', ',' or "
                         f"'{MIX}'; got {name!r}")
    if not callable(make):
        raise ValueError(f"make must be callable (n, dim, seed) -> PointSet; got {make!r}")
    _KINDS[name] = _Kind(make, bool(randomised), help)


def discretizations() -> tuple[str, ...]:
    """Every registered discretization name (``npz:FILE`` is accepted besides these)."""
    return tuple(_KINDS)


def describe() -> str:
    """One line per kind, for help texts."""
    return "; ".join(f"{name}: {kind.help}" for name, kind in _KINDS.items())


def components(kind: str) -> tuple[str, ...]:
    """The kinds a discretization draws from: ``("sobol", "random")`` for the mixture
    ``"sobol+random"``, ``(kind,)`` for any other."""
    if isinstance(kind, str) and MIX in kind and not _is_file(kind):
        return tuple(kind.split(MIX))
    return (kind,)


def check_discretization(kind) -> str:
    """``kind`` if it names a registered discretization, ``npz:FILE`` or a mixture ``A+B+...``
    of registered kinds, else a ValueError naming the valid choices."""
    if isinstance(kind, str) and (kind in _KINDS or _is_file(kind)):
        return kind
    parts = components(kind)
    if len(parts) > 1 and all(part in _KINDS for part in parts):
        return kind
    unknown = [part for part in parts if part not in _KINDS]
    what = (f"unknown discretization {kind!r}" if len(parts) == 1 else
            f"the mixture {kind!r} names {', '.join(map(repr, unknown))}, not a registered "
            f"kind ({FILE_PREFIX}FILE cannot be mixed)")
    raise ValueError(f"{what}; valid: {', '.join(_KINDS)}, {FILE_PREFIX}FILE (your own "
                     f"coordinates) or a mixture such as sobol{MIX}random")


def is_randomised(kind: str) -> bool:
    """Whether ``kind`` is a fresh draw for every seed (``npz:FILE`` is fixed; a mixture is
    randomised, since each seed draws one of its kinds)."""
    check_discretization(kind)
    if _is_file(kind):
        return False
    parts = components(kind)
    return len(set(parts)) > 1 or any(_KINDS[part].randomised for part in parts)


def make_points(kind: str, n: int, dim: int = 2, seed: int | None = 0) -> P.PointSet:
    """The ``n``-point discretization ``kind`` of [-1, 1]^dim for a seed.

    ``npz:FILE`` returns the file's points, whose count must be ``n``; a mixture ``A+B+...``
    the points of the kind the seed draws. See :func:`discretizations` for the names and
    ``dinet train --help`` for what each is.
    """
    check_discretization(kind)
    parts = components(kind)
    if len(parts) > 1:
        kind = parts[int(np.random.default_rng(seed).integers(len(parts)))]
    if _is_file(kind):
        points = file_points(kind, dim)
        if len(points) != n:
            raise ValueError(f"{kind} holds {len(points)} points, not {n} — pass --points "
                             f"{len(points)} (and no --mix-points)")
        return points
    _check_room(n, dim)
    return _KINDS[kind].make(n, dim, seed)


def _check_room(n: int, dim: int) -> None:
    """Refuse a point set whose coordinates and weights, with the float64 copies made while
    drawing them, need more memory than there is (``--points 1000000000`` was killed by the
    OS after minutes)."""
    needed = int(n) * (dim + 1) * 8 * 3
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(f"{int(n):,} points in {dim}-D need ~{format_bytes(needed)} to draw, "
                         f"more than the {format_bytes(available)} of memory available — use "
                         "fewer points")


def fixed_points(kind: str, n: int, dim: int, seed: int | None) -> P.PointSet:
    """One fixed draw of ``kind`` with ``n`` points (``npz:FILE``: the file's own points,
    whatever ``n``); a mixture is refused, as a fixed draw of it would be one of its kinds."""
    check_discretization(kind)
    parts = components(kind)
    if len(parts) > 1:
        raise ValueError(f"{kind!r} is a mixture, and a fixed draw would be one of its kinds: "
                         f"name them one by one ({','.join(dict.fromkeys(parts))})")
    return file_points(kind, dim) if _is_file(kind) else make_points(kind, n, dim, seed=seed)


def point_sets(kinds: Iterable[str], counts: Iterable[int], dim: int,
               seed: int | None) -> dict[tuple[str, int], P.PointSet]:
    """Every (kind, count) point set of an evaluation (:func:`fixed_points`); a ``npz:FILE``
    kind is evaluated once, at its own number of points, whatever ``counts`` are."""
    counts = tuple(counts)
    sets = {}
    for kind in kinds:
        for count in counts[:1] if _is_file(kind) else counts:
            points = fixed_points(kind, count, dim, seed)
            sets[kind, len(points)] = points
    return sets


# --- npz:FILE ---------------------------------------------------------------------------
def _is_file(kind) -> bool:
    return isinstance(kind, str) and kind.startswith(FILE_PREFIX)


def file_points(kind: str, dim: int) -> P.PointSet:
    """The point set in ``npz:FILE`` (a ``.npz`` with ``coords`` — or a single array — and
    optional ``weights``, or a ``.npy`` array of coordinates), checked against ``dim``."""
    path = Path(kind[len(FILE_PREFIX):])
    if not path.is_file():
        raise ValueError(f"{kind}: no such file {str(path)!r}")
    arrays = read_arrays(path, "save your points with numpy.savez(path, coords=..., "
                         "weights=...)")  # a .npy file gives {"": coords}
    coords = arrays.get("coords", arrays.get("points"))
    if coords is None:
        if len(arrays) != 1:
            raise ValueError(f"{kind}: found arrays {sorted(arrays)}; name the coordinates "
                             "'coords' (N, d) and optional weights 'weights' (N,)")
        coords = next(iter(arrays.values()))
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != dim or not np.issubdtype(coords.dtype, np.number):
        raise ValueError(f"{kind}: coords must be a numeric (N, {dim}) array for this "
                         f"{dim}-D task; got {coords.dtype} with shape {coords.shape}")
    weights = arrays.get("weights")
    try:
        if weights is None:
            points = P.from_coords(coords.astype(np.float64))
        else:
            points = P.from_coords(coords.astype(np.float64),
                                   weights=np.asarray(weights, dtype=np.float64))
    except ValueError as e:
        raise ValueError(f"{kind}: {e}") from None
    return _named(points, kind)


def _named(points: P.PointSet, kind: str) -> P.PointSet:
    """``points`` under the name ``kind`` (``from_coords`` calls every set "points")."""
    return P.PointSet(points.coords, points.weights, kind, weight_method=points.weight_method,
                      region=points.region)


# --- the built-in kinds -----------------------------------------------------------------
def _side(kind: str, n: int, dim: int) -> tuple[int, ...]:
    side = round(n ** (1.0 / dim))
    if side**dim != n:
        raise ValueError(
            f"a {kind} discretization needs a perfect {'square' if dim == 2 else 'cube'} "
            f"number of points; got {n} (e.g. {side**dim} or {(side + 1) ** dim})"
        )
    return (side,) * dim


for _name, _make, _randomised, _help in (
    ("sobol", lambda n, d, s: P.sobol(n, d, seed=s), True, "scrambled Sobol (randomised QMC)"),
    ("grid", lambda n, d, s: P.grid(_side("grid", n, d)), False,
     "pixel centres (n a perfect square/cube)"),
    ("shrunk", lambda n, d, s: P.shrunk(n, d, seed=s), True,
     "the paper's warped Sobol set, exact weights"),
    # i.i.d. points weighted by their Voronoi cells, as any set given by its coordinates
    # (plain Monte Carlo weights 4/N leave clumps and gaps uncorrected and cost 5-10 points
    # of accuracy at 256-1,024 points)
    ("random", lambda n, d, s: _named(P.from_coords(P.random(n, d, seed=s).coords), "random"),
     True, "i.i.d. uniform, Voronoi weights"),
    ("jittered", lambda n, d, s: P.jittered_grid(_side("jittered", n, d), seed=s), True,
     "a grid moved within each pixel (n a perfect square/cube)"),
    ("mixed", lambda n, d, s: make_points(f"grid{MIX}sobol{MIX}shrunk", n, d, s), True,
     f"grid{MIX}sobol{MIX}shrunk, the paper's mixed training"),
    ("halton", lambda n, d, s: P.halton(n, d, seed=s), True, "scrambled Halton"),
    ("hexagonal", lambda n, d, s: P.hexagonal(n, d, seed=s), True,
     "a hexagonal lattice (FCC in 3-D), random offset"),
    ("rotated-grid", lambda n, d, s: P.rotated_grid(n, d, seed=s), True,
     "a square lattice at a random angle"),
    ("poisson", lambda n, d, s: P.poisson(n, d, seed=s), True, "blue noise (Poisson disk)"),
    ("foveated", lambda n, d, s: P.foveated(n, d, seed=s), True,
     "half the points in a Gaussian fovea"),
    ("clustered", lambda n, d, s: P.clustered(n, d, seed=s), True,
     "a Thomas cluster process with 20% background"),
):
    register_discretization(_name, _make, randomised=_randomised, help=_help)
