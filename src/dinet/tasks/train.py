"""Training a DI-Net (or a grid CNN baseline) on a task: ``dinet train``.

Every step draws the batch's discretization afresh when it is randomised (scrambled Sobol,
shrunk, random, jittered, mixed), evaluates the batch's fields on it — with the field
augmentations applied to the coordinates the fields (and targets) are read at, not to the
points the model sees — and takes one AdamW step under a cosine schedule. Seeds are derived
from (seed, epoch, step), so a run is reproducible on CPU, and a run resumed from its last
epoch checkpoint continues exactly as an uninterrupted one would.

Under ``torchrun`` (see :mod:`dinet.distributed`) the model is wrapped in
``DistributedDataParallel`` and each rank computes its contiguous slice of every global
batch: all ranks draw the same points, augmentations and noise for the whole batch and keep
their slice, the batch norms share their statistics, and each local loss is scaled so that
DDP's averaged gradient is the gradient of the global batch — K ranks train the same model
as one process, to float rounding. Rank 0 alone writes the run's files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import distributed
from .._io import (
    atomic_write_text,
    check_writable,
    pop_verified_digest,
    read_json,
    save_with_digest,
)
from ..models import (
    PRESETS,
    SEGMENTER_PRESETS,
    Classifier,
    DIModel,
    GridCNNClassifier,
    GridCNNSegmenter,
    SDFNet,
    Segmenter,
    VoxelCNN3d,
)
from ..points import PointSet
from .data import TASKS, TaskData, open_task_data
from .discretize import check_discretization, is_randomised, make_points

__all__ = ["MODELS", "Augment", "TrainConfig", "build_model", "derived_seed", "train"]

#: Model names per task; the first is the default, ``cnn`` the discrete grid baseline.
MODELS = {
    "classify": ("dinet-res", *(p for p in PRESETS if p != "dinet-res"), "cnn"),
    "segment": ("dinet-unet", *(p for p in SEGMENTER_PRESETS if p != "dinet-unet"), "cnn"),
    "sdf": ("sdfnet", "cnn"),
}
_GLOBAL_RNG = 7919  # a key of the per-step seed of torch's global generator
#: The ``format`` record of ``train_state.pt`` (optimizer, schedule, epoch, weights).
STATE_FORMAT = "dinet-train-state-1"
#: Query points per item and step for the sdf task (fresh scrambled Sobol each step).
SDF_QUERIES = 2048


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded in ``config.json``)."""

    fields: str
    out: str
    task: str = "classify"
    model: str | None = None  # None: the task's default (MODELS[task][0])
    discretization: str = "sobol"
    points: int = 1024
    mix_points: tuple[int, ...] = ()  # other counts a step may draw instead of ``points``
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0
    augment: bool = True
    quadrature: str = "weights"
    kernel: str = "spline"
    base_spacing: float | None = None  # None: the model's default (see build_model)
    limit: int | None = None
    device: str = "auto"  # auto | cpu | cuda (see dinet.distributed.select_device)
    bf16: bool = False  # autocast to bfloat16 on CUDA

    def check(self) -> None:
        """Raise a ValueError naming the valid choices for any invalid setting."""
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid: {', '.join(TASKS)}")
        if self.model is None:
            self.model = MODELS[self.task][0]
        if self.model not in MODELS[self.task]:
            raise ValueError(f"unknown {self.task} model {self.model!r}; valid: "
                             f"{', '.join(MODELS[self.task])}")
        check_discretization(self.discretization)
        for name in ("points", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        self.mix_points = tuple(self.mix_points)
        for value in self.mix_points:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"mix_points must be positive integers; got {value!r}")
        if self.model == "cnn" and self.mix_points:
            raise ValueError("the cnn baseline reads its own grid only: it cannot train on "
                             "--mix-points")
        if self.model == "cnn" and self.discretization != "grid":
            raise ValueError("the cnn baseline sees fields only on its own grid: train it with "
                             "--discretization grid (its grid is --points, a perfect square "
                             "or cube)")
        if self.device not in distributed.DEVICES:
            raise ValueError(f"unknown device {self.device!r}; valid: "
                             f"{', '.join(distributed.DEVICES)}")
        for count in self.counts:
            make_points(self.discretization, count, 3 if self.task == "sdf" else 2)

    @property
    def counts(self) -> tuple[int, ...]:
        """The point counts a training step draws from (``points`` first)."""
        return (self.points, *(c for c in self.mix_points if c != self.points))


