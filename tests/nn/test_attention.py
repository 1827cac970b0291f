"""DIAttention: nn.MultiheadAttention on grids, a dense reference everywhere, invariant to
density and discretization."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import dinet.points as P
from dinet.nn.attention import DIAttention, local_attention

TOL = 1e-5  # max abs error relative to max |output|


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def reference(layer: DIAttention, x, points_in, points_out=None, query=None, value=None):
    """Dense attention w.r.t. the measure: every score, + log w_j, masked outside the box,
    softmax. Loop-free and O(N_out · N_in) memory — a yardstick, not about speed."""
    points_out = points_in if points_out is None else points_out
    query = x[:, : len(points_out)] if query is None else query
    value = x if value is None else value
    heads, d = layer.num_heads, layer.head_dim

    def split(t):
        return t.unflatten(-1, (heads, d)).transpose(1, 2)

    q, k, v = split(layer.q_proj(query)), split(layer.k_proj(x)), split(layer.v_proj(value))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d) + points_in.weights.to(q.dtype).log()
    if layer.support is not None:
        offsets = points_in.coords.double()[None] - points_out.coords.double()[:, None]
        inside = (offsets.abs() <= torch.tensor(layer.support, dtype=torch.float64)).all(-1)
        scores = scores.masked_fill(~inside, -math.inf)
    attn = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no neighbour: all -inf
    return layer.out_proj((attn @ v).transpose(1, 2).flatten(2))


# --- exact equalities -----------------------------------------------------------------------


@pytest.mark.parametrize("heads, bias", [(1, True), (4, True), (4, False)])
def test_global_equals_multihead_on_grid(heads, bias):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, heads, bias=bias, batch_first=True).eval()
    layer = DIAttention.from_multihead(mha)
    pts = P.grid((16, 12))
    x = torch.randn(3, len(pts), 16, requires_grad=True)
    ref = mha(x, x, x, need_weights=False)[0]
    out = layer(x, pts)
    assert _rel_err(out, ref) <= TOL
    # the gradients agree too (the uniform log-weight cancels in the softmax)
    upstream = torch.randn_like(ref)
    grad_ref = torch.autograd.grad((ref * upstream).sum(), x)[0]
    grad_out = torch.autograd.grad((out * upstream).sum(), x)[0]
    assert _rel_err(grad_out, grad_ref) <= TOL


def test_cross_attention_equals_multihead_with_kdim_vdim():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=False).eval()
    layer = DIAttention.from_multihead(mha)
    assert (layer.kdim, layer.vdim) == (6, 5)
    pts_in, pts_out = P.grid((8, 8)), P.sobol(20, seed=3)
    x, value, query = torch.randn(2, 64, 6), torch.randn(2, 64, 5), torch.randn(2, 20, 8)
    # batch_first=False: torch wants (L, B, E); the DI layer is always batch-first
    ref = mha(query.transpose(0, 1), x.transpose(0, 1), value.transpose(0, 1),
              need_weights=False)[0].transpose(0, 1)
    out = layer(x, pts_in, pts_out, query=query, value=value)
    assert _rel_err(out, ref) <= TOL


CASES = [  # (support, dim): global, isotropic box, per-axis box, 3-D
    (None, 2), (0.3, 2), ((0.15, 0.5), 2), (None, 3), (0.4, 3),
]


@pytest.mark.parametrize("support, dim", CASES)
def test_matches_dense_reference(support, dim):
    torch.manual_seed(0)
    layer = DIAttention(8, 2, support=support, dim=dim)
    pts = P.shrunk(300, dim, seed=1)  # non-uniform weights, so log w matters
    x = torch.randn(2, len(pts), 8)
    assert _rel_err(layer(x, pts), reference(layer, x, pts)) <= TOL
    # queries elsewhere (passed explicitly), and at a prefix (taken from x)
    out_pts = P.random(50, dim, seed=2)
    query = torch.randn(2, 50, 8)
    assert _rel_err(layer(x, pts, out_pts, query=query),
                    reference(layer, x, pts, out_pts, query)) <= TOL
    prefix = pts.prefix(64)
    assert _rel_err(layer(x, pts, prefix), reference(layer, x, pts, prefix)) <= TOL


@pytest.mark.parametrize("support", [None, 0.3])
def test_density_invariance_duplicated_points(support):
    torch.manual_seed(0)
    layer = DIAttention(8, 2, support=support)
    pts = P.shrunk(512, seed=4)
    c, w = pts.coords, pts.weights
    dup = P.PointSet(torch.cat([c, c]), torch.cat([w, w]) / 2, kind="dup",
                     weight_method="density")
    x = torch.randn(2, len(pts), 8)
    out = layer(x, pts)
    out_dup = layer(torch.cat([x, x], dim=1), dup, pts)  # pts is the prefix of dup
    assert _rel_err(out_dup, out) <= TOL


# --- discretization invariance --------------------------------------------------------------


def smooth_field(coords: torch.Tensor) -> torch.Tensor:
    """Eight smooth channels of the coordinates, ``(1, N, 8)``."""
    x, y = coords[:, 0].double(), coords[:, 1].double()

    def bump(a, b, s):
        return torch.exp(-((x - a) ** 2 + (y - b) ** 2) / (2 * s * s))

    channels = [
        torch.sin(math.pi * x), torch.cos(math.pi * y), torch.sin(math.pi * (x + y) / 2),
        torch.cos(2 * x) * torch.sin(y), bump(0.3, -0.2, 0.3), bump(-0.5, 0.4, 0.25),
        x * y, 0.5 * (x - y),
    ]
    return torch.stack(channels, dim=-1).float()[None]


N_QUERY = 256
DISCRETIZATIONS = {
    "sobol": lambda: P.sobol(16384, seed=0),
    "grid": lambda: P.grid((128, 128)),
    "jittered": lambda: P.jittered_grid((128, 128), seed=0),
    "shrunk": lambda: P.shrunk(16384, seed=0),
    "hexagonal": lambda: P.hexagonal(16384, seed=0),
    "poisson": lambda: P.poisson(16384, seed=0),
    "rotated-grid": lambda: P.rotated_grid(16384, seed=0),
    "foveated": lambda: P.foveated(16384, seed=0),
    "clustered": lambda: P.clustered(16384, seed=0),
}


@pytest.fixture(scope="module")
def invariance_outputs():
    """Outputs at 256 fixed Sobol queries from each discretization, global and local, plus a
    fine reference (2^18 Sobol points) and shrunk points with their weights ignored."""
    query_pts = P.sobol(N_QUERY, seed=123)
    query = smooth_field(query_pts.coords)
    sets = {name: make() for name, make in DISCRETIZATIONS.items()}
    sets["reference"] = P.sobol(1 << 18, seed=7)
    shrunk = sets["shrunk"]
    sets["shrunk, weights ignored"] = P.from_coords(shrunk.coords, weights="uniform")
    outputs = {}
    for support in (None, 0.3):
        torch.manual_seed(0)
        layer = DIAttention(8, 2, support=support)
        with torch.no_grad():  # small weights: the softmax is smooth, not a near-argmax
            for proj in (layer.q_proj, layer.k_proj):
                proj.weight.mul_(0.5)
            for name, pts in sets.items():
                outputs[support, name] = layer(smooth_field(pts.coords), pts, query_pts,
                                               query=query)
    return outputs


@pytest.mark.parametrize("support", [None, 0.3])
def test_discretization_invariance(invariance_outputs, support):
    out = {name: invariance_outputs[support, name] for name in DISCRETIZATIONS}
    ref = invariance_outputs[support, "reference"]
    to_ref = {name: _rel_l2(o, ref) for name, o in out.items()}
    pairwise = {(a, b): _rel_l2(out[a], out[b]) for a in out for b in out if a < b}
    kind = "global" if support is None else f"local (support {support})"
    print(f"\n{kind}: relative L2 gap to 2^18 Sobol points: "
          + ", ".join(f"{n} {g:.2e}" for n, g in to_ref.items()))
    print(f"{kind}: largest pairwise gap {max(pairwise.values()):.2e} "
          f"({'/'.join(max(pairwise, key=pairwise.get))})")
    assert max(pairwise.values()) <= 0.02
    assert max(to_ref.values()) <= 0.02


@pytest.mark.parametrize("support", [None, 0.3])
def test_quadrature_weights_matter(invariance_outputs, support):
    grid = invariance_outputs[support, "grid"]
    weighted = _rel_l2(invariance_outputs[support, "shrunk"], grid)
    ignored = _rel_l2(invariance_outputs[support, "shrunk, weights ignored"], grid)
    print(f"\nsupport {support}: shrunk vs grid, with weights {weighted:.2e}, "
          f"weights ignored {ignored:.2e}")
    assert weighted <= 0.02
    assert ignored >= 5 * weighted


# --- gradients, edge cases, errors ----------------------------------------------------------


def test_gradcheck_local_and_global_float64():
    torch.manual_seed(0)
    pts_in = P.from_coords(P.sobol(24, seed=5).coords * 0.55, weights="knn")
    # the last query has no input within the support: an empty row
    coords_out = torch.cat([P.random(5, seed=6).coords * 0.5, torch.tensor([[0.99, 0.99]])])
    pts_out = P.from_coords(coords_out, weights="uniform")
    x = torch.randn(1, 24, 4, dtype=torch.float64, requires_grad=True)
    query = torch.randn(1, 6, 4, dtype=torch.float64, requires_grad=True)
    for support in (0.4, None):
        layer = DIAttention(4, 2, support=support).double()
        assert torch.autograd.gradcheck(
            lambda x, q, layer=layer: layer(x, pts_in, pts_out, query=q), (x, query)
        )
    # the core, including the gradient with respect to the log-weights
    layer = DIAttention(4, 2, support=0.4)
    pairs = layer.pairs(pts_in, pts_out)
    assert pairs.indptr[-1] == pairs.indptr[-2] and pairs.indptr[-2] > 0
    q, k, v = (torch.randn(2, 2, n, 3, dtype=torch.float64, requires_grad=True)
               for n in (6, 24, 24))
    log_w = torch.randn(24, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: local_attention(*t, pairs), (q, k, v, log_w))


def test_local_chunks_cover_long_rows(monkeypatch):
    """Tiny chunks (one row each, rows longer than the budget) give the same result."""
    import dinet.nn.attention as attention_module

    torch.manual_seed(0)
    layer = DIAttention(8, 2, support=0.5)
    pts = P.sobol(200, seed=2)
    x = torch.randn(2, 200, 8, requires_grad=True)
    out = layer(x, pts)
    grad = torch.autograd.grad(out.square().sum(), x)[0]
    monkeypatch.setattr(attention_module, "_CHUNK_ELEMENTS", 64)
    out_small = layer(x, pts)
    grad_small = torch.autograd.grad(out_small.square().sum(), x)[0]
    assert _rel_err(out_small, out) <= TOL and _rel_err(grad_small, grad) <= TOL


@pytest.mark.parametrize("support", [None, 0.2])
def test_inputs_not_mutated(support):
    torch.manual_seed(0)
    layer = DIAttention(8, 2, support=support)
    pts, out_pts = P.shrunk(128, seed=1), P.sobol(16, seed=2)
    x = torch.randn(2, 128, 8, requires_grad=True)
    query = torch.randn(2, 16, 8, requires_grad=True)
    saved = [t.detach().clone() for t in (x, query, pts.coords, pts.weights, out_pts.coords)]
    layer(x, pts, out_pts, query=query).sum().backward()
    layer(x, pts).sum().backward()
    for before, after in zip(saved, (x, query, pts.coords, pts.weights, out_pts.coords),
                             strict=True):
        assert torch.equal(before, after.detach())


def test_query_without_neighbours_gives_zeros():
    pts_in = P.from_coords(P.sobol(64, seed=0).coords * 0.25 - 0.7, weights="uniform")
    pts_out = P.from_coords(torch.tensor([[-0.7, -0.7], [0.9, 0.9], [0.8, -0.9]]),
                            weights="uniform")
    x = torch.randn(2, 64, 8, requires_grad=True)
    query = torch.randn(2, 3, 8)
    layer = DIAttention(8, 2, support=0.2, bias=False)
    out = layer(x, pts_in, pts_out, query=query)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, 1:], torch.zeros_like(out[:, 1:]))
    assert out[:, 0].abs().max() > 0
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    # with biases, the attention output is zero and only the output bias remains
    layer = DIAttention(8, 2, support=0.2)
    with torch.no_grad():
        layer.out_proj.bias.uniform_(-1, 1)
    out = layer(x, pts_in, pts_out, query=query)
    assert torch.allclose(out[:, 1:], layer.out_proj.bias.expand(2, 2, 8))


def test_global_self_attention_at_16k_points_stays_small():
    """16k x 16k, batch 2: the dense scores alone would be 2 GiB; the mask is a stride-0
    view, so the fused kernel keeps the peak near the size of the inputs."""
    script = textwrap.dedent("""
        import resource, time, torch
        import dinet.points as P
        from dinet.nn.attention import DIAttention
        torch.manual_seed(0)
        pts = P.sobol(16384, seed=0)
        layer = DIAttention(16, 2)
        x = torch.randn(2, 16384, 16)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        with torch.no_grad():
            out = layer(x, pts)
        seconds = time.perf_counter() - start
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert torch.isfinite(out).all()
        print(seconds, grown / 1024)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    seconds, grown_mib = map(float, result.stdout.split())
    print(f"\nglobal 16k x 16k, batch 2, E=16, 2 heads: {seconds:.2f} s, peak RSS +{grown_mib:.0f} "
          "MiB")
    assert grown_mib < 512
    assert seconds < 30


