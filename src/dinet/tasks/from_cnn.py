"""The ``dinet experiment from-cnn`` experiment: a CNN trained on pixels, converted into a
DI-Net with :func:`dinet.convert.from_cnn`, tested on neural fields without any training
(zero-shot) and after a short fine-tuning on fields.

The steps:

1. train a small CNN (:func:`small_cnn`) on the very pixels the field datasets were fitted
   to (checked against the datasets' source checksums), with AdamW;
2. convert it (kernel family ``config.kernel``) and score it on the test *fields* on the
   CNN's own grid — where it must give the CNN's predictions exactly — and on Sobol, shrunk
   and jittered points;
3. optionally re-estimate its batch-norm statistics on training fields (``bn_batches``, no
   gradient step) and score it again; then fine-tune the converted network on the training
   fields, a fresh scrambled Sobol draw per step (the conventions of
   :func:`dinet.tasks.train`), and score it again;
4. write ``results.json`` and ``results.md`` (rows: the CNN on pixels, the CNN on the
   fields' values at pixel centres, the converted net zero-shot, re-estimated and
   fine-tuned; columns: the test discretizations), the CNN (``cnn.pt``) and the fine-tuned
   net's state (``finetuned.pt``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import points as P
from .._io import atomic_torch_save
from ..convert import ConvertedCNN, from_cnn
from ..nn import reestimate_batchnorm
from ..nn.families import kernel_family
from .augment import Augment, derived_seed
from .base import open_task_data
from .classify import ClassifyData
from .discretize import make_points
from .from_cnn_table import ROWS, from_cnn_table, write_results

__all__ = ["FROM_CNN_DISCRETIZATIONS", "FromCNNConfig", "from_cnn_table", "run_from_cnn",
           "small_cnn"]

#: Test discretizations besides the CNN's own grid, at every ``points`` count.
FROM_CNN_DISCRETIZATIONS = ("sobol", "shrunk", "jittered")
_EVAL_SEED = 1234  # the test draws, as `dinet eval`


@dataclass
class FromCNNConfig:
    """Everything that decides a from-cnn run (recorded in ``results.json``).

    Attributes:
        train_fields, test_fields: labelled field datasets (``dinet fit``); the CNN trains on
            the pixels the training fields were fitted to.
        out: the output folder.
        epochs: CNN training epochs on pixels.
        finetune_epochs: epochs of fine-tuning the converted net on fields (0: none).
        points: test point counts of the non-grid discretizations; the first is also the
            fine-tuning count. Jittered grids need perfect squares.
        limit, test_limit: use the first N training / test items.
        batch_size, lr: CNN training; finetune_batch_size, finetune_lr: fine-tuning.
        weight_decay: AdamW weight decay of both.
        widths: channels of the CNN's three stages.
        kernel: the converted convolutions' kernel family (``"spline"`` or ``"cubic"``).
        bn_batches: batches of training fields (Sobol draws of ``points[0]``) over which the
            converted net's batch-norm statistics are re-estimated, gradient-free, before
            fine-tuning (0: none).
        lattice: convert with ``from_cnn(..., lattice=True)``: only the first convolution
            integrates over the test points, onto the CNN's grid, where the rest runs.
        seed: every random choice derives from it.
    """

    train_fields: str
    test_fields: str
    out: str
    epochs: int = 3
    finetune_epochs: int = 1
    points: tuple[int, ...] = (4096, 1024)
    limit: int | None = None
    test_limit: int | None = None
    batch_size: int = 128
    lr: float = 3e-3
    finetune_batch_size: int = 64
    finetune_lr: float = 3e-4
    weight_decay: float = 1e-4
    widths: tuple[int, ...] = (32, 64, 128)
    kernel: str = "spline"
    bn_batches: int = 0
    lattice: bool = False
    seed: int = 0

    def check(self) -> None:
        """Raise a ValueError naming the bad setting and what is valid."""
        self.points, self.widths = tuple(self.points), tuple(self.widths)
        for name in ("epochs", "batch_size", "finetune_batch_size"):
            _check_int(name, getattr(self, name), 1)
        _check_int("finetune_epochs", self.finetune_epochs, 0)
        _check_int("bn_batches", self.bn_batches, 0)
        kernel_family(self.kernel)  # an unknown family names the valid ones
        for name in ("limit", "test_limit"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if not self.points:
            raise ValueError("points must name at least one point count, e.g. 4096")
        for count in self.points:
            _check_int("points", count, 1)
        if len(self.widths) != 3:
            raise ValueError(f"widths must give the channels of 3 stages; got {self.widths}")
        for kind in FROM_CNN_DISCRETIZATIONS:  # fails on a count jittered grids cannot take
            for count in self.points:
                make_points(kind, count, 2)


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")


def small_cnn(in_channels: int = 1, n_classes: int = 10,
              widths: tuple[int, ...] = (32, 64, 128)) -> nn.Sequential:
    """A small, standard image classifier: three stages of two 3×3 conv-BN-ReLU blocks, a
    2×2 max pool between stages, a global average pool and a linear head."""
    layers: list[nn.Module] = []
    channels = in_channels
    for stage, width in enumerate(widths):
        if stage:
            layers.append(nn.MaxPool2d(2))
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes)]
    return nn.Sequential(*layers)


def _cosine(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))


def train_cnn(images: np.ndarray, labels: np.ndarray, config: FromCNNConfig,
              progress: bool = True) -> tuple[nn.Sequential, dict]:
    """Train :func:`small_cnn` on ``(N, H, W, C)`` pixels with AdamW under a cosine schedule
    and random left-right flips; returns the model (in eval mode) and its last epoch's
    loss and accuracy."""
    torch.manual_seed(config.seed)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    cnn = small_cnn(x.shape[1], int(y.max()) + 1, config.widths)
    optimizer = torch.optim.AdamW(cnn.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    steps = math.ceil(len(x) / config.batch_size)
    schedule = _cosine(optimizer, steps * config.epochs)
    last: dict = {}
    for epoch in range(config.epochs):
        cnn.train()
        gen = torch.Generator().manual_seed(derived_seed(config.seed, 0, epoch))
        order = torch.randperm(len(x), generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps), desc=f"CNN epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not progress)
        for step in bar:
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            batch = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # left-right only
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            logits = cnn(batch)
            loss = F.cross_entropy(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", accuracy=f"{correct / seen:.3f}")
        last = {"epoch": epoch, "loss": loss_sum / seen, "accuracy": correct / seen}
    return cnn.eval(), last


def finetune(net: ConvertedCNN, data: ClassifyData, n: int, config: FromCNNConfig,
             progress: bool = True) -> dict:
    """Fine-tune ``net`` on the first ``n`` fields of ``data`` for ``config.finetune_epochs``:
    a fresh scrambled Sobol draw of ``config.points[0]`` points per step, the field
    augmentations of :func:`dinet.tasks.train` (left-right flips, a small shift, noise),
    AdamW at ``config.finetune_lr`` under a cosine schedule, batch norms in training mode.
    Returns the last epoch's loss and accuracy."""
    count = config.points[0]
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.finetune_lr,
                                  weight_decay=config.weight_decay)
    steps = math.ceil(n / config.finetune_batch_size)
    schedule = _cosine(optimizer, steps * config.finetune_epochs)
    last: dict = {}
    for epoch in range(config.finetune_epochs):
        net.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            derived_seed(config.seed, 1, epoch))).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps), desc=f"fine-tune epoch {epoch + 1}/{config.finetune_epochs}",
                   unit="step", disable=not progress)
        for step in bar:
            idx = order[step * config.finetune_batch_size:(step + 1) * config.finetune_batch_size]
            seed = derived_seed(config.seed, 1, epoch, step)
            points = make_points("sobol", count, 2, seed=seed)
            gen = torch.Generator().manual_seed(seed)
            read_at = Augment(gen, len(idx), 2)(points.coords)
            x = data.inputs(idx, read_at)
            x = x + 0.02 * torch.randn(x.shape, generator=gen)
            target = data.targets(idx)
            logits = net(x, points)
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == target).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", accuracy=f"{correct / seen:.3f}")
        last = {"epoch": epoch, "loss": loss_sum / seen, "accuracy": correct / seen}
    net.eval()
    return last


