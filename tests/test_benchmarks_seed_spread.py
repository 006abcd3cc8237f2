"""Tests for benchmarks/seed_spread.py: whole runs per seed, deltas against the same seed's dense."""

import json
import statistics

import numpy as np
import pytest

import benchmarks.harness
from benchmarks import run_all, seed_spread
from benchmarks import harness as data_mod


def test_spread_counts_the_seeds_within_the_loss():
    out = seed_spread.spread([-0.4, -0.6, -0.5, 0.1], 0.5)
    assert out == {"mean": round(statistics.fmean([-0.4, -0.6, -0.5, 0.1]), 2),
                   "sd": round(statistics.stdev([-0.4, -0.6, -0.5, 0.1]), 2), "within": 3}
    assert seed_spread.spread([-1.0], 0.5) == {"mean": -1.0, "sd": 0.0, "within": 0}


@pytest.mark.slow
def test_seed_spread_reruns_dense_and_row_per_seed(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    x = (rng.random((300, 8, 8, 1)) * 0.1 + y[:, None, None, None] / 10.0).astype("float32")
    monkeypatch.setattr(data_mod, "load", lambda name, train_samples=None: (x[:240], y[:240], x[240:], y[240:]))
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    monkeypatch.setattr(benchmarks.harness, "environment", lambda: {"cpu": "test"})
    argv = ["digits/mlp", "--methods", "scratch_target", "--mode", "quick", "--seeds", "0", "1",
            "--epochs", "1", "--finetune-epochs", "0"]
    result = seed_spread.main(argv)
    # each seed trained its own dense model (cached apart) and its own row
    cache = tmp_path / "suite_cache" / "quick" / "digits" / "mlp"
    assert (cache / "dense_e1_n240.keras").is_file() and (cache / "dense_e1_n240_s1.keras").is_file()
    dense, row = result["dense"], result["scratch_target"]
    assert dense["delta_pt"] == {0: 0.0, 1: 0.0}
    for s in (0, 1):
        assert row["delta_pt"][s] == round(100 * (row["accuracy"][s] - dense["accuracy"][s]), 2)
        assert row["params"][s] < dense["params"][s]  # the narrower reference
    assert row["mean"] == round(statistics.fmean(row["delta_pt"].values()), 2)
    # a budget other than the suite's gets its own table, which the suite's summary leaves out
    saved = json.loads((tmp_path / "seed_spread_quick_digits_mlp_e1_f0.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["rows"]["scratch_target"]["sd"] == row["sd"]
    assert "budget_override" not in saved and saved["train_samples"] is None
    assert saved["budget"] == "epochs 1, fine-tune epochs 0"
    assert run_all.seed_spreads(tmp_path, "quick", "digits") == {}
    md = (tmp_path / "seed_spread_quick_digits_mlp_e1_f0.md").read_text()
    assert "| scratch_target |" in md and "Command: `python -m benchmarks." in md
    assert "trained on the whole training set" in md
    # latency x: each seed's dense latency over the row's (lowest-highest over the seeds)
    speedups = [dense["latency_float_s"][s] / row["latency_float_s"][s] for s in (0, 1)]
    low, high = f"{min(speedups):.2f}", f"{max(speedups):.2f}"
    line = next(x for x in md.splitlines() if x.startswith("| scratch_target |"))
    assert line.split(" | ")[3] == (low if low == high else f"{low}-{high}")
    files = sorted(p.name.rsplit("__", 1)[0] for p in (tmp_path / "seed_spread_quick_jobs").iterdir()
                   if "n120" not in p.name)
    assert files == ["digits__mlp__dense__seed0__e1_f0", "digits__mlp__dense__seed1__e1_f0",
                     "digits__mlp__scratch_target__seed0__e1_f0", "digits__mlp__scratch_target__seed1__e1_f0"]
    # --train-samples: the first N samples, runs and models kept apart from the others
    fewer = seed_spread.main(argv[:6] + ["0", "--epochs", "1", "--finetune-epochs", "0", "--train-samples", "120"])
    assert (cache / "dense_e1_n120.keras").is_file() and list(fewer) == ["dense", "scratch_target"]
    assert sorted(p.name.rsplit("__", 1)[0] for p in (tmp_path / "seed_spread_quick_jobs").iterdir()
                  if "n120" in p.name) == ["digits__mlp__dense__seed0__e1_f0__n120",
                                           "digits__mlp__scratch_target__seed0__e1_f0__n120"]
    md = (tmp_path / "seed_spread_quick_digits_mlp_e1_f0_n120.md").read_text()
    assert "trained on the first 120 training samples" in md
    # a rerun reads the finished runs instead of training again
    monkeypatch.setattr("benchmarks.suite.methods.METHODS", {})
    assert seed_spread.main(argv) == result
    with pytest.raises(SystemExit, match="no job digits/mlp/nope"):
        seed_spread.main(["digits/mlp", "--methods", "nope", "--mode", "quick"])
