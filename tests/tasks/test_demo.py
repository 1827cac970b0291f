"""`dinet demo` end to end on tiny data, through the digits fallback."""

from __future__ import annotations

import json

import dinet.data
from dinet.tasks.demo import demo


def test_demo_falls_back_to_digits_and_reports(tmp_path, monkeypatch, capsys):
    def missing(*args, **kwargs):
        raise FileNotFoundError("no Fashion-MNIST here")

    monkeypatch.setattr(dinet.data, "load_fashion_mnist", missing)
    out = tmp_path / "demo"
    result = demo(out, n_train=64, n_test=32, epochs=1, progress=False)
    printed = capsys.readouterr().out
    assert "notice: Fashion-MNIST is not available" in printed and "digits" in printed
    assert result["columns"] == ["sobol", "grid", "shrunk", "random", "jittered"]
    assert [r.split(" · ")[1] for r in result["rows"]] == ["sobol @ 1024", "grid @ 1024"]
    for kind in ("sobol", "grid"):
        results = json.loads((out / f"dinet-res-{kind}" / "results.json").read_text())
        table = results["metrics"]["accuracy"]
        assert set(table) == set(result["columns"])
        assert all(set(row) == {"256", "1024", "4096"} for row in table.values())
        assert results["n_items"] == 32
    assert (out / "report.md").exists() and (out / "report.png").exists()
    # last, the raw 8x8 digits themselves, at their pixels and at twice the side
    line = next(x for x in printed.splitlines() if x.startswith("[predict]"))
    assert "8×8 pixels" in line and "16×16 pixels" in line
    assert (out / "predict.png").read_bytes().startswith(b"\x89PNG")
    # A second run reuses the fields and the finished runs.
    again = demo(out, n_train=64, n_test=32, epochs=1, progress=False)
    assert again["values"] == result["values"]
