"""The budget benchmark's row plan: per-architecture schedules and headline rows first."""

import importlib
import json

import pytest

from benchmarks import budget_pruning as bp


def test_every_importance_runs_one_and_five_steps_and_the_peer_only_whole_epochs_per_step():
    keys = [key for key, _ in bp.plan(["mobilenetv2", "resnet20"], [0.5, 0.3], [0])]
    assert len(keys) == len(set(keys))
    assert bp.SCHEDULES["resnet20"][1] < 5 <= bp.SCHEDULES["mobilenetv2"][1]
    for importance in bp.IMPORTANCES:
        for target in (0.5, 0.3):
            for arch in ("mobilenetv2", "resnet20"):
                assert f"{arch}_prune_t{target}_seed0_{importance}_steps5" in keys
                assert f"{arch}_prune_t{target}_seed0_{importance}_steps1" in keys
    assert "mobilenetv2_torch_t0.5_seed0_l2_steps5" in keys and "resnet20_torch_t0.5_seed0_l2_steps5" not in keys


def test_fine_tuning_splits_the_epochs_over_the_steps_by_images_when_there_are_fewer_epochs(monkeypatch):
    import numpy as np

    x, y = np.arange(10), np.arange(10) * 10
    data = ((x, y), "validation", "test")
    seen = []
    monkeypatch.setattr(bp, "train", lambda m, d, epochs, seed, cosine_span: seen.append((d[0][0].tolist(), epochs,
                                                                                           d[1:])) or m)
    tune = bp.step_fine_tuning(data, 2, 5, seed=0)
    for _ in range(5):
        assert tune("model") == "model"
    assert [s[0] for s in seen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5], [6, 7, 8, 9]]
    assert all(epochs == 1 and rest == ("validation", "test") for _, epochs, rest in seen)  # 2 epochs of images
    seen.clear()
    bp.step_fine_tuning(data, 5, 5, seed=0)("model")
    bp.step_fine_tuning(data, 5, 1, seed=0)("model")
    assert [(len(s[0]), s[1]) for s in seen] == [(10, 1), (10, 5)]


