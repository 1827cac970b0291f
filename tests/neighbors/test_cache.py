"""StencilCache (LRU, counters) and Stencil (basis-major CSR, transpose)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from dinet.neighbors import Stencil, StencilCache, box_neighbors, stencil_cache
from dinet.points import grid, sobol


class Builder:
    """A build callable that records how often it ran."""

    def __init__(self, value):
        self.value = value
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.value


# --- StencilCache -------------------------------------------------------------------------


def test_hit_and_miss_counters():
    cache = StencilCache(maxsize=4)
    build = Builder("A")
    assert cache.get_or_build("a", build) == "A"
    assert (cache.hits, cache.misses, build.calls) == (0, 1, 1)
    assert cache.get_or_build("a", build) == "A"
    assert cache.get_or_build("a", Builder("other")) == "A"  # a hit never rebuilds
    assert (cache.hits, cache.misses, build.calls) == (2, 1, 1)
    cache.get_or_build("b", Builder("B"))
    assert (cache.hits, cache.misses) == (2, 2)
    assert cache.info() == {"hits": 2, "misses": 2, "size": 2, "maxsize": 4}
    assert "a" in cache and "b" in cache and "c" not in cache
    assert len(cache) == 2
    assert "hits=2" in repr(cache)


def test_lru_eviction_order():
    cache = StencilCache(maxsize=3)
    for key in "abc":
        cache.get_or_build(key, Builder(key.upper()))
    cache.get_or_build("a", Builder("x"))  # a is now the most recently used: b, c, a
    cache.get_or_build("d", Builder("D"))  # evicts b, the least recently used
    assert "b" not in cache and all(k in cache for k in "acd")
    cache.get_or_build("c", Builder("x"))  # a, d, c
    cache.get_or_build("e", Builder("E"))  # evicts a
    assert "a" not in cache and all(k in cache for k in "cde")
    assert len(cache) == 3
    cache.get_or_build("f", Builder("F"))  # evicts d
    cache.get_or_build("g", Builder("G"))  # evicts c
    assert sorted(cache._entries) == ["e", "f", "g"]
    assert list(cache._entries) == ["e", "f", "g"]  # oldest first
    # an evicted key is rebuilt on the next request
    rebuild = Builder("B2")
    assert cache.get_or_build("b", rebuild) == "B2" and rebuild.calls == 1
    assert "e" not in cache


def test_maxsize_one():
    cache = StencilCache(maxsize=1)
    cache.get_or_build(1, Builder("one"))
    cache.get_or_build(2, Builder("two"))
    assert 1 not in cache and 2 in cache and len(cache) == 1


def test_clear_resets_entries_and_counters():
    cache = StencilCache(maxsize=4)
    cache.get_or_build("a", Builder(1))
    cache.get_or_build("a", Builder(1))
    cache.clear()
    assert len(cache) == 0 and "a" not in cache
    assert cache.info() == {"hits": 0, "misses": 0, "size": 0, "maxsize": 4}
    build = Builder(2)
    assert cache.get_or_build("a", build) == 2 and build.calls == 1
    assert cache.misses == 1


def test_maxsize_zero_stores_nothing():
    cache = StencilCache(maxsize=0)
    build = Builder("v")
    for _ in range(3):
        assert cache.get_or_build("k", build) == "v"
    assert build.calls == 3
    assert len(cache) == 0 and "k" not in cache
    assert (cache.hits, cache.misses) == (0, 3)


def test_negative_maxsize_rejected():
    with pytest.raises(ValueError, match="-1"):
        StencilCache(maxsize=-1)


def test_point_sets_as_keys():
    """Keys made of point sets hit for equal content, not only for the same object."""
    cache = StencilCache(maxsize=8)
    key1 = ("box", sobol(256, seed=0), grid((16, 16)), (0.1, 0.1))
    key2 = ("box", sobol(256, seed=0), grid((16, 16)), (0.1, 0.1))
    assert key1[1] is not key2[1]
    build = Builder("stencil")
    cache.get_or_build(key1, build)
    cache.get_or_build(key2, build)
    assert build.calls == 1 and cache.hits == 1
    cache.get_or_build(("box", sobol(256, seed=1), grid((16, 16)), (0.1, 0.1)), build)
    assert build.calls == 2


def test_threads_share_the_cache():
    cache = StencilCache(maxsize=16)
    results = []

    def work(t):
        for i in range(200):
            results.append(cache.get_or_build(i % 8, lambda i=i: i % 8))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert cache.hits + cache.misses == 800
    assert len(cache) == 8
    assert cache.misses >= 8
    assert sorted(set(results)) == list(range(8))


def test_global_cache():
    assert isinstance(stencil_cache, StencilCache)
    assert stencil_cache.maxsize > 0


def test_clear_empties_the_grid_fast_path_plans_too():
    """Grid plans live in the stencil cache: one clear() empties every precomputation."""
    from dinet.nn._gridconv import grid_plan

    stencil_cache.clear()
    g = grid((8, 8))
    plan = grid_plan(g, g, (3, 3), (0.25, 0.25), (1, 1))
    assert plan is not None and len(stencil_cache) == 1
    assert grid_plan(g, g, (3, 3), (0.25, 0.25), (1, 1)) is plan and stencil_cache.hits == 1
    stencil_cache.clear()
    assert len(stencil_cache) == 0
    assert grid_plan(g, g, (3, 3), (0.25, 0.25), (1, 1)) is not plan  # rebuilt


def test_copies_and_pickles_start_empty():
    import copy
    import pickle

    cache = StencilCache(maxsize=3)
    cache.get_or_build("a", Builder(1))
    for clone in (copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):
        assert len(clone) == 0 and clone.maxsize == 3
        assert clone.get_or_build("a", Builder(2)) == 2
    assert cache.get_or_build("a", Builder(3)) == 1


# --- Stencil ------------------------------------------------------------------------------


def random_entries(rng, n_out, n_in, n_basis, n_entries):
    """Entries with non-decreasing output index, in random basis/column order otherwise."""
    rows = np.sort(rng.integers(0, n_out, n_entries))
    basis = rng.integers(0, n_basis, n_entries)
    cols = rng.integers(0, n_in, n_entries)
    values = rng.normal(size=n_entries)
    return rows, basis, cols, values


def dense_by_hand(rows, basis, cols, values, n_out, n_in, n_basis):
    dense = np.zeros((n_basis * n_out, n_in))
    np.add.at(dense, (basis * n_out + rows, cols), values)  # row = b * n_out + i
    return dense


@pytest.mark.parametrize(("n_out", "n_in", "n_basis", "n_entries"),
                         [(7, 5, 3, 40), (20, 30, 9, 300), (1, 4, 4, 10), (12, 1, 2, 15)])
def test_from_entries_matches_hand_built_dense(n_out, n_in, n_basis, n_entries):
    rng = np.random.default_rng(n_out * 1000 + n_basis)
    entries = random_entries(rng, n_out, n_in, n_basis, n_entries)
    st = Stencil.from_entries(*entries, n_out, n_in, n_basis)
    expected = dense_by_hand(*entries, n_out, n_in, n_basis)
    assert st.shape == (n_basis * n_out, n_in)
    assert st.nnz == n_entries
    assert st.indptr.shape == (n_basis * n_out + 1,)
    assert np.all(np.diff(st.indptr) >= 0) and st.indptr[-1] == n_entries
    np.testing.assert_allclose(st.scipy().toarray(), expected, rtol=0, atol=1e-12)
    dense = st.tensors("cpu", torch.float64).to_dense().numpy()
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-12)
    dense_t = st.tensors("cpu", torch.float64, transpose=True).to_dense().numpy()
    assert dense_t.shape == (n_in, n_basis * n_out)
    np.testing.assert_allclose(dense_t, expected.T, rtol=0, atol=1e-12)
    # float32 tensors hold the same matrix, rounded
    dense32 = st.tensors("cpu", torch.float32).to_dense()
    assert dense32.dtype == torch.float32
    np.testing.assert_allclose(dense32.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_from_entries_small_example_by_hand():
    # 2 outputs, 3 inputs, 2 basis functions; rows are basis-major: row = b * n_out + i
    rows = [0, 0, 0, 1, 1]
    basis = [1, 0, 1, 0, 1]
    cols = [2, 0, 0, 1, 2]
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    st = Stencil.from_entries(rows, basis, cols, values, n_out=2, n_in=3, n_basis=2)
    expected = np.array([
        [2.0, 0.0, 0.0],  # b=0, i=0
        [0.0, 4.0, 0.0],  # b=0, i=1
        [3.0, 0.0, 1.0],  # b=1, i=0
        [0.0, 0.0, 5.0],  # b=1, i=1
    ])
    np.testing.assert_array_equal(st.scipy().toarray(), expected)
    np.testing.assert_array_equal(st.indptr, [0, 1, 2, 4, 5])
    np.testing.assert_array_equal(st.tensors("cpu", torch.float64).to_dense().numpy(), expected)
    np.testing.assert_array_equal(
        st.tensors("cpu", torch.float64, transpose=True).to_dense().numpy(), expected.T
    )
    # Z = S @ X reshapes to (n_basis, n_out, C)
    x = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    z = (st.tensors("cpu", torch.float64) @ x).reshape(2, 2, 2)
    torch.testing.assert_close(z, torch.as_tensor(expected @ x.numpy()).reshape(2, 2, 2))


def test_from_entries_keeps_entry_order_within_a_row():
    # several entries for the same (b, i) keep their relative order (a stable sort)
    rows = [0, 0, 0, 0]
    basis = [1, 0, 1, 0]
    cols = [3, 2, 1, 0]
    st = Stencil.from_entries(rows, basis, cols, [1.0, 2.0, 3.0, 4.0], 1, 4, 2)
    np.testing.assert_array_equal(st.indices, [2, 0, 3, 1])
    np.testing.assert_array_equal(st.values, [2.0, 4.0, 1.0, 3.0])


def test_from_entries_with_empty_rows_and_no_entries():
    st = Stencil.from_entries([3, 3], [2, 0], [1, 0], [1.5, -2.0], n_out=5, n_in=2, n_basis=3)
    expected = np.zeros((15, 2))
    expected[0 * 5 + 3, 0] = -2.0
    expected[2 * 5 + 3, 1] = 1.5
    np.testing.assert_array_equal(st.tensors("cpu", torch.float64).to_dense().numpy(), expected)
    empty = Stencil.from_entries([], [], [], [], n_out=3, n_in=4, n_basis=2)
    assert empty.nnz == 0 and empty.shape == (6, 4)
    assert empty.tensors("cpu", torch.float64, transpose=True).to_dense().abs().sum() == 0


def test_stencil_from_a_neighbour_search():
    """The pipeline used by layers: neighbours → entries → S; S @ 1 counts neighbours."""
    y = sobol(200, 2, seed=0).coords.double().numpy()
    x = grid((6, 6)).coords.double().numpy()
    nb = box_neighbors(x, y, 0.2)
    n_basis = 2
    # basis 0: constant 1; basis 1: the first offset coordinate
    rows = np.concatenate([nb.rows, nb.rows])
    basis = np.repeat([0, 1], len(nb))
    cols = np.concatenate([nb.cols, nb.cols])
    values = np.concatenate([np.ones(len(nb)), nb.offsets[:, 0]])
    order = np.argsort(rows, kind="stable")
    st = Stencil.from_entries(rows[order], basis[order], cols[order], values[order],
                              len(x), len(y), n_basis)
    z = st.tensors("cpu", torch.float64) @ torch.ones(len(y), 1, dtype=torch.float64)
    z = z.reshape(n_basis, len(x))
    np.testing.assert_array_equal(z[0].numpy(), np.diff(nb.indptr))
    brute = np.array([(y[(np.abs(y - xi) <= 0.2).all(1), 0] - xi[0]).sum() for xi in x])
    np.testing.assert_allclose(z[1].numpy(), brute, rtol=1e-12, atol=1e-12)


def test_tensor_parts_are_cached_per_device_and_dtype():
    rng = np.random.default_rng(0)
    st = Stencil.from_entries(*random_entries(rng, 4, 6, 2, 20), 4, 6, 2)
    values = st.value_tensor("cpu", torch.float64)
    assert st.value_tensor(torch.device("cpu"), torch.float64) is values
    assert st.value_tensor("cpu", torch.float32) is not values
    assert st.index_tensor("perm_t", "cpu") is st.index_tensor("perm_t", torch.device("cpu"))
    a = st.tensors("cpu", torch.float64)
    t = st.tensors("cpu", torch.float64, transpose=True)
    assert a.layout == torch.sparse_csr and t.layout == torch.sparse_csr
    torch.testing.assert_close(t.to_dense(), a.to_dense().t())


def test_stencil_rejects_inconsistent_indptr():
    with pytest.raises(ValueError, match="indptr"):
        Stencil(np.zeros(5, dtype=np.int64), [], [], n_out=2, n_in=3, n_basis=3)
