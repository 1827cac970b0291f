"""Several processes, one job: the small layer between dinet and ``torch.distributed``.

dinet scales out with PyTorch's own engine and nothing home-made: ``torchrun`` starts the
processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in each; :func:`init_from_env` reads them and joins the default process
group (gloo on CPU, NCCL on CUDA); training wraps the model in
``torch.nn.parallel.DistributedDataParallel``. Outside a launch every helper here answers
as a single process would (rank 0 of 1, barriers do nothing), so library code calls them
unconditionally.

This module also picks the device (:func:`select_device`): the only place in dinet that
names ``cuda``.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "DEVICES",
    "all_reduce_sums",
    "backend_for",
    "barrier",
    "init",
    "init_from_env",
    "is_initialized",
    "is_main",
    "launched",
    "local_part",
    "local_rank",
    "rank",
    "select_device",
    "session",
    "shutdown",
    "world_size",
]

#: The values of ``--device``.
DEVICES = ("auto", "cpu", "cuda")
_ACCELERATOR = "cuda"


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or anything that sets ``RANK`` and
    ``WORLD_SIZE`` the same way)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    """Whether the default process group exists (this process is one rank of several)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 outside a process group."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of ranks, 1 outside a process group."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 when not set)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Whether this process writes the job's files (rank 0; always true in one process)."""
    return rank() == 0


def select_device(name: str = "auto") -> torch.device:
    """The torch device for ``--device`` ``name``: ``auto`` (CUDA when available, else the
    CPU), ``cpu`` or ``cuda``. On CUDA a process started by ``torchrun`` gets the GPU of its
    ``LOCAL_RANK``, so K processes on one machine use K different GPUs."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    available = torch.cuda.is_available()
    if name == "cpu" or (name == "auto" and not available):
        return torch.device("cpu")
    if not available:
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device (a CPU "
                         "build of torch, or no GPU here) — use --device cpu or auto")
    index = local_rank() if launched() else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {index} has no GPU: this machine has "
                         f"{torch.cuda.device_count()} — start at most that many processes "
                         "per machine (torchrun --nproc_per_node)")
    return torch.device(_ACCELERATOR, index)


def backend_for(device: torch.device | str) -> str:
    """The collective backend for ranks on ``device``: NCCL for CUDA, gloo otherwise."""
    return "nccl" if torch.device(device).type == _ACCELERATOR else "gloo"


def init(rank: int, world_size: int, device: torch.device | str = "cpu", *,
         init_method: str | None = None,
         timeout: datetime.timedelta | None = None) -> None:
    """Join the default process group as ``rank`` of ``world_size`` explicitly (tests,
    notebooks); ``init_method`` defaults to ``env://`` (``MASTER_ADDR``/``MASTER_PORT``)."""
    device = torch.device(device)
    if device.type == _ACCELERATOR:
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), init_method=init_method or "env://",
                            rank=rank, world_size=world_size, timeout=timeout)


def init_from_env(device: str = "auto",
                  timeout: datetime.timedelta | None = None) -> torch.device:
    """Select the device and, under ``torchrun``, join the default process group.

    Returns the device this process computes on. Does nothing distributed when the process
    was not launched by ``torchrun`` or the group already exists. ``timeout`` bounds every
    collective, barriers included (torch's default: 30 minutes for gloo, 10 for NCCL).
    """
    chosen = select_device(device)
    if launched() and not is_initialized():
        init(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), chosen, timeout=timeout)
    return chosen


def shutdown() -> None:
    """Leave the default process group (if any).

    Collects garbage first: a run that died with an exception leaves its
    ``DistributedDataParallel`` wrapper in a reference cycle (the traceback's frames), and
    its gradient reducer, destroyed later by a garbage collection or at interpreter exit,
    must not outlive the process group it talks to (gloo then aborts the process)."""
    if is_initialized():
        gc.collect()
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str = "auto",
            timeout: datetime.timedelta | None = None) -> Iterator[torch.device]:
    """:func:`init_from_env` for the duration of a ``with`` block; yields the device and
    leaves the process group on exit if this block joined it."""
    joined = launched() and not is_initialized()
    chosen = init_from_env(device, timeout)
    try:
        yield chosen
    except BaseException:
        if joined:  # no barrier: the other ranks may be gone
            shutdown()
        raise
    if joined:
        # Every rank done before any tears its connections down: gloo aborts a process
        # whose peer closes a pair while it still holds it.
        barrier()
        shutdown()


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in one process)."""
    if world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_sums(values: Sequence[float]) -> list[float]:
    """Each value summed over the ranks (float64), e.g. a metric's sum and its count; the
    values themselves in one process."""
    if world_size() == 1:
        return [float(v) for v in values]
    device = (torch.device(_ACCELERATOR, torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def local_part(count: int, index: int | None = None, parts: int | None = None) -> slice:
    """Share ``index`` (default: this rank) of ``count`` items cut into ``parts`` (default:
    the number of ranks) contiguous shares: the first ``count % parts`` shares hold one item
    more, and a share is empty when ``count < parts``."""
    index = rank() if index is None else index
    parts = world_size() if parts is None else parts
    base, extra = divmod(count, parts)
    start = index * base + min(index, extra)
    return slice(start, start + base + (index < extra))
