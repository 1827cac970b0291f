"""DI normalization: equal to torch's norms on grids, invariant across discretizations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import dinet.points as P
from dinet.nn.norm import DIBatchNorm, DIInstanceNorm, DILayerNorm, effective_sample_size

TOL = 1e-5  # max abs error relative to max |reference|


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _assert_matches_torch(di, ref_layer, x: torch.Tensor, points) -> None:
    """Outputs and gradients (input, affine weight and bias) of a DI norm on a grid equal the
    torch layer's on the image."""
    x = x.detach().requires_grad_(True)
    values = P.image_to_values(x.detach(), points).requires_grad_(True)
    ref = ref_layer(x)
    out = P.values_to_image(di(values, points), points)
    assert _rel_err(out, ref) <= TOL
    upstream = torch.randn_like(ref)
    (ref * upstream).sum().backward()
    (out * upstream).sum().backward()
    assert _rel_err(P.values_to_image(values.grad, points), x.grad) <= TOL
    for name in ("weight", "bias"):
        ours, theirs = getattr(di, name, None), getattr(ref_layer, name, None)
        if ours is not None and theirs is not None:
            assert _rel_err(ours.grad, theirs.grad) <= TOL


def _randomise_affine(*modules: nn.Module) -> None:
    """Give every module the same random γ, β (they start at 1 and 0, which hides bugs)."""
    gen = torch.Generator().manual_seed(7)
    c = modules[0].weight.shape[0]
    gamma, beta = torch.rand(c, generator=gen) + 0.5, torch.randn(c, generator=gen)
    with torch.no_grad():
        for m in modules:
            m.weight.copy_(gamma)
            m.bias.copy_(beta)


def _with_queries(points: P.PointSet, queries: P.PointSet, weight: float = 1e-9) -> P.PointSet:
    """``points`` plus ``queries`` of negligible weight: the layer's output at the queries
    while the statistics come (almost) only from ``points``."""
    return P.PointSet(
        torch.cat([points.coords, queries.coords]),
        torch.cat([points.weights, torch.full((len(queries),), weight)]),
        kind=f"{points.kind}+queries",
        weight_method="density",
    )


# --- exact equality with torch on grids -----------------------------------------------------

@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
def test_batchnorm_equals_batchnorm2d_train_and_eval(momentum):
    torch.manual_seed(0)
    shape, channels = (6, 10), 4
    points = P.grid(shape)
    bn = nn.BatchNorm2d(channels, momentum=momentum)
    di = DIBatchNorm(channels, momentum=momentum)
    _randomise_affine(bn, di)
    for step in range(4):  # different batch sizes, scales and offsets at every step
        x = torch.randn(step + 2, channels, *shape) * (step + 1) + 3 * step
        _assert_matches_torch(di, bn, x, points)
        bn.zero_grad()
        di.zero_grad()
        assert _rel_err(di.running_mean, bn.running_mean) <= TOL
        assert _rel_err(di.running_var, bn.running_var) <= TOL
        assert int(di.num_batches_tracked) == int(bn.num_batches_tracked) == step + 1

    bn.eval()
    di.eval()
    x = torch.randn(3, channels, *shape) * 2 + 1
    out = P.values_to_image(di(P.image_to_values(x, points), points), points)
    assert _rel_err(out, bn(x)) <= TOL
    assert int(di.num_batches_tracked) == 4  # eval does not count batches


def test_batchnorm_without_running_stats_uses_batch_stats_in_eval():
    torch.manual_seed(1)
    points = P.grid((5, 7))
    bn = nn.BatchNorm2d(3, track_running_stats=False).eval()
    di = DIBatchNorm(3, track_running_stats=False).eval()
    _randomise_affine(bn, di)
    x = torch.randn(2, 3, 5, 7) + 4
    out = P.values_to_image(di(P.image_to_values(x, points), points), points)
    assert _rel_err(out, bn(x)) <= TOL
    assert di.running_mean is None and set(di.state_dict()) == set(bn.state_dict())


