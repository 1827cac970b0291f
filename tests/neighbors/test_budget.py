"""The memory budget: stencils estimated before they are built, and refused beyond the budget."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import dinet.points as P
from dinet import _memory
from dinet.neighbors import (
    StencilTooLarge,
    box_neighbors,
    expected_pairs,
    memory_budget,
    set_memory_budget,
)
from dinet.neighbors.budget import lattice_aligned, spline_taps_per_pair
from dinet.neighbors.stencils import (
    check_pair_budget,
    check_spline_budget,
    pair_stencil,
    spline_stencil,
    spline_support,
)
from dinet.nn import DIAttention, DIAvgPool, DIConv, DIMaxPool, Resample


@pytest.fixture(autouse=True)
def default_budget(monkeypatch):
    """Every test starts from the default budget (no override, no environment variable)."""
    monkeypatch.delenv(_memory.ENV_VAR, raising=False)
    previous = set_memory_budget("auto")
    yield
    set_memory_budget(previous)


@pytest.fixture(scope="module")
def million():
    """2^20 Sobol points, generated once and outside the timed part (about 0.3 s)."""
    return P.sobol(2**20, 2, seed=0)


def assert_helpful(message: str) -> None:
    for part in ("GiB", "memory budget", "smaller support", "fewer points",
                 "set_memory_budget", "DINET_MEMORY_BUDGET"):
        assert part in message, (part, message)


def test_absurd_support_on_a_million_points_is_refused_at_once(million):
    assert memory_budget()[0] is not None, "the default budget needs MemAvailable or psutil"
    x = torch.randn(1, len(million), 1)
    layer = DIConv(1, 1, 3, spacing=1.0)  # support half-width 2: every pair of 2^40
    start = time.perf_counter()
    with pytest.raises(StencilTooLarge) as info:
        layer(x, million)
    elapsed = time.perf_counter() - start
    print(f"refused in {elapsed:.3f} s: {info.value}")  # README quotes it (pytest -s)
    assert elapsed < 5.0  # a few ms on a quiet 2-core machine
    assert_helpful(str(info.value))
    assert "DIConv spline stencil" in str(info.value)
    assert "spacing or kernel_size" in str(info.value)
    assert info.value.estimate > 1000 * 2**30 and info.value.estimate > info.value.budget
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("build", [
    lambda ps: spline_stencil(ps, ps, (3, 3), (1.0, 1.0), (1, 1)),
    lambda ps: pair_stencil(ps, ps, 1.0, 16),
    lambda ps: box_neighbors(ps.coords, ps.coords, 0.5),
    lambda ps: DIAttention(4, support=0.5)(torch.zeros(1, len(ps), 4), ps),
    lambda ps: DIMaxPool(4, spacing=0.5)(torch.zeros(1, len(ps), 1), ps),
    lambda ps: Resample("linear", support=0.5)(torch.zeros(1, len(ps), 1), ps,
                                               P.sobol(2**10, 2, seed=1)),
], ids=["spline", "pairs", "search", "attention", "maxpool", "resample"])
def test_every_builder_checks_before_it_searches(million, build):
    start = time.perf_counter()
    with pytest.raises(StencilTooLarge) as info:
        build(million)
    assert time.perf_counter() - start < 5.0
    assert_helpful(str(info.value))


def test_the_budget_can_be_raised_lowered_and_removed(monkeypatch):
    points = P.sobol(4096, 2, seed=11)
    layer = DIConv(1, 1, 3, spacing=2 / 64)
    x = torch.randn(1, 4096, 1)
    estimate = check_spline_budget(points, points, (3, 3), (2 / 64,) * 2, (1, 1))
    assert 1e6 < estimate < 2e7

    set_memory_budget(int(estimate / 2))
    with pytest.raises(StencilTooLarge, match="set by dinet.neighbors.set_memory_budget"):
        layer(x, points)
    previous = set_memory_budget(None)  # no limit
    assert previous == int(estimate / 2)
    assert layer(x, points).shape == (1, 4096, 1)

    set_memory_budget("auto")
    monkeypatch.setenv("DINET_MEMORY_BUDGET", "1MiB")
    assert memory_budget() == (2**20, "DINET_MEMORY_BUDGET=1MiB")
    other = P.sobol(4096, 2, seed=12)  # not cached yet
    with pytest.raises(StencilTooLarge, match="DINET_MEMORY_BUDGET=1MiB"):
        layer(x, other)
    monkeypatch.setenv("DINET_MEMORY_BUDGET", "none")
    assert memory_budget()[0] is None
    assert layer(x, other).shape == (1, 4096, 1)
    monkeypatch.setenv("DINET_MEMORY_BUDGET", "lots")
    with pytest.raises(ValueError, match="DINET_MEMORY_BUDGET 'lots' is not a size"):
        memory_budget()


def test_sizes_parse():
    assert _memory.parse_size("12GiB") == 12 * 2**30
    assert _memory.parse_size("1.5 gb") == 1_500_000_000
    assert _memory.parse_size("3e9") == 3_000_000_000
    assert _memory.parse_size(4096) == 4096
    assert _memory.parse_size("off") is None
    for bad in ("-1GiB", "0", "12 parsecs", True, -5):
        with pytest.raises(ValueError):
            _memory.parse_size(bad)
    with pytest.raises(ValueError):
        set_memory_budget("twelve")


def test_default_budget_is_half_the_available_memory():
    available = _memory.available_memory(fallback_total=False)
    budget, source = memory_budget()
    if available is None:
        assert budget is None
    else:  # MemAvailable moves between the two reads
        assert abs(budget - available / 2) < 0.1 * available
        assert "50%" in source


def test_normal_layers_at_normal_sizes_are_not_refused(million):
    points = P.sobol(2**14, 2, seed=3)
    x = torch.randn(2, len(points), 4)
    coarse = points.coarsen(2)
    layers = [
        DIConv(4, 8, 3, spacing=2 / 128),
        DIConv(4, 8, 3, spacing=2 / 128, stride=2),
        DIConv(4, 8, 3, spacing=2 / 128, kernel="mlp"),
        DIAvgPool(2, spacing=2 / 128, stride=2),
        DIMaxPool(2, spacing=2 / 128),
        DIAttention(4, support=0.05),
    ]
    for layer in layers:
        assert torch.isfinite(layer(x, points)).all()
    assert Resample("linear", support=0.05)(x[:, : len(coarse)], coarse, points).shape[1] == len(
        points)
    # A 1M-point 3x3 convolution of the usual geometry: ~38M non-zeros, under 2 GiB.
    assert check_spline_budget(million, million, (3, 3), (2 / 1024,) * 2, (1, 1)) < 2 * 2**30


@pytest.mark.parametrize("points", [
    P.sobol(2048, 2, seed=0), P.random(2048, 2, seed=0), P.grid((45, 45)),
    P.sobol(2048, 3, seed=0), P.grid((12, 12, 12)),
], ids=["sobol2", "random2", "grid2", "sobol3", "grid3"])
def test_estimates_are_close_for_uniform_points(points):
    d = points.dim
    step = 2.0 / len(points) ** (1 / d)  # the point spacing
    for r in (1.5 * step, 4 * step, 0.7, 2.5):
        true = len(box_neighbors(points.coords, points.coords, r))
        assert 0.75 < expected_pairs(points.coords, points.coords, r) / true < 1.4, r
    h = 2.0 / round(len(points) ** (1 / d))  # the point spacing: the usual kernel lattice
    for k, dil, scale in ((3, 1, 1.0), (5, 1, 1.0), (3, 2, 1.0), (3, 1, 4.0)):
        spacing, ks, dils = (h * scale,) * d, (k,) * d, (dil,) * d
        stencil = spline_stencil(points, points, ks, spacing, dils)
        aligned = lattice_aligned(points, points, spacing)
        pairs = expected_pairs(points.coords, points.coords, spline_support(ks, spacing, dils))
        nnz = pairs * spline_taps_per_pair(ks, dils, aligned)
        assert 0.7 < nnz / stencil.nnz < 1.5, (k, dil, scale, nnz, stencil.nnz)
        held = stencil.nbytes() + sum(a.nbytes for a in stencil.transpose_structure())
        estimate = check_spline_budget(points, points, ks, spacing, dils)
        assert held < estimate < 4 * held + 2**20
    pairs = pair_stencil(points, points, 2 * step, 8)
    held = pairs.nbytes() + pairs.offsets.nbytes + 5 * 8 * pairs.n_pairs
    assert held < check_pair_budget(points, points, 2 * step, 8) < 6 * held


def test_disjoint_and_degenerate_sets():
    a = torch.tensor([[-1.0, -1.0], [-0.9, -0.9]])
    b = torch.tensor([[1.0, 1.0]])
    assert expected_pairs(b, a, 0.5) == 0.0  # out of reach
    assert expected_pairs(b, a, 3.0) == 2.0
    same = torch.zeros(5, 2)  # five duplicates: every pair
    assert expected_pairs(same, same, 1e-6) == 25.0
    line = torch.stack([torch.linspace(-1, 1, 100), torch.zeros(100)], dim=1)
    true = len(box_neighbors(line, line, 0.1))
    assert 0.8 < expected_pairs(line, line, 0.1) / true < 1.25
    assert np.isclose(spline_taps_per_pair((3, 3), (1, 1)), 1.5**2)
