"""Tests for benchmarks/tune.py: the validation split, the choice rule, resumable runs."""

import dataclasses
import json

import numpy as np
import pytest

import benchmarks.harness
from benchmarks import run_all, tune
from benchmarks import harness as data_mod
from benchmarks.suite import jobs as jobs_mod


def test_choose_takes_the_fewest_parameters_within_the_loss():
    runs = [{"value": 1, "accuracy": 0.90, "params": 500, "macs": 10, "tflite_float_gzip_bytes": 9},
            {"value": 2, "accuracy": 0.896, "params": 300, "macs": 30, "tflite_float_gzip_bytes": 9},
            {"value": 3, "accuracy": 0.896, "params": 300, "macs": 40, "tflite_float_gzip_bytes": 8},
            {"value": 4, "accuracy": 0.85, "params": 100, "macs": 1, "tflite_float_gzip_bytes": 1}]
    assert tune.choose(runs, 0.90, 0.5)["value"] == 3  # 0.4 point lost; ties go to the smaller file
    assert tune.choose(runs, 0.90, 0.5, "macs")["value"] == 1
    assert tune.choose(runs, 0.90, 0.3)["value"] == 1
    assert tune.choose(runs, 0.95, 0.5) is None


def test_dense_fingerprint_ignores_method_settings_but_not_the_budget():
    dense = next(j for j in jobs_mod.job_table("full") if j.key == "fashion/mlp_b32/dense")
    other = dataclasses.replace(dense, settings=dense.settings + (("prune_tolerance_light", 0.3),))
    assert tune.fingerprint(other, "full") == tune.fingerprint(dense, "full")
    faster = dataclasses.replace(dense, settings=tuple((k, 64 if k == "batch_size" else v) for k, v in dense.settings))
    assert tune.fingerprint(faster, "full") != tune.fingerprint(dense, "full")
    pruned = dataclasses.replace(dense, method="filter_pruning")
    assert tune.fingerprint(dataclasses.replace(pruned, settings=other.settings), "full") != \
        tune.fingerprint(pruned, "full")  # a method's own run still sees every setting


def test_budget_tag_names_every_override():
    import argparse

    from benchmarks import rerun

    parser = argparse.ArgumentParser()
    rerun.add_budget_arguments(parser)
    tag = lambda *argv: rerun.budget_tag(parser.parse_args(list(argv)))  # noqa: E731
    assert tag() == ""
    assert tag("--epochs", "2") == "__e2_fNone"
    assert tag("--train-samples", "60000") == "__n60000"
    assert tag("--epochs", "2", "--finetune-epochs", "1", "--train-samples", "500") == "__e2_f1__n500"
    label = lambda *argv: rerun.budget_label(parser.parse_args(list(argv)))  # noqa: E731
    assert label() == ""
    assert label("--epochs", "2", "--finetune-epochs", "0", "--train-samples", "60000") == \
        "60,000 training samples, epochs 2, fine-tune epochs 0"
    with pytest.raises(SystemExit):  # argparse's error: "invalid positive_int value: '0'"
        parser.parse_args(["--train-samples", "0"])


def _fake_digits(monkeypatch, n=400):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    x = (rng.random((n, 8, 8, 1)) * 0.1 + y[:, None, None, None] / 10.0).astype("float32")  # learnable
    test = (np.full((7, 8, 8, 1), -1.0, "float32"), np.zeros(7, "int64"))  # must never be used
    monkeypatch.setattr(data_mod, "load", lambda name, train_samples=None: (x, y, *test))
    return x, y


def test_holdout_evaluates_on_the_end_of_the_training_set(monkeypatch):
    from types import SimpleNamespace

    x, y = _fake_digits(monkeypatch)
    args = SimpleNamespace(train_samples=None, epochs=None, finetune_epochs=None, seed=0)
    job = next(j for j in run_all.jobs_mod.job_table("quick") if j.key == "digits/mlp/dense")
    ctx = run_all.context_factory("quick", args, "unused", holdout=0.1)(job)
    assert len(ctx.data[0]) == 360 and len(ctx.data[2]) == 40
    np.testing.assert_array_equal(ctx.data[2], x[-40:])
    np.testing.assert_array_equal(ctx.data[0], x[:360])
    assert ctx.tflite_subdir == "tflite_validation"
    assert run_all.context_factory("quick", args, "unused")(job).tflite_subdir == "tflite"


