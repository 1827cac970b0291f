"""Models: presets on any points, quadrature modes, checkpoints, baselines."""

from __future__ import annotations

import re

import pytest
import torch

import dinet.points as P
from dinet._io import content_digest
from dinet.models import (
    PRESETS,
    QUADRATURES,
    SEGMENTER_PRESETS,
    Classifier,
    DIModel,
    GridCNNClassifier,
    GridCNNSegmenter,
    GridResNetClassifier,
    GridUNetSegmenter,
    SDFNet,
    Segmenter,
    VoxelCNN3d,
    create_model,
    load_model,
    unweighted,
)
from dinet.models.segmenter import node_spacing

pytestmark = pytest.mark.usefixtures("one_thread")


H = 2 / 16  # 256 points ≈ a 16×16 image
N = 256


def point_sets():
    return {"sobol": P.sobol(N, 2, seed=0), "grid": P.grid((16, 16)),
            "shrunk": P.shrunk(N, 2, seed=0)}


def run_unchanged(model, x, *args):
    """Call the model and check that it leaves its input tensor alone."""
    before = x.clone()
    y = model(x, *args)
    assert torch.equal(x, before)
    return y


@pytest.mark.parametrize("preset", PRESETS)
def test_classifier_presets_on_any_points(preset):
    torch.manual_seed(0)
    model = Classifier(preset, in_channels=2, n_classes=3, base_spacing=H)
    for points in point_sets().values():
        y = run_unchanged(model, torch.randn(2, N, 2), points)
        assert y.shape == (2, 3) and torch.isfinite(y).all()


@pytest.mark.parametrize("preset", SEGMENTER_PRESETS)
def test_segmenter_presets_on_any_points_and_queries(preset):
    torch.manual_seed(0)
    model = Segmenter(preset, in_channels=1, n_classes=4, base_spacing=H)
    query = P.jittered_grid((7, 9), seed=1)
    for points in point_sets().values():
        x = torch.randn(2, N, 1)
        y = run_unchanged(model, x, points)
        assert y.shape == (2, N, 4) and torch.isfinite(y).all()
        yq = model(x, points, query)
        assert yq.shape == (2, 63, 4) and torch.isfinite(yq).all()


def test_segmenter_query_equal_to_input_points_matches_default():
    model = Segmenter("dinet3", base_spacing=H).eval()
    points, x = P.sobol(N, 2, seed=2), torch.randn(2, N, 1)
    torch.testing.assert_close(model(x, points), model(x, points, points))


@pytest.mark.parametrize("coarse", ["lattice", "prefix"])
def test_sdfnet_on_3d_points(coarse):
    torch.manual_seed(0)
    model = SDFNet(base_spacing=2 / 8, coarse=coarse)
    assert (model.lattice == P.grid((4, 4, 4))) if coarse == "lattice" else model.lattice is None
    for points in (P.sobol(512, 3, seed=0), P.grid((8, 8, 8))):
        y = run_unchanged(model, torch.randn(2, len(points), 4), points,
                          P.random(50, 3, seed=1))
        assert y.shape == (2, 50, 1) and torch.isfinite(y).all() and y.abs().max() <= 2
    with pytest.raises(ValueError, match="valid: 'lattice', 'prefix'"):
        SDFNet(coarse="pyramid")
    with pytest.raises(ValueError, match="2-D but .* dim=3"):
        model(torch.randn(2, N, 4), P.sobol(N, 2, seed=0), P.sobol(4, 3, seed=0))


def test_quadrature_none_differs_on_shrunk_and_agrees_on_uniform_points():
    torch.manual_seed(0)
    weighted = Classifier("dinet2", base_spacing=H).eval()
    plain = Classifier("dinet2", base_spacing=H, quadrature="none").eval()
    plain.load_state_dict(weighted.state_dict())
    sets = point_sets()
    x = torch.randn(2, N, 1)
    assert not torch.allclose(weighted(x, sets["shrunk"]), plain(x, sets["shrunk"]))
    for name in ("sobol", "grid"):
        assert torch.equal(weighted(x, sets[name]), plain(x, sets[name]))
    flat = unweighted(sets["shrunk"])
    assert torch.equal(flat.coords, sets["shrunk"].coords)
    torch.testing.assert_close(flat.weights, torch.full((N,), 4 / N))
    assert unweighted(sets["shrunk"]) is flat  # cached


