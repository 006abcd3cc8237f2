"""Tests for benchmarks/mlp_size_bound.py on a tiny fake Fashion-MNIST (shapes as the real one)."""

import json

import numpy as np

import benchmarks.harness
from benchmarks import mlp_size_bound as bench


def test_rows_compare_every_small_mlp_with_the_dense_one(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 256)
    x = (rng.random((256, 28, 28, 1)) * 0.1 + y[:, None, None, None] / 10.0).astype("float32")  # learnable
    monkeypatch.setattr(bench, "load", lambda name, n=None: (x[:192], y[:192], x[192:], y[192:]))
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    monkeypatch.setattr(benchmarks.harness, "environment", lambda: {"cpu": "test"})
    monkeypatch.setattr(bench, "SMALL", (bench.SMALL[0], bench.SMALL[2]))  # one all-pixel and one pixel model
    rows = bench.main(["--epochs", "1"])
    assert len(rows) == 1 + 2 * len(bench.SMALL)
    dense = rows[0]
    assert dense["params"] == 785 * 1000 + 1001 * 500 + 501 * 10 and dense["delta_pt"] == 0.0
    for r in rows[1:]:
        assert r["params"] < dense["params"] / 9  # about a tenth of the dense parameters
        assert r["params_x"] == dense["params"] / r["params"]
        assert r["delta_pt"] == 100 * (r["accuracy"] - dense["accuracy"])
    pixel_rows = [r for r in rows if r["model"].startswith("392 pixels")]
    assert [r["params"] for r in pixel_rows] == [393 * 256 + 257 * 96 + 97 * 10] * 2
    saved = json.loads((tmp_path / "mlp_size_bound.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.") and len(saved["rows"]) == len(rows)
    assert "| 784-150-64 | distilled from the dense model |" in (tmp_path / "mlp_size_bound.md").read_text()
    # another batch size goes to its own table and says so
    monkeypatch.setattr(bench, "SMALL", bench.SMALL[:1])
    bench.main(["--epochs", "1", "--batch-size", "64"])
    assert "batch 64," in (tmp_path / "mlp_size_bound_bs64.md").read_text()
    assert json.loads((tmp_path / "mlp_size_bound_bs64.json").read_text())["batch_size"] == 64
