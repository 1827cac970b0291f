"""Every integral layer is an integral: the same answer whatever points sample the field.

Density invariance: duplicating every point and halving its weight changes no integral.
Discretization invariance: outputs at fixed query points from ≈16k Sobol, grid,
jittered-grid and shrunk inputs agree within 2% relative L2.
"""

from __future__ import annotations

import pytest
import torch

import dinet.points as P
from dinet.nn import (
    DIAvgPool,
    DIBatchNorm,
    DIConv,
    DIInstanceNorm,
    DILayerNorm,
    DIMaxPool,
    GlobalAvgPool,
    GlobalMaxPool,
)


def _layers():
    torch.manual_seed(0)
    return {
        "conv-spline": DIConv(2, 4, 3, spacing=0.1),
        "conv-mlp": DIConv(2, 4, 3, spacing=0.1, kernel="mlp", n_basis=16),
        "avgpool": DIAvgPool(3, spacing=0.1),
        "maxpool": DIMaxPool(3, spacing=0.1),
        "global-avg": GlobalAvgPool(),
        "global-max": GlobalMaxPool(),
    }


def _field(coords: torch.Tensor) -> torch.Tensor:
    x, y = coords[:, 0:1].double(), coords[:, 1:2].double()
    return torch.cat([torch.sin(2 * x) * torch.cos(3 * y) + 0.5,
                      torch.exp(-(x**2 + 2 * y**2))], dim=1).float()[None]


def _duplicated(points: P.PointSet) -> P.PointSet:
    c, w = points.coords, points.weights
    return P.PointSet(torch.cat([c, c]), torch.cat([w, w]) / 2, "dup", weight_method="density")


@pytest.mark.parametrize("name", list(_layers()))
def test_density_invariance(name):
    layer = _layers()[name]
    points, query = P.sobol(2048, 2, seed=0), P.sobol(128, 2, seed=5)
    dup = _duplicated(points)
    x = _field(points.coords)
    x_dup = torch.cat([x, x], dim=1)
    with torch.no_grad():
        if name.startswith("global"):
            a, b = layer(x, points), layer(x_dup, dup)
        else:
            a, b = layer(x, points, query), layer(x_dup, dup, query)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))


@pytest.mark.parametrize("norm", [DIBatchNorm(2), DIInstanceNorm(2), DILayerNorm(2)])
def test_density_invariance_of_norms(norm):
    points = P.sobol(2048, 2, seed=0)
    x = torch.cat([_field(points.coords), 2 * _field(points.coords.flip(1))])
    out = norm(x, points)
    out_dup = norm(torch.cat([x, x], dim=1), _duplicated(points))
    torch.testing.assert_close(out_dup[:, :2048], out, rtol=1e-5, atol=1e-5)


def _discretizations(side: int):
    n = side * side
    return {
        "sobol": P.sobol(n, 2, seed=1),
        "grid": P.grid((side, side)),
        "jittered": P.jittered_grid((side, side), seed=2),
        "shrunk": P.shrunk(n, 2, seed=3),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_discretization_invariance(name):
    layer = _layers()[name]
    query = P.sobol(256, 2, seed=7)
    outs = {}
    with torch.no_grad():
        for kind, points in _discretizations(128).items():
            x = _field(points.coords)
            outs[kind] = layer(x, points) if name.startswith("global") else layer(x, points, query)
    ref = outs["grid"]
    gaps = {k: float((v - ref).norm() / ref.norm()) for k, v in outs.items() if k != "grid"}
    print(name, {k: f"{g:.2e}" for k, g in gaps.items()})
    assert max(gaps.values()) < 0.02, gaps
