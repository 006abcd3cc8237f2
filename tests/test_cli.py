"""The tf-groupsparse command: report, shrink and export, their help and their one-line errors."""

import json
import os

import keras
import numpy as np
import pytest

from tf_groupsparse import cli

L = keras.layers


def _model_file(tmp_path, name="m.keras"):
    keras.utils.set_random_seed(3)
    m = keras.Sequential([
        keras.Input((6, 6, 1), name="pixels"),
        L.Conv2D(4, 3, name="conv"),
        L.Flatten(name="flat"),
        L.Dense(3, name="fc"),
    ], name="tiny")
    kernel = m.get_layer("conv").kernel.numpy()
    kernel[..., 1] = 0.0  # filter 1 is all zero
    m.get_layer("conv").kernel.assign(kernel)
    path = str(tmp_path / name)
    m.save(path)
    return m, path


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


@pytest.mark.parametrize("command", ["report", "shrink", "prune", "export", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tf-groupsparse {command}")
    assert cli.COMMANDS[command][0] in out


def test_report_prints_costs_and_sparsity(tmp_path, capsys):
    _, path = _model_file(tmp_path)
    assert cli.main(["report", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Layer costs")
    # conv: 4*4*4 outputs * 9 MACs; fc: 64 * 3
    assert "macs: 768" in out and "params: 235" in out
    assert cli.main(["report", path, "--markdown", "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Layer costs\n\n| layer | kind | output_shape | params | macs |")
    assert "| conv | Conv2D | (None, 4, 4, 4) | 40 | 576 |" in out
    assert out.count("## ") == 2


def test_report_refuses_unsafe_models_and_missing_files(tmp_path, capsys):
    m = keras.Sequential([keras.Input((3,)), L.Lambda(lambda t: 2.0 * t), L.Dense(2)])
    path = str(tmp_path / "lambda.keras")
    m.save(path)
    assert cli.main(["report", path]) == 2
    err = _error_line(capsys)
    assert err.startswith(f"tf-groupsparse report: error: refused to load '{path}': it needs unsafe "
                          "deserialization (a Lambda layer")
    assert "safe_mode=True only" in err
    assert cli.main(["report", str(tmp_path / "none.keras")]) == 2
    assert _error_line(capsys) == ("tf-groupsparse report: error: Expected an existing .keras model file. "
                                   f"Received: MODEL='{tmp_path / 'none.keras'}'")
    other = tmp_path / "model.h5"
    other.write_text("x")
    assert cli.main(["report", str(other)]) == 2
    assert "Expected a Keras 3 model file ending in .keras" in _error_line(capsys)


def test_report_bad_threshold_exits_with_one_line(tmp_path, capsys):
    _, path = _model_file(tmp_path)
    assert cli.main(["report", path, "--threshold", "-1"]) == 2
    err = _error_line(capsys)
    assert err.startswith("tf-groupsparse report: error:") and "threshold" in err


def test_export_writes_directory_and_prints_report(tmp_path, capsys):
    m, path = _model_file(tmp_path)
    x = np.random.default_rng(0).random((8, 6, 6, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    out_dir = tmp_path / "out"
    code = cli.main(["export", path, "-o", str(out_dir), "--sample", str(tmp_path / "x.npy"),
                     "--formats", "tflite", "--latency-runs", "2"])
    assert code == 0
    assert sorted(os.listdir(out_dir)) == ["model.tflite", "report.json", "report.md"]
    out = capsys.readouterr().out
    assert out.startswith("Export of 'tiny'")
    saved = json.loads((out_dir / "report.json").read_text())
    assert saved["totals"]["tflite_bytes"] == os.path.getsize(out_dir / "model.tflite")
    assert saved["totals"]["max_abs_error"] < 1e-4 and saved["totals"]["params"] == m.count_params()
    # the directory exists now: refused without --overwrite, replaced with it
    assert cli.main(["export", path, "-o", str(out_dir)]) == 2
    assert _error_line(capsys) == ("tf-groupsparse export: error: Expected `-o` not to exist; pass "
                                   f"overwrite=True to replace a previous output. Received: -o='{out_dir}'")
    assert cli.main(["export", path, "-o", str(out_dir), "--overwrite", "--formats", "saved_model"]) == 0
    assert sorted(os.listdir(out_dir)) == ["report.json", "report.md", "saved_model"]


def test_overwrite_never_destroys_the_input_model(tmp_path, capsys):
    m = keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2, name="d")], name="tiny")
    path = str(tmp_path / "small.keras")
    m.save(path)
    # export -o onto the model file itself: refused, the model stays
    assert cli.main(["export", path, "-o", path, "--overwrite"]) == 2
    assert "would delete the input" in _error_line(capsys)
    # export -o onto the directory that holds the model: refused too
    assert cli.main(["export", path, "-o", str(tmp_path), "--overwrite"]) == 2
    assert "would delete the input" in _error_line(capsys)
    # shrink -o onto its own input, and onto a file that is not a Keras model
    assert cli.main(["shrink", path, "--threshold", "0", "-o", path, "--overwrite"]) == 2
    assert "would replace the input" in _error_line(capsys)
    notes = tmp_path / "notes.keras"
    notes.write_text("not a model")
    assert cli.main(["shrink", path, "--threshold", "0", "-o", str(notes), "--overwrite"]) == 2
    assert "not a .keras model" in _error_line(capsys)
    assert keras.models.load_model(path).count_params() == m.count_params() and notes.read_text() == "not a model"


def test_the_command_starts_without_tensorflow_chatter(tmp_path):
    import shutil
    import subprocess
    import sys

    exe = shutil.which("tf-groupsparse", path=os.path.dirname(sys.executable))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    m = keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2, name="d")], name="tiny")
    path = str(tmp_path / "m.keras")
    m.save(path)
    quiet = subprocess.run([exe, "report", path], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = subprocess.run([exe, "--verbose", "report", path], env=env, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and "cuda" in loud.stderr.lower()


def test_export_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    _, path = _model_file(tmp_path)
    out_dir = tmp_path / "out"
    assert cli.main(["export", path, "-o", str(out_dir), "--quantize", "int8"]) == 2
    err = _error_line(capsys)
    assert err.startswith("tf-groupsparse export: error: export: Expected `representative_data`")
    assert "Received: representative_data=None" in err
    np.save(tmp_path / "bad.npy", np.zeros((4, 5)))
    assert cli.main(["export", path, "-o", str(out_dir), "--sample", str(tmp_path / "bad.npy")]) == 2
    assert "Expected `sample` with shape (batch, *(6, 6, 1))" in _error_line(capsys)
    assert cli.main(["export", path, "-o", str(out_dir), "--sample", str(tmp_path / "none.npy")]) == 2
    assert _error_line(capsys).endswith(f"Expected an existing .npy file. Received: --sample='{tmp_path / 'none.npy'}'")
    assert not out_dir.exists()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", path, "-o", str(out_dir), "--quantize", "int4"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_shrink_saves_a_smaller_model_with_the_same_outputs(tmp_path, capsys):
    m, path = _model_file(tmp_path)
    out = str(tmp_path / "small.keras")
    assert cli.main(["shrink", path, "--threshold", "1e-3", "-o", out, "--constants", "error",
                     "--criterion", "l1"]) == 0
    assert f"saved {out}" in capsys.readouterr().out
    small = keras.models.load_model(out, safe_mode=True)
    assert small.get_layer("conv").filters == 3
    assert small.count_params() == m.count_params() - (9 + 1) - 16 * 3
    x = np.random.default_rng(1).random((5, 6, 6, 1), dtype=np.float32)
    np.testing.assert_allclose(small.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-5)
    assert cli.main(["shrink", path, "--threshold", "1e-3", "-o", out]) == 2
    assert "pass --overwrite to replace it" in _error_line(capsys)
    assert cli.main(["shrink", path, "--threshold", "1e-3", "-o", str(tmp_path / "s.h5")]) == 2
    assert "Expected the output file to end in .keras" in _error_line(capsys)
    assert cli.main(["shrink", path, "--threshold", "-2", "-o", str(tmp_path / "s.keras")]) == 2
    assert _error_line(capsys) == ("tf-groupsparse shrink: error: shrink: Expected `threshold` >= 0. "
                                   "Received: threshold=-2.0")
    assert cli.main(["shrink", path, "--threshold", "1e-3", "-o", str(tmp_path / "s.keras"),
                     "--channel-multiple", "0"]) == 2
    assert _error_line(capsys) == ("tf-groupsparse shrink: error: shrink: Expected `round_to` >= 1. "
                                   "Received: round_to=0")
    rounded = str(tmp_path / "rounded.keras")
    assert cli.main(["shrink", path, "--threshold", "1e-3", "-o", rounded, "--channel-multiple", "4"]) == 0
    assert keras.models.load_model(rounded, safe_mode=True).get_layer("conv").filters == 4
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "rounded.keras", "small.keras"]


@pytest.mark.slow
def test_entry_point_loads_project_objects_in_a_fresh_process(tmp_path):
    """A new interpreter knows nothing of the project's Keras objects until the CLI imports them."""
    import subprocess
    import sys
    from pathlib import Path

    from tf_groupsparse.layers import BlockDiagonalDense
    from tf_groupsparse.regularizers import GroupLasso

    m = keras.Sequential([
        keras.Input((8,)),
        L.Dense(8, kernel_regularizer=GroupLasso(3e-4, axis="output"), name="fc"),
        BlockDiagonalDense(4, n_groups=2, name="bd"),
    ])
    path = str(tmp_path / "g.keras")
    m.save(path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "tf_groupsparse.cli", "report", path, "--markdown"],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # fc: 8 * 8 MACs; bd: two 4x2 blocks
    assert "| fc | Dense | (None, 8) | 72 | 64 |" in done.stdout
    assert "| bd | BlockDiagonalDense | (None, 4) | 20 | 16 |" in done.stdout


def test_prune_command_meets_the_target_and_refuses_untrained_models(tmp_path, capsys):
    import numpy as np

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    m = keras.Sequential([keras.Input((8,)), L.Dense(32, activation="relu", name="h1"),
                          L.Dense(32, activation="relu", name="h2"), L.Dense(2, name="out")])
    path = str(tmp_path / "m.keras")
    m.save(path)
    data = str(tmp_path / "data.npz")
    np.savez(data, x=x, y=y)
    out = str(tmp_path / "half.keras")
    assert cli.main(["prune", path, "--data", data, "--macs", "0.5", "-o", out]) == 2
    assert "Expected a trained model" in _error_line(capsys) and not os.path.exists(out)
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, epochs=30, verbose=0)
    m.save(path)
    assert cli.main(["prune", path, "--data", data, "--macs", "0.5", "-o", out]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("prune to 0.5 of the macs") and f"saved {out}" in printed
    from tf_groupsparse import flops

    assert flops(keras.models.load_model(out)) <= 0.5 * flops(m)
    with pytest.raises(SystemExit):                                   # argparse: one target only
        cli.main(["prune", path, "--macs", "0.5", "--params", "0.5", "-o", out])
    capsys.readouterr()
    assert cli.main(["prune", path, "--data", str(tmp_path / "nope.npz"), "--macs", "0.5", "-o",
                     str(tmp_path / "x.keras")]) == 2
    assert "Expected an existing .npz file with arrays x and y" in _error_line(capsys)