def test_final_share_puts_most_of_the_same_images_after_the_last_step(monkeypatch):
    import numpy as np

    x = np.arange(100)
    seen = []
    monkeypatch.setattr(bp, "train",
                        lambda m, d, epochs, seed, cosine_span: seen.append((d[0][0], epochs, cosine_span)))
    tune = bp.step_fine_tuning(((x, x), None, None), 2, 5, seed=0, final_share=0.8)
    for _ in range(5):
        tune("model")
    assert [len(s[0]) for s in seen] == [10, 10, 10, 10, 160]  # 200 images (2 epochs) in all, 80% at the end
    assert all(epochs == 1 and span is None for _, epochs, span in seen)
    images = np.concatenate([s[0] for s in seen])
    assert np.array_equal(np.bincount(images), np.full(100, 2))  # consecutive slices: every image twice
    seen.clear()
    tune = bp.step_fine_tuning(((x, x), None, None), 5, 5, seed=0, one_cosine=True, final_share=0.8)
    for _ in range(5):
        tune("model")
    per = [-(-n // bp.BATCH) for n in (25, 25, 25, 25, 400)]  # optimizer steps of each step's pass
    assert [s[2] for s in seen] == [(sum(per[:k]), sum(per)) for k in range(5)]
    for bad, steps in ((1.0, 5), (0.8, 1)):
        with pytest.raises(ValueError, match="final_share"):
            bp.step_fine_tuning(((x, x), None, None), 2, steps, seed=0, final_share=bad)


def test_one_cosine_continues_the_learning_rate_across_the_steps(monkeypatch):
    import keras
    import numpy as np

    from benchmarks import harness

    x = np.zeros((1000, 1))
    spans = []
    monkeypatch.setattr(bp, "train", lambda m, d, epochs, seed, cosine_span: spans.append((len(d[0][0]), cosine_span)))
    for epochs, steps in ((2, 5), (10, 5)):
        tune = bp.step_fine_tuning(((x, x), None, None), epochs, steps, seed=0, one_cosine=True)
        for _ in range(steps):
            tune("model")
    per = -(-400 // bp.BATCH), 2 * -(-1000 // bp.BATCH)  # optimizer steps per pruning step: 400 images, 2 epochs
    assert spans[:5] == [(400, (k * per[0], 5 * per[0])) for k in range(5)]
    assert spans[5:] == [(1000, (k * per[1], 5 * per[1])) for k in range(5)]
    spans.clear()
    bp.step_fine_tuning(((x, x), None, None), 2, 5, seed=0)("model")
    assert spans == [(400, None)]  # by default each step has its own cosine
    # the segments' learning rates are one cosine over the total (NumPy's), not a restart per step
    total, lr = 20, 0.05
    expected = 0.5 * lr * (1 + np.cos(np.pi * np.arange(total) / total))
    seen = [float(harness._cosine_segment(keras, lr, k * 4, total)(s)) for k in range(5) for s in range(4)]
    assert np.allclose(seen, expected, atol=1e-6)
    assert float(harness._cosine_segment(keras, lr, 0, total)(total + 5)) < 1e-9  # stays at 0 after the span
    opt = harness.make_optimizer("sgd", lr, 4, cosine_span=(8, total))  # an optimizer at step 0 of the 3rd segment
    assert float(opt.learning_rate) == pytest.approx(expected[8], abs=1e-6)
    # tgs.prune clones the fine-tuned model, which recompiles the optimizer from its config
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(opt, "mse")
    again = keras.models.clone_model(model)
    again.compile_from_config(model.get_compile_config())
    assert float(again.optimizer.learning_rate) == pytest.approx(expected[8], abs=1e-6)


def test_headline_rows_come_before_the_other_importances_and_step_counts():
    plan = bp.plan(["resnet20"], [0.5], [0, 1])
    keys = [key for key, _ in plan]
    headline = [keys.index(f"resnet20_{kind}_seed{seed}{tail}") for seed in (0, 1) for kind, tail in (
        ("dense_t1.0", ""), ("prune_t0.5", "_l2_steps1"), ("scaled_t0.5", ""), ("torch_t0.5", "_l2_steps1"))]
    assert max(headline) < keys.index("resnet20_prune_t0.5_seed0_random_steps1")
    assert "resnet20_torch_t0.5_seed1_l2_steps1_uniform" in keys  # the peer's default ranking too
    for key, argv in plan:  # each key names its row's arguments
        assert key.startswith(f"{argv[1]}_{argv[0]}_t{float(argv[2])}_seed{argv[3]}")


def test_summary_states_the_goals_at_half_the_macs_and_compares_equal_macs_rows_per_target():
    from benchmarks.budget_summary import _verdicts

    def row(kind, target, acc, ratio=1.0, variant=None, method=None):
        return {"arch": "resnet20", "seed": 0, "kind": kind, "target": target, "test_accuracy": acc,
                "macs": int(100 * target), "latency_ratio": ratio, "variant": variant, "method": method or kind,
                "importance": "l2", "prune_seconds": 1.0}

    rows = [row("dense", 1.0, 0.92), row("prune", 0.5, 0.915, 1.7), row("prune", 0.5, 0.95, 2.0, "latency", "lat"),
            row("scaled", 0.5, 0.93), row("torch", 0.5, 0.90), row("prune", 0.3, 0.88, 2.5), row("scaled", 0.3, 0.87)]
    lines = _verdicts(rows)
    half = [line for line in lines if "at 0.5" in line]
    assert "within 1: met" in half[0] and "'lat'" in half[0]  # the best row at half the MACs, any kind of target
    assert "'lat', runs 2.00x" in half[1] and "goal >= 1.6: met" in half[1]
    assert "91.50% vs width-scaled from scratch 93.00% (not met)" in half[2]  # the latency row is not equal-MACs
    assert "91.50% vs the best Torch-Pruning row 90.00% (met)" in half[3]
    assert sum("slowest pruning" in line for line in _verdicts(rows + [dict(r, seed=1) for r in rows])) == 1
    rows[2]["prune_seconds"] = 61.0  # the latency row counts (l2), and the line names it beside the MACs rows
    slowest = next(line for line in _verdicts(rows) if "slowest pruning" in line)
    assert "61.0 s, 'lat' at seed 0 (the MACs-targeted rows at most 1.0 s) (goal <= 60 s: not met)" in slowest
    third = [line for line in lines if "at 0.3" in line]
    assert "no goal at this target" in third[0] and "88.00% vs width-scaled from scratch 87.00% (met)" in third[2]


def test_the_quick_run_plans_only_the_headline_rows():
    full = bp.plan(["mobilenetv2"], [0.5], [0])
    quick = bp.plan(["mobilenetv2"], [0.5], [0], headline_only=True)
    kinds = sorted(argv[0] for _, argv in quick)
    assert kinds == ["dense", "prune", "prune_filters", "scaled", "tfmot", "torch"]
    assert quick == full[:len(quick)] and len(full) > 2 * len(quick)  # the first rows of the full plan
    assert [argv[4:] for _, argv in quick if argv[0] in ("prune", "torch")] == [["l2", "1"], ["l2", "1"]]


def test_a_fresh_checkout_restores_the_recorded_rows_under_the_keys_the_plan_uses(tmp_path, monkeypatch):
    from benchmarks import budget_summary

    monkeypatch.setattr(budget_summary, "CACHE", tmp_path)
    archs = ["mobilenetv2", "resnet20"]
    written = budget_summary.restore(archs)
    keys = {key for key, _ in bp.plan(archs, [0.5, 0.3], [0, 1, 2])}
    assert written and set(written) <= keys  # each recorded row is found by the plan, so it is not run again
    assert "mobilenetv2_torch_t0.5_seed0_l2_steps1_uniform" in written
    assert budget_summary.restore(archs) == []  # nothing is overwritten
    rows = budget_summary.retime(budget_summary._load(archs, [0.5, 0.3], [0, 1, 2]))  # no LiteRT files: kept
    dense = next(r for r in rows if r["kind"] == "dense" and r["arch"] == "resnet20")
    assert dense["latency_ms"] > 0 and abs(dense["latency_ratio"] - 1) < 0.1


def test_retime_times_each_row_against_its_dense_model_for_at_least_the_minimum_length(tmp_path, monkeypatch):
    from benchmarks import budget_summary
    from tf_groupsparse.pruning.latency import TIMING_SECONDS

    deploy = importlib.import_module("tf_groupsparse.deploy")  # retime imports the helper from there when called
    monkeypatch.setattr(budget_summary, "CACHE", tmp_path)
    for name in ("d.tflite", "p.tflite"):
        (tmp_path / name).write_bytes(b"x")
    calls = []

    def rounds(models, x, **kw):
        calls.append((sorted(models), kw))
        return {"dense": [2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0], "row": [1.0] * 9}

    monkeypatch.setattr(deploy, "tflite_latency_rounds", rounds)
    rows = [{"kind": "dense", "arch": "a", "seed": 0, "target": 1.0, "tflite": "d.tflite", "latency_ms": 1.0},
            {"kind": "scaled", "arch": "a", "seed": 0, "target": 0.5, "tflite": "p.tflite", "latency_ms": 0.5},
            {"kind": "torch", "arch": "a", "seed": 0, "latency_ms": 9.0}]  # a peer row: no LiteRT file, kept
    budget_summary.retime(rows)
    assert calls[0] == (["dense", "row"], {"rounds": budget_summary.ROUNDS, "runs": 100, "min_seconds": TIMING_SECONDS})
    assert len(calls) == 2 and rows[1]["latency_ratio"] == 2.0 and rows[1]["latency_ms"] == 1e3
    assert rows[1]["latency_rounds"] == budget_summary.ROUNDS and len(rows[1]["latency_timed"]) == 10  # a date
    assert rows[2] == {"kind": "torch", "arch": "a", "seed": 0, "latency_ms": 9.0}


def test_a_row_is_timed_once_and_kept_by_later_summaries_unless_retime_all(tmp_path, monkeypatch):
    from benchmarks import budget_summary

    deploy = importlib.import_module("tf_groupsparse.deploy")
    monkeypatch.setattr(budget_summary, "CACHE", tmp_path)
    for name in ("d.tflite", "p.tflite", "q.tflite"):
        (tmp_path / name).write_bytes(b"x")
    speed = [2.0]  # the dense model's seconds per round: the machine "drifts" between summaries

    def rounds(models, x, **kw):
        return {"dense": [speed[0]] * 3, "row": [1.0] * 3}

    monkeypatch.setattr(deploy, "tflite_latency_rounds", rounds)

    def row(kind, name, **extra):
        return {"kind": kind, "arch": "a", "seed": 0, "target": 0.5, "importance": "l2", "steps": 1,
                "tflite": name, **extra}

    rows = [row("dense", "d.tflite", target=1.0), row("prune", "p.tflite")]
    for r in rows:  # the cache as the benchmark writes it, untimed
        (tmp_path / f"{budget_summary.row_key(r)}.json").write_text(json.dumps(r))
    budget_summary.retime(rows)
    cached = json.loads((tmp_path / "a_prune_t0.5_seed0_l2_steps1.json").read_text())
    assert cached["latency_ratio"] == 2.0 and cached["latency_rounds"] == budget_summary.ROUNDS  # kept with the row
    speed[0] = 3.0
    rows = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))] + [row("prune", "q.tflite", steps=5)]
    budget_summary.retime(rows)  # a later summary with one new row: only the new row is timed
    ratios = {r["tflite"]: r["latency_ratio"] for r in rows}
    assert ratios == {"d.tflite": 2.0, "p.tflite": 2.0, "q.tflite": 3.0}
    budget_summary.retime(rows, retime_all=True)
    assert {r["tflite"]: r["latency_ratio"] for r in rows} == {"d.tflite": 3.0, "p.tflite": 3.0, "q.tflite": 3.0}


