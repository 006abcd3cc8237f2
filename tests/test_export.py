"""Export to SavedModel + .tflite: files, LiteRT agreement with Keras, report figures, atomicity."""

import importlib
import json
import os
import types

import keras
import numpy as np
import pytest

# the exporter module (tgs.export is the function)
export_module = importlib.import_module("tf_groupsparse.deploy.exporter")

from tf_groupsparse.deploy import (
    ExportReport,
    convert_tflite,
    export,
    paired_ratio,
    run_tflite,
    tflite_latency,
    tflite_latency_rounds,
)

L = keras.layers


def _cnn(filters, name):
    # Dense kernel 3*3*filters*16 >= 1024 weights, so dynamic-range quantization does act on it.
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((8, 8, 1), name="pixels"),
        L.Conv2D(filters, 3, activation="relu", name="conv"),
        L.BatchNormalization(name="bn"),
        L.MaxPooling2D(name="pool"),
        L.Flatten(name="flat"),
        L.Dense(16, activation="relu", name="fc"),
        L.Dense(4, name="logits"),
    ], name=name)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((64, 8, 8, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def small():
    return _cnn(8, "small")


@pytest.fixture(scope="module")
def large():
    return _cnn(24, "large")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small, large, data):
    path = tmp_path_factory.mktemp("exp") / "small"
    report = export(small, path, sample=data[:16], reference=large, latency_runs=20)
    return path, report


def _listing(directory):
    return sorted(os.listdir(directory))


def test_float_export_writes_artifacts_and_matches_keras(exported, small, large, data):
    path, report = exported
    assert _listing(path) == ["model.tflite", "report.json", "report.md", "saved_model"]
    assert os.path.isfile(path / "saved_model" / "saved_model.pb")
    y_keras = small.predict(data[:16], verbose=0)
    y_lite = run_tflite(str(path / "model.tflite"), data[:16])
    np.testing.assert_allclose(y_lite, y_keras, atol=1e-4)
    assert report.max_abs_error == pytest.approx(np.abs(y_lite - y_keras).max(), abs=1e-6)
    assert report.max_abs_error < 1e-4 and report.saved_model_max_abs_error < 1e-4
    y_ref = large.predict(data[:16], verbose=0)
    assert report.max_abs_error_vs_reference == pytest.approx(np.abs(y_lite - y_ref).max(), rel=1e-3)


def test_report_figures_are_consistent_with_files_and_models(exported, small, large):
    path, report = exported
    assert isinstance(report, ExportReport)
    assert report.path == str(path)
    assert report.tflite_bytes == os.path.getsize(path / "model.tflite")
    sm = path / "saved_model"
    on_disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(sm) for f in fs)
    assert report.saved_model_bytes == on_disk
    # 3*3*1*8 + 8 conv, 4*8 bn, 72*16 + 16 fc, 16*4 + 4 logits
    assert report.params == small.count_params() == 80 + 32 + 1168 + 68
    # 6*6*8*9 conv + 72*16 fc + 16*4 logits
    assert report.macs == 2592 + 1152 + 64
    exported_row, ref_row = report.rows
    assert exported_row["model"] == "exported" and ref_row["model"] == "reference"
    assert ref_row["params"] == large.count_params() and ref_row["macs"] == 6 * 6 * 24 * 9 + 216 * 16 + 64
    assert ref_row["tflite_bytes"] > report.tflite_bytes
    assert report.latency_ms > 0 and ref_row["latency_ms"] > 0
    assert report.speedup == pytest.approx(ref_row["latency_ms"] / report.latency_ms)
    assert report.size_ratio == pytest.approx(ref_row["tflite_bytes"] / report.tflite_bytes)
    saved = json.loads((path / "report.json").read_text())
    assert saved == json.loads(report.to_json())
    assert saved["meta"]["quantize"] is None and saved["meta"]["threads"] == 1
    assert saved["meta"]["grouped_rewrite"] is False and saved["meta"]["target"] == "xnnpack"
    md = (path / "report.md").read_text()
    assert md.startswith("# Export of 'small'") and "| exported | 1,348 | 3,808 |" in md
    assert "speedup" in str(report) and "model.tflite" in saved["meta"]["files"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "quantize, atol",
    [("dynamic", 0.05), ("float16", 0.01), ("int8", 0.1)],
)
def test_quantized_exports_stay_close_to_keras(tmp_path, small, data, exported, quantize, atol):
    rep_data = data[16:] if quantize == "int8" else None
    path = tmp_path / quantize
    report = export(small, path, formats=("tflite",), quantize=quantize, representative_data=rep_data,
                    sample=data[:16], latency_runs=3)
    assert _listing(path) == ["model.tflite", "report.json", "report.md"]
    y_keras = small.predict(data[:16], verbose=0)
    y_lite = run_tflite(path / "model.tflite", data[:16])
    err = np.abs(y_lite - y_keras).max()
    assert report.max_abs_error == pytest.approx(err, abs=1e-6)
    assert 0 < err < atol
    # int8 keeps float inputs and outputs; int8 accuracy level: same arg-max on most samples
    assert y_lite.dtype == np.float32
    assert np.mean(y_lite.argmax(1) == y_keras.argmax(1)) >= 0.8
    float_bytes = exported[1].tflite_bytes
    assert report.tflite_bytes == os.path.getsize(path / "model.tflite") < float_bytes
    assert report.saved_model_bytes is None and report.meta["quantize"] == quantize