def recalibrate(net: ConvertedCNN, data: ClassifyData, n: int, config: FromCNNConfig) -> int:
    """Re-estimate ``net``'s batch-norm statistics on ``config.bn_batches`` batches of the
    training fields, each read at a fresh Sobol draw of ``config.points[0]`` points — no
    gradient step (:func:`dinet.nn.reestimate_batchnorm`)."""
    size = config.finetune_batch_size
    order = torch.randperm(n, generator=torch.Generator().manual_seed(
        derived_seed(config.seed, 2))).numpy()

    def batches():
        for k in range(min(config.bn_batches, math.ceil(n / size))):
            points = make_points("sobol", config.points[0], 2,
                                 seed=derived_seed(config.seed, 2, k))
            idx = order[k * size:(k + 1) * size]
            yield data.inputs(idx, points.coords), points

    return reestimate_batchnorm(net, batches())


@torch.no_grad()
def _accuracy(model, data: ClassifyData, n: int, points: P.PointSet, batch: int = 128) -> float:
    """Accuracy of ``model(x, points)`` on the first ``n`` fields of ``data``."""
    correct = 0
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        correct += int((model(data.inputs(idx, points.coords), points).argmax(1)
                        == data.targets(idx)).sum())
    return correct / n


@torch.no_grad()
def _grid_comparison(cnn: nn.Module, net: ConvertedCNN, data: ClassifyData, n: int,
                     grid: P.PointSet, batch: int = 128) -> dict:
    """The CNN on the fields' values at its pixel centres, and the converted net on the same
    values: accuracies, how many predictions differ and the largest logit difference."""
    correct_cnn = correct_net = differ = 0
    max_diff = 0.0
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        x = data.inputs(idx, grid.coords)
        target = data.targets(idx)
        logits_cnn, logits_net = cnn(P.values_to_image(x, grid)), net(x, grid)
        correct_cnn += int((logits_cnn.argmax(1) == target).sum())
        correct_net += int((logits_net.argmax(1) == target).sum())
        differ += int((logits_cnn.argmax(1) != logits_net.argmax(1)).sum())
        max_diff = max(max_diff, float((logits_cnn - logits_net).abs().max()))
    return {"cnn_accuracy": correct_cnn / n, "converted_accuracy": correct_net / n,
            "prediction_mismatches": differ, "max_logit_difference": max_diff}


