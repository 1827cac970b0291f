"""The Python examples in README run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dinet.fields import build_dataset

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    # The dataset example opens runs/fm-1k: provide a small one there.
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    build_dataset("runs/fm-1k", rng.random((64, 8, 8, 1), dtype=np.float32),
                  rng.integers(0, 10, 64), arch_hparams={"width": 8},
                  fit_options={"max_steps": 2, "meta_steps": 1}, shard_size=64, progress=False)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