@pytest.mark.parametrize("bn_cls, shape", [
    (nn.BatchNorm1d, (12,)),
    (nn.BatchNorm2d, (6, 8)),
    (nn.BatchNorm3d, (3, 4, 5)),
])
def test_from_batchnorm_round_trip(bn_cls, shape):
    torch.manual_seed(2)
    channels = 3
    points = P.grid(shape)
    bn = bn_cls(channels, eps=1e-3, momentum=0.3)
    _randomise_affine(bn)
    for _ in range(3):
        bn(torch.randn(4, channels, *shape) * 3 + 1)
    bn.eval()
    di = DIBatchNorm.from_batchnorm(bn)
    assert not di.training and di.eps == 1e-3 and di.momentum == 0.3
    assert int(di.num_batches_tracked) == 3
    x = torch.randn(2, channels, *shape)
    out = P.values_to_image(di(P.image_to_values(x, points), points), points)
    assert _rel_err(out, bn(x)) <= TOL

    # back to training: both keep updating identically
    bn.train()
    di.train()
    x = torch.randn(2, channels, *shape) - 2
    out = P.values_to_image(di(P.image_to_values(x, points), points), points)
    assert _rel_err(out, bn(x)) <= TOL
    assert _rel_err(di.running_var, bn.running_var) <= TOL


def test_batchnorm2d_state_dict_loads_directly():
    bn = nn.BatchNorm2d(5)
    bn(torch.randn(3, 5, 4, 4))
    di = DIBatchNorm(5)
    di.load_state_dict(bn.state_dict())  # strict: the names are torch's
    assert torch.equal(di.running_var, bn.running_var)


@pytest.mark.parametrize("affine", [False, True])
def test_instancenorm_equals_instancenorm2d(affine):
    torch.manual_seed(3)
    points = P.grid((7, 9))
    ref_layer = nn.InstanceNorm2d(4, affine=affine)
    di = DIInstanceNorm(4, affine=affine)
    if affine:
        _randomise_affine(ref_layer, di)
    x = torch.randn(3, 4, 7, 9) * torch.tensor([1.0, 5.0, 0.1, 2.0])[:, None, None] + 10
    out = P.values_to_image(di(P.image_to_values(x, points), points), points)
    assert _rel_err(out, ref_layer(x)) <= TOL


def test_layernorm_equals_groupnorm_one_group():
    torch.manual_seed(4)
    points = P.grid((8, 6))
    ref_layer = nn.GroupNorm(1, 5)
    di = DILayerNorm(5)
    _randomise_affine(ref_layer, di)
    x = torch.randn(3, 5, 8, 6) * 3 - 1
    _assert_matches_torch(di, ref_layer, x, points)


# --- weighted statistics: hand-made values, duplication, permutation, stability ---------------

def test_batchnorm_weighted_statistics_by_hand():
    points = P.PointSet(torch.tensor([[-0.5, 0.0], [0.0, 0.0], [0.5, 0.0]]),
                        torch.tensor([1.0, 2.0, 1.0]))
    x = torch.tensor([[[0.0], [3.0], [6.0]]])
    bn = DIBatchNorm(1, eps=0.0, momentum=1.0)
    out = bn(x, points)
    # mean (0 + 6 + 6) / 4 = 3, var (9 + 0 + 9) / 4 = 4.5, n_eff = 4² / 6 = 8/3
    torch.testing.assert_close(out, (x - 3.0) / math.sqrt(4.5))
    assert float(effective_sample_size(points)) == pytest.approx(8 / 3)
    n = 8 / 3
    torch.testing.assert_close(bn.running_mean, torch.tensor([3.0]))
    torch.testing.assert_close(bn.running_var, torch.tensor([4.5 * n / (n - 1)]))