@torch.no_grad()
def _pixel_accuracy(cnn: nn.Module, images: np.ndarray, labels: np.ndarray,
                    batch: int = 256) -> float:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    correct = sum(int((cnn(x[s:s + batch]).argmax(1) == torch.from_numpy(labels[s:s + batch]))
                      .sum()) for s in range(0, len(x), batch))
    return correct / len(x)


def _open_fields(path: str, split: str) -> ClassifyData:
    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"no field dataset at {path} — make the Fashion-MNIST ones with `make fields`, or "
            f"fit one with `dinet fit --source fashion-mnist --split {split} --out {path}`")
    return open_task_data("classify", path)


def _source_pixels(data: ClassifyData, given, name: str):
    """The pixels a field dataset was fitted to: ``given`` ``(images, labels)``, or reloaded
    as its manifest records; checked against the manifest's source checksum."""
    from ..data import load_source
    from ..fields.build import source_checksum

    info = data.dataset.manifest.get("source", {})
    if given is None:
        if "source" not in info:
            raise ValueError(f"{data.spec}: the manifest does not record its image source — "
                             "pass the pixels explicitly")
        images, labels, _ = load_source(info["source"], split=info.get("split", "train"),
                                        limit=info.get("limit"), size=info.get("size"))
    else:
        images, labels = given
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if "checksum" in info and source_checksum(images, labels) != info["checksum"]:
        raise ValueError(
            f"the {name} pixels ({images.shape[0]} images of {images.shape[1:]}) are not the "
            f"images {data.spec} was fitted to (source checksums differ) — pass the same "
            "images, resized the same way, or refit the fields from them with `dinet fit`")
    return images, labels


