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

With ``ema`` (``--ema DECAY``) the run also keeps an exponential moving average of the
weights (:class:`WeightAverage`); ``model.pt`` then holds the average, which ``dinet eval``
and ``dinet predict`` read, and ``train_state.pt`` both.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import distributed
from ..models import DIModel, create_model, load_model, model_entry
from ..points import PointSet
from .augment import Augment, derived_seed
from .base import DEFAULT_TASK, Task, TaskData, get_task
from .discretize import check_discretization, components, is_randomised, make_points
from .evaluate import load_run
from .runs import RunFolder

__all__ = ["TrainConfig", "WeightAverage", "build_model", "train"]

_GLOBAL_RNG = 7919  # a key of the per-step seed of torch's global generator


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded in ``config.json``)."""

    fields: str
    out: str
    task: str = DEFAULT_TASK
    model: str | None = None  # None: the task's default (its first registered model)
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
    init: str | None = None  # a run folder whose model.pt the weights start from
    distill: str | None = None  # a run folder whose model's predictions the loss also follows
    distill_weight: float = 0.5  # the teacher's share of the loss (the labels': the rest)
    model_options: dict = field(default_factory=dict)  # the model's own (--model-option)
    ema: float | None = None  # the decay of a moving average of the weights (None: none)

    def check(self) -> None:
        """Raise a ValueError naming the valid choices for any invalid setting."""
        task = get_task(self.task)
        if self.model is None:
            if not task.models:
                raise ValueError(f"no model is registered for the {self.task} task — "
                                 "register one with dinet.models.register_model")
            self.model = task.models[0]
        baseline = model_entry(self.task, self.model).grid_baseline
        self.model_options = dict(self.model_options)  # names checked by create_model
        check_discretization(self.discretization)
        for name in ("points", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        self.mix_points = tuple(self.mix_points)
        for value in self.mix_points:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"mix_points must be positive integers; got {value!r}")
        if baseline and self.mix_points:
            raise ValueError(f"the {self.model} baseline reads its own grid only: it cannot "
                             "train on --mix-points")
        if baseline and self.discretization != "grid":
            raise ValueError(f"the {self.model} baseline sees fields only on its own grid: "
                             "train it with --discretization grid (its grid is --points, a "
                             "perfect square or cube)")
        if self.device not in distributed.DEVICES:
            raise ValueError(f"unknown device {self.device!r}; valid: "
                             f"{', '.join(distributed.DEVICES)}")
        for kind in components(self.discretization):  # each kind a mixture may draw
            for count in self.counts:
                make_points(kind, count, task.dim)
        for flag, run in (("--init", self.init), ("--distill", self.distill)):
            if run is not None and not (Path(run) / "model.pt").is_file():
                raise ValueError(f"{flag} {run}: no model.pt there — pass a run folder "
                                 "written by `dinet train`")
        if not 0.0 < self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in (0, 1]; got {self.distill_weight!r}")
        if self.ema is not None and not (isinstance(self.ema, float) and 0.0 < self.ema < 1.0):
            raise ValueError(f"ema must be a decay in (0, 1), e.g. 0.999; got {self.ema!r}")

    @property
    def counts(self) -> tuple[int, ...]:
        """The point counts a training step draws from (``points`` first)."""
        return (self.points, *(c for c in self.mix_points if c != self.points))


class WeightAverage:
    """An exponential moving average of ``model``'s weights and buffers (``--ema DECAY``).

    After the t-th step every floating-point tensor of the average moves a fraction
    ``1 - d`` of the way to the model's, with ``d = min(decay, (1 + t) / (10 + t))`` — the
    usual warm-up, so the first steps do not hold the average near the initial weights for
    ``1 / (1 - decay)`` steps. Other buffers (a batch norm's step count) are copied.
    ``self.model`` is the averaged copy, in eval mode.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move the average toward ``model`` after (0-based) training step ``step``."""
        d = min(self.decay, (1 + step) / (10 + step))
        live = model.state_dict()
        for name, average in self.model.state_dict().items():
            if average.is_floating_point():
                average.lerp_(live[name], 1.0 - d)
            else:
                average.copy_(live[name])


def build_model(config: TrainConfig, data: TaskData) -> DIModel:
    """The model ``config.model`` of ``config.task`` sized for ``data`` (grid baselines:
    ``config.points``); see :func:`dinet.models.create_model`."""
    return create_model(config.task, config.model, in_channels=data.in_channels,
                        n_classes=data.n_classes, image_size=data.size, points=config.points,
                        dim=data.dim, base_spacing=config.base_spacing, kernel=config.kernel,
                        quadrature=config.quadrature, options=config.model_options)


def _start_from(model: DIModel, run: str) -> None:
    """Load the weights of ``run``'s model into ``model`` (:meth:`DIModel.start_from`)."""
    source = load_model(Path(run) / "model.pt")
    try:
        model.start_from(source)
    except ValueError as err:
        raise ValueError(
            f"--init {run}: {err} — start from a run of the same --model, --model-option, "
            "--kernel, --base-spacing and --quadrature on the same data (or of a model this "
            "one converts from)") from None


def _teacher(config: TrainConfig, data: TaskData,
             device: torch.device) -> tuple[torch.nn.Module, PointSet] | None:
    """``--distill``'s run: its model, frozen, and the points it reads each item at — the
    fixed points it was trained on (a grid baseline's grid, ``npz:FILE``), else the pixel
    grid of the data."""
    if config.distill is None:
        return None
    trained, teacher = load_run(Path(config.distill))
    if trained["task"] != config.task:
        raise ValueError(f"--distill {config.distill}: a run of the {trained['task']} task "
                         f"cannot teach the {config.task} task")
    kind, n = trained.get("discretization"), trained.get("points")
    if kind is not None and n is not None and not is_randomised(kind):
        points = make_points(kind, int(n), data.dim)
    else:
        points = make_points("grid", data.size**data.dim, data.dim)
    return teacher.to(device).eval().requires_grad_(False), points


def _step_loss(config: TrainConfig, model: torch.nn.Module, data: TaskData, idx: np.ndarray,
               points: PointSet, seed: int, part: slice | None = None,
               device: torch.device | None = None, bf16: bool = False,
               teacher: tuple[torch.nn.Module, PointSet] | None = None,
               ) -> tuple[torch.Tensor, float, int]:
    """The loss of this process's ``part`` of one global batch ``idx`` (its mean over the
    part's items), the part's summed metric (correct items/points, or squared error) and the
    metric's count. With a ``teacher`` (``--distill``: a frozen model and its points) the
    loss is ``1 - distill_weight`` of the labels' and ``distill_weight`` of the distance to
    the teacher's output, which reads the same (augmented) items at its own points, without
    the input noise, at the same query points.

    The augmentations and the noise are drawn for the whole batch and sliced, so the parts
    of K ranks together see exactly what one process sees. An empty part gives a zero loss
    that is still connected to the model (DDP expects every rank's backward).
    """
    task = get_task(config.task)
    part = slice(0, len(idx)) if part is None else part
    device = torch.device("cpu") if device is None else device
    gen = torch.Generator().manual_seed(seed)
    augment = Augment(gen, len(idx), data.dim) if config.augment else None

    def where(coords: torch.Tensor) -> torch.Tensor:  # where this part's items are read
        return coords if augment is None else augment(coords)[part]

    local = idx[part]
    with torch.no_grad():
        x = (data.inputs(local, where(points.coords)) if len(local) else  # an empty share
             torch.zeros(0, len(points), data.in_channels))
        if config.augment and task.input_noise:
            noise = torch.randn((len(idx), *x.shape[1:]), generator=gen)[part]
            x = x + task.input_noise * noise.to(x.device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out, query = task.forward(model, x.to(device), points, seed, data)
    out = out.float()
    if len(local) == 0:
        return out.sum() * 0.0, 0.0, 0
    loss, metric, count = task.loss(out, data, local, where, points, query)
    if teacher is not None:
        model_t, points_t = teacher
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            x_t = data.inputs(local, where(points_t.coords)).to(device)
            # read where the student was (a field's query points; none for a class)
            out_t = (model_t(x_t, points_t) if query is None else
                     model_t(x_t, points_t, query)).float()
        loss = ((1 - config.distill_weight) * loss
                + config.distill_weight * task.distill_loss(out, out_t, query))
    return loss, metric, count


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train per ``config``; write ``config.json``, ``metrics.jsonl``, ``model.pt`` and
    ``train_state.pt`` (optimizer, schedule, epoch) under ``config.out``
    (see :class:`~dinet.tasks.runs.RunFolder`).

    In a process group (``torchrun``; see :mod:`dinet.distributed`) every rank calls this
    with the same config: the model is wrapped in DDP, each rank computes its slice of every
    global batch of ``config.batch_size`` items, and rank 0 writes the files while the others
    wait. ``config.device`` picks the device (``auto``: CUDA when available); checkpoints are
    written from and read to the CPU, so a run resumes on any device.

    Returns the last epoch's metrics (over the global batch, on every rank).
    """
    config.check()
    task: Task = get_task(config.task)
    device = distributed.select_device(config.device)
    if config.bf16 and device.type == "cpu":
        raise ValueError("--bf16 (bfloat16 autocast) is for CUDA devices only; on the CPU it "
                         "would be slower and change the numerics — drop --bf16, or train on "
                         "a GPU (--device cuda)")
    world, main = distributed.world_size(), distributed.is_main()
    run = RunFolder(config.out, main)
    data = task.open_data(str(config.fields)).to(device)  # fields evaluated where we train
    n = len(data) if config.limit is None else min(config.limit, len(data))
    torch.manual_seed(config.seed)
    model = build_model(config, data).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    state = run.previous_state(asdict(config), asdict(TrainConfig(fields="", out="")), resume,
                               free=("epochs", "device", "bf16"))  # may change on resume
    first_epoch = 0
    if state is None and config.init is not None:  # a new run from another's weights
        _start_from(model, config.init)
    elif state is not None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:  # e.g. a run begun before a model's layers changed
            raise ValueError(
                f"{config.out}: the saved training state does not fit the {config.model} this "
                f"dinet builds ({str(err).splitlines()[0]}) — was the run begun with an older "
                "dinet? Finish it with that version, or start a new run in another --out"
            ) from None
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        first_epoch = int(state["epoch"]) + 1
    ema = None if config.ema is None else WeightAverage(model, config.ema)
    if ema is not None and state is not None:
        ema.model.load_state_dict(state["ema"])
    teacher = _teacher(config, data, device)  # before anything is written: it may not fit
    distributed.barrier()  # every rank has looked at --out before rank 0 writes into it
    run.begin(asdict(config), first_epoch)
    # DDP averages the ranks' gradients; the batch norms share their statistics themselves.
    # No device_ids: the inputs (and their PointSet) are placed here, not scattered by DDP.
    net = DistributedDataParallel(model) if world > 1 else model

    metric_name = task.epoch_metric
    # Recorded with the weights for `dinet predict`: the task, the pixels per axis of the
    # training images (its default query grid) and the classes' names.
    extra = {"task": config.task, "size": data.size}
    if data.class_names is not None:
        extra["class_names"] = list(data.class_names)
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
                                             device, config.bf16, teacher)
            # DDP averages over the ranks: weigh each rank's mean loss by its share of the
            # batch, so the average is the gradient of the global batch's mean loss.
            scaled = loss * (mine * world / len(idx)) if world > 1 else loss
            optimizer.zero_grad(set_to_none=True)
            scaled.backward()
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update(model, epoch * steps_per_epoch + step)
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
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "schedule": schedule.state_dict(), "epoch": epoch}
        if ema is not None:
            checkpoint["ema"] = ema.model.state_dict()
        run.end_epoch(model if ema is None else ema.model, last, checkpoint,
                      extra=extra | {"epoch": epoch})
        distributed.barrier()  # the others wait until the epoch's checkpoint is written
    return last
