"""The spline stencil built with torch (on a GPU for points that live there) equals the CPU
build entry for entry: the same non-zeros at the same (basis, output point, input point),
the values to float64 rounding. Run here on the CPU; the same code runs on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinet import points as P
from dinet.neighbors import stencil_cache
from dinet.neighbors.device_build import box_pairs_torch, spline_stencil_torch
from dinet.neighbors.search import box_neighbors
from dinet.neighbors.stencils import SNAP, _device_pair_stencil, pair_stencil, spline_stencil
from dinet.nn import DIConv

ON_GPU = torch.cuda.is_available()


def _entries(stencil) -> dict[tuple[int, int, int], float]:
    """``{(basis, output point, input point): value}`` in the point sets' own order."""
    rows = np.repeat(np.arange(len(stencil.indptr) - 1), np.diff(stencil.indptr))
    basis, pos = np.divmod(rows, stencil.n_out)
    out_pt = pos if stencil.out_order is None else stencil.out_order[pos]
    in_pt = (stencil.indices if stencil.in_order is None
             else stencil.in_order[stencil.indices])
    return {(int(b), int(i), int(j)): float(v)
            for b, i, j, v in zip(basis, out_pt, in_pt, stencil.values, strict=True)}


CASES = [
    ("sobol->random 3x3", P.sobol(500, seed=0), P.random(120, seed=1), (3, 3), (0.12, 0.12),
     (1, 1)),
    ("grid->grid 5x5 (hats on the lattice)", P.grid((16, 16)), P.grid((16, 16)), (5, 5),
     (0.125, 0.125), (1, 1)),
    ("dilated, anisotropic", P.sobol(400, seed=2), P.sobol(90, seed=3), (3, 5), (0.1, 0.07),
     (2, 1)),
    ("3-D", P.sobol(700, dim=3, seed=4), P.random(60, dim=3, seed=5), (3, 3, 3),
     (0.2, 0.2, 0.2), (1, 1, 1)),
]


@pytest.mark.parametrize(("name", "pin", "pout", "ks", "h", "dil"), CASES,
                         ids=[c[0] for c in CASES])
def test_device_build_equals_the_cpu_build(name, pin, pout, ks, h, dil):
    cpu = spline_stencil(pin, pout, ks, h, dil)
    built = spline_stencil_torch(pin, pout, ks, h, dil, SNAP)
    a, b = _entries(cpu), _entries(built)
    assert a.keys() == b.keys() and len(a) == cpu.nnz > 0
    np.testing.assert_allclose([b[k] for k in a], list(a.values()), rtol=1e-12, atol=0)
    # The device arrays are the kernels' arrays (no second upload); other dtypes are
    # converted from the device's float64 values.
    assert built.index_tensor("indptr", "cpu") is not None
    torch.testing.assert_close(built.value_tensor("cpu", torch.float32),
                               torch.from_numpy(built.values).float(), rtol=0, atol=0)
    assert built.in_order is None and built.out_order is None


def test_box_pairs_torch_equals_the_numpy_search():
    x, y = P.random(200, seed=0).coords.double(), P.sobol(900, seed=1).coords.double()
    rows, cols, offsets = box_pairs_torch(x, y, [0.1, 0.05])
    ref = box_neighbors(x, y, [0.1, 0.05])
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == sorted(
        zip(ref.rows.tolist(), ref.cols.tolist(), strict=True))
    torch.testing.assert_close(offsets, y[cols] - x[rows])


def test_device_pair_stencil_holds_the_cpu_pairs():
    """The learned-kernel (MLP) stencil from the device search: the same pairs, offsets and
    quadrature weights, in the point sets' own order."""
    pin, pout = P.sobol(600, seed=0), P.random(150, seed=1)
    cpu = pair_stencil(pin, pout, (0.1, 0.08), n_basis=4)
    dev = _device_pair_stencil(pin, pout, (0.1, 0.08), 4)

    def pairs(st):
        return {(int(i), int(j)): (tuple(o), float(w)) for i, j, o, w in zip(
            st.point_rows, st.point_cols, st.offsets, st.pair_weights, strict=True)}

    a, b = pairs(cpu), pairs(dev)
    assert a.keys() == b.keys() and len(a) == cpu.n_pairs > 0
    for key, (offset, weight) in a.items():
        np.testing.assert_allclose(b[key][0], offset, rtol=0, atol=1e-15)
        assert b[key][1] == weight
    assert dev.nnz == cpu.nnz == 4 * cpu.n_pairs


@pytest.mark.skipif(not ON_GPU, reason="the dispatch to the device build needs CUDA points")
def test_a_conv_on_cuda_points_builds_its_stencil_there():
    stencil_cache.clear()  # a CPU build of the same points would otherwise be served
    conv = DIConv(2, 3, 3, spacing=0.1).cuda()
    pts = P.sobol(300, seed=0).to("cuda")
    x = torch.randn(1, 300, 2, device="cuda")
    stencil = conv.stencil(pts)
    assert stencil.in_order is None  # the device build's point order
    torch.testing.assert_close(conv(x, pts).cpu(), conv.cpu()(x.cpu(), pts.to("cpu")),
                               rtol=1e-5, atol=1e-5)