def run_from_cnn(config: FromCNNConfig, train_pixels=None, test_pixels=None,
                 progress: bool = True) -> dict:
    """Run the experiment per ``config``; write ``results.json``, ``results.md``, ``cnn.pt``
    (the CNN's widths, channels, classes and state dict) and ``finetuned.pt`` (the fine-tuned
    converted net's state dict) into ``config.out`` and return the results.

    Args:
        config: the settings.
        train_pixels, test_pixels: ``(images (N, H, W, C) float in [0, 1], labels (N,))``,
            the images the training / test fields were fitted to; by default reloaded from
            the source each dataset's manifest records (e.g. Fashion-MNIST, resized).
        progress: show progress bars.
    """
    config.check()
    started = time.perf_counter()
    train_data = _open_fields(config.train_fields, "train")
    test_data = _open_fields(config.test_fields, "test")
    images, labels = _source_pixels(train_data, train_pixels, "training")
    test_images, test_labels = _source_pixels(test_data, test_pixels, "test")
    n_train = len(train_data) if config.limit is None else min(config.limit, len(train_data))
    n_test = (len(test_data) if config.test_limit is None
              else min(config.test_limit, len(test_data)))
    shape = tuple(images.shape[1:3])
    grid = P.grid(shape)
    sets = {f"grid:{len(grid)}": grid}
    for count in config.points:
        for kind in FROM_CNN_DISCRETIZATIONS:
            sets[f"{kind}:{count}"] = make_points(kind, count, 2, seed=_EVAL_SEED)
    timings: dict[str, float] = {}
    rows: dict[str, dict[str, float]] = {row: {} for row in ROWS}

    tick = time.perf_counter()
    cnn, cnn_last = train_cnn(images[:n_train], labels[:n_train], config, progress)
    timings["cnn_train"] = time.perf_counter() - tick
    grid_key = f"grid:{len(grid)}"
    rows["cnn_pixels"][grid_key] = _pixel_accuracy(cnn, test_images[:n_test],
                                                   test_labels[:n_test])
    atomic_torch_save({"widths": list(config.widths), "in_channels": int(images.shape[-1]),
                       "n_classes": int(labels.max()) + 1, "state_dict": cnn.state_dict()},
                      Path(config.out) / "cnn.pt")  # rebuild with small_cnn(...)
    net = from_cnn(cnn, shape, kernel=config.kernel, lattice=config.lattice)

    def score(row: str) -> None:
        tick = time.perf_counter()
        for key, points in sets.items():
            if key != grid_key:
                rows[row][key] = _accuracy(net, test_data, n_test, points)
                if progress:
                    print(f"{ROWS[row]}: {key} {100 * rows[row][key]:.2f}%", flush=True)
        timings[f"{row}_eval"] = time.perf_counter() - tick

    check = _grid_comparison(cnn, net, test_data, n_test, grid)
    rows["cnn_fields"][grid_key] = check["cnn_accuracy"]
    rows["zero_shot"][grid_key] = check["converted_accuracy"]
    score("zero_shot")
    cnn_info = {"last_epoch": cnn_last, "parameters": sum(p.numel() for p in cnn.parameters())}
    results = {"config": asdict(config), "n_train": n_train, "n_test": n_test,
               "image_shape": list(images.shape[1:]), "cnn": cnn_info,
               "grid_check": {**check, "equal": check["prediction_mismatches"] == 0},
               "columns": list(sets), "rows": rows, "timings": timings}
    write_results(config.out, results)  # the zero-shot numbers survive an interrupted fine-tuning
    if config.bn_batches:
        tick = time.perf_counter()
        recalibrate(net, train_data, n_train, config)
        timings["recalibrate"] = time.perf_counter() - tick
        rows["recalibrated"][grid_key] = _accuracy(net, test_data, n_test, grid)
        score("recalibrated")
        write_results(config.out, results)
    if config.finetune_epochs:
        tick = time.perf_counter()
        results["finetune"] = finetune(net, train_data, n_train, config, progress)
        timings["finetune"] = time.perf_counter() - tick
        atomic_torch_save(net.state_dict(), Path(config.out) / "finetuned.pt")
        rows["finetuned"][grid_key] = _accuracy(net, test_data, n_test, grid)
        score("finetuned")
    timings["total"] = time.perf_counter() - started
    write_results(config.out, results)
    return results
