"""Point sets: coarse-to-fine prefixes, seeds, weights, validation, identity and layout."""

from __future__ import annotations

import copy
import math
import pickle
import re

import numpy as np
import pytest
import torch

from dinet.points import (
    PointSet,
    from_coords,
    grid,
    halton,
    image_to_values,
    jittered_grid,
    knn_weights,
    lattice_index,
    masked,
    random,
    shrunk,
    sobol,
    values_to_image,
)

GRID_SHAPES = [(16, 16), (24, 40), (33, 17), (12, 10, 8)]


def pixel_centres(shape, step=1):
    """Float64 pixel centres −1 + (2i+1)/s of the indices i ≡ 0 mod ``step``, row-major."""
    axes = [-1.0 + (2.0 * np.arange(0, s, step) + 1.0) / s for s in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(shape))


def sorted_rows(a):
    a = np.asarray(a, dtype=np.float64)
    return a[np.lexsort(a.T[::-1])]


def level_size(shape, k):
    return math.prod(-(-s // 2**k) for s in shape)


def n_levels(shape):
    k = 0
    while any(-(-s // 2**k) > 1 for s in shape):
        k += 1
    return k + 1


# --- 1. prefix property --------------------------------------------------------------------


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_grid_holds_every_pixel_centre_once(shape):
    g = grid(shape)
    assert g.shape == shape and g.kind == "grid" and g.dim == len(shape)
    assert len(g) == math.prod(shape)
    expected = pixel_centres(shape).astype(np.float32)
    np.testing.assert_array_equal(sorted_rows(g.coords.numpy()), sorted_rows(expected))


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_grid_prefix_is_subgrid_of_indices_0_mod_2k(shape):
    g = grid(shape)
    for k in range(n_levels(shape)):
        m = level_size(shape, k)
        p = g.prefix(m)
        assert len(p) == m
        assert p.shape == tuple(-(-s // 2**k) for s in shape)
        # coordinates −1 + (2i+1)/H for every i ≡ 0 mod 2^k, and nothing else
        expected = pixel_centres(shape, step=2**k).astype(np.float32)
        assert len(expected) == m
        np.testing.assert_array_equal(sorted_rows(p.coords.numpy()), sorted_rows(expected))
        # the prefix really is the first m stored points
        assert torch.equal(p.coords, g.coords[:m])


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_grid_levels(shape):
    g = grid(shape)
    levels = g.levels()
    assert levels == [level_size(shape, k) for k in range(n_levels(shape))]
    assert levels[0] == len(g) and levels[-1] == 1
    assert all(a > b for a, b in zip(levels, levels[1:], strict=False))


def test_grid_levels_known_values():
    assert grid((16, 16)).levels() == [256, 64, 16, 4, 1]
    assert grid((24, 40)).levels() == [960, 240, 60, 15, 6, 2, 1]
    assert grid((33, 17)).levels() == [561, 153, 45, 15, 6, 2, 1]
    assert grid((12, 10, 8)).levels() == [960, 120, 18, 4, 1]
    assert sobol(100).levels() == [100]


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_prefix_of_prefix_equals_direct_prefix(shape):
    g = grid(shape)
    levels = g.levels()
    for i, a in enumerate(levels):
        for b in levels[i:]:
            assert g.prefix(a).prefix(b) == g.prefix(b)
            assert torch.equal(g.prefix(a).prefix(b).weights, g.prefix(b).weights)


def test_prefix_of_prefix_non_grid():
    for ps in (sobol(1024, seed=3), halton(1000, seed=3), shrunk(1024, seed=3)):
        direct = ps.prefix(64)
        twice = ps.prefix(256).prefix(64)
        assert torch.equal(twice.coords, direct.coords)
        torch.testing.assert_close(twice.weights, direct.weights, rtol=1e-6, atol=0)


@pytest.mark.parametrize("shape", [(16, 16), (33, 17), (12, 10, 8)])
def test_grid_prefix_not_a_level_lists_valid_sizes(shape):
    g = grid(shape)
    levels = g.levels()
    bad = levels[1] + 1
    with pytest.raises(ValueError, match=re.escape(str(levels))) as info:
        g.prefix(bad)
    assert str(bad) in str(info.value)


def test_prefix_size_out_of_range():
    ps = sobol(64, seed=0)
    assert ps.prefix(64) is ps
    for bad in (0, -3, 65, 1.5, True):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            ps.prefix(bad)


@pytest.mark.parametrize("dim", [2, 3])
def test_sobol_prefix_is_shorter_sobol(dim):
    long = sobol(2048, dim, seed=11)
    for m in (1, 7, 64, 1000):
        assert torch.equal(long.prefix(m).coords, sobol(m, dim, seed=11).coords)


def test_unscrambled_sobol_starts_at_corner():
    ps = sobol(16, 2, scramble=False)
    assert torch.equal(ps.coords[0], torch.tensor([-1.0, -1.0]))
    assert torch.equal(ps.coords, sobol(16, 2, scramble=False).coords)


def cell_counts(coords, a, b):
    """Points per cell of a 2^a × 2^b partition of [-1, 1]^2."""
    u = (coords.double().numpy() + 1.0) / 2.0
    i = np.clip(np.floor(u[:, 0] * 2**a).astype(int), 0, 2**a - 1)
    j = np.clip(np.floor(u[:, 1] * 2**b).astype(int), 0, 2**b - 1)
    return np.bincount(i * 2**b + j, minlength=2 ** (a + b))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [4, 6, 8, 10])
def test_scrambled_sobol_prefix_is_0k2_net(seed, k):
    prefix = sobol(4096, 2, seed=seed).prefix(2**k)
    # square partition: every 2^(k/2) × 2^(k/2) cell holds exactly one point
    counts = cell_counts(prefix.coords, k // 2, k // 2)
    assert counts.min() == 1 and counts.max() == 1
    # and the elongated elementary intervals of volume 2^-k too
    for a in (0, 1, k // 2 - 1, k - 1, k):
        counts = cell_counts(prefix.coords, a, k - a)
        assert counts.min() == 1 and counts.max() == 1, (a, k - a)


def test_random_points_are_not_a_net():
    # the net check above can fail: i.i.d. points leave empty cells
    counts = cell_counts(random(256, 2, seed=0).coords, 4, 4)
    assert counts.min() == 0


@pytest.mark.parametrize("dim", [2, 3])
def test_halton_prefix_is_shorter_halton(dim):
    long = halton(1000, dim, seed=5)
    for m in (1, 10, 333):
        assert torch.equal(long.prefix(m).coords, halton(m, dim, seed=5).coords)


# --- 2. seeds -----------------------------------------------------------------------------

SEEDED = {
    "sobol": lambda seed: sobol(256, 2, seed=seed),
    "sobol3": lambda seed: sobol(256, 3, seed=seed),
    "halton": lambda seed: halton(256, 2, seed=seed),
    "random": lambda seed: random(256, 2, seed=seed),
    "shrunk": lambda seed: shrunk(256, 2, seed=seed),
    "jittered_grid": lambda seed: jittered_grid((16, 16), seed=seed),
    "jittered_grid3": lambda seed: jittered_grid((6, 5, 4), seed=seed),
}


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_same_seed_reproduces(name):
    make = SEEDED[name]
    a, b = make(1234), make(1234)
    assert torch.equal(a.coords, b.coords)
    assert torch.equal(a.weights, b.weights)
    assert a == b and a.digest == b.digest


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_different_seeds_differ(name):
    make = SEEDED[name]
    a, b = make(1), make(2)
    assert not torch.equal(a.coords, b.coords)
    assert a != b


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_seed_none_draws_fresh(name):
    make = SEEDED[name]
    a, b = make(None), make(None)
    assert not torch.equal(a.coords, b.coords)


def test_numpy_integer_seed():
    assert torch.equal(sobol(64, seed=np.int64(7)).coords, sobol(64, seed=7).coords)


# --- 3. weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("make", [sobol, halton, random])
def test_uniform_weights(make, dim):
    n = 500
    ps = make(n, dim, seed=0)
    assert ps.weights.dtype == torch.float32 and ps.weights.shape == (n,)
    assert torch.equal(ps.weights, torch.full((n,), 2.0**dim / n))
    assert math.isclose(float(ps.weights.double().sum()), 2.0**dim, rel_tol=1e-6)
    assert ps.coords.abs().max() <= 1.0


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_grid_weights_exactly_uniform(shape):
    g = grid(shape)
    n, d = len(g), len(shape)
    assert torch.equal(g.weights, torch.full((n,), 2.0**d / n, dtype=torch.float32))
    assert math.isclose(float(g.weights.double().sum()), 2.0**d, rel_tol=1e-6)


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_jittered_grid_stays_in_its_pixel(shape):
    j = jittered_grid(shape, seed=0)
    g = grid(shape)
    n, d = len(j), len(shape)
    assert j.shape == shape and j.kind == "jittered"
    half = 1.0 / torch.tensor(shape, dtype=torch.float64)
    dev = (j.coords.double() - g.coords.double()).abs()
    assert bool((dev <= half + 1e-6).all())
    assert float(dev.max()) > 0.5 * float(half.min())  # it did move
    assert torch.equal(j.weights, torch.full((n,), 2.0**d / n))
    assert math.isclose(float(j.weights.double().sum()), 2.0**d, rel_tol=1e-6)


def test_jittered_grid_prefix():
    j = jittered_grid((16, 16), seed=0)
    p = j.prefix(64)
    assert p.shape == (8, 8)
    assert torch.equal(p.coords, j.coords[:64])
    torch.testing.assert_close(p.weights, torch.full((64,), 4.0 / 64))


@pytest.mark.parametrize("dim", [2, 3])
def test_shrunk_weights_are_inverse_density(dim):
    n = 1024
    ps = shrunk(n, dim, seed=4)
    t = ps.coords.double()
    expected = torch.prod(4.0 * t.abs().sqrt(), dim=1) / n
    torch.testing.assert_close(ps.weights.double(), expected, rtol=1e-5, atol=1e-12)
    # shrunk = s·|s| of the Sobol points with the same seed
    s = sobol(n, dim, seed=4).coords.double()
    torch.testing.assert_close(t, s * s.abs(), rtol=0, atol=1e-7)
    # importance sampling of the constant 1 gives the measure of the domain
    assert math.isclose(float(ps.weights.double().sum()), 2.0**dim, rel_tol=1e-2)
    assert ps.weight_method == "density"


def test_masked_keeps_parent_weights_and_measures_region():
    g = grid((64, 64))

    def disk(c):
        return (c**2).sum(dim=1) <= 0.6**2

    m = masked(g, disk)
    keep = disk(g.coords)
    assert len(m) == int(keep.sum()) < len(g)
    assert torch.equal(m.coords, g.coords[keep])
    assert torch.equal(m.weights, g.weights[keep])
    assert m.shape is None and "grid" in m.kind
    assert math.isclose(float(m.weights.sum()), math.pi * 0.36, rel_tol=0.02)

    s = shrunk(4096, seed=0)
    ms = masked(s, lambda c: c[:, 0] > 0)  # half the square: area 2
    assert torch.equal(ms.weights, s.weights[s.coords[:, 0] > 0])
    assert math.isclose(float(ms.weights.sum()), 2.0, rel_tol=0.03)

    # a prefix of a masked set keeps approximating the same area
    ms2 = masked(sobol(4096, seed=0), lambda c: c[:, 1] < 0)
    assert math.isclose(float(ms2.weights.sum()), 2.0, rel_tol=0.01)
    assert math.isclose(float(ms2.prefix(len(ms2) // 2).weights.sum()), 2.0, rel_tol=0.01)


def test_masked_bad_masks():
    g = grid((8, 8))
    with pytest.raises(ValueError, match="removed every point"):
        masked(g, lambda c: torch.zeros(len(c), dtype=torch.bool))
    with pytest.raises(ValueError, match="63"):
        masked(g, lambda c: torch.ones(63, dtype=torch.bool))


def test_prefix_reweights_uniform():
    for ps in (sobol(1024, seed=0), halton(1024, 3, seed=0), random(1024, seed=0)):
        p = ps.prefix(256)
        d = ps.dim
        torch.testing.assert_close(p.weights, ps.weights[:256] * 4.0)
        torch.testing.assert_close(p.weights, torch.full((256,), 2.0**d / 256))
        assert math.isclose(float(p.weights.double().sum()), 2.0**d, rel_tol=1e-5)


def test_prefix_reweights_shrunk_by_n_over_m():
    ps = shrunk(1024, seed=9)
    p = ps.prefix(256)
    torch.testing.assert_close(p.weights, ps.weights[:256] * (1024 / 256), rtol=1e-6, atol=0)
    # ...which is exactly the analytic weight of the shorter shrunk set
    torch.testing.assert_close(p.weights, shrunk(256, seed=9).weights, rtol=1e-5, atol=0)


def test_prefix_recomputes_knn_weights():
    rng = np.random.default_rng(0)
    ps = from_coords(rng.uniform(-1, 1, (2000, 2)), weights="knn")
    assert ps.weight_method == "knn"
    p = ps.prefix(500)
    assert p.weight_method == "knn"
    torch.testing.assert_close(p.weights, knn_weights(ps.coords[:500]))
    # not a rescaling of the parent's weights
    assert not torch.allclose(p.weights, ps.weights[:500] * 4, rtol=1e-3)
    assert math.isclose(float(p.weights.sum()), 4.0, rel_tol=0.05)


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_grid_prefix_weights_are_subgrid_cell_volume(shape):
    g = grid(shape)
    d = len(shape)
    for k in range(1, n_levels(shape) - 1):
        p = g.prefix(level_size(shape, k))
        sub = p.shape
        # spacing of the sub-grid along axis a is 2^k pixels = 2^(k+1)/s
        volume = math.prod(2.0 ** (k + 1) / s if n > 1 else 2.0 for s, n in zip(shape, sub,
                                                                                 strict=True))
        torch.testing.assert_close(p.weights, torch.full((len(p),), volume), rtol=1e-5, atol=0)
        total = float(p.weights.double().sum())
        if all(s % 2**k == 0 for s in shape):
            assert math.isclose(total, 2.0**d, rel_tol=1e-5)
        elif min(sub) >= 8:
            # Sizes not divisible by 2^k: the sub-grid's cells (2^k pixels wide, so that a
            # converted strided conv stays exact) overhang the domain a little. On very
            # coarse levels of such grids the overhang is large (up to 1.6x), by design.
            assert math.isclose(total, 2.0**d, rel_tol=0.15), total


# --- 5. bad input, immutability, identity -------------------------------------------------


def test_coords_outside_domain_rejected():
    c = np.array([[0.0, 0.5], [1.7, -0.2]])
    with pytest.raises(ValueError, match=r"1\.7"):
        PointSet(c, np.ones(2))
    with pytest.raises(ValueError, match=r"1\.7"):
        from_coords(c)
    with pytest.raises(ValueError, match=r"1\.7"):
        from_coords(c, weights="uniform")
    with pytest.raises(ValueError, match=r"-1\.25"):
        from_coords(np.array([[0.0, -1.25]]))
    # the boundary itself is in the domain
    ps = from_coords(np.array([[-1.0, 1.0], [1.0, -1.0], [0.0, 0.0]]))
    assert len(ps) == 3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_coords_rejected(bad):
    c = np.zeros((4, 2))
    c[2, 1] = bad
    for make in (
        lambda: PointSet(c, np.ones(4)),
        lambda: from_coords(c),
        lambda: from_coords(c, weights="uniform"),
        lambda: from_coords(c, weights=np.ones(4)),
    ):
        with pytest.raises(ValueError, match="NaN"):
            make()


def test_empty_sets_rejected():
    with pytest.raises(ValueError, match=re.escape("(0, 2)")):
        from_coords(np.zeros((0, 2)))
    with pytest.raises(ValueError, match=re.escape("(0,)")):
        from_coords(np.array([]))
    with pytest.raises(ValueError, match="N = 0"):
        PointSet(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match=re.escape("(5,)")):
        PointSet(np.zeros(5), np.ones(5))


@pytest.mark.parametrize("make", [sobol, halton, random, shrunk])
@pytest.mark.parametrize("n", [0, -1, -64])
def test_generators_reject_non_positive_n(make, n):
    with pytest.raises(ValueError, match=rf"got {n}\b"):
        make(n)


@pytest.mark.parametrize("make", [sobol, halton, random, shrunk])
def test_generators_reject_bad_n_and_dim(make):
    with pytest.raises(ValueError, match=r"2\.5"):
        make(2.5)
    with pytest.raises(ValueError, match="dim"):
        make(16, 0)


@pytest.mark.parametrize(
    ("shape", "named"),
    [(0, "0"), (-4, "-4"), ((0, 5), "(0, 5)"), ((5, 0), "(5, 0)"), ((-3, 4), "-3"),
     ((4, 4, -1), "-1"), ((), "()"), ((2.5, 3), "2.5")],
)
def test_grid_rejects_bad_shapes(shape, named):
    with pytest.raises(ValueError, match="positive integers") as info:
        grid(shape)
    assert named in str(info.value)
    with pytest.raises(ValueError, match="positive integers"):
        jittered_grid(shape, seed=0)


def test_weights_shape_and_sign_checked():
    c = sobol(10, seed=0).coords
    with pytest.raises(ValueError, match=re.escape("(5,)")):
        from_coords(c, weights=np.ones(5))
    with pytest.raises(ValueError, match=re.escape("(10, 1)")):
        PointSet(c, np.ones((10, 1)))
    w = np.full(10, 0.4)
    w[3] = -0.5
    with pytest.raises(ValueError, match=r"-0\.5"):
        from_coords(c, weights=w)
    w[3] = 0.0
    with pytest.raises(ValueError, match="positive"):
        from_coords(c, weights=w)
    w[3] = np.nan
    with pytest.raises(ValueError, match="positive"):
        PointSet(c, w)
    with pytest.raises(ValueError, match="'delaunay'"):
        from_coords(c, weights="delaunay")
    with pytest.raises(ValueError, match="'magic'"):
        PointSet(c, np.ones(10), weight_method="magic")
    with pytest.raises(ValueError, match=re.escape("(3, 3)")):
        PointSet(c, np.ones(10), shape=(3, 3))


def test_from_coords_explicit_weights():
    c = sobol(10, seed=0).coords
    w = np.linspace(0.1, 1.0, 10)
    ps = from_coords(c, weights=w)
    torch.testing.assert_close(ps.weights, torch.as_tensor(w, dtype=torch.float32))
    assert ps.weight_method == "density"
    u = from_coords(c, weights="uniform")
    assert torch.equal(u.weights, torch.full((10,), 0.4))
    single = from_coords(np.array([[0.25, -0.5]]))
    assert torch.equal(single.weights, torch.tensor([4.0]))


def test_pointset_is_immutable():
    ps = sobol(32, seed=0)
    for name, value in [("coords", torch.zeros(32, 2)), ("weights", torch.ones(32)),
                        ("kind", "grid"), ("digest", "0" * 32), ("new_attribute", 1)]:
        with pytest.raises(AttributeError):
            setattr(ps, name, value)
    with pytest.raises(AttributeError):
        del ps.kind
    assert ps.kind == "sobol"


def test_equal_content_equal_identity():
    a, b = sobol(128, seed=42), sobol(128, seed=42)
    assert a is not b
    assert a == b and hash(a) == hash(b) and a.digest == b.digest
    assert {a: "x"}[b] == "x"
    assert len({a, b, grid((8, 8)), grid((8, 8))}) == 2
    # same content given as float64 numpy or float32 tensor
    c = PointSet(a.coords.double().numpy(), a.weights.numpy(), "sobol", weight_method="uniform")
    assert c == a and hash(c) == hash(a)
    # any content change changes the identity
    assert sobol(128, seed=43) != a
    assert PointSet(a.coords, a.weights * 2, "sobol") != a
    assert PointSet(a.coords, a.weights, "other") != a
    assert a != "not a point set"


def test_copy_deepcopy_and_pickle_keep_content_and_identity():
    for ps in (sobol(64, seed=2), grid((4, 6)), shrunk(32, seed=1)):
        for clone in (copy.copy(ps), copy.deepcopy(ps), pickle.loads(pickle.dumps(ps))):
            assert clone == ps and hash(clone) == hash(ps)
            assert (clone.kind, clone.shape, clone.weight_method) == (
                ps.kind, ps.shape, ps.weight_method)
            assert torch.equal(clone.coords, ps.coords)
            assert torch.equal(clone.weights, ps.weights)
            assert clone.prefix(len(ps) // 4 or 1) == ps.prefix(len(ps) // 4 or 1)
            with pytest.raises(AttributeError, match="immutable"):
                clone.kind = "other"  # the copy is as immutable as the original
    deep = copy.deepcopy(sobol(16, seed=0))
    assert deep.coords.data_ptr() != sobol(16, seed=0).coords.data_ptr()


def test_to_keeps_digest():
    ps = shrunk(64, seed=1)
    same = ps.to("cpu")
    assert same == ps and same.digest == ps.digest and hash(same) == hash(ps)
    assert same.device == torch.device("cpu")
    meta = ps.to("meta")
    assert meta.device == torch.device("meta")
    assert meta.digest == ps.digest and meta == ps
    assert meta.kind == ps.kind and meta.weight_method == ps.weight_method


def test_repr_and_len():
    g = grid((4, 6))
    assert len(g) == 24 and g.dim == 2
    assert "grid" in repr(g) and "(4, 6)" in repr(g)


# --- 6. layout ----------------------------------------------------------------------------


def is_permutation(index, n):
    return np.array_equal(np.sort(index.numpy()), np.arange(n))


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_lattice_index_is_row_major_pixel_index(shape):
    g = grid(shape)
    index = lattice_index(g)
    assert index.dtype == torch.int64 and is_permutation(index, len(g))
    multi = np.stack(np.unravel_index(index.numpy(), shape), axis=1)
    centres = -1.0 + (2.0 * multi + 1.0) / np.asarray(shape)
    np.testing.assert_allclose(g.coords.double().numpy(), centres, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_lattice_index_permutation_on_prefixes(shape):
    g = grid(shape)
    for m in g.levels():
        p = g.prefix(m)
        assert is_permutation(lattice_index(p), m)


@pytest.mark.parametrize("shape", GRID_SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lattice_index_permutation_on_jittered_grid(shape, seed):
    j = jittered_grid(shape, seed=seed)
    index = lattice_index(j)
    assert is_permutation(index, len(j))
    assert torch.equal(index, lattice_index(grid(shape)))  # same pixel order as the grid
    for m in j.levels()[1:]:
        assert torch.equal(lattice_index(j.prefix(m)), lattice_index(grid(shape).prefix(m)))


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_image_values_round_trip(shape):
    g = grid(shape)
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, *shape, generator=gen)
    values = image_to_values(image, g)
    assert values.shape == (2, len(g), 3)
    assert torch.equal(values_to_image(values, g), image)
    # the value at each point is the pixel that sits at its coordinates
    multi = np.round((g.coords.double().numpy() + 1.0) * np.asarray(shape) / 2 - 0.5)
    multi = torch.as_tensor(multi.astype(np.int64))
    for n in (0, 1, len(g) // 2, len(g) - 1):
        pixel = image[(slice(None), slice(None), *multi[n].tolist())]
        assert torch.equal(values[:, n, :], pixel)
    values2 = torch.randn(2, len(g), 3, generator=gen)
    assert torch.equal(image_to_values(values_to_image(values2, g), g), values2)


@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_prefix_layout_is_strided_slicing(shape):
    """Downsampling by a prefix = taking every 2^k-th pixel of the image."""
    g = grid(shape)
    image = torch.randn(1, 2, *shape, generator=torch.Generator().manual_seed(1))
    full = image_to_values(image, g)
    for k in range(1, n_levels(shape)):
        m = level_size(shape, k)
        p = g.prefix(m)
        sub = image[(slice(None), slice(None), *[slice(None, None, 2**k)] * len(shape))]
        assert tuple(sub.shape[2:]) == p.shape
        values = image_to_values(sub, p)
        assert torch.equal(values, full[:, :m])
        assert torch.equal(values_to_image(values, p), sub)


def test_jittered_grid_image_round_trip():
    j = jittered_grid((24, 40), seed=3)
    image = torch.randn(1, 2, 24, 40, generator=torch.Generator().manual_seed(2))
    values = image_to_values(image, j)
    assert torch.equal(values, image_to_values(image, grid((24, 40))))
    assert torch.equal(values_to_image(values, j), image)


def test_layout_rejects_mismatches():
    g = grid((8, 8))
    with pytest.raises(ValueError, match=re.escape("(8, 9)")):
        image_to_values(torch.zeros(1, 1, 8, 9), g)
    with pytest.raises(ValueError, match="grid"):
        image_to_values(torch.zeros(1, 1, 8, 8), sobol(64, seed=0))
    with pytest.raises(ValueError, match="N=63"):
        values_to_image(torch.zeros(1, 63, 1), g)
    with pytest.raises(ValueError):
        values_to_image(torch.zeros(1, 64, 1), sobol(64, seed=0))
    with pytest.raises(ValueError, match="grid shape"):
        lattice_index(sobol(64, seed=0))