@pytest.mark.parametrize("make", [
    lambda q: Classifier("dinet2", base_spacing=H, quadrature=q),
    lambda q: Segmenter("dinet3", base_spacing=H, quadrature=q),
    lambda q: SDFNet(quadrature=q),
    lambda q: GridCNNClassifier(quadrature=q),
])
def test_unknown_quadrature_lists_valid_values(make):
    with pytest.raises(ValueError, match="'weights', 'none'"):
        make("trapezoid")
    assert QUADRATURES == ("weights", "none")


@pytest.mark.parametrize("task, name, options, message", [
    ("segment", "dinet-unet", {"widths": []}, "non-empty list of positive integers"),
    ("segment", "dinet-unet", {"widths": [16, 1.5]}, "positive integer; got 1.5"),
    ("segment", "dinet-unet", {"widths": [True]}, "positive integer; got True"),
    ("segment", "dinet-unet", {"spacing_input": "no"}, "true or false; got 'no'"),
    ("segment", "dinet-unet", {"widths": [2**40]}, "cannot take the options"),  # no memory
    ("segment", "cnn", {"widths": []}, "non-empty list"),
    ("classify", "dinet-res", {"stem_basis": 1.5}, "stem_basis must be a positive integer"),
    ("classify", "dinet-res", {"stem_spacing": "x"}, "stem_spacing must be a positive finite"),
    ("classify", "dinet-res", {"stem_spacing": 1e-9}, "interpolant grid would have"),
    ("sdf", "sdfnet", {"scale": float("nan")}, "scale must be a positive finite number"),
    ("sdf", "cnn", {"width": -3}, "width must be a positive integer"),
])
def test_model_options_of_the_wrong_kind_are_refused_with_the_rule(task, name, options, message):
    """What ``--model-option`` hands a constructor is checked, not coerced (1.5 channels, the
    string 'no' as True) and never a traceback (a width too large to allocate)."""
    dim = 3 if task == "sdf" else 2
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model(task, name, in_channels=1, n_classes=3, image_size=16,
                     points=16**dim, dim=dim, options=options)


def test_unknown_presets_list_valid_values():
    with pytest.raises(ValueError, match="'dinet2', 'dinet4', 'dinet-res'"):
        Classifier("resnet50")
    with pytest.raises(ValueError, match="'dinet3', 'dinet5', 'dinet-unet'"):
        Segmenter("unet")


def _examples():
    """(model, inputs) for one small model of every class."""
    s2, s3 = P.shrunk(N, 2, seed=0), P.sobol(512, 3, seed=0)
    g16, g8 = P.grid((16, 16)), P.grid((8, 8, 8))
    q2, q3 = P.random(20, 2, seed=5), P.random(20, 3, seed=5)
    return [
        (Classifier("dinet4", base_spacing=H, quadrature="none"), (torch.randn(2, N, 1), s2)),
        (Segmenter("dinet5", base_spacing=H), (torch.randn(2, N, 1), s2, q2)),
        (SDFNet(base_spacing=2 / 8), (torch.randn(2, 512, 4), s3, q3)),
        (GridCNNClassifier(1, 10, size=16), (torch.randn(2, N, 1), g16)),
        (GridResNetClassifier(1, 10, size=16), (torch.randn(2, N, 1), g16)),
        (GridCNNSegmenter(1, 5, size=16), (torch.randn(2, N, 1), g16, q2)),
        (GridUNetSegmenter(1, 5, size=16, widths=(8, 16)), (torch.randn(2, N, 1), g16, q2)),
        (Segmenter(base_spacing=H, widths=(8, 16)), (torch.randn(2, N, 1), s2, q2)),
        (VoxelCNN3d(4, size=8), (torch.randn(2, 512, 4), g8, q3)),
    ]


