"""Several ranks (gloo, 2 CPU processes) compute what one process computes.

Each test starts 2 processes with ``torch.multiprocessing.spawn``; each joins a gloo process
group through :func:`dinet.distributed.init` (the env:// rendezvous torchrun uses), runs
the same library call as a ``torchrun`` rank would, and the result is held to a plain
one-process run in the test process.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dinet import distributed
from dinet.cli import main
from dinet.fields import build_dataset
from dinet.fields.dataset import MANIFEST, shard_name
from dinet.models import Classifier
from dinet.nn import DIBatchNorm
from dinet.points import sobol
from dinet.tasks import TrainConfig, train

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank: int, world: int, port: int, job, args) -> None:
    """One rank: the environment torchrun would set, a gloo group, then ``job``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init(rank, world, "cpu")
    try:
        job(*args)
        distributed.barrier()  # every rank done before any tears its connections down
    finally:
        distributed.shutdown()


def _run_ranks(job, *args, world: int = WORLD) -> None:
    mp.spawn(_child, args=(world, _free_port(), job, args), nprocs=world, join=True)


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 8x8 images whose class is which half is brighter."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    y = np.mgrid[0:8, 0:8][1] / 7.0
    images = np.stack([np.where(lab, y, 1 - y) * 0.8 + 0.1 * rng.random((8, 8))
                       for lab in labels])[..., None].astype(np.float32)
    return images, labels


FIT = dict(arch_hparams={"width": 8}, fit_options={"max_steps": 10, "meta_steps": 2},
           progress=False)


# --- the helpers -----------------------------------------------------------------------------

def test_local_part_cuts_contiguous_shares():
    assert [distributed.local_part(5, r, 2) for r in range(2)] == [slice(0, 3), slice(3, 5)]
    assert [distributed.local_part(1, r, 2) for r in range(2)] == [slice(0, 1), slice(1, 1)]
    for count in range(9):
        cuts = [distributed.local_part(count, r, 3) for r in range(3)]
        assert [c.start for c in cuts[1:]] == [c.stop for c in cuts[:-1]]
        assert cuts[0].start == 0 and cuts[-1].stop == count
    assert distributed.local_part(7) == slice(0, 7)  # one process: everything


def test_one_process_answers_as_rank_zero_of_one():
    assert not distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    distributed.barrier()  # nothing to wait for
    assert distributed.all_reduce_sums([1, 2.5]) == [1.0, 2.5]
    assert distributed.select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="valid: auto, cpu, cuda"):
        distributed.select_device("tpu")
    if not torch.cuda.is_available():
        assert distributed.select_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            distributed.select_device("cuda")


def test_batch_norm_makes_no_collective_call_in_one_process(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a collective call in a single process")

    monkeypatch.setattr(torch.distributed, "all_reduce", refuse)
    norm = DIBatchNorm(3).train()
    norm(torch.randn(4, 16, 3), sobol(16, seed=0)).sum().backward()


def test_bf16_is_refused_on_the_cpu(tmp_path, capsys):
    code = main(["train", "--fields", str(tmp_path / "none"), "--out", str(tmp_path / "run"),
                 "--device", "cpu", "--bf16"])
    assert code == 2 and "CUDA devices only" in capsys.readouterr().err


# --- synchronised batch norm -----------------------------------------------------------------

def _norm_case():
    """A batch norm, a batch of 8 fields on non-uniform weights, and an upstream gradient."""
    torch.manual_seed(0)
    norm = DIBatchNorm(3, momentum=None)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    points = sobol(32, seed=1)
    points = type(points)(points.coords, points.weights * torch.linspace(0.5, 1.5, 32))
    x = 3 + 2 * torch.randn(8, 32, 3, dtype=torch.float64).float()
    upstream = torch.randn(8, 32, 3)
    return norm, points, x, upstream


def _norm_forward_backward(norm, points, x, upstream, part: slice) -> dict:
    x = x[part].clone().requires_grad_()
    y = norm(x, points)
    (y * upstream[part]).sum().backward()
    return {"y": y.detach(), "x_grad": x.grad, "weight_grad": norm.weight.grad,
            "bias_grad": norm.bias.grad, "running_mean": norm.running_mean.clone(),
            "running_var": norm.running_var.clone()}


def _norm_rank(out: str) -> None:
    norm, points, x, upstream = _norm_case()
    part = slice(0, 3) if distributed.rank() == 0 else slice(3, 8)  # uneven halves
    result = _norm_forward_backward(norm, points, x, upstream, part)
    torch.save(result, Path(out) / f"rank{distributed.rank()}.pt")


def test_batch_norm_on_two_ranks_equals_the_whole_batch(tmp_path, one_thread):
    """Forward, backward and running statistics: ranks holding 3 and 5 of 8 fields equal
    one process holding all 8 (float32, to 1e-5)."""
    norm, points, x, upstream = _norm_case()
    whole = _norm_forward_backward(norm, points, x, upstream, slice(0, 8))
    _run_ranks(_norm_rank, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), whole["y"], **tol)
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]), whole["x_grad"], **tol)
    for name in ("weight_grad", "bias_grad"):  # each rank's share: together the whole
        torch.testing.assert_close(ranks[0][name] + ranks[1][name], whole[name], **tol)
    for name in ("running_mean", "running_var"):
        for r in ranks:
            torch.testing.assert_close(r[name], whole[name], **tol)


