"""``dinet fit`` as a function: a named source of images into a field dataset."""

from __future__ import annotations

import datetime
from pathlib import Path

from .. import distributed
from .._io import check_writable
from ..fields import FieldDataset, build_dataset
from .sources import load_source

__all__ = ["fit_source"]


def fit_source(source: str, out: str | Path, *, split: str = "train", limit: int | None = None,
               size: int | None = None, data_dir=None, seed: int = 0, arch: str = "siren",
               arch_hparams: dict | None = None, fit_options: dict | None = None,
               shard_size: int = 256, progress: bool = True,
               device: str = "cpu", scenes: dict | None = None) -> FieldDataset | None:
    """Fit one field per image of ``source`` (see :func:`~dinet.data.load_source`) into the
    dataset folder ``out`` (resumable; see :func:`~dinet.fields.build_dataset`).

    ``out`` is checked writable before anything is loaded. ``device`` (``auto``, ``cpu``,
    ``cuda``) is where the fields are fitted; ``scenes`` holds options of
    :func:`~dinet.data.make_scenes` (``scale``, ``items``) for the ``scenes`` source. Under
    ``torchrun`` the ranks fit their shares of the shards (on CUDA each on the GPU of its
    ``LOCAL_RANK``), waiting up to 24 hours for each other; the main rank returns the
    dataset, the others ``None``.
    """
    check_writable(out)
    images, labels, info = load_source(source, split=split, limit=limit, size=size,
                                       data_dir=data_dir, seed=seed, scenes=scenes)
    with distributed.session(device, timeout=datetime.timedelta(hours=24)) as chosen:
        dataset = build_dataset(out, images, labels, source=info, split=split, arch=arch,
                                arch_hparams=arch_hparams, fit_options=fit_options,
                                shard_size=shard_size, seed=seed, progress=progress,
                                device=chosen)
        main = distributed.is_main()
    return dataset if main else None