def test_extra_repr_and_cache():
    from dinet.neighbors import stencil_cache

    layer = DIAttention(8, 2, support=(0.1, 0.2), kdim=4)
    text = repr(layer)
    assert "num_heads=2" in text and "support=(0.1, 0.2)" in text and "kdim=4" in text
    assert "support=global" in repr(DIAttention(8))
    pts = P.sobol(64, seed=0)
    assert layer.pairs(pts, pts) is layer.pairs(pts, pts)  # built once, then cached
    assert stencil_cache.hits >= 1


def _call(layer=None, n=32, c=8, points_out=None, query=None, value=None, dim_in=2):
    layer = DIAttention(8, 2) if layer is None else layer
    pts = P.sobol(32, dim_in, seed=0)
    return layer(torch.randn(1, n, c), pts, points_out, query=query, value=value)


@pytest.mark.parametrize("make, message", [
    (lambda: DIAttention(10, 3), "divisible by num_heads"),
    (lambda: DIAttention(8, 0), "num_heads must be a positive integer"),
    (lambda: DIAttention(8, support=0.0), "positive and finite"),
    (lambda: DIAttention(8, support=-0.5), "positive and finite"),
    (lambda: DIAttention(8, support=(0.1, -0.2)), "positive and finite"),
    (lambda: DIAttention(8, support=(0.1, 0.2, 0.3)), "one per axis"),
    (lambda: _call(c=5), "C=5 channels but this layer expects 8"),
    (lambda: _call(n=31), "N=31 points but its point set has 32"),
    (lambda: _call(points_out=P.sobol(16, 3, seed=1), query=torch.randn(1, 16, 8)),
     "points_out is 3-D"),
    (lambda: _call(dim_in=3), "points_in is 3-D"),
    (lambda: _call(points_out=P.sobol(16, seed=9)), "pass query="),
    (lambda: _call(points_out=P.sobol(16, seed=9), query=torch.randn(1, 15, 8)),
     "query has N=15"),
    (lambda: _call(DIAttention(8, 2, kdim=4), c=4), "pass query="),
    (lambda: _call(DIAttention(8, 2, vdim=4)), "pass value="),
    (lambda: DIAttention.from_multihead(nn.MultiheadAttention(8, 2, add_bias_kv=True)),
     "no DI equivalent"),
])
def test_bad_input_raises_useful_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()