def build_model(config: TrainConfig, data: TaskData) -> DIModel:
    """The model ``config.model`` sized for ``data`` (grid baselines: ``config.points``).

    The finest kernel spacing defaults to one pixel (2 / size), and to two pixels for
    ``dinet-res``, which reads 256 points as well as 4,096 at that resolution.
    """
    spacing = config.base_spacing or (4.0 if config.model == "dinet-res" else 2.0) / data.size
    common = {"in_channels": data.in_channels, "quadrature": config.quadrature}
    side = round(config.points ** (1.0 / data.dim))
    if config.task == "classify":
        if config.model == "cnn":
            return GridCNNClassifier(n_classes=data.n_classes, size=side, **common)
        return Classifier(config.model, n_classes=data.n_classes, base_spacing=spacing,
                          kernel=config.kernel, **common)
    if config.task == "segment":
        if config.model == "cnn":
            return GridCNNSegmenter(n_classes=data.n_classes, size=side, **common)
        return Segmenter(config.model, n_classes=data.n_classes, base_spacing=spacing,
                         kernel=config.kernel, **common)
    if config.model == "cnn":
        return VoxelCNN3d(size=side, **common)
    return SDFNet(base_spacing=spacing, kernel=config.kernel, **common)


def _plain(value):
    """A config value as JSON reads it back (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def derived_seed(*keys: int) -> int:
    """A seed derived from non-negative integers (seed, epoch[, step])."""
    return int(np.random.SeedSequence([abs(k) for k in keys]).generate_state(1)[0])


class Augment:
    """Per-item flips and a small shift of the coordinates the fields and targets are read
    at; the model still sees the untouched points. Images flip left-right only (the last
    axis: an upside-down shirt is not in the data); 3-D ball scenes along every axis."""

    def __init__(self, gen: torch.Generator, batch: int, dim: int) -> None:
        flip = torch.rand(batch, 1, dim, generator=gen) < 0.5
        if dim == 2:
            flip[..., 0] = False
        self.flips = torch.where(flip, -1.0, 1.0)
        self.shift = 0.01 * torch.randn(batch, 1, dim, generator=gen)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        return (coords[None] * self.flips + self.shift).clamp(-1, 1)


def _step_loss(config: TrainConfig, model: torch.nn.Module, data: TaskData, idx: np.ndarray,
               points: PointSet, seed: int, part: slice | None = None,
               device: torch.device | None = None,
               bf16: bool = False) -> tuple[torch.Tensor, float, int]:
    """The loss of this process's ``part`` of one global batch ``idx`` (its mean over the
    part's items), the part's summed metric (correct items/points, or squared error) and the
    metric's count.

    The augmentations and the noise are drawn for the whole batch and sliced, so the parts
    of K ranks together see exactly what one process sees. An empty part gives a zero loss
    that is still connected to the model (DDP expects every rank's backward).
    """
    part = slice(0, len(idx)) if part is None else part
    device = torch.device("cpu") if device is None else device
    gen = torch.Generator().manual_seed(seed)
    augment = Augment(gen, len(idx), data.dim) if config.augment else None

    def where(coords: torch.Tensor) -> torch.Tensor:  # where this part's items are read
        return coords if augment is None else augment(coords)[part]

    local = idx[part]
    read_at = where(points.coords)  # where the fields (and segmentation labels) are read
    with torch.no_grad():
        x = (data.inputs(local, read_at) if len(local) else  # an empty share: no items
             torch.zeros(0, len(points), data.in_channels))
        if config.augment and config.task != "sdf":
            x = x + 0.02 * torch.randn((len(idx), *x.shape[1:]), generator=gen)[part]
    x = x.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if config.task == "sdf":
            query = make_points("sobol", SDF_QUERIES, 3, seed=derived_seed(seed, 1))
            out = model(x, points, query)
        else:
            out = model(x, points)
    out = out.float()
    if len(local) == 0:
        return out.sum() * 0.0, 0.0, 0
    if config.task == "classify":
        target = data.targets(local).to(device)
        return (F.cross_entropy(out, target), int((out.argmax(1) == target).sum()),
                len(local))
    if config.task == "segment":
        target = data.targets(local, read_at).to(device)
        # The loss is the integral of the per-point loss: quadrature-weighted.
        per_point = F.cross_entropy(out.transpose(1, 2), target, reduction="none")
        w = (points.weights / points.weights.sum()).to(device)
        return ((per_point * w).sum(1).mean(), int((out.argmax(-1) == target).sum()),
                target.numel())
    target = data.targets(local, where(query.coords)).to(device)
    err = F.mse_loss(out, target)
    return err, float(err.detach()) * target.numel(), target.numel()


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train per ``config``; write ``config.json``, ``metrics.jsonl``, ``model.pt`` and
    ``train_state.pt`` (optimizer, schedule, epoch) under ``config.out``.

    In a process group (``torchrun``; see :mod:`dinet.distributed`) every rank calls this
    with the same config: the model is wrapped in DDP, each rank computes its slice of every
    global batch of ``config.batch_size`` items, and rank 0 writes the files while the others
    wait. ``config.device`` picks the device (``auto``: CUDA when available); checkpoints are
    written from and read to the CPU, so a run resumes on any device.

    Returns the last epoch's metrics (over the global batch, on every rank).
    """
    config.check()
    device = distributed.select_device(config.device)
    if config.bf16 and device.type == "cpu":
        raise ValueError("--bf16 (bfloat16 autocast) is for CUDA devices only; on the CPU it "
                         "would be slower and change the numerics — drop --bf16, or train on "
                         "a GPU (--device cuda)")
    world, main = distributed.world_size(), distributed.is_main()
    out = check_writable(config.out)
    data = open_task_data(config.task, config.fields)
    n = len(data) if config.limit is None else min(config.limit, len(data))
    torch.manual_seed(config.seed)
    model = build_model(config, data).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    state_path, first_epoch = out / "train_state.pt", 0
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise ValueError(f"{out} already holds a run — pass --resume to continue it, or "
                             "choose another --out")
        if not (out / "config.json").exists():
            raise ValueError(f"{out} is not a dinet run (no config.json) — choose another --out")
        saved = read_json(out / "config.json", "restore it, or start the run again in another "
                          "--out")
        defaults = asdict(TrainConfig(fields="", out=""))  # keys older runs did not record
        free = ("epochs", "device", "bf16")  # may change on resume
        differ = sorted(k for k, v in asdict(config).items()
                        if k not in free and _plain(saved.get(k, defaults[k])) != _plain(v))
        if differ:
            raise ValueError(f"{out} holds a run with other settings ({', '.join(differ)} "
                             f"differ; see {out / 'config.json'}) — resume with the same "
                             "arguments")
        if state_path.exists():
            state = _read_state(state_path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            first_epoch = int(state["epoch"]) + 1
    distributed.barrier()  # every rank has looked at --out before rank 0 writes into it
    metrics_path = out / "metrics.jsonl"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=1) + "\n")
        kept = (metrics_path.read_text().splitlines()[:first_epoch] if metrics_path.exists()
                else [])
        atomic_write_text(metrics_path, "".join(line + "\n" for line in kept))
    else:
        kept = []
    # DDP averages the ranks' gradients; the batch norms share their statistics themselves.
    # No device_ids: the inputs (and their PointSet) are placed here, not scattered by DDP.
    net = DistributedDataParallel(model) if world > 1 else model

    metric_name = "mse" if config.task == "sdf" else "accuracy"
    fixed = {} if is_randomised(config.discretization) else {
        count: make_points(config.discretization, count, data.dim) for count in config.counts}
    last = {}
    for epoch in range(first_epoch, config.epochs):
        net.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            derived_seed(config.seed, epoch))).numpy()
        totals = {"loss": 0.0, "metric": 0.0, "count": 0, "seen": 0}
        start = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   unit="step", disable=not (progress and main))
        for step in bar:
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            seed = derived_seed(config.seed, epoch, step)
            count = config.counts[seed % len(config.counts)]
            points = fixed[count] if fixed else make_points(config.discretization, count,
                                                            data.dim, seed=seed)
            part = distributed.local_part(len(idx))
            mine = part.stop - part.start
            # What the step draws from the global generator (dropout) depends on the step
            # alone, so a resumed run draws what an uninterrupted one does.
            torch.manual_seed(derived_seed(config.seed, epoch, step, _GLOBAL_RNG,
                                            distributed.rank()))
            loss, metric, count = _step_loss(config, net, data, idx, points, seed, part,
                                             device, config.bf16)
            # DDP averages over the ranks: weigh each rank's mean loss by its share of the
            # batch, so the average is the gradient of the global batch's mean loss.
            scaled = loss * (mine * world / len(idx)) if world > 1 else loss
            optimizer.zero_grad(set_to_none=True)
            scaled.backward()
            optimizer.step()
            schedule.step()
            totals["loss"] += loss.item() * mine
            totals["metric"] += metric
            totals["count"] += count
            totals["seen"] += mine
            if main:
                rate = totals["seen"] * world / (time.perf_counter() - start)
                bar.set_postfix({"loss": f"{totals['loss'] / max(totals['seen'], 1):.3f}",
                                 metric_name: f"{totals['metric'] / max(totals['count'], 1):.3f}",
                                 "samples/s": f"{rate:.0f}"})
        if world > 1:  # the epoch's figures over the global batches
            totals = dict(zip(totals, distributed.all_reduce_sums(list(totals.values())),
                              strict=True))
        last = {"epoch": epoch, "loss": totals["loss"] / totals["seen"],
                metric_name: totals["metric"] / totals["count"],
                "lr": schedule.get_last_lr()[0], "steps": steps_per_epoch * (epoch + 1)}
        if main:
            # Every file is replaced atomically; train_state.pt goes last, so a crash
            # anywhere leaves a run that resumes from the last epoch it fully recorded
            # (resuming keeps one metrics line per finished epoch).
            model.save(out / "model.pt", extra={"epoch": epoch, "task": config.task})
            kept.append(json.dumps(last))
            atomic_write_text(metrics_path, "".join(line + "\n" for line in kept))
            save_with_digest(_on_cpu({"format": STATE_FORMAT, "model": model.state_dict(),
                                      "optimizer": optimizer.state_dict(),
                                      "schedule": schedule.state_dict(), "epoch": epoch}),
                             state_path)
        distributed.barrier()  # the others wait until the epoch's checkpoint is written
    return last


def _read_state(path: Path) -> dict:
    """The training state at ``path``, checked: readable, of this format, intact."""
    remedy = ("restore it from a copy, or start the run again in another --out (model.pt "
              "holds the last epoch's weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupted, or not a torch file
        raise ValueError(f"{path} cannot be read ({type(err).__name__}) — it is truncated or "
                         f"damaged; {remedy}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a {STATE_FORMAT} file of this dinet version; {remedy}")
    return pop_verified_digest(state, path, remedy)


def _on_cpu(state):
    """A (nested) state dict with its tensors on the CPU: a checkpoint loads anywhere."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _on_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_on_cpu(v) for v in state)
    return state