# --- training --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    path = tmp_path_factory.mktemp("fields") / "tiny"
    build_dataset(path, *_images(13), shard_size=13, **FIT)
    return path


def _train_config(fields, out, epochs):
    # 13 fields in global batches of 6: per rank 3+3, 3+3 and 1+0 (an empty share).
    return TrainConfig(fields=str(fields), out=str(out), model="dinet2", points=64,
                       epochs=epochs, batch_size=6, lr=3e-3, device="cpu")


def _train_rank(fields, out) -> None:
    """Killed at the first step of the second epoch (on both ranks), then resumed."""
    train_module = importlib.import_module("dinet.tasks.train")
    real, calls = train_module._step_loss, []

    def dying(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)

    train_module._step_loss = dying
    with pytest.raises(KeyboardInterrupt):
        train(_train_config(fields, out, epochs=2), progress=False)
    train_module._step_loss = real
    train(_train_config(fields, out, epochs=2), resume=True, progress=False)


def test_two_ranks_train_the_same_model_as_one(fields, tmp_path, one_thread):
    """2 epochs of 3 steps (with augmentations, a fresh Sobol draw per step, batch norms,
    an uneven and an empty share, and a kill and resume in the second epoch) on 2 ranks
    give the metrics of 1 process to 1e-5 and its parameters and batch-norm statistics to
    1e-4: float32 sums in another order differ by ~1e-7, and Adam's first steps (update
    ≈ lr · sign of the gradient) turn that into up to ~5e-5 on weights whose gradient is
    nearly zero."""
    one = train(_train_config(fields, tmp_path / "one", epochs=2), progress=False)
    _run_ranks(_train_rank, fields, str(tmp_path / "two"))
    lines = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1]
    assert lines[-1] == pytest.approx(one, rel=1e-5)
    a = Classifier.from_checkpoint(tmp_path / "one" / "model.pt").state_dict()
    b = Classifier.from_checkpoint(tmp_path / "two" / "model.pt").state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-4, msg=name)
    assert not list((tmp_path / "two").glob(".*.tmp"))


def test_torchrun_trains_through_the_command_line_as_one_process(fields, tmp_path, one_thread):
    """The real launcher: `torchrun --standalone --nproc_per_node=2 -m dinet train` finds its
    rank in the environment, trains with gloo on the CPU and writes what `dinet train` in
    one process writes (parameters to 1e-4, see above)."""
    args = ["train", "--fields", str(fields), "--model", "dinet2", "--points", "64",
            "--batch-size", "6", "--limit", "12", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "dinet", *args, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("epoch 1:") == 1  # rank 0 alone reports
    a = Classifier.from_checkpoint(tmp_path / "one" / "model.pt").state_dict()
    b = Classifier.from_checkpoint(tmp_path / "two" / "model.pt").state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-4, msg=name)


# --- fitting ---------------------------------------------------------------------------------

def _fit_rank(out) -> None:
    build_dataset(out, *_images(10), shard_size=3, **FIT)


def _dataset(folder: Path) -> tuple[dict, dict]:
    manifest = json.loads((folder / MANIFEST).read_text())
    shards = {e["file"]: (folder / e["file"]).read_bytes() for e in manifest["shards"]}
    return manifest, shards


def test_two_ranks_fit_the_same_dataset_and_a_rerun_completes_it(tmp_path, one_thread):
    """10 images in 4 shards: 2 ranks write the manifest and shard files of 1 process, byte
    for byte; with one shard and the manifest gone (a rank died), a rerun refits only that
    shard."""
    build_dataset(tmp_path / "one", *_images(10), shard_size=3, **FIT)
    two = tmp_path / "two"
    _run_ranks(_fit_rank, str(two))
    assert _dataset(two) == _dataset(tmp_path / "one")

    (two / MANIFEST).unlink()
    (two / shard_name(1)).unlink()
    kept = {k: os.stat(two / shard_name(k)) for k in (0, 2, 3)}
    _run_ranks(_fit_rank, str(two))
    assert _dataset(two) == _dataset(tmp_path / "one")
    for k, before in kept.items():  # untouched: the same inode, never rewritten
        after = os.stat(two / shard_name(k))
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
