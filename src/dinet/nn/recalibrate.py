"""Batch-norm re-estimation: recompute a network's running statistics on the data it will
see, without a gradient step.

A network trained (or converted) on one discretization normalises with statistics of that
discretization; on other points its features shift. Running the network forward in a
gradient-free pass over a few batches of the new inputs, with every batch norm averaging
cumulatively, replaces those statistics with the new ones — the weights are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .norm import DIBatchNorm

__all__ = ["reestimate_batchnorm"]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable,
                         forward: Callable | None = None) -> int:
    """Recompute the running mean and variance of every batch norm of ``model`` (``DIBatchNorm``
    and torch's own) as the plain average over ``batches``; returns how many were used.

    Only the batch norms run in training mode (dropout and the rest stay in eval mode); each
    one's momentum is restored afterwards, and ``model`` ends in eval mode.

    Args:
        model: the network.
        batches: inputs, each passed as ``model(*batch)`` (a tuple) or ``model(batch)``.
        forward: calls the model on a batch instead (e.g. ``lambda m, b: m(b[0], b[1])``).
    """
    norms = [m for m in model.modules()
             if isinstance(m, (DIBatchNorm, nn.modules.batchnorm._BatchNorm))
             and m.track_running_stats]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no batch norm with running statistics "
                         "to re-estimate")
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    used = 0
    try:
        for batch in batches:
            if forward is not None:
                forward(model, batch)
            else:
                model(*batch) if isinstance(batch, tuple) else model(batch)
            used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    if used == 0:
        raise ValueError("reestimate_batchnorm got no batches")
    return used
