"""Tests for benchmarks/pruning_planting_fashion.py: its helpers on tiny models and its markdown."""

import json

import keras
import numpy as np

import benchmarks.harness
from benchmarks import pruning_planting_fashion as bench


def test_resnet_and_penalized_layers():
    model = bench.resnet([4, 8, 16])
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert sorted(convs) == ["b1_conv1", "b1_conv2", "b2_conv1", "b2_conv2", "b2_proj", "b3_conv1", "b3_conv2",
                             "b3_proj", "stem_conv"]
    assert any(isinstance(layer, keras.layers.Add) for layer in model.layers)
    assert sorted(bench.hgsr_layers(model)) == ["b1_conv1", "b1_conv2", "b2_conv1", "b2_conv2", "b3_conv1",
                                                "b3_conv2"]
    assert model.output_shape == (None, 10)


def test_equal_param_widths_is_the_closest_mlp():
    for target, depth in ((50_890, 1), (50_890, 2), (123_456, 3)):
        widths, params = bench.equal_param_widths(target, 784, depth)
        assert len(set(widths)) == 1 and len(widths) == depth
        model = bench.mlp(widths)
        assert model.count_params() == params
        h = widths[0]
        for other in (h - 1, h + 1):
            assert abs(bench.mlp([other] * depth).count_params() - target) >= abs(params - target)


def test_select_tolerance_looks_at_parameters_only():
    rows = [{"tolerance": 0.1, "params_removed_%": 70.0}, {"tolerance": 0.02, "params_removed_%": 40.0},
            {"tolerance": 0.05, "params_removed_%": 55.0}]
    assert bench.select_tolerance(rows, 0.5) == 2
    assert bench.select_tolerance(rows, 0.8) == 0  # none reaches 80%: the largest tolerance


def _results(met):
    cfg = dict(bench.FULL)
    drop = 0.2 if met else 1.5
    row = {"tolerance": 0.05, "filters": "16->8", "params_before": 1000, "params_after": 400,
           "params_removed_%": 60.0, "macs_removed_%": 50.0, "loss_increase": 0.04, "test_acc_pruned": 0.88,
           "test_acc_fine_tuned": 0.9 - drop / 100, "drop_points": drop, "search_s": 1.0,
           "fine_tune_s": 2.0}
    pruning = {"dense": {"params": 1000, "macs": 5000, "test_acc": 0.905},
               "hgsr": {"params": 1000, "macs": 5000, "test_acc": 0.9, "penalized_layers": ["b1_conv1"]},
               "sweep": [row], "selected": 0, "target_met": met}
    planting = {"teacher_params": 1000, "teacher_test_acc": 0.89, "student_params": 50, "student_test_acc": 0.8,
                "planted_widths": [64, 96], "planted_params": 120, "planted_params_%_of_teacher": 12.0,
                "planted_test_acc": 0.885, "scratch_test_acc": 0.88, "stopped_by": "target_accuracy",
                "plant_s": 3.0, "train_images": 54000, "gap_points": 0.5, "target_met": met,
                "steps": [{"step": 1, "layer": "fc2", "channels": 64, "params": 100, "accuracy": 0.87}]}
    structure = {"structure": {"depth": 1, "widths": [64], "connections": [[0]], "entropy": [0.5],
                               "rejected_entropy": 0.49},
                 "connected_units": [{"input": 640}], "learn_s": 2.0, "learned_params": 50890,
                 "baselines": {"mlp_64": {"widths": [64], "params": 50890},
                               "mlp_60-60": {"widths": [60, 60], "params": 51370}},
                 "runs": [{"seed": 0, "learned": 0.86, "mlp_64": 0.86, "mlp_60-60": 0.865}],
                 "test_acc_mean": {"learned": 0.86, "mlp_64": 0.86, "mlp_60-60": 0.865}}
    return cfg, {"train_images": 60000, "test_images": 10000, "pruning": pruning, "planting": planting,
                 "structure": structure, "seconds": 60.0}


def test_markdown_states_each_verdict_and_is_written(tmp_path, monkeypatch):
    cfg, results = _results(met=False)
    md = bench.markdown(results, cfg)
    assert md.count("**not met**") == 2 and "**met**" not in md
    assert "arXiv 2011.02389" in md and "arXiv 2011.02390" in md and "arXiv 2105.13905" in md
    assert "project's interpretation" in md
    assert "| MLP 784-60-60-10 (closest parameter count) | 51,370 | 0.8650 | 0.8650 |" in md
    cfg_met, results_met = _results(met=True)
    assert bench.markdown(results_met, cfg_met).count("**met**") == 2
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    json_path, md_path = benchmarks.harness.write_results("fashion_test", results, md)
    assert json.loads(json_path.read_text())["pruning"]["selected"] == 0
    assert md_path.read_text().startswith("# Filter pruning, channel planting and structure learning")


def test_distill_moves_the_student_towards_the_teacher():
    rng = np.random.default_rng(0)
    x = rng.random((256, 28, 28, 1)).astype("float32")
    teacher = bench.mlp([16], seed=1)
    y = np.argmax(teacher.predict(x, verbose=0), axis=1)
    student = bench.mlp([8], seed=2)
    student.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])  # replaced, not reused
    cfg = {**bench.FULL, "plant_kd_epochs": 20, "plant_kd_learning_rate": 1e-2, "batch_size": 64}

    def agreement(model):
        return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))

    before = agreement(student)
    distilled, seconds = bench.distill(student, teacher, x, y, cfg)
    assert seconds > 0 and agreement(student) == before  # the input model is not changed
    assert agreement(distilled) > before + 0.25  # measured: 0.06 -> 0.46


def test_markdown_shows_the_distilled_rows_and_judges_the_final_model():
    cfg, results = _results(met=True)
    cfg["plant_kd_epochs"] = 5
    results["planting"].update({"planted_kd_test_acc": 0.887, "scratch_kd_test_acc": 0.884,
                                "final_test_acc": 0.887})
    md = bench.markdown(results, cfg)
    assert "| planted student, then all parameters distilled 5 epochs (final) | 120 | 12.0 | 0.8870 |" in md
    assert "| scratch, then distilled the same 5 epochs | 120 | 12.0 | 0.8840 |" in md
    assert bench.PROFILES["kd"]["plant_kd_epochs"] > 0 and bench.FULL["plant_kd_epochs"] == 0
