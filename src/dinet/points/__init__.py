"""Discretizations of the domain [-1, 1]^d and their quadrature weights."""

from .generators import (
    from_coords,
    grid,
    grid_axes,
    halton,
    jittered_grid,
    lattice,
    masked,
    random,
    shrunk,
    sobol,
)
from .layout import image_to_values, lattice_index, values_to_image
from .pointset import PointSet
from .samplers import clustered, foveated, hexagonal, poisson, rotated_grid
from .voronoi import region_mask, voronoi_weights
from .weights import knn_weights, lattice_weights, shrunk_weights

__all__ = [
    "PointSet",
    "clustered",
    "foveated",
    "from_coords",
    "grid",
    "grid_axes",
    "halton",
    "hexagonal",
    "image_to_values",
    "jittered_grid",
    "knn_weights",
    "lattice",
    "lattice_index",
    "lattice_weights",
    "masked",
    "poisson",
    "random",
    "region_mask",
    "rotated_grid",
    "shrunk",
    "shrunk_weights",
    "sobol",
    "values_to_image",
    "voronoi_weights",
]