def test_checkpoint_round_trip_is_exact_for_every_class(tmp_path):
    torch.manual_seed(0)
    for model, inputs in _examples():
        model.train()
        model(*inputs)  # move the running statistics away from their initial values
        model.eval()
        path = tmp_path / f"{type(model).__name__}.pt"
        model.save(path, extra={"epoch": 3})
        for loaded in (type(model).from_checkpoint(path), load_model(path)):
            assert type(loaded) is type(model) and loaded.config == model.config
            assert loaded.checkpoint_extra == {"epoch": 3}
            loaded.eval()
            assert torch.equal(loaded(*inputs), model(*inputs))
        raw = torch.load(path, weights_only=True)
        assert raw["format"] == "dinet-model" and raw["class"] == type(model).__name__
        assert raw["format_version"] == type(model).FORMAT_VERSION
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_bad_checkpoints_raise_helpful_errors_and_stay_untouched(tmp_path):
    seg = tmp_path / "seg.pt"
    Segmenter("dinet3", base_spacing=H).save(seg)

    def unchanged(path, action, match):
        before = path.read_bytes()
        with pytest.raises(ValueError, match=match) as info:
            action(path)
        assert str(path) in str(info.value)
        assert path.read_bytes() == before

    unchanged(seg, Classifier.from_checkpoint,
              "holds a Segmenter, not a Classifier; use Segmenter.from_checkpoint or "
              "dinet.models.load_model")

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(seg.read_bytes()[:200])
    unchanged(truncated, load_model, "truncated or corrupted")

    foreign = tmp_path / "state_dict.pt"
    torch.save(Segmenter("dinet3", base_spacing=H).state_dict(), foreign)
    unchanged(foreign, Segmenter.from_checkpoint, "not a dinet model checkpoint")

    text = tmp_path / "notes.pt"
    text.write_text("hello")
    unchanged(text, DIModel.from_checkpoint, "truncated or corrupted")

    # One flipped bit inside a weight: torch.load returns other numbers without a word; the
    # recorded content digest catches it.
    flipped = tmp_path / "flipped.pt"
    data = bytearray(seg.read_bytes())
    raw = next(v for v in torch.load(seg, weights_only=True)["state_dict"].values()
               if v.numel() >= 64 and v.dtype == torch.float32)
    at = data.find(raw.numpy().tobytes()[:32])
    assert at > 0
    data[at + 17] ^= 0x10
    flipped.write_bytes(bytes(data))
    torch.load(flipped, weights_only=True)  # loads "fine"
    unchanged(flipped, load_model, "is damaged.*SHA-256.*restore it from a copy")

    old = tmp_path / "old.pt"
    payload = torch.load(seg, weights_only=True)
    payload["format_version"] = 99
    del payload["sha256"]
    payload["sha256"] = content_digest(payload)  # as a writer of version 99 records it
    torch.save(payload, old)
    unchanged(old, Segmenter.from_checkpoint, "format version 99")


def test_baselines_reject_points_that_are_not_their_grid():
    x = torch.randn(2, N, 1)
    with pytest.raises(ValueError, match=r"16x16 grid \(dinet.points.grid\(\(16, 16\)\)\)"):
        GridCNNClassifier(1, 10, size=16)(x, P.sobol(N, 2, seed=0))
    with pytest.raises(ValueError, match="any points"):
        GridCNNSegmenter(1, 5, size=32)(x, P.grid((16, 16)))
    with pytest.raises(ValueError, match=r"16x16 grid"):
        GridResNetClassifier(1, 10, size=16)(x, P.shrunk(N, 2, seed=0))


def test_the_pixel_resnet_is_dinet_res_on_pixels():
    """cnn-res, the price-of-invariance baseline: the same lattice network as dinet-res
    (every parameter but the stem's has a counterpart of the same shape) and the same size
    within 1%."""
    pixel, di = GridResNetClassifier(1, 10, size=32), Classifier("dinet-res")

    def shapes(model, keep):  # conv weights as (out, in), the rest as they are
        return sorted(tuple(p.shape[:2]) if p.dim() >= 3 else tuple(p.shape)
                      for n, p in model.named_parameters() if keep(n))

    assert shapes(pixel, lambda n: not n.startswith(("net.0.", "net.1."))) == shapes(
        di, lambda n: n.startswith("net."))
    n_pixel = sum(p.numel() for p in pixel.parameters())
    n_di = sum(p.numel() for p in di.parameters())
    assert abs(n_pixel - n_di) < 0.01 * n_di
    with pytest.raises(ValueError, match="8x8x8 grid"):
        VoxelCNN3d(4, size=8)(torch.randn(1, 512, 4), P.sobol(512, 3, seed=0),
                              P.sobol(4, 3, seed=0))


