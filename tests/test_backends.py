"""The toolkit on the backend KERAS_BACKEND selects (TensorFlow, JAX, PyTorch): proximal steps
agree with NumPy, a regularized residual CNN trains with proximal steps, shrinks with equal
outputs, prunes to a budget (also by loss increase), reports its sparsity and round-trips
through .keras; a model trained and saved on TensorFlow loads and shrinks here.

`make test` runs this module (with test_groups.py and test_regularizers.py, marked `backends`)
once per backend, each in its own pytest process."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from _backend import BACKEND

import tf_groupsparse as tgs
from tf_groupsparse.penalties import prox_group_lasso, prox_l1

pytestmark = pytest.mark.backends
L = keras.layers


def residual_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8, 8, 3), name="image")
    h = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, padding="same", name="c1")(x)))
    h = L.Add(name="res")([h, L.Conv2D(8, 3, padding="same", name="c2")(h)])
    h = L.Conv2D(12, 3, padding="same", activation="relu", name="c3")(h)
    return keras.Model(x, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(h)))


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32") + y[:, None, None, None].astype("float32")
    return x, y


def trained(seed=0, epochs=3):
    model = residual_cnn(seed)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(*data(), epochs=epochs, batch_size=32, verbose=0)
    return model


def test_proximal_steps_agree_with_numpy():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    w[:, :, 1, :] = 0.0
    soft = np.sign(w) * np.maximum(np.abs(w) - 0.3, 0.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(prox_l1(w, 0.3)), soft, atol=1e-6)
    rows = np.moveaxis(w, 2, 0).reshape(4, -1)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    factor = np.where(norms > 1.5, 1.0 - 1.5 / np.where(norms > 0, norms, 1.0), 0.0)
    expected = np.moveaxis((rows * factor).reshape(4, 3, 3, 5), 0, 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(prox_group_lasso(w, 1.5)), expected, atol=1e-6)


@pytest.mark.parametrize("coupled", [False, True])
def test_proximal_training_zeroes_groups_that_shrink_removes(coupled):
    model = trained()
    penalty = tgs.regularizers.GroupLasso(1.0, axis="output")  # c3's filters feed the classifier only
    sparse = tgs.regularize(model, penalty, proximal=True, coupled=coupled, **({} if coupled else {"layers": ["c3"]}))
    sparse.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = tgs.callbacks.SparsityMonitor(threshold=0.0)
    history = sparse.fit(*data(), epochs=4, batch_size=32, verbose=0, callbacks=[tgs.callbacks.ProximalStep(), monitor])
    weights = [keras.ops.convert_to_numpy(w) for w in sparse.weights]
    assert all(np.isfinite(w).all() for w in weights)
    report = tgs.sparsity_report(sparse, threshold=0.0)
    small = tgs.shrink(sparse, threshold=0.0)
    assert model.count_params() - small.count_params() == report.totals["removable"] > 0
    # the monitor logged what the trained weights give (on JAX, after the epoch's state sync)
    assert history.history["sparsity/removable_params"][-1] == report.totals["removable"]
    x = data(8, seed=1)[0]
    np.testing.assert_allclose(small.predict(x, verbose=0), sparse.predict(x, verbose=0), atol=1e-4)


@pytest.mark.parametrize("importance", ["l2", "taylor"])
def test_prune_to_a_budget_and_round_trip(tmp_path, importance):
    model = trained()
    small, report = tgs.prune(model, data(), macs=0.6, importance=importance, allow_untrained=True, verbose=0)
    assert report.totals["macs_fraction"] <= 0.6
    path = tmp_path / "small.keras"
    small.save(path)
    x = data(8, seed=1)[0]
    np.testing.assert_allclose(keras.saving.load_model(path, safe_mode=True).predict(x, verbose=0),
                               small.predict(x, verbose=0), atol=1e-6)


def test_prune_filters_evaluates_the_loss_on_this_backend():
    model = trained()
    small, report = tgs.prune_filters(model, data(), tolerance=0.5, samples=64, allow_untrained=True, verbose=0)
    assert report.totals["evaluations"] > 0 and small.count_params() <= model.count_params()


def test_a_model_saved_on_tensorflow_loads_and_shrinks_here(tmp_path):
    path = tmp_path / "tf_model.keras"
    script = textwrap.dedent(f"""
        import numpy as np, keras, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_backends import residual_cnn
        import tf_groupsparse as tgs
        model = tgs.regularize(residual_cnn(), tgs.regularizers.GroupLasso(1e-3), proximal=True, layers=["c3"])
        for variable in model.get_layer("c3").weights:  # three filters of c3, kernel and bias
            value = keras.ops.convert_to_numpy(variable)
            value[..., :3] = 0.0
            variable.assign(value)
        model.save({str(path)!r})
        np.save({str(tmp_path / "x.npy")!r}, np.ones((2, 8, 8, 3), "float32"))
        np.save({str(tmp_path / "y.npy")!r}, model.predict(np.ones((2, 8, 8, 3), "float32"), verbose=0))
    """)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x, y = np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), y, atol=1e-5)
    small = tgs.shrink(loaded, threshold=0.0)
    assert small.count_params() < loaded.count_params()
    np.testing.assert_allclose(small.predict(x, verbose=0), y, atol=1e-4)


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch backend's export")
def test_export_from_pytorch_writes_litert_through_keras_and_says_what_a_saved_model_needs(tmp_path):
    model = trained(epochs=1)
    with pytest.raises(RuntimeError, match=r"pass formats=\('tflite', 'onnx'\).*KERAS_BACKEND=tensorflow"):
        tgs.export(model, tmp_path / "out", verbose=0)  # the default formats include a SavedModel
    pytest.importorskip("litert_torch")
    x = data()[0][:8]
    small = tgs.shrink(model, threshold=0.0)
    report = tgs.export(small, tmp_path / "lite", formats=("tflite",), sample=x, reference=model, latency_runs=5,
                        verbose=0)
    assert report.max_abs_error < 1e-4 and report.top1_agreement == 1.0   # checked in LiteRT against Keras
    assert report.latency_ms > 0 and report.speedup > 0
    assert (tmp_path / "lite" / "model.tflite").exists() and not (tmp_path / "lite" / "saved_model").exists()
    np.testing.assert_allclose(tgs.deploy.run_tflite((tmp_path / "lite" / "model.tflite").read_bytes(), x),
                               keras.ops.convert_to_numpy(small(x)), atol=1e-4)
    with pytest.raises(ValueError, match=r"Expected quantize=None on KERAS_BACKEND=torch"):
        tgs.export(small, tmp_path / "int8", formats=("tflite",), quantize="float16", verbose=0)


DATA_PARALLEL = textwrap.dedent("""
    import os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, keras, numpy as np
    import tf_groupsparse as tgs

    def run(parallel):
        keras.utils.set_random_seed(0)
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()) if parallel else None)
        x = keras.Input((8,))
        h = keras.layers.Dense(16, activation="relu", name="h")(x)
        model = keras.Model(x, keras.layers.Dense(3, name="o")(h))
        model = tgs.regularize(model, tgs.regularizers.GroupLasso(1.5), proximal=True, layers=["h"])
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
        model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0, callbacks=[tgs.callbacks.ProximalStep()])
        return [keras.ops.convert_to_numpy(w) for w in model.weights]

    one, two = run(False), run(True)
    assert len(jax.devices()) == 2
    print(max(float(np.abs(a - b).max()) for a, b in zip(one, two)), int((one[0] == 0).all(1).sum()),
          int((two[0] == 0).all(1).sum()))
""")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="spawns its own JAX process; run once, from the main suite")
def test_jax_data_parallel_proximal_training_matches_one_device():
    pytest.importorskip("jax")
    done = subprocess.run([sys.executable, "-c", DATA_PARALLEL], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    difference, zero_one, zero_two = done.stdout.split()[-3:]
    assert float(difference) <= 5e-3  # float sums in another order, over 12 steps
    assert int(zero_one) == int(zero_two) > 0  # the same input rows of "h" are exactly zero


@pytest.mark.skipif(BACKEND != "jax", reason="export through Keras' JAX exporter")
def test_export_from_jax_is_checked_in_litert(tmp_path):
    model = trained(epochs=1)
    x = data(4, seed=2)[0]
    report = tgs.export(model, tmp_path / "out", sample=x, latency_runs=2, verbose=0)
    assert report.max_abs_error <= 1e-4 and (tmp_path / "out" / "model.tflite").exists()