def test_rows_over_seeds_give_mean_and_spread_and_compare_within_the_spread():
    from benchmarks.budget_summary import _seed_lines, over_seeds

    def row(kind, seed, acc, method=None, **extra):
        return {"arch": "resnet20", "seed": seed, "kind": kind, "target": 1.0 if kind == "dense" else 0.5,
                "test_accuracy": acc, "method": method or kind, **extra}

    rows = [row("dense", 0, 0.92, macs=100), row("dense", 1, 0.90, macs=100),
            row("prune", 0, 0.91, "l2", latency_ratio=1.5, macs=50), row("prune", 1, 0.89, "l2", latency_ratio=1.7, macs=49),
            row("scaled", 0, 0.93), row("scaled", 1, 0.92),
            row("torch", 0, 0.80, "tp", dense_test_accuracy=0.95), row("torch", 1, 0.82, "tp", dense_test_accuracy=0.95)]
    groups = {g["method"]: g for g in over_seeds(rows)}
    assert groups["l2"]["seeds"] == [0, 1] and [round(d, 6) for d in groups["l2"]["drop_points"]] == [1.0, 1.0]
    assert [round(d, 6) for d in groups["tp"]["drop_points"]] == [15.0, 13.0]  # from the peer's own dense model
    table, verdicts = _seed_lines(list(groups.values()))
    assert "| 0.5 | l2 | 0, 1 | 90.00 ± 1.41 | 1.00 ± 0.00 | 1.60 ± 0.14 |" in table
    # 90.00 vs 92.50 +- 1.41 (the larger spread): not within; vs the peer's 81.00: met
    assert "'l2' (drop 1.00 ± 0.00), runs 1.60 ± 0.14x faster in LiteRT (goal >= 1.6: met on the mean)" in verdicts[0]
    assert "'l2' 90.00 ± 1.41% vs width-scaled from scratch 'scaled' 92.50 ± 0.71% (not met" in verdicts[1]
    assert "(met within the seed spread)" in verdicts[2]
    assert groups["l2"]["macs_fraction"] == [0.5, 0.49]
    rows += [row("prune", s, 0.89, "fast", latency_ratio=2.5, macs=40) for s in (0, 1)]  # faster, 2 points down
    rows += [row("prune", s, 0.915 - s / 50, "slow", latency_ratio=1.5, macs=40) for s in (0, 1)]  # within, slower
    rows += [row("prune", s, 0.92 - s / 50, "big", latency_ratio=3.0, macs=60) for s in (0, 1)]  # > half the MACs
    _, verdicts = _seed_lines(over_seeds(rows))
    assert "'l2' (drop 1.00 ± 0.00)" in verdicts[0]  # none of them is the fastest row within the goals