@pytest.mark.slow
def test_tune_runs_each_value_once_and_records_the_choice(tmp_path, monkeypatch, caplog):
    _fake_digits(monkeypatch)
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    monkeypatch.setattr(benchmarks.harness, "environment", lambda: {"cpu": "test"})
    argv = ["digits/mlp", "group_lasso", "--mode", "quick", "--key", "group_lasso_strength",
            "--values", "1e-4", "0.5", "--epochs", "2", "--finetune-epochs", "0"]
    base, runs, chosen = tune.main(argv)
    assert [r["value"] for r in runs] == [1e-4, 0.5]
    assert runs[0]["setting"].endswith("strength 0.0001, prox with sgd")  # the value reached the method
    assert runs[1]["params"] < runs[0]["params"]  # a strength of 0.5 removes groups
    for r in runs:
        assert r["delta_pt"] == round(100 * (r["accuracy"] - base["accuracy"]), 2)
        assert 0.0 <= r["accuracy"] <= 1.0 and r["accuracy"] * 40 == pytest.approx(round(r["accuracy"] * 40))
    # one table per (method, setting)
    saved = json.loads((tmp_path / "tune_quick_digits_mlp_group_lasso_group_lasso_strength.json").read_text())
    assert saved["chosen"] == (None if chosen is None else chosen["value"])
    assert saved["command"].startswith("python -m benchmarks.")
    files = sorted(p.name.rsplit("__", 1)[0] for p in (tmp_path / "tune_quick_jobs").iterdir())
    assert files == ["digits__mlp__dense__e2_f0",
                     "digits__mlp__group_lasso__group_lasso_strength=0.0001__e2_f0",
                     "digits__mlp__group_lasso__group_lasso_strength=0.5__e2_f0"]
    md = (tmp_path / "tune_quick_digits_mlp_group_lasso_group_lasso_strength.md").read_text()
    assert "(then the model's train_samples cap)" in md
    assert "Budget other than the suite's: epochs 2, fine-tune epochs 0." in md
    # --train-samples: the first N of the training part, runs kept apart; the text names the cap
    tune.main(argv + ["--train-samples", "300", "--values", "0.5", "--tag", "n300"])
    md = (tmp_path / "tune_quick_digits_mlp_group_lasso_group_lasso_strength_n300.md").read_text()
    assert "(then the first 300 of those)" in md and "300 training samples, epochs 2" in md
    assert sum("__n300__" in p.name for p in (tmp_path / "tune_quick_jobs").iterdir()) == 2
    # a rerun reads the finished runs instead of training again
    monkeypatch.setattr("benchmarks.suite.methods.METHODS", {})
    assert tune.main(argv)[1] == runs
    # --tag names another table (the runs are the same ones)
    assert tune.main(argv + ["--tag", "other"])[1] == runs
    tagged = json.loads((tmp_path / "tune_quick_digits_mlp_group_lasso_group_lasso_strength_other.json").read_text())
    assert tagged["runs"] == saved["runs"] and tagged["chosen"] == saved["chosen"]
    # another setting of the job changes the fingerprint: the stale runs are not reused
    monkeypatch.setattr("benchmarks.suite.methods.METHODS", {"group_lasso": lambda ctx: [{"accuracy": 0.5, "params": 1,
                        "macs": 1, "tflite_float_gzip_bytes": 1, "latency_float_s": 1e-5, "setting": "stub"}]})
    table = jobs_mod.job_table
    monkeypatch.setattr(jobs_mod, "job_table", lambda mode: [
        dataclasses.replace(j, settings=j.settings + (("em_groups", 3),)) if j.method == "group_lasso" else j
        for j in table(mode)])
    with caplog.at_level("WARNING", logger="benchmarks.tune"):
        assert [r["setting"] for r in tune.main(argv)[1]] == ["stub", "stub"]  # trained again (here: the stub)
    assert "every value of group_lasso_strength gave the same model" in caplog.text  # identical rows flagged
    assert len(list((tmp_path / "tune_quick_jobs").iterdir())) == 7
    with pytest.raises(SystemExit, match="no job digits/mlp/nope"):
        tune.main(["digits/mlp", "nope", "--mode", "quick", "--key", "k", "--values", "1"])


