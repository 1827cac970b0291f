"""reestimate_batchnorm: a gradient-free pass that replaces the running statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinet import points as P
from dinet.nn import DIBatchNorm, reestimate_batchnorm


def test_running_statistics_become_the_average_over_the_batches():
    torch.manual_seed(0)
    norm = DIBatchNorm(3, momentum=0.1)
    pts = P.sobol(64, seed=0)
    batches = [(torch.randn(2, 64, 3) * (k + 1) + k, pts) for k in range(3)]
    model = nn.Sequential(nn.Dropout(0.5))  # a module that must stay in eval mode
    model.add_module("norm", norm)

    calls = []

    def forward(m, batch):
        x, points = batch
        calls.append(m[0].training)
        return m.norm(m[0](x), points)

    before = [p.clone() for p in model.parameters()]
    assert before and reestimate_batchnorm(model, batches, forward) == 3
    assert calls == [False, False, False]  # dropout stayed off
    assert not model.training and norm.momentum == 0.1  # restored
    # the cumulative average of the three batches' (weighted) statistics
    means = [x.mean(dim=(0, 1)) for x, _ in batches]
    torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0),
                               rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_torch_batch_norms_too_and_clear_errors():
    bn = nn.Sequential(nn.BatchNorm1d(4))
    data = [torch.randn(8, 4) + 5 for _ in range(4)]
    assert reestimate_batchnorm(bn, data) == 4
    torch.testing.assert_close(bn[0].running_mean, torch.stack(data).mean((0, 1)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no batch norm"):
        reestimate_batchnorm(nn.Linear(2, 2), [torch.randn(1, 2)])
    with pytest.raises(ValueError, match="no batches"):
        reestimate_batchnorm(bn, [])
