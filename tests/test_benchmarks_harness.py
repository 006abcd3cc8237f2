"""The benchmark harness: one copy of training, figures, timing in rounds and result files."""

import json

import keras
import numpy as np
import pytest

from benchmarks import harness


def test_paired_speedup_is_the_median_of_round_ratios():
    assert harness.paired_speedup([2.0, 4.0, 6.0], [1.0, 1.0, 2.0]) == 3.0
    assert harness.paired_speedup([1.0, 1.0], [2.0, 0.5]) == pytest.approx(1.25)


def test_time_rounds_times_every_model_every_round_and_accuracy_agrees_in_litert():
    from tf_groupsparse.deploy import convert_tflite

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    flat = convert_tflite(model)
    samples = harness.time_rounds({"a": flat, "b": flat}, np.zeros((1, 4), "float32"), runs=3, warmup=1, rounds=2)
    assert sorted(samples) == ["a", "b"]
    assert all(len(v) == 2 and all(s > 0 for s in v) for v in samples.values())
    x = np.random.default_rng(0).standard_normal((50, 4)).astype("float32")
    y = model.predict(x, verbose=0).argmax(-1)
    assert harness.accuracy(model, x, y) == 1.0 and harness.accuracy(flat, x, y) == 1.0
    assert harness.accuracy(model, x, (y + 1) % 3) == 0.0


def test_train_fits_with_adam_or_sgd_and_returns_seconds():
    x = np.random.default_rng(0).random((64, 3)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int64")
    for optimizer in ("adam", "sgd"):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        seconds = harness.train(model, x, y, epochs=2, batch_size=16, optimizer=optimizer, learning_rate=0.1)
        assert seconds > 0 and model.optimizer.__class__.__name__.lower() == optimizer
        assert model.optimizer.iterations.numpy() == 8


def test_write_results_records_the_command_and_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    json_path, md_path = harness.write_results("x", {"rows": [1]}, "# X", extra_versions=("no-such-dist",))
    saved = json.loads(json_path.read_text())
    assert saved["rows"] == [1] and saved["command"].startswith("python -m benchmarks.")
    assert saved["environment"]["no-such-dist"] == "not installed" and "keras" in saved["environment"]
    assert md_path.read_text().startswith("# X\n\nCommand: `python -m benchmarks.")


def test_require_stops_with_the_install_hint_when_fashion_mnist_is_missing(monkeypatch):
    def missing():
        raise FileNotFoundError("no files")

    monkeypatch.setattr(harness, "_fashion", missing)
    with pytest.raises(SystemExit, match="apt-get install dataset-fashion-mnist"):
        harness.require("digits", "fashion")
    harness.require("digits")  # nothing to check


def test_load_rejects_unknown_datasets_and_caps_the_training_set():
    with pytest.raises(ValueError, match=r"load: Expected a dataset in \['digits', 'fashion', 'mnist1d'\]"):
        harness.load("cifar")
    x, y, xt, yt = harness.load("digits", train_samples=100)
    assert len(x) == len(y) == 100 and len(xt) == len(yt) > 100


def test_quick_runs_every_benchmark_and_never_replaces_recorded_results(tmp_path, monkeypatch):
    from pathlib import Path

    from benchmarks import quick

    folder = Path(harness.__file__).parent
    benchmarks = {p.stem for p in folder.glob("*.py") if "def main(" in p.read_text()}
    peers_and_tools = {"budget_tfmot", "tfmot_peer", "torch_peer", "torch_vit_peer", "quick"}
    assert {m for m, _ in quick.COMMANDS} == benchmarks - peers_and_tools
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    monkeypatch.setenv("TGS_BENCH_QUICK", "1")
    json_path, md_path = harness.write_results("suite", {}, "# S")
    assert (json_path.name, md_path.name) == ("suite_quick.json", "suite_quick.md")
    assert quick.main(["--list", "--only", "channel_multiple"]) == 0
