"""The from-cnn experiment's table: one row per model, one column per test discretization."""

from __future__ import annotations

import json
from pathlib import Path

from .._io import atomic_write_text

__all__ = ["ROWS", "from_cnn_table", "write_results"]

ROWS = {"cnn_pixels": "CNN on pixels", "cnn_fields": "CNN on grid-rendered fields",
        "zero_shot": "converted, zero-shot",
        "recalibrated": "converted, batch norms re-estimated on fields",
        "finetuned": "converted, fine-tuned"}


def write_results(out: str, results: dict) -> None:
    """``results.json`` and ``results.md`` into ``out``."""
    atomic_write_text(Path(out) / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(Path(out) / "results.md", from_cnn_table(results) + "\n")


def _column_title(key: str, image_shape) -> str:
    kind, count = key.split(":")
    if kind == "grid":
        return f"grid {image_shape[0]}×{image_shape[1]}"
    return f"{kind} {int(count):,}"


def from_cnn_table(results: dict) -> str:
    """Markdown: one row per model (CNN on pixels, on fields, converted zero-shot and
    fine-tuned), one column per test discretization, accuracies in percent."""
    config, columns = results["config"], results["columns"]
    headers = [_column_title(c, results["image_shape"]) for c in columns]
    epochs = config["finetune_epochs"]
    titles = {**ROWS, "finetuned": f"converted, fine-tuned {epochs} epoch"
              + ("s" if epochs != 1 else "")}
    check = results["grid_check"]
    lines = [f"from-cnn: CNN trained {config['epochs']} epochs on {results['n_train']:,} "
             f"images, tested on {results['n_test']:,} fields of {config['test_fields']}; "
             f"converted net on the grid {'equals' if check['equal'] else 'DIFFERS FROM'} "
             f"the CNN ({check['prediction_mismatches']} predictions differ, max logit "
             f"difference {check['max_logit_difference']:.1e})", "",
             "| model | " + " | ".join(headers) + " |",
             "|---|" + "---|" * len(columns)]
    for row, values in results["rows"].items():
        if values:
            cells = [f"{100 * values[c]:.2f}%" if c in values else "–" for c in columns]
            lines.append(f"| {titles[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