def test_int8_without_representative_data_is_refused(tmp_path, small):
    with pytest.raises(ValueError, match=r"export: Expected `representative_data` .* for quantize='int8'.*"
                                         r"Received: representative_data=None"):
        export(small, tmp_path / "x", quantize="int8")
    with pytest.raises(ValueError, match=r"convert_tflite: Expected `representative_data`"):
        convert_tflite(small, quantize="int8")
    with pytest.raises(ValueError, match=r"Expected `representative_data` only with quantize='int8'"):
        convert_tflite(small, quantize="dynamic", representative_data=np.zeros((2, 8, 8, 1)))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"quantize": "int4"}, ValueError, r"Expected `quantize` to be one of None, 'dynamic', 'float16', "
                                           r"'int8'. Received: quantize='int4'"),
        ({"formats": "tflite"}, TypeError, r"Expected `formats` to be a tuple .* Received: formats='tflite'"),
        ({"formats": ()}, ValueError, r"non-empty tuple of distinct names"),
        ({"formats": ("tflite2",)}, ValueError, r"Expected `formats` to be one of 'saved_model', 'tflite', "
                                                r"'onnx'. Received: formats='tflite2'"),
        ({"target": "gpu"}, ValueError, r"Expected `target` to be one of 'xnnpack', 'portable'. "
                                        r"Received: target='gpu'"),
        ({"latency_runs": -1}, ValueError, r"Expected `latency_runs` >= 0. Received: latency_runs=-1"),
        ({"overwrite": "yes"}, TypeError, r"Expected `overwrite` to be True or False"),
        ({"sample": np.zeros((2, 4))}, ValueError, r"Expected `sample` with shape \(batch, \*\(8, 8, 1\)\) "
                                                    r"for input 'pixels'. Received: sample.shape=\(2, 4\)"),
        ({"reference": "big"}, TypeError, r"Expected `reference` to be a keras.Model"),
    ],
)
def test_bad_arguments_are_refused_before_any_write(tmp_path, small, kwargs, error, message):
    with pytest.raises(error, match=message):
        export(small, tmp_path / "out", **kwargs)
    assert _listing(tmp_path) == []


def test_overwrite_replaces_only_a_previous_export(tmp_path):
    m = keras.Sequential([keras.Input((3,), name="x"), L.Dense(2, name="d")], name="tiny")
    x = np.ones((2, 3), "float32")
    path = tmp_path / "out"
    path.mkdir()
    (path / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"export: Expected `path` not to exist; pass overwrite=True "
                                              r"to replace a previous output. Received: path="):
        export(m, path, formats=("tflite",), sample=x, verbose=0)
    # a foreign directory is never replaced, even with overwrite=True
    with pytest.raises(FileExistsError, match=r"export: Expected `path` to be a new directory, an empty one or a "
                                              r"previous output of tf_groupsparse.export .*holds other files "
                                              r"\(old.txt\); choose another path or remove it yourself"):
        export(m, path, formats=("tflite",), sample=x, overwrite=True, verbose=0)
    assert _listing(path) == ["old.txt"]
    # nor a plain file (the model file itself, say)
    model_file = tmp_path / "tiny.keras"
    m.save(model_file)
    with pytest.raises(FileExistsError, match=r"it is a file, which is never replaced"):
        export(m, model_file, overwrite=True, verbose=0)
    assert model_file.is_file()
    # a previous export is replaced; an empty directory is used
    first = tmp_path / "first"
    export(m, first, formats=("tflite",), sample=x, latency_runs=0, verbose=0)
    report = export(m, first, formats=("saved_model",), sample=x, overwrite=True, latency_runs=0, verbose=0)
    assert _listing(first) == ["report.json", "report.md", "saved_model"]
    assert report.latency_ms is None and report.speedup is None
    (tmp_path / "empty").mkdir()
    export(m, tmp_path / "empty", formats=("tflite",), overwrite=True, latency_runs=0, verbose=0)
    assert json.loads((tmp_path / "empty" / "report.json").read_text())["meta"]["written_by"] == "tf_groupsparse.export"


