"""`dinet predict`: a trained run's answers on fields, on your own samples and on images, each
checked against the model called directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dinet.points as P
from dinet.cli import main
from dinet.fields import build_dataset
from dinet.models import load_model
from dinet.tasks import Predictor, TrainConfig, open_task_data, train
from dinet.tasks.answers import render

CLASSES = ["dark-top", "dark-bottom"]


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    """A classifier trained on 8×8 gradients whose source names its two classes."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 16)
    y = np.mgrid[0:8, 0:8][0] / 7.0
    images = np.stack([np.where(lab, 1 - y, y) for lab in labels])[..., None]
    root = tmp_path_factory.mktemp("named")
    build_dataset(root / "fields", images.astype(np.float32), labels,
                  arch_hparams={"width": 8}, fit_options={"max_steps": 10, "meta_steps": 2},
                  shard_size=8, progress=False,
                  source={"source": "folder:shades", "classes": CLASSES, "size": 8,
                          "image_shape": [8, 8, 1]})
    train(TrainConfig(fields=str(root / "fields"), out=str(root / "run"), model="dinet2",
                      points=64, epochs=3, batch_size=8, lr=3e-3), progress=False)
    return root, images, labels


def _direct(run, values, points, *query):
    model = load_model(run / "model.pt").eval()
    with torch.no_grad():
        return model(torch.as_tensor(values), points, *query)


