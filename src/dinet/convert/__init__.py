"""Translate a discrete CNN into a DI-Net that carries its weights.

:func:`from_cnn` traces a model with ``torch.fx`` and rebuilds it from the layers of
:mod:`dinet.nn`; the result, a :class:`ConvertedCNN`, takes ``(x, points)`` and runs on any
point set, and on the grid the CNN was built for it equals the CNN::

    import dinet.points as P
    from dinet.convert import from_cnn

    net = from_cnn(cnn.eval(), (32, 32))         # the spatial shape the CNN was built for
    grid = P.grid((32, 32))
    logits = net(P.image_to_values(images, grid), grid)    # equals cnn(images)
    points = P.sobol(4096, 2, seed=0)
    logits = net(values_on_points, points)                  # values_on_points: (B, 4096, 3)

See :func:`from_cnn` for what converts, and :class:`ConvertedCNN` for the point sets each
level of the converted network lives on.
"""

from .fx import SUPPORTED, from_cnn
from .layers import INTERPOLATE_MODES, Interpolate
from .network import ConvertedCNN

__all__ = ["INTERPOLATE_MODES", "SUPPORTED", "ConvertedCNN", "Interpolate", "from_cnn"]