def test_a_latency_row_keeps_the_calibration_trials(monkeypatch):
    import tf_groupsparse as tgs

    calls = {}

    def prune(model, data, **kwargs):
        calls.update(kwargs)
        totals = {"prune_seconds": 1.0, "latency_fraction": 0.49, "latency_fraction_predicted": 0.45,
                  "latency_table_seconds": 0.3, "latency_calibration_seconds": 0.5}
        return "small", tgs.Report("r", totals=totals, meta={"latency_trials": [[0.5, 0.6], [0.42, 0.49]]})

    monkeypatch.setattr(bp, "_load_dense", lambda arch, seed: "dense")
    monkeypatch.setattr(tgs, "prune", prune)
    row, small = bp.row_prune("resnet20", 0.5, 0, ((None, None), None, None), variant="latency")
    assert small == "small" and calls["latency"] == 0.5 and "macs" not in calls
    assert row["latency_trials"] == [[0.5, 0.6], [0.42, 0.49]] and row["latency_fraction"] == 0.49
    assert (row["prune_seconds"], row["latency_table_seconds"], row["latency_calibration_seconds"]) == (1.0, 0.3, 0.5)
    row, _ = bp.row_prune("resnet20", 0.5, 0, ((None, None), None, None))
    assert calls["macs"] == 0.5 and "latency_trials" not in row