def test_fields_samples_and_images_agree_with_the_model(named_run, tmp_path, capsys):
    root, images, labels = named_run
    run = root / "run"
    predictor = Predictor(run)
    assert predictor.class_names == tuple(CLASSES) and predictor.size == 8
    # --fields at a discretization of choice: the model's own answer on the same values
    out = tmp_path / "fields.json"
    assert main(["predict", "--run", str(run), "--fields", str(root / "fields"), "--items",
                 "0:4,9", "--discretization", "shrunk", "--points", "48", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "on 5 items at 48 shrunk points" in printed
    doc = json.loads(out.read_text())
    points = P.shrunk(48, 2, seed=0)
    values = open_task_data("classify", root / "fields").sample([0, 1, 2, 3, 9], points)
    probability = _direct(run, values, points).softmax(-1)
    np.testing.assert_allclose(doc["probability"], probability.numpy(), rtol=0, atol=1e-6)
    assert doc["label"] == probability.argmax(-1).tolist()
    assert doc["class"] == [CLASSES[k] for k in doc["label"]]
    assert doc["items"] == ["item 0", "item 1", "item 2", "item 3", "item 9"]
    assert f"item 9: {CLASSES[doc['label'][-1]]} ({doc['label'][-1]})" in printed

    # --images: an .npz archive with labels (the accuracy is printed), the same images as
    # PNG files, and your own samples at the pixel centres — one answer, three routes
    pixels = (images[..., 0] * 255).round().astype(np.uint8)
    np.savez(tmp_path / "images.npz", images=pixels, labels=labels)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(pixels[i]).save(paths[-1])
    assert main(["predict", "--run", str(run), "--images", str(tmp_path / "images.npz"),
                 "--out", str(tmp_path / "archive.npz"), "--show", "2"]) == 0
    printed = capsys.readouterr().out
    archive = np.load(tmp_path / "archive.npz")
    right = int((archive["label"] == labels).sum())
    assert f"accuracy against the archive's labels: {right / 16:.2%} ({right:,} of 16)" in printed
    assert "images.npz[1]:" in printed and "... 14 more items" in printed
    # labels the model cannot give are refused before it runs, nothing written
    np.savez(tmp_path / "bad-labels.npz", images=pixels, labels=labels + len(CLASSES))
    assert main(["predict", "--run", str(run), "--images", str(tmp_path / "bad-labels.npz"),
                 "--out", str(tmp_path / "bad.npz")]) == 2
    assert "labels go up to" in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()
    assert list(archive["class_names"]) == CLASSES
    grid = P.grid((8, 8))
    values = P.image_to_values(torch.from_numpy(pixels[:, None] / 255.0).float(), grid)
    np.testing.assert_allclose(archive["probability"], _direct(run, values, grid).softmax(-1),
                               rtol=0, atol=1e-6)
    assert main(["predict", "--run", str(run), "--images", *map(str, paths), "--out",
                 str(tmp_path / "png.npz")]) == 0
    assert "accuracy" not in capsys.readouterr().out  # PNG files carry no labels
    np.testing.assert_array_equal(np.load(tmp_path / "png.npz")["probability"],
                                  archive["probability"][:3])
    # your own samples: the same pixels as scattered points (coords[:, k] = array axis k),
    # weighted by their Voronoi cells
    rng = np.random.default_rng(1)
    coords = rng.uniform(-1, 1, (40, 2))
    own = P.from_coords(coords)
    samples_values = rng.uniform(0, 1, (3, 40, 1)).astype(np.float32)
    np.savez(tmp_path / "samples.npz", coords=coords, values=samples_values)
    assert main(["predict", "--run", str(run), "--samples", str(tmp_path / "samples.npz"),
                 "--out", str(tmp_path / "samples.json")]) == 0
    assert "on 3 items at the 40 points of samples.npz" in capsys.readouterr().out
    samples = json.loads((tmp_path / "samples.json").read_text())
    np.testing.assert_allclose(samples["probability"],
                               _direct(run, samples_values, own).softmax(-1), rtol=0,
                               atol=1e-6)
    # the picture: each input under its class and probability
    assert main(["predict", "--run", str(run), "--images", *map(str, paths), "--picture",
                 str(tmp_path / "answers.png")]) == 0
    assert (tmp_path / "answers.png").read_bytes().startswith(b"\x89PNG")


def test_segmentation_writes_label_maps(scenes_fields, fake_fashion_mnist, tmp_path, capsys):
    run = tmp_path / "seg"
    train(TrainConfig(fields=str(scenes_fields), out=str(run), task="segment", model="dinet3",
                      points=128, epochs=1, batch_size=4), progress=False)
    predictor = Predictor(run)
    assert predictor.class_names[:3] == ("background", "T-shirt/top", "Trouser")
    out = tmp_path / "labels.npz"
    assert main(["predict", "--run", str(run), "--fields", str(scenes_fields), "--items",
                 "2,5", "--out", str(out), "--picture", str(tmp_path / "seg.png")]) == 0
    assert "at 128 sobol points" in capsys.readouterr().out
    saved = np.load(out)
    assert saved["label"].shape == (2, 16, 16) and saved["confidence"].shape == (2, 16, 16)
    # the default query is the training images' pixel grid, written as images: label[b, i, j]
    # is pixel (i, j), at coordinates query_coords[i, j]
    centres = (2 * np.arange(16) + 1) / 16 - 1
    np.testing.assert_allclose(saved["query_coords"][3, 7], [centres[3], centres[7]],
                               atol=1e-6)
    points, grid = P.sobol(128, 2, seed=0), P.grid((16, 16))
    values = open_task_data("segment", scenes_fields).sample([2, 5], points)
    logits = _direct(run, values, points, grid)
    expected = P.values_to_image(logits.argmax(-1)[..., None].float(), grid)[:, 0].long()
    np.testing.assert_array_equal(saved["label"], expected.numpy())
    assert (tmp_path / "seg.png").read_bytes().startswith(b"\x89PNG")
    # any other query: one label per point, in the query's order
    assert main(["predict", "--run", str(run), "--fields", str(scenes_fields), "--items", "0",
                 "--query", "random", "--query-points", "50", "--out", str(out)]) == 0
    saved = np.load(out)
    assert saved["label"].shape == (1, 50) and saved["query_coords"].shape == (50, 2)
    assert main(["predict", "--run", str(run), "--fields", str(scenes_fields), "--query",
                 "sobol+random"]) == 2
    assert "a mixture" in capsys.readouterr().err
    # an image of another size is labelled at its own pixels
    np.save(tmp_path / "big.npy", np.linspace(0, 1, 20 * 20).reshape(20, 20))
    assert main(["predict", "--run", str(run), "--images", str(tmp_path / "big.npy"),
                 "--out", str(out)]) == 0
    assert "at their 20x20 pixel centres" in capsys.readouterr().out
    assert np.load(out)["label"].shape == (1, 20, 20)


def test_sdf_predicts_at_a_voxel_grid(tmp_path, capsys):
    run = tmp_path / "sdf"
    train(TrainConfig(fields="balls:8", out=str(run), task="sdf", points=512, epochs=1,
                      batch_size=4), progress=False)
    out = tmp_path / "sdf.npz"
    assert main(["predict", "--run", str(run), "--fields", "balls:2:1", "--out", str(out),
                 "--query", "grid", "--query-points", "512"]) == 0
    assert "item 1: sdf min" in capsys.readouterr().out
    saved = np.load(out)
    assert saved["sdf"].shape == (2, 8, 8, 8) and saved["query_coords"].shape == (8, 8, 8, 3)
    assert main(["predict", "--run", str(run), "--fields", "balls:2:1", "--picture",
                 str(tmp_path / "sdf.png")]) == 2
    assert "3-D" in capsys.readouterr().err


def test_render_draws_a_grid_exactly():
    grid = P.grid((4, 6))
    image = torch.arange(24.0).reshape(1, 1, 4, 6)
    values = P.image_to_values(image, grid)[0]
    np.testing.assert_array_equal(render(values, grid.coords, (4, 6)), image[0, 0].numpy())


@pytest.mark.parametrize("extra, message", [
    (["--query", "sobol"], "one answer per item"),
    (["--discretization", "sobol+grid"], "a mixture, and a fixed draw would be one of its "
                                         "kinds: name them one by one (sobol,grid)"),
    (["--items", "0:99"], "--items must pick items 0 to 15"),
    (["--out", "answers.txt"], "expected a .npz or .json file name"),
    (["--picture", "answers.jpg"], "expected a .png file name"),
])
def test_bad_requests_are_one_line_errors(named_run, extra, message, tmp_path, capsys,
                                          monkeypatch):
    root = named_run[0]
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--run", str(root / "run"), "--fields", str(root / "fields"),
                 *extra]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_inputs_are_refused(named_run, tmp_path, capsys):
    run = str(named_run[0] / "run")
    np.savez(tmp_path / "two.npz", coords=np.zeros((5, 2)), values=np.zeros((5, 2)))
    np.savez(tmp_path / "short.npz", coords=np.zeros((5, 2)), values=np.zeros((4, 1)))
    np.savez(tmp_path / "novalues.npz", coords=np.zeros((5, 2)))
    np.savez(tmp_path / "complex.npz", coords=np.zeros((5, 2)), values=np.zeros((5, 1), complex))
    np.save(tmp_path / "a.npy", np.zeros((8, 8), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((6, 6), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    for argv, message in [
        (["--samples", str(tmp_path / "two.npz")], "(items, 5 points, 1 channel)"),
        (["--samples", str(tmp_path / "short.npz")], "N = 5 (the number of coords)"),
        (["--samples", str(tmp_path / "novalues.npz")], "numpy.savez(path, coords=coords"),
        (["--samples", str(tmp_path / "missing.npz")], "no such file"),
        (["--samples", str(tmp_path / "complex.npz")], "values must be real numbers"),
        (["--images", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")],
         "different sizes (6x6, 8x8)"),
        (["--images", str(tmp_path / "notes.txt")], "expected .png, .jpg, .jpeg, .npy or .npz"),
        (["--images", str(tmp_path / "a.npy"), "--points", "64"],
         "--samples and --images bring their own points"),
        (["--images", str(tmp_path / "a.npy"), "--items", "0:3"],
         "--samples and --images bring their own points"),
    ]:
        assert main(["predict", "--run", run, *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):  # one input, not two
        main(["predict", "--run", run, "--images", "a.png", "--samples", "b.npz"])
    with pytest.raises(ValueError, match="values hold NaN"):
        Predictor(run)(np.full((64, 1), np.nan), P.grid((8, 8)))


def test_runs_from_before_the_names_were_recorded_read_them_from_their_data(named_run,
                                                                          tmp_path):
    root = named_run[0]
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text((root / "run" / "config.json").read_text())
    model = load_model(root / "run" / "model.pt")
    model.save(old / "model.pt", extra={"epoch": 2, "task": "classify"})
    predictor = Predictor(old)
    assert predictor.class_names == tuple(CLASSES) and predictor.size == 8
    config = json.loads((old / "config.json").read_text())
    config["fields"] = str(tmp_path / "gone")  # the training data moved: numbers only
    (old / "config.json").write_text(json.dumps(config))
    assert Predictor(old).class_names is None and Predictor(old).size is None