def test_outputs_are_checked_on_generated_inputs_without_a_sample_and_int8_in_context(tmp_path):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((6,), name="x"), L.Dense(8, activation="relu"), L.Dense(3)], name="clf")
    report = export(m, tmp_path / "float", formats=("tflite",), latency_runs=0, verbose=0)
    assert report.meta["check_input"].startswith("generated: 32 standard-normal samples")
    assert report.max_abs_error < 1e-4 and report.top1_agreement == 1.0 and report.relative_error < 1e-4
    rep = np.random.default_rng(0).standard_normal((64, 6)).astype("float32")
    q = export(m, tmp_path / "int8", formats=("tflite",), quantize="int8", representative_data=rep,
               reference=m, latency_runs=0, verbose=0)
    y = m.predict(rep[:32], verbose=0)
    # the int8 error read against the output range, and whether the predicted class survives
    assert 0 < q.relative_error < 0.1
    assert q.relative_error == pytest.approx(q.max_abs_error / (y.max() - y.min()), rel=1e-6)
    assert q.top1_agreement >= 0.8 and q.top1_agreement_vs_reference == q.top1_agreement


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    m = keras.Sequential([keras.Input((3,), name="x"), L.Dense(2, name="d")], name="tiny")

    def broken(model, directory, quantize, representative, owner="export"):
        assert os.path.isdir(directory)  # the SavedModel was already written in the temp dir
        raise RuntimeError("converter crashed")

    real = export_module._litert_bytes
    monkeypatch.setattr(export_module, "_litert_bytes", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export(m, tmp_path / "new", sample=np.ones((2, 3), "float32"), verbose=0)
    assert _listing(tmp_path) == []
    # a previous export survives a failed overwrite untouched
    monkeypatch.setattr(export_module, "_litert_bytes", real)
    export(m, tmp_path / "kept", formats=("tflite",), latency_runs=0, verbose=0)
    monkeypatch.setattr(export_module, "_litert_bytes", broken)  # the real one was used above
    before = _listing(tmp_path / "kept")
    with pytest.raises(RuntimeError, match="converter crashed"):
        export(m, tmp_path / "kept", overwrite=True, verbose=0)
    assert _listing(tmp_path) == ["kept"] and _listing(tmp_path / "kept") == before


def test_helpers_convert_run_and_time_without_a_directory():
    m = keras.Sequential([keras.Input((5,), name="x"), L.Dense(3, name="d")])
    w, b = m.get_weights()
    x = np.random.default_rng(2).standard_normal((7, 5)).astype("float32")
    tflite = convert_tflite(m)
    assert tflite[4:8] == b"TFL3"
    np.testing.assert_allclose(run_tflite(tflite, x), x @ w + b, atol=1e-5)
    assert 0 < tflite_latency(tflite, x[:1], runs=5, warmup=1) < 1.0
    with pytest.raises(ValueError, match=r"tflite_latency: Expected `runs` >= 1. Received: runs=0"):
        tflite_latency(tflite, x[:1], runs=0)
    with pytest.raises(TypeError, match=r"Expected .tflite model bytes or a file path. Received: tflite of type int"):
        run_tflite(3, x)
    with pytest.raises(FileNotFoundError, match=r"Expected the path of an existing .tflite file"):
        run_tflite("/nonexistent/model.tflite", x)


def test_timing_conversion_matches_keras_without_a_saved_model_and_falls_back_when_it_cannot(small, data, monkeypatch):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from tf_groupsparse.deploy.convert import convert_tflite_for_timing

    x = data[:1]
    blob = convert_tflite_for_timing(small, x)
    assert not Interpreter(model_content=blob).get_signature_list()   # traced, frozen: no signature
    np.testing.assert_allclose(run_tflite(blob, x), small(x), atol=1e-5)
    assert 0 < tflite_latency(blob, x, runs=3) < 1.0
    assert abs(len(blob) - len(convert_tflite(small))) < 0.2 * len(blob)   # the weights are in the file

    def refuse(*args, **kwargs):
        raise RuntimeError("no concrete functions here")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_concrete_functions", refuse)
    fallback = convert_tflite_for_timing(small, x)
    assert Interpreter(model_content=fallback).get_signature_list()    # the SavedModel path's file
    np.testing.assert_allclose(run_tflite(fallback, x), small(x), atol=1e-5)


def test_timing_conversion_falls_back_when_the_file_disagrees_with_keras(small, data, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    from tf_groupsparse.deploy import convert as convert_module, litert

    real = litert.run_tflite
    monkeypatch.setattr(litert, "run_tflite", lambda blob, x: real(blob, x) + 1.0)   # an unfrozen weight, say
    blob = convert_module.convert_tflite_for_timing(small, data[:1])
    assert Interpreter(model_content=blob).get_signature_list()


def test_tflite_latency_rounds_times_every_model_every_round_in_alternating_order(monkeypatch):
    m = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    flat = convert_tflite(m)
    samples = tflite_latency_rounds({"a": flat, "b": flat}, np.zeros((1, 4), "float32"), runs=3, warmup=1, rounds=2)
    assert list(samples) == ["a", "b"] and all(len(v) == 2 and all(t > 0 for t in v) for v in samples.values())
    litert = importlib.import_module("tf_groupsparse.deploy.litert")
    calls = []
    monkeypatch.setattr(litert, "tflite_latency", lambda blob, x, **kw: calls.append((blob, kw)) or 1.0)
    samples = tflite_latency_rounds({"a": "A", "b": "B", "c": "C"}, None, rounds=3, runs=7, min_seconds=0.5)
    assert "".join(blob for blob, _ in calls) == "ABCCBAABC" and samples == {k: [1.0] * 3 for k in "abc"}
    assert all(kw == {"runs": 7, "warmup": 5, "threads": 1, "min_seconds": 0.5} for _, kw in calls)
    with pytest.raises(ValueError, match=r"tflite_latency_rounds: Expected at least one model in `models`"):
        tflite_latency_rounds({}, None)
    with pytest.raises(ValueError, match=r"tflite_latency_rounds: Expected `rounds` >= 1"):
        tflite_latency_rounds({"a": flat}, None, rounds=0)
    with pytest.raises(ValueError, match=r"tflite_latency_rounds: .*min_seconds"):
        tflite_latency_rounds({"a": flat}, None, min_seconds=-0.5)


def test_paired_ratio_is_the_median_of_the_round_ratios():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(1, 2, 7), rng.uniform(1, 2, 7)
    assert paired_ratio(a, b) == pytest.approx(np.median(a / b))   # NumPy's median of the quotients
    assert paired_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 2.0]) == 3.0
    assert paired_ratio([1.0, 1.0], [2.0, 0.5]) == pytest.approx(1.25)   # even count: the mean of the middle two
    assert paired_ratio((2.0,), [4.0]) == 0.5
    with pytest.raises(ValueError, match=r"paired_ratio: .*one time per round.*Received: 2 and 3 values"):
        paired_ratio([1.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"paired_ratio: .*Received: 0 and 0 values"):
        paired_ratio([], [])
    with pytest.raises(ValueError, match=r"paired_ratio: Expected `denominator` to hold positive, finite seconds"):
        paired_ratio([1.0], [0.0])
    with pytest.raises(ValueError, match=r"paired_ratio: Expected `numerator` to hold positive, finite seconds"):
        paired_ratio([float("nan")], [1.0])


def test_min_seconds_keeps_timing_until_the_calls_add_up(monkeypatch):
    litert = importlib.import_module("tf_groupsparse.deploy.litert")
    clock, calls = [0.0], []

    def call():  # each call takes 10 ms on a fake clock
        calls.append(1)
        clock[0] += 0.01

    monkeypatch.setattr(litert, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))  # litert's clock only
    assert litert.median_seconds(call, runs=5, warmup=2) == pytest.approx(0.01) and len(calls) == 7
    calls.clear()
    assert litert.median_seconds(call, runs=5, warmup=2, min_seconds=0.25) == pytest.approx(0.01)
    assert len(calls) == 2 + 25  # warm-up, then calls until 0.25 s of timings
    m = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    with pytest.raises(ValueError, match=r"tflite_latency: .*min_seconds"):
        tflite_latency(convert_tflite(m), np.zeros((1, 4), "float32"), min_seconds=-1)