def _norms(channels: int):
    torch.manual_seed(5)
    layers = [DIBatchNorm(channels), DIInstanceNorm(channels, affine=True), DILayerNorm(channels)]
    for layer in layers:
        _randomise_affine(layer)
    return layers


def test_duplicated_points_with_halved_weights_change_nothing():
    base = P.sobol(1024, 2, seed=0)
    c, w = base.coords, base.weights
    dup = P.PointSet(torch.cat([c, c]), torch.cat([w, w]) / 2, kind="dup",
                     weight_method="density")
    torch.manual_seed(6)
    x = torch.randn(3, len(base), 4) * 2 + 1
    x_dup = torch.cat([x, x], dim=1)
    for layer in _norms(4):
        out, out_dup = layer(x, base), layer(x_dup, dup)
        assert _rel_err(out_dup[:, : len(base)], out) <= TOL, type(layer).__name__
        assert _rel_err(out_dup[:, len(base):], out) <= TOL, type(layer).__name__


def test_norms_commute_with_point_permutation():
    base = P.shrunk(512, 2, seed=1)
    perm = torch.randperm(len(base), generator=torch.Generator().manual_seed(0))
    permuted = P.PointSet(base.coords[perm], base.weights[perm], kind="permuted")
    x = torch.randn(2, len(base), 3)
    for layer in _norms(3):
        assert _rel_err(layer(x[:, perm], permuted), layer(x, base)[:, perm]) <= TOL


def test_statistics_are_stable_for_large_offsets():
    """Two-pass variance: a field 1e4 + small noise still normalises accurately."""
    points = P.sobol(4096, 2, seed=2)
    torch.manual_seed(7)
    noise = torch.randn(2, len(points), 3)
    x = 1e4 + noise
    for layer in _norms(3):
        ref = layer.double()(x.double(), points)
        layer.float()
        assert _rel_err(layer(x, points), ref) <= 1e-3, type(layer).__name__


def test_half_precision_input_keeps_dtype():
    points = P.sobol(256, 2, seed=0)
    x = torch.randn(2, len(points), 3)
    for layer in _norms(3):
        out = layer(x.bfloat16(), points)
        assert out.dtype == torch.bfloat16
        assert _rel_err(out.float(), layer(x, points)) <= 3e-2


# --- the point of it all: invariance to the discretization ----------------------------------

def _field(coords: torch.Tensor) -> torch.Tensor:
    """A smooth 2-channel field, two samples, ``(2, N, 2)``."""
    x, y = coords[:, 0], coords[:, 1]
    samples = []
    for a in (0.5, 1.0):
        bump = torch.exp(-4 * ((x - 0.3 * a) ** 2 + (y + 0.2) ** 2))
        samples.append(torch.stack([
            torch.sin(math.pi * x + a) * torch.cos(math.pi * y / 2) + 0.5 * bump,
            torch.cos(2 * x + a * y) + x * y,
        ], dim=-1))
    return torch.stack(samples)


def test_norms_are_discretization_invariant():
    queries = P.sobol(256, 2, seed=123)
    inputs = {
        "sobol": P.sobol(16384, 2, seed=0),
        "grid": P.grid((128, 128)),
        "jittered": P.jittered_grid((128, 128), seed=1),
        "shrunk": P.shrunk(16384, 2, seed=2),
    }
    layers = _norms(2)
    outputs = {}
    for name, points in inputs.items():
        combined = _with_queries(points, queries)
        values = _field(combined.coords)
        with torch.no_grad():
            outputs[name] = [layer(values, combined)[:, -len(queries):] for layer in layers]
    worst = 0.0
    for layer_idx, layer in enumerate(layers):
        for a, b in itertools.combinations(inputs, 2):
            ya, yb = outputs[a][layer_idx], outputs[b][layer_idx]
            gap = float((ya - yb).norm() / yb.norm())
            print(f"{type(layer).__name__:15s} {a:>8s} vs {b:<8s} relative L2 gap {gap:.2e}")
            worst = max(worst, gap)
            assert gap <= 0.02, (type(layer).__name__, a, b, gap)
    print(f"worst gap {worst:.2e}")


