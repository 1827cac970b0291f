"""Named discretizations of the domain, drawn reproducibly for training and evaluation."""

from __future__ import annotations

import numpy as np

from .. import points as P

__all__ = ["DISCRETIZATIONS", "RANDOMISED", "make_points"]

DISCRETIZATIONS = ("sobol", "grid", "shrunk", "random", "jittered", "mixed")
#: Discretizations that are a fresh random draw for every seed (grid is always the same).
RANDOMISED = ("sobol", "shrunk", "random", "jittered", "mixed")


def make_points(kind: str, n: int, dim: int = 2, seed: int | None = 0) -> P.PointSet:
    """The ``n``-point discretization ``kind`` of [-1, 1]^dim for a seed.

    ``sobol`` is scrambled Sobol (randomised QMC), ``shrunk`` the paper's warped Sobol set
    with its exact weights, ``random`` i.i.d. uniform points whose weights are estimated from
    the points themselves by k-NN (as for any set given by its coordinates,
    :func:`dinet.points.from_coords`; plain Monte Carlo weights 4/N leave random clumps and
    gaps uncorrected and cost 5–10 points of accuracy at 256–1,024 points), ``grid`` pixel
    centres and
    ``jittered`` a stratified grid (these two need ``n`` to be a perfect d-th power), and
    ``mixed`` picks one of grid / sobol / shrunk from the seed, as the paper's "mixed"
    training.
    """
    if kind not in DISCRETIZATIONS:
        raise ValueError(f"unknown discretization {kind!r}; valid: {', '.join(DISCRETIZATIONS)}")
    if kind == "mixed":
        kind = ("grid", "sobol", "shrunk")[int(np.random.default_rng(seed).integers(3))]
    if kind in ("grid", "jittered"):
        side = round(n ** (1.0 / dim))
        if side**dim != n:
            raise ValueError(
                f"a {kind} discretization needs a perfect {'square' if dim == 2 else 'cube'} "
                f"number of points; got {n} (e.g. {side**dim} or {(side + 1) ** dim})"
            )
        shape = (side,) * dim
        return P.grid(shape) if kind == "grid" else P.jittered_grid(shape, seed=seed)
    if kind == "random":
        return P.from_coords(P.random(n, dim, seed=seed).coords)
    generator = {"sobol": P.sobol, "shrunk": P.shrunk}[kind]
    return generator(n, dim, seed=seed)


