"""The benchmark harness: one copy of training, figures, paired ratios and result files."""

import json

import keras
import numpy as np
import pytest

from benchmarks import harness


def test_accuracy_agrees_between_keras_and_litert():
    from tf_groupsparse.deploy import convert_tflite

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    flat = convert_tflite(model)
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


def test_write_results_under_bench_quick_never_replaces_recorded_results(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    monkeypatch.setenv("TGS_BENCH_QUICK", "1")
    json_path, md_path = harness.write_results("suite", {}, "# S")
    assert (json_path.name, md_path.name) == ("suite_quick.json", "suite_quick.md")


def test_publish_writes_and_prints_the_markdown(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    monkeypatch.setattr(harness, "environment", lambda: {"cpu": "test"})
    json_path, md_path = harness.publish("x", {"rows": [2]}, ["# X", "", "body"], quick=True)
    assert (json_path.name, md_path.name) == ("x_quick.json", "x_quick.md")
    assert json.loads(json_path.read_text())["rows"] == [2]
    assert md_path.read_text().startswith("# X\n\nbody\n\nCommand: `python -m benchmarks.")
    out = capsys.readouterr().out
    assert out.startswith("# X\n\nbody\n") and f"written: {json_path} {md_path}" in out
    assert harness.publish("x", {}, ["# Y"])[1].name == "x.md"


def test_timed_returns_the_result_and_the_seconds():
    result, seconds = harness.timed(sorted, [3, 1, 2], reverse=True)
    assert result == [3, 2, 1] and 0 <= seconds < 1


def test_cnn_names_its_layers_and_seeds_its_weights():
    model = harness.cnn((8, 8, 1), (4, "pool", 8), classes=3, seed=1)
    assert [layer.name for layer in model.layers if layer.weights] == ["conv1", "conv2", "logits"]
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 1
    assert model.output_shape == (None, 3)
    same, unseeded = harness.cnn((8, 8, 1), (4, "pool", 8), 3, seed=1), harness.cnn((8, 8, 1), (4, "pool", 8), 3, None)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), same.get_weights()))
    assert not np.array_equal(model.get_weights()[0], unseeded.get_weights()[0])  # seed=None: no reseeding


def test_kd_targets_pack_labels_with_the_teacher_logits():
    from tf_groupsparse.pruning.distillation import distillation_loss

    rng = np.random.default_rng(0)
    y, teacher, student = rng.integers(0, 3, 8), rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    packed, loss = harness.kd_targets(y, teacher, temperature=2.0, alpha=0.3)
    assert packed.shape == (8, 4) and np.array_equal(packed[:, 0], y) and np.allclose(packed[:, 1:], teacher)
    expected = distillation_loss(y, student.astype("float32"), teacher.astype("float32"), 2.0, 0.3)
    assert float(loss(packed, student.astype("float32"))) == pytest.approx(float(expected), rel=1e-6)


def test_mean_sd_gives_the_sample_spread_skipping_missing_values():
    from benchmarks.harness import mean_sd

    assert mean_sd([1.0, 3.0, None]) == "2.00 ± 1.41"
    assert mean_sd([0.5], "{:.3f}") == "0.500" and mean_sd([None]) == "-" and mean_sd([]) == "-"
