import json

import keras
import numpy as np
import pytest

from tf_groupsparse import cli
from tf_groupsparse.datasets import load_digits
from tf_groupsparse.demo import DEMO_SETTINGS, digits_cnn, run_demo
from tf_groupsparse.regularizers import HierarchicalGroupSparse


def test_digits_cnn_layout():
    model = digits_cnn(seed=0)
    assert [layer.name for layer in model.layers] == ["conv1", "conv2", "pool", "conv3", "gap", "fc"]
    # conv: 9*1*16+16, 9*16*32+32, 9*32*32+32; fc 32*10+10
    assert model.count_params() == 160 + 4640 + 9248 + 330
    assert model.output_shape == (None, 10)
    a, b = digits_cnn(seed=3), digits_cnn(seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    with pytest.raises(ValueError, match=r"digits_cnn: Expected 3 widths\. Received: widths=\(4, 4\)"):
        digits_cnn((4, 4))


def test_run_demo_writes_model_and_reports(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, epochs=2, seed=1, verbose=0)
    assert sorted(p.name for p in out.iterdir()) == [
        "data.npz", "export", "model.keras", "model_shrunk.keras", "report.json", "report.md"]
    assert sorted(p.name for p in (out / "export").iterdir()) == [
        "model.tflite", "report.json", "report.md", "saved_model"]
    text = str(result)
    lines = text.splitlines()
    assert lines[0] == "Sparsity of digits_cnn (l2 norm of a group < 0.001 counts as zero)"
    assert f"test accuracy: {result.test_accuracy:.4f}" in lines
    assert [r["layer"] for r in result.sparsity.rows] == ["conv1", "conv2", "conv3", "fc"]
    assert result.settings["epochs"] == 2 and result.settings["seed"] == 1
    assert len(result.history["loss"]) == 2 and "sparsity/group_sparsity" in result.history

    loaded = keras.models.load_model(out / "model.keras", safe_mode=True)
    reg = loaded.get_layer("conv2").kernel_regularizer
    assert isinstance(reg, HierarchicalGroupSparse)
    assert reg.get_config() == {"strength": DEMO_SETTINGS["strength"], "variant": "squared_group_l12",
                                "axis": "input", "l1_mix": 0.5}
    assert loaded.get_layer("conv1").kernel_regularizer is None
    (_, _), (xt, yt) = load_digits()
    acc = float(np.mean(np.argmax(loaded.predict(xt, verbose=0), axis=1) == yt))
    assert acc == pytest.approx(result.test_accuracy, abs=1e-6)

    # shrink + export: the shrunk model is what was exported, checked against the trained model.
    small = keras.models.load_model(out / "model_shrunk.keras", safe_mode=True)
    t = result.shrink.totals
    assert small.count_params() == t["params_after"] <= t["params_before"] == loaded.count_params()
    small_acc = float(np.mean(np.argmax(small.predict(xt, verbose=0), axis=1) == yt))
    assert small_acc == pytest.approx(result.shrunk_test_accuracy, abs=1e-6)
    ex = result.export
    assert ex.totals["params"] == t["params_after"]
    assert ex.totals["max_abs_error"] < 1e-4  # LiteRT against the shrunk Keras model
    assert ex.totals["speedup"] > 0 and ex.totals["latency_ms"] > 0
    assert "shrunk: " in text and ex.title in text
    assert json.loads((out / "export" / "report.json").read_text())["totals"]["params"] == t["params_after"]

    data = json.loads((out / "report.json").read_text())
    assert data["export"]["totals"]["params"] == t["params_after"]
    assert data["shrunk_test_accuracy"] == pytest.approx(result.shrunk_test_accuracy)
    assert data["test_accuracy"] == pytest.approx(result.test_accuracy)
    assert data["sparsity"]["totals"] == pytest.approx(result.sparsity.totals)
    md = (out / "report.md").read_text()
    assert md.startswith("# tf_groupsparse demo") and "| layer | type | params |" in md

    with pytest.raises(FileExistsError, match=r"run_demo: Expected `output` to be a new directory\. "
                                              r"Received: output='.*demo', which exists; pass overwrite=True"):
        run_demo(out, epochs=1, verbose=0)
    again = run_demo(out, epochs=1, verbose=0, overwrite=True)
    assert json.loads((out / "report.json").read_text())["settings"]["epochs"] == 1
    assert again.files["model"] == out / "model.keras"
    # a directory that is not a previous demo output is never replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep")
    with pytest.raises(FileExistsError, match=r"run_demo: Expected `output` to be a new directory, an empty one or "
                                              r"a previous output of tf_groupsparse.demo"):
        run_demo(foreign, epochs=1, verbose=0, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "keep"


def test_run_demo_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"run_demo: Expected `epochs` >= 1\. Received: epochs=0"):
        run_demo(tmp_path / "x", epochs=0)
    with pytest.raises(TypeError, match=r"run_demo: Expected `overwrite` to be True or False\. Received: overwrite=1"):
        run_demo(tmp_path / "x", overwrite=1)
    assert not (tmp_path / "x").exists()


def test_cli_demo_reports_existing_output(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert cli.main(["demo", "--output", str(tmp_path / "d"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tf-groupsparse demo: error: run_demo: Expected `output` to be a new directory")
