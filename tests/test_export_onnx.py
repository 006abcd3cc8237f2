"""ONNX as a second edge runtime: tgs.export(formats=(..., "onnx")) writes model.onnx through
Keras' exporter, checks it in ONNX Runtime against Keras and times it against the reference."""

import keras
import numpy as np
import pytest
from _backend import BACKEND

import tf_groupsparse as tgs
from tf_groupsparse.deploy import convert_onnx, onnx_latency, run_onnx

pytestmark = pytest.mark.backends
pytest.importorskip("onnxruntime")
if BACKEND == "jax":
    pytest.importorskip("jax2onnx")  # Keras' ONNX exporter on JAX (the `backends` extra installs it)
L = keras.layers


def cnn(width, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8, 8, 3), name="image")
    h = L.Conv2D(width, 3, activation="relu", name="conv")(x)
    return keras.Model(x, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(h)))


def test_onnx_export_is_checked_and_timed_against_the_reference(tmp_path):
    small, large = cnn(4), cnn(32)
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype("float32")
    formats = ("onnx",) if BACKEND == "torch" else ("tflite", "onnx")
    report = tgs.export(small, tmp_path / "out", formats=formats, sample=x, reference=large, latency_runs=5,
                        verbose=0)
    assert (tmp_path / "out" / "model.onnx").exists() and not (tmp_path / "out" / ".reference.onnx").exists()
    assert report.onnx_max_abs_error <= 1e-4 and report.rows[1]["onnx_max_abs_error"] <= 1e-4
    assert report.onnx_speedup > 0 and report.onnx_bytes < report.rows[1]["onnx_bytes"]
    assert "model.onnx" in report.meta["files"]


def test_helpers_convert_run_and_time(tmp_path):
    model = cnn(6)
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 3)).astype("float32")
    path = convert_onnx(model, tmp_path / "m.onnx")
    np.testing.assert_allclose(run_onnx(path, x), model.predict(x, verbose=0), atol=1e-5)
    assert onnx_latency(path, x[:1], runs=3) > 0


def test_an_unknown_format_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="onnx"):
        tgs.export(cnn(4), tmp_path / "bad", formats=("onnx2",), verbose=0)