def test_weights_matter_on_shrunk_points():
    """On points crowded toward the centre, the weighted batch mean is the integral mean;
    the plain mean over points (what an unweighted BatchNorm uses) is far off."""
    points = P.shrunk(4096, 2, seed=0)
    r2 = points.coords.square().sum(dim=1)
    values = torch.stack([r2, torch.exp(-r2)], dim=-1)[None]  # (1, N, 2)
    exact_mean = torch.tensor([2 / 3, (math.sqrt(math.pi) / 2 * math.erf(1.0)) ** 2])
    exact_var_r2 = 8 / 45  # E[(x²+y²)²] − E[x²+y²]² = 28/45 − 20/45
    bn = DIBatchNorm(2, momentum=None)  # one step of a cumulative average = batch stats
    bn(values, points)
    weighted_err = (bn.running_mean - exact_mean).abs() / exact_mean
    plain_err = (values.mean(dim=(0, 1)) - exact_mean).abs() / exact_mean
    print(f"weighted mean error {weighted_err.tolist()}, plain mean error {plain_err.tolist()}")
    assert (weighted_err < 0.01).all()
    assert (plain_err > 0.1).all()
    assert float(bn.running_var[0]) == pytest.approx(exact_var_r2, rel=0.02)


# --- errors and hygiene -----------------------------------------------------------------------

@pytest.mark.parametrize("cls", [DIBatchNorm, DIInstanceNorm, DILayerNorm])
def test_bad_arguments_raise_useful_errors(cls):
    points = P.sobol(64, 2, seed=0)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="num_features must be a positive integer"):
            cls(bad)
    with pytest.raises(ValueError, match="eps"):
        cls(3, eps=-1.0)
    layer = cls(3)
    with pytest.raises(ValueError, match="C=4 channels but this layer expects 3"):
        layer(torch.randn(2, 64, 4), points)
    with pytest.raises(ValueError, match="N=63 points but its point set has 64"):
        layer(torch.randn(2, 63, 3), points)
    with pytest.raises(ValueError, match=r"shape \(B, N, C\)"):
        layer(torch.randn(64, 3), points)
    with pytest.raises(ValueError, match="must be a dinet.points.PointSet"):
        layer(torch.randn(2, 64, 3), points.coords)
    with pytest.raises(ValueError, match="pointwise in space.*leave points_out=None"):
        layer(torch.randn(2, 64, 3), points, P.sobol(64, 2, seed=1))
    # the same points (even a copy with the same content) are fine
    same = P.PointSet(points.coords.clone(), points.weights.clone(), kind=points.kind)
    layer(torch.randn(2, 64, 3), points, same)


def test_batchnorm_specific_errors():
    with pytest.raises(ValueError, match="momentum"):
        DIBatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="more than one value per channel"):
        DIBatchNorm(3)(torch.randn(1, 1, 3), P.sobol(1, 2, seed=0))
    with pytest.raises(ValueError, match="from_batchnorm converts nn.BatchNorm1d/2d/3d; got "
                                         "GroupNorm"):
        DIBatchNorm.from_batchnorm(nn.GroupNorm(1, 3))


def test_inputs_are_not_mutated():
    points = P.shrunk(256, 2, seed=3)
    x = torch.randn(2, len(points), 3)
    for layer in _norms(3):
        for training in (True, False):
            layer.train(training)
            before = x.clone()
            layer(x, points)
            assert torch.equal(x, before), type(layer).__name__


def test_repr_names_the_settings():
    assert "momentum=None" in repr(DIBatchNorm(4, momentum=None))
    assert "affine=False" in repr(DIInstanceNorm(4))
    assert "4, eps=1e-05, affine=True" in repr(DILayerNorm(4))