def test_values_are_numbers_json_or_words():
    assert tune.parse_value("1e-4") == 1e-4
    assert tune.parse_value('{"fc1": 0.872, "fc2": 0.744}') == {"fc1": 0.872, "fc2": 0.744}
    assert tune.parse_value("nearest") == "nearest" and tune.parse_value("[1]") == [1]
    assert tune.value_text(1e-4) == "0.0001"
    assert tune.value_text({"fc1": 0.872, "fc2": 0.744}) == "fc1:0.872,fc2:0.744"
    assert tune.value_text("nearest") == "nearest"


@pytest.mark.slow
def test_tune_over_seeds_averages_per_seed_runs_and_takes_per_layer_caps(tmp_path, monkeypatch):
    _fake_digits(monkeypatch)
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    monkeypatch.setattr(benchmarks.harness, "environment", lambda: {"cpu": "test"})
    argv = ["digits/mlp", "filter_pruning", "--mode", "quick", "--key", "filter_pruning_max_fraction",
            "--values", '{"fc1": 0.5}', '{"fc1": 0.5, "fc2": 0.5}', "--seeds", "0", "1",
            "--set", "prune_tolerance=10", "--epochs", "1", "--finetune-epochs", "1"]
    base, runs, _ = tune.main(argv)
    assert [r["value"] for r in runs] == [{"fc1": 0.5}, {"fc1": 0.5, "fc2": 0.5}]
    assert runs[0]["setting"].endswith("tolerance 10.0, candidates norm, 512 samples, layers fc1 only, "
                                       "at most 0.5 of fc1's filters")  # --set reached the method
    assert runs[1]["params"] < runs[0]["params"]  # fc2 lost half its units too
    files = sorted(p.name.rsplit("__", 1)[0] for p in (tmp_path / "tune_quick_jobs").iterdir())
    assert files == ["digits__mlp__dense__e1_f1", "digits__mlp__dense__e1_f1__seed1",
                     "digits__mlp__filter_pruning__filter_pruning_max_fraction=fc1:0.5,fc2:0.5__e1_f1",
                     "digits__mlp__filter_pruning__filter_pruning_max_fraction=fc1:0.5,fc2:0.5__e1_f1__seed1",
                     "digits__mlp__filter_pruning__filter_pruning_max_fraction=fc1:0.5__e1_f1",
                     "digits__mlp__filter_pruning__filter_pruning_max_fraction=fc1:0.5__e1_f1__seed1"]
    dense = [json.loads(p.read_text())["accuracy"] for p in sorted((tmp_path / "tune_quick_jobs").glob("*dense*"))]
    assert base["accuracy"] == pytest.approx(sum(dense) / 2)
    for r in runs:  # the mean of the per-seed deltas, each against its own seed's dense model
        assert len(r["seed_delta_pt"]) == 2
        assert r["delta_pt"] == pytest.approx(sum(r["seed_delta_pt"]) / 2, abs=0.006)
        assert r["delta_pt"] == pytest.approx(100 * (r["accuracy"] - base["accuracy"]), abs=0.02)
    md = (tmp_path / "tune_quick_digits_mlp_filter_pruning_filter_pruning_max_fraction.md").read_text()
    assert "means over seeds 0, 1" in md and "| Δ per seed |" in md and "| fc1:0.5,fc2:0.5" in md
    assert "Fixed for this table: prune_tolerance = 10." in md


def test_set_reads_numbers_json_and_text():
    assert tune._assignment("prune_tolerance_strong=1.0") == ("prune_tolerance_strong", 1.0)
    assert tune._assignment('prune_layers=["fc1", "fc2"]') == ("prune_layers", ["fc1", "fc2"])
    assert tune._assignment("prox_optimizer=adam") == ("prox_optimizer", "adam")
    with pytest.raises(SystemExit, match="--set expects KEY=VALUE, got 'oops'"):
        tune._assignment("oops")