def test_several_inputs_and_outputs_keep_the_keras_order():
    a = keras.Input((3,), name="zeta")
    b = keras.Input((2,), name="alpha")
    first = L.Dense(2, name="first")(L.Concatenate()([a, b]))
    second = L.Dense(1, name="second")(b)
    m = keras.Model([a, b], [first, second])
    rng = np.random.default_rng(3)
    xa, xb = rng.random((4, 3), dtype=np.float32), rng.random((4, 2), dtype=np.float32)
    y1, y2 = m.predict([xa, xb], verbose=0)
    tflite = convert_tflite(m)
    out = run_tflite(tflite, {"zeta": xa, "alpha": xb})
    np.testing.assert_allclose(out[0], y1, atol=1e-5)
    np.testing.assert_allclose(out[1], y2, atol=1e-5)
    out = run_tflite(tflite, [xa, xb])
    np.testing.assert_allclose(out[1], y2, atol=1e-5)


def test_model_is_not_modified(exported, small):
    fresh = _cnn(8, "small")  # the same seed builds the same weights
    assert [l.name for l in small.layers] == ["conv", "bn", "pool", "flat", "fc", "logits"]
    for old, new in zip(fresh.get_weights(), small.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_grouped_layers_take_the_target_form(tmp_path):
    from tf_groupsparse.layers import BlockDiagonalDense

    keras.utils.set_random_seed(4)
    m = keras.Sequential([keras.Input((12,), name="x"), BlockDiagonalDense(8, groups=4, name="bd"),
                          L.Dense(2, name="out")], name="grouped")
    x = np.random.default_rng(5).standard_normal((6, 12)).astype("float32")
    y = m.predict(x, verbose=0)
    sizes = {}
    for target in ("xnnpack", "portable"):
        report = export(m, tmp_path / target, formats=("tflite",), sample=x, target=target, latency_runs=0)
        assert report.meta["target"] == target and report.meta["grouped_rewrite"] is True
        np.testing.assert_allclose(run_tflite(tmp_path / target / "model.tflite", x), y, atol=1e-5)
        # (12 / 4) * (8 / 4) weights per block, 4 blocks
        assert report.macs == 24 + 16 and report.params == 24 + 8 + 18
        sizes[target] = report.tflite_bytes
    assert sizes["xnnpack"] != sizes["portable"]  # batched matmul vs split + matmuls + concat
    assert m.get_layer("bd").implementation == "batched"


def test_export_of_a_two_input_model_with_a_reference(tmp_path):
    def build(width, name):
        keras.utils.set_random_seed(6)
        a = keras.Input((3,), name="zeta")
        b = keras.Input((2,), name="alpha")
        h = L.Dense(width, activation="relu", name="h")(L.Concatenate(name="cat")([a, b]))
        return keras.Model([a, b], [L.Dense(2, name="o1")(h), L.Dense(1, name="o2")(b)], name=name)

    small, large = build(4, "small2"), build(16, "large2")
    rng = np.random.default_rng(7)
    sample = {"zeta": rng.random((5, 3), dtype=np.float32), "alpha": rng.random((5, 2), dtype=np.float32)}
    report = export(small, tmp_path / "two", formats=("tflite",), sample=sample, reference=large,
                    latency_runs=2)
    ys = small.predict([sample["zeta"], sample["alpha"]], verbose=0)
    refs = large.predict([sample["zeta"], sample["alpha"]], verbose=0)
    assert report.max_abs_error < 1e-5
    expected = max(np.abs(ys[0] - refs[0]).max(), np.abs(ys[1] - refs[1]).max())
    assert report.max_abs_error_vs_reference == pytest.approx(expected, abs=1e-5)
    # 5 * 4 + 4 * 2 + 2 * 1 and 5 * 16 + 16 * 2 + 2 * 1
    assert report.macs == 30 and report.rows[1]["macs"] == 114