def test_baseline_segmenter_reads_its_own_pixels_exactly():
    model = GridCNNSegmenter(1, 3, size=16).eval()
    grid, x = P.grid((16, 16)), torch.randn(2, N, 1)
    torch.testing.assert_close(model(x, grid, grid), model(x, grid), rtol=0, atol=0)
    assert model(x, grid, P.jittered_grid((5, 5), seed=0)).shape == (2, 25, 3)


def test_classifier_learns_the_sign_of_a_smooth_field():
    torch.manual_seed(0)
    points = P.sobol(32, 2, seed=0)
    model = Classifier("dinet4", n_classes=2, base_spacing=2 / 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    xy = points.coords

    def batch(size=16):
        offset = torch.randn(size, 1)
        slope = torch.randn(size, 2)
        field = offset + 0.5 * slope @ xy.T + 0.3 * torch.sin(3 * xy[:, 0])
        return field[..., None], (offset[:, 0] > 0).long()

    losses = []
    for _ in range(20):
        x, labels = batch(8)
        loss = torch.nn.functional.cross_entropy(model(x, points), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_dinet_res_stem_defaults_and_older_checkpoints_keep_their_stems(tmp_path):
    """Format 3 records the stem (one pixel, 32 basis functions, the linear interpolant by
    default). A format-1 checkpoint, whose config recorded none of it, rebuilds the
    two-pixel, 16-function weighted stem it was trained with; a format-2 one (no
    stem_quadrature) the weighted one-pixel stem; both give the same logits as saved."""
    model = Classifier("dinet-res")
    assert (model.config["stem_spacing"], model.config["stem_basis"],
            model.config["stem_quadrature"]) == (2 / 32, 32, "linear")
    assert model.stem.spacing == (2 / 32, 2 / 32) and model.stem.n_basis == 32
    with pytest.raises(ValueError, match="options of the dinet-res preset"):
        Classifier("dinet4", stem_basis=8)

    x, points = torch.randn(2, 300, 1), P.sobol(300, 2, seed=1)
    for version, spacing, basis, dropped in ((1, 4 / 32, 16, ("stem_spacing", "stem_basis")),
                                             (2, 2 / 32, 32, ())):
        torch.manual_seed(0)
        old = Classifier("dinet-res", stem_spacing=spacing, stem_basis=basis,
                         stem_quadrature="weights").eval()
        path = old.save(tmp_path / "current.pt")
        payload = torch.load(path, weights_only=True)
        payload["format_version"] = version
        for key in (*dropped, "stem_quadrature"):
            del payload["config"][key]
        del payload["sha256"]
        payload["sha256"] = content_digest(payload)  # as that format was written
        torch.save(payload, tmp_path / f"v{version}.pt")
        loaded = load_model(tmp_path / f"v{version}.pt").eval()
        assert loaded.stem.n_basis == basis and loaded.config["stem_spacing"] == spacing
        assert loaded.config["stem_quadrature"] == "weights" and loaded.interpolant is None
        torch.testing.assert_close(loaded(x, points), old(x, points), rtol=0, atol=0)


def test_dinet_res_linear_stem_integrates_the_points_piecewise_linear_interpolant():
    """stem_quadrature="linear" is the weighted stem applied to the field's Delaunay
    interpolant on a 48×48 grid (the stem's step or finer, holding the 16×16 lattice, so the
    stem runs as one conv2d): the same logits as a model with the same weights fed those
    values; on that grid itself nothing is interpolated."""
    torch.manual_seed(0)
    linear = Classifier("dinet-res", stem_quadrature="linear").eval()
    weighted = Classifier("dinet-res", stem_quadrature="weights").eval()
    weighted.load_state_dict(linear.state_dict())
    assert linear.config["stem_quadrature"] == "linear"
    fine = P.grid((48, 48))
    assert linear.interpolant_grid.digest == fine.digest
    x = torch.randn(2, 48 * 48, 1)
    torch.testing.assert_close(linear(x, fine), weighted(x, fine), rtol=1e-5, atol=1e-6)
    points = P.sobol(256, 2, seed=1)
    x = torch.randn(2, 256, 1)
    from dinet.nn import Resample
    filled = Resample("delaunay")(x, points, fine)
    torch.testing.assert_close(linear(x, points), weighted(filled, fine), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="unknown stem_quadrature 'cubic'; valid"):
        Classifier("dinet-res", stem_quadrature="cubic")
    with pytest.raises(ValueError, match="options of the dinet-res preset"):
        Classifier("dinet2", stem_quadrature="linear")


def test_linear_stem_is_closer_to_the_continuum_at_low_point_counts():
    """The reason for stem_quadrature="linear": at 256 points (one per 2×2 pixels) a sum over
    ~9 weighted samples per kernel window is a poor integral of a one-pixel kernel, while
    the piecewise-linear interpolant of a smooth field is accurate to O(h²). Measured against
    a 256×256 grid on a field smooth at the points' spacing (sin 3x · cos 2y + x/2): relative
    errors of the stem's output 0.13 / 0.18 / 0.20 (weights) vs 0.012 / 0.013 / 0.032
    (linear) on Sobol, jittered and shrunk points; asserted as a 4× gain (measured 6–14×).
    Fields with pixel-scale detail gain less (1.5–3×), since no interpolant recovers detail
    finer than the points."""
    torch.manual_seed(0)
    model = Classifier("dinet-res", stem_quadrature="linear")

    def field(points):
        c = points.coords.double()
        return (torch.sin(3 * c[:, 0]) * torch.cos(2 * c[:, 1]) + 0.5 * c[:, 0])[None, :,
                                                                                None].float()

    dense = P.grid((256, 256))
    with torch.no_grad():
        truth = model.stem(field(dense), dense, model.lattice)
        for points in (P.sobol(256, 2, seed=0), P.jittered_grid((16, 16), seed=0),
                       P.shrunk(256, 2, seed=0)):
            weighted = model.stem(field(points), points, model.lattice)
            filled = model.interpolant(field(points), points, model.interpolant_grid)
            linear = model.stem(filled, model.interpolant_grid, model.lattice)
            err_w = float((weighted - truth).norm() / truth.norm())
            err_l = float((linear - truth).norm() / truth.norm())
            assert err_l < 0.25 * err_w, (points.kind, err_l, err_w)


def test_the_pixel_unet_is_dinet_unet_on_pixels():
    """The segmentation baseline (``--model cnn``): dinet-unet's lattice U-Net and head on
    pixels — every parameter but the stem's has a counterpart of the same shape — and the
    same size within 1%; it reads its own pixels exactly and refuses other points."""
    pixel, di = GridUNetSegmenter(1, 11, size=32), Segmenter()

    def shapes(model, keep):  # conv weights as (out, in), the rest as they are
        return sorted(tuple(p.shape[:2]) if p.dim() >= 3 else tuple(p.shape)
                      for n, p in model.named_parameters() if keep(n))

    assert shapes(pixel, lambda n: not n.startswith("stem.")) == shapes(
        di, lambda n: not n.startswith(("stem.", "stem_norm.")))
    assert str(pixel.unet) == str(di.unet)
    n_pixel = sum(p.numel() for p in pixel.parameters())
    n_di = sum(p.numel() for p in di.parameters())
    assert abs(n_pixel - n_di) < 0.01 * n_di
    grid, x = P.grid((32, 32)), torch.randn(2, 1024, 1)
    pixel.eval()
    torch.testing.assert_close(pixel(x, grid, grid), pixel(x, grid), rtol=0, atol=0)
    assert pixel(x, grid, P.jittered_grid((5, 5), seed=0)).shape == (2, 25, 11)
    with pytest.raises(ValueError, match="32x32 grid"):
        pixel(x, P.sobol(1024, 2, seed=0))


def test_dinet_unet_sees_only_the_points_linear_interpolant():
    """dinet-unet (format 2) reads the field's Delaunay interpolant on a grid three times
    finer than its lattice (48×48 for a 16×16 lattice): fed the interpolant's values on
    that grid, where nothing is interpolated, it gives the same logits."""
    torch.manual_seed(0)
    model = Segmenter(base_spacing=H, widths=(8, 16, 32), stem_quadrature="linear").eval()
    assert model.interpolant_grid.digest == P.grid((48, 48)).digest
    points, query = P.shrunk(N, 2, seed=3), P.sobol(100, 2, seed=4)
    x = torch.randn(2, N, 1)
    filled = model.interpolant(x, points, model.interpolant_grid)
    torch.testing.assert_close(model(x, points, query), model(filled, model.interpolant_grid,
                                                              query), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="options of the dinet-unet preset"):
        Segmenter("dinet3", widths=(8,))
    with pytest.raises(ValueError, match="unknown lattice_net 'mlp'; valid: 'conv', 'di'"):
        Segmenter(lattice_net="mlp")


def test_dinet_unet_starts_from_the_pixel_unet_exactly():
    """The default stem (``"nodes"``) reads the points' Delaunay interpolant at the lattice
    nodes and applies a 3×3 conv: dinet-unet is then the pixel U-Net with an interpolating
    front, so a trained ``--model cnn`` converts into it (``start_from``, ``dinet train
    --init``) and on the pixel grid both give the same logits at any query; on other points
    the converted model sees the interpolant of those points. Other stems, widths, lattices
    or kernels that are not exact on the grid are refused with what differs."""
    torch.manual_seed(0)
    pixel = GridUNetSegmenter(1, 5, size=16, widths=(8, 16))
    for m in pixel.modules():  # trained-like batch norms, so a wrong copy shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    pixel.eval()
    di = Segmenter(n_classes=5, base_spacing=H, widths=(8, 16)).eval()
    assert di.config["stem_quadrature"] == "nodes"
    grid, query, x = P.grid((16, 16)), P.sobol(500, 2, seed=1), torch.randn(2, N, 1)
    expected = pixel(x, grid, query)
    assert not torch.allclose(di(x, grid, query), expected, atol=1e-2)
    di.start_from(pixel)
    torch.testing.assert_close(di(x, grid, query), expected, rtol=1e-5, atol=1e-5)
    sobol = P.sobol(N, 2, seed=2)
    filled = di.interpolant(x, sobol, di.lattice)
    torch.testing.assert_close(di(x, sobol, query), pixel(filled, grid, query), rtol=1e-5,
                               atol=1e-5)
    for other, match in ((Segmenter(n_classes=5, base_spacing=H, widths=(8, 16),
                                    stem_quadrature="linear"), "stem_quadrature 'linear'"),
                         (Segmenter(n_classes=5, base_spacing=H, widths=(8, 32)), "widths"),
                         (Segmenter(n_classes=5, base_spacing=H, widths=(8, 16),
                                    lattice_net="di"), "lattice_net 'di'"),
                         (Segmenter(n_classes=5, base_spacing=H / 2, widths=(8, 16)),
                          "a 32² lattice vs a 16² grid"),
                         (Segmenter(n_classes=5, base_spacing=H, widths=(8, 16), kernel="mlp"),
                          "kernel 'mlp'")):
        with pytest.raises(ValueError, match=match):
            other.start_from(pixel)
    with pytest.raises(ValueError, match="is not this one"):
        Segmenter("dinet3", base_spacing=H).start_from(di)


def test_dinet_unet_reads_each_nodes_distance_to_the_points(tmp_path):
    """``spacing_input`` (the default with the nodes stem) gives the stem a second channel:
    each lattice node's distance to the nearest input point in pixels — 0 on the pixel grid,
    about half a pixel on 1,024 Sobol points, larger where points are sparse — so the network
    can tell where the interpolant is guessing. Without it the stem sees the pixels only."""
    lattice = P.grid((32, 32))
    assert torch.equal(node_spacing(lattice, lattice), torch.zeros(1, 1024, 1))
    dense, sparse = node_spacing(P.sobol(1024, 2, seed=0), lattice), \
        node_spacing(P.sobol(256, 2, seed=0), lattice)
    assert 0.2 < float(dense.mean()) < 0.6 < float(sparse.mean()) < 1.2
    torch.manual_seed(0)
    with_spacing = Segmenter(n_classes=5, base_spacing=H, widths=(8, 16)).eval()
    assert with_spacing.config["spacing_input"] and with_spacing.stem.in_channels == 2
    plain = Segmenter(n_classes=5, base_spacing=H, widths=(8, 16), spacing_input=False).eval()
    state = with_spacing.state_dict()
    plain.load_state_dict({**state, "stem.weight": state["stem.weight"][:, :1]})
    grid, sobol, x = P.grid((16, 16)), P.sobol(N, 2, seed=1), torch.randn(2, N, 1)
    torch.testing.assert_close(with_spacing(x, grid), plain(x, grid), rtol=0, atol=0)
    assert (with_spacing(x, sobol) - plain(x, sobol)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="spacing_input is an input of the 'nodes' stem"):
        Segmenter(stem_quadrature="linear", spacing_input=True)
    loaded = _as_format(plain, tmp_path, 3, ("spacing_input",))  # format 3 had no channel
    assert loaded.config["spacing_input"] is False and loaded.stem.in_channels == 1
    torch.testing.assert_close(loaded(x, sobol), plain(x, sobol), rtol=0, atol=0)


def test_dinet_unet_format_1_checkpoint_keeps_its_network(tmp_path):
    """A format-1 dinet-unet checkpoint recorded neither widths, stem nor lattice net: it rebuilds
    the 16–128-channel DI-layer U-Net with the weighted one-pixel stem it was trained with,
    and gives the same logits as saved."""
    torch.manual_seed(0)
    old = Segmenter(base_spacing=H, widths=(16, 32, 64, 128), stem_quadrature="weights",
                    lattice_net="di", read="kernel").eval()
    path = old.save(tmp_path / "current.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 1
    for key in ("widths", "stem_quadrature", "lattice_net", "read"):
        del payload["config"][key]
    del payload["sha256"]
    payload["sha256"] = content_digest(payload)  # as that format was written
    torch.save(payload, tmp_path / "v1.pt")
    loaded = load_model(tmp_path / "v1.pt").eval()
    assert loaded.config["widths"] == [16, 32, 64, 128] and loaded.interpolant is None
    assert loaded.config["lattice_net"] == "di" and loaded.config["read"] == "kernel"
    x, points = torch.randn(2, N, 1), P.sobol(N, 2, seed=1)
    torch.testing.assert_close(loaded(x, points), old(x, points), rtol=0, atol=0)


def _as_format(model, tmp_path, version: int, dropped: tuple[str, ...]):
    """``model`` saved as an older format that did not record the ``dropped`` options."""
    payload = torch.load(model.save(tmp_path / "current.pt"), weights_only=True)
    payload["format_version"] = version
    for key in dropped:
        del payload["config"][key]
    del payload["sha256"]
    payload["sha256"] = content_digest(payload)
    torch.save(payload, tmp_path / f"v{version}.pt")
    return load_model(tmp_path / f"v{version}.pt").eval()


@pytest.mark.parametrize("kind", ["dinet-unet", "cnn"])
def test_segmenters_read_logits_by_cell(kind, tmp_path):
    """By default (``read="cell"``) a query anywhere in a lattice cell gets the logits the
    model gives at that cell's centre — the pixel label map's own piecewise-constant field —
    while the former read (dinet-unet's head at the query, the pixel U-Net's bilinear
    interpolation) varies inside the cell; at the centres the two reads agree exactly.
    Checkpoints of the former formats keep the former read."""
    torch.manual_seed(0)
    side = 16
    if kind == "dinet-unet":
        model = Segmenter(base_spacing=2 / side, widths=(8, 16), stem_quadrature="linear")
        old_read, version, dropped = "kernel", 2, ("read", "spacing_input")
    else:
        model = GridUNetSegmenter(1, 11, size=side, widths=(8, 16))
        old_read, version, dropped = "bilinear", 1, ("read",)
    model.eval()
    assert model.config["read"] == "cell"
    centres = P.grid((side, side))
    inside = P.jittered_grid((side, side), seed=5)  # one point in each cell, off its centre
    x = torch.randn(2, side * side, 1)
    at_centres = model(x, centres, centres)
    torch.testing.assert_close(model(x, centres, inside), at_centres, rtol=0, atol=0)
    old = type(model)(**{**model.config, "read": old_read}).eval()
    old.load_state_dict(model.state_dict())
    torch.testing.assert_close(old(x, centres, centres), at_centres, rtol=1e-5, atol=1e-5)
    assert (old(x, centres, inside) - at_centres).abs().max() > 1e-2
    loaded = _as_format(old, tmp_path, version, dropped)
    assert loaded.config["read"] == old_read
    torch.testing.assert_close(loaded(x, centres, inside), old(x, centres, inside), rtol=0,
                               atol=0)
    with pytest.raises(ValueError, match="unknown read 'nearest'"):
        type(model)(**{**model.config, "read": "nearest"})