def test_a_pruned_row_records_its_own_dense_baseline_and_the_summary_takes_its_drop_from_it(monkeypatch):
    import keras
    import numpy as np

    from benchmarks import budget_summary

    identity = keras.Sequential([keras.Input((2,)), keras.layers.Activation("linear")])
    x, y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], "float32"), np.array([0, 1, 1])
    monkeypatch.setattr(bp, "load_data", lambda: ((x, y), (x, y), (x, y)))
    monkeypatch.setattr(bp, "_load_dense", lambda arch, seed: identity)  # the cached dense model: 2 of 3 right
    monkeypatch.setattr(bp, "measure", lambda model, data: ({"test_accuracy": 0.5}, b"tflite"))
    monkeypatch.setitem(bp.ROWS, "prune", lambda arch, target, seed, data, **kw: ({"method": "m"}, "pruned"))
    monkeypatch.setitem(bp.ROWS, "dense", lambda arch, target, seed, data, **kw: ({"method": "dense"}, identity))
    row, _ = bp.run_row("prune", "resnet20", 0.5, 1)
    assert row["dense_test_accuracy"] == pytest.approx(2 / 3)
    assert "dense_test_accuracy" not in bp.run_row("dense", "resnet20", 1.0, 1)[0]
    # a dense row recorded at 0.70 (trained again since, to 2/3): the drop is from the row's own baseline
    dense = {"arch": "resnet20", "seed": 1, "kind": "dense", "target": 1.0, "test_accuracy": 0.70, "method": "dense"}
    row.update(kind="prune", arch="resnet20", target=0.5, seed=1)
    lines = budget_summary._target_verdicts([dense, row], dense, "resnet20", 0.5)
    assert "'m' -16.67 points against the dense model" in lines[0]
    group = next(g for g in budget_summary.over_seeds([dense, row]) if g["method"] == "m")
    assert group["drop_points"] == [pytest.approx(100 * (2 / 3 - 0.5))]


def test_the_prune_filters_goal_is_read_on_the_slowest_seed():
    from benchmarks.budget_summary import _verdicts

    rows = [{"arch": "a", "seed": s, "kind": "prune_filters", "target": 1.0, "prune_seconds": t, "evaluations": 9,
             "method": "pf"} for s, t in ((0, 60.0), (1, 130.0))]
    rows.append({"arch": "a", "seed": 0, "kind": "dense", "target": 1.0, "method": "dense", "test_accuracy": 0.9})
    assert _verdicts(rows) == ["- a: prune_filters at 512 samples 130.0 s at seed 1 (the slowest seed), 9 loss "
                               "evaluations (goal <= 120 s: not met)"]
