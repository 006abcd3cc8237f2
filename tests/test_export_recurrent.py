"""Recurrent models export to LiteRT with builtin ops (a batch-1 conversion when the converter
cannot lower their tensor lists with a dynamic batch) and run there with Keras' outputs."""

import keras
import numpy as np
import pytest

import tf_groupsparse as tgs
from tf_groupsparse.deploy import convert_tflite, export, run_tflite

L = keras.layers


def recurrent(kind, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((7, 4), name="seq")
    if kind == "bidirectional":
        h = L.GRU(5, name="gru")(L.Bidirectional(L.LSTM(6, return_sequences=True), name="bi")(x))
    else:
        h = getattr(L, kind)(6, name="rnn")(x)
    return keras.Model(x, L.Dense(3, name="out")(h))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN", "bidirectional"])
def test_recurrent_models_convert_and_run_in_litert(kind):
    model = recurrent(kind)
    x = np.random.default_rng(0).standard_normal((5, 7, 4)).astype("float32")
    y = run_tflite(convert_tflite(model), x)
    np.testing.assert_allclose(y, model.predict(x, verbose=0), atol=1e-4)


def test_two_input_recurrent_model_keeps_its_inputs_apart():
    keras.utils.set_random_seed(1)
    a, b = keras.Input((7, 4), name="a"), keras.Input((3,), name="b")
    h = L.Concatenate()([L.LSTM(6)(a), L.Dense(4)(b)])
    model = keras.Model([a, b], L.Dense(2)(h))
    rng = np.random.default_rng(1)
    xa, xb = rng.standard_normal((3, 7, 4)).astype("float32"), rng.standard_normal((3, 3)).astype("float32")
    y = run_tflite(convert_tflite(model), {"a": xa, "b": xb})
    np.testing.assert_allclose(y, model.predict([xa, xb], verbose=0), atol=1e-4)


def test_shrunk_lstm_exports_with_equal_outputs_and_a_latency_ratio(tmp_path):
    model = recurrent("LSTM")
    rnn = model.get_layer("rnn")
    k, rk, bias = (v.numpy() for v in rnn.weights)
    dead = [1, 4]  # units 1 and 4: every gate column and recurrent row zero
    for gate in range(4):
        for u in dead:
            k[:, gate * 6 + u] = 0
            rk[:, gate * 6 + u] = 0
            bias[gate * 6 + u] = 0
    rk[dead, :] = 0
    for v, value in zip(rnn.weights, (k, rk, bias)):
        v.assign(value)
    out = model.get_layer("out").kernel.numpy()
    out[dead] = 0
    model.get_layer("out").kernel.assign(out)

    small = tgs.shrink(model, threshold=0.0)
    assert small.get_layer("rnn").units == 4
    x = np.random.default_rng(2).standard_normal((6, 7, 4)).astype("float32")
    report = export(small, tmp_path / "lstm", sample=x, reference=model, latency_runs=3, verbose=0)
    assert report.max_abs_error <= 1e-4 and report.max_abs_error_vs_reference <= 1e-4
    assert report.speedup > 0 and (tmp_path / "lstm" / "model.tflite").exists()
    # the SavedModel written for the user keeps its dynamic batch
    assert report.saved_model_max_abs_error <= 1e-4


def test_the_fallback_is_a_batch_of_one_run_in_slices_and_sequential_models_take_it():
    from tf_groupsparse.deploy.litert import _fixed_batch, _interpreter, _signature

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((7, 4)), L.GRU(5), L.Dense(2)])
    tflite = convert_tflite(model)
    inputs, _ = _signature(_interpreter(tflite, 1, "test"))
    assert _fixed_batch(inputs) == 1
    x = np.random.default_rng(3).standard_normal((3, 7, 4)).astype("float32")
    np.testing.assert_allclose(run_tflite(tflite, x), model.predict(x, verbose=0), atol=1e-4)
    # a dynamic-batch model is not sliced
    dense = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    assert _fixed_batch(_signature(_interpreter(convert_tflite(dense), 1, "test"))[0]) is None
