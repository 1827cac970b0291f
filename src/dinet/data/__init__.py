"""Raw data sources: Fashion-MNIST, digits, user images, segmentation scenes, 3-D balls.

Everything is local or generated: nothing downloads at run time.
"""

from .balls import Balls, make_balls
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    load_digits,
    load_fashion_mnist,
    read_idx,
    resize_images,
)
from .fit import fit_source
from .scenes import Scenes, make_scenes
from .sources import SOURCES, load_image_folder, load_npz, load_source, read_image, to_unit_images

__all__ = [
    "FASHION_MNIST_CLASSES",
    "SOURCES",
    "Balls",
    "Scenes",
    "fit_source",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_npz",
    "load_source",
    "make_balls",
    "make_scenes",
    "read_idx",
    "read_image",
    "resize_images",
    "to_unit_images",
]
