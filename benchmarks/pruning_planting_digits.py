"""Filter pruning by loss increase (HFP) and channel planting (PLANT) on the 8x8 digits.

1. HFP: a small CNN is trained with and without the HGSR regularizer
   (``HierarchicalGroupSparse.squared_group_l12(1e-5, l1_mix=0.5)``, feature-wise groups; the
   reference strength 1e-3 (and 1e-4) collapse this BN-free 5k-parameter model), then
   ``prune_filters`` removes the filters whose joint removal raises the training loss on 512
   samples by at most ``tolerance``; the pruned model is fine-tuned. Figures: parameters and MACs before/after, test accuracy before, after pruning
   and after fine-tuning.
2. PLANT: a tiny CNN student is grown by ``plant`` with a larger teacher; figures: the
   student's parameters and test accuracy before/after against the teacher's, and the same
   final architecture trained from scratch on labels for the same number of epochs. Planting
   compares candidates on the last 270 training images (a validation split), not on the test set.

    python -m benchmarks.pruning_planting_digits            # full run (~2-3 min on 2 cores)
    python -m benchmarks.pruning_planting_digits --quick    # smaller smoke run
"""

from __future__ import annotations

import argparse
import time

import keras

from benchmarks.harness import md_table, train, write_results
from tf_groupsparse.datasets import load_digits
from tf_groupsparse.metrics import count_params, flops
from tf_groupsparse.pruning.planting import accuracy, plant
from tf_groupsparse import prune_filters
from tf_groupsparse import regularize
from tf_groupsparse.regularizers import HierarchicalGroupSparse

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def cnn(widths, name):
    layers = [keras.Input((8, 8, 1))]
    for i, w in enumerate(widths, 1):
        # no BatchNormalization: with 21 batches per epoch its moving statistics lag the weights
        # and the inference-mode accuracy of these tiny models swings by >10 points per epoch
        layers += [keras.layers.Conv2D(w, 3, padding="same", activation="relu", name=f"conv{i}")]
    layers += [keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(10, name="logits")]
    return keras.Sequential(layers, name=name)


def fit(model, x, y, epochs):
    """Adam 3e-3 at a constant rate, batch 64; returns `model`."""
    train(model, x, y, epochs=epochs, batch_size=64, learning_rate=3e-3, cosine=False)
    return model


def hfp(xt, yt, xv, yv, epochs, tolerance):
    rows = []
    for label, reg in (("plain", None), ("HGSR", HierarchicalGroupSparse.squared_group_l12(1e-5, l1_mix=0.5))):
        keras.utils.set_random_seed(0)
        model = cnn((16, 32), f"cnn_{label.lower()}")
        if reg is not None:
            model = regularize(model, reg, layers=["conv1", "conv2"])
        fit(model, xt, yt, epochs)
        start = time.perf_counter()
        pruned, report = prune_filters(model, (xt, yt), loss=LOSS, samples=512, tolerance=tolerance,
                                       fine_tune={"epochs": max(2, epochs // 5)}, verbose=0)
        seconds = time.perf_counter() - start
        rows.append({
            "training": label,
            "tolerance": tolerance,
            "filters": " / ".join(f"{r['filters_before']}->{r['filters_after']}" for r in report.rows),
            "params_before": count_params(model),
            "params_after": count_params(pruned),
            "params_removed_%": 100.0 * report.totals["params_removed"] / report.totals["params_before"],
            "macs_removed_%": 100.0 * report.totals["macs_removed"] / report.totals["macs_before"],
            "test_acc_before": accuracy(model, (xv, yv)),
            "test_acc_pruned": None,
            "test_acc_fine_tuned": accuracy(pruned, (xv, yv)),
            "loss_increase": report.totals["loss_increase"],
            "seconds": seconds,
        })
        # accuracy right after removal (before fine-tuning)
        pruned_only, _ = prune_filters(model, (xt, yt), loss=LOSS, samples=512, tolerance=tolerance, verbose=0)
        rows[-1]["test_acc_pruned"] = accuracy(pruned_only, (xv, yv))
    return rows


def planting(xt, yt, xv, yv, epochs, steps):
    keras.utils.set_random_seed(0)
    teacher = fit(cnn((32, 64), "teacher"), xt, yt, epochs)
    student = fit(cnn((2, 4), "student"), xt, yt, epochs)
    start = time.perf_counter()
    # candidates are compared on a validation split of the training set, never on the test set
    grown, report = plant(student, teacher, (xt[:-270], yt[:-270]), validation_data=(xt[-270:], yt[-270:]),
                          channels_per_step=4,
                          max_steps=steps, epochs_per_step=3, learning_rate=1e-2, verbose=0)
    seconds = time.perf_counter() - start
    widths = (grown.get_layer("conv1").filters, grown.get_layer("conv2").filters)
    keras.utils.set_random_seed(0)
    scratch = fit(cnn(widths, "scratch"), xt, yt, epochs + 3 * steps)
    return {
        "teacher_params": count_params(teacher),
        "teacher_macs": flops(teacher),
        "teacher_test_acc": accuracy(teacher, (xv, yv)),
        "student_params": count_params(student),
        "student_test_acc": accuracy(student, (xv, yv)),
        "planted_widths": list(widths),
        "planted_params": count_params(grown),
        "planted_params_%_of_teacher": 100.0 * count_params(grown) / count_params(teacher),
        "planted_test_acc": accuracy(grown, (xv, yv)),
        "scratch_same_size_test_acc": accuracy(scratch, (xv, yv)),
        "steps": [{k: row[k] for k in ("step", "layer", "channels", "params", "accuracy")} for row in report.rows],
        "seconds": seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and steps")
    args = parser.parse_args(argv)
    epochs, steps = (5, 2) if args.quick else (30, 5)
    (xt, yt), (xv, yv) = load_digits()
    hfp_rows = hfp(xt, yt, xv, yv, epochs, tolerance=0.02)
    plant_result = planting(xt, yt, xv, yv, epochs, steps)

    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cols = list(hfp_rows[0])
    md = ["# Filter pruning and channel planting on the 8x8 digits", "",
          "## prune_filters (HFP reading): CNN conv16-conv32-GAP-dense (ReLU), 512 training samples for the loss", "",
          *md_table(cols, [[fmt(r[c]) for c in cols] for r in hfp_rows])]
    md += ["", "## plant: student conv2-conv4 grown with a conv32-conv64 teacher (4 channels per step)", ""]
    md += [f"- {k}: {fmt(v)}" for k, v in plant_result.items() if k != "steps"]
    md += ["", *md_table(["step", "layer", "channels", "params", "val accuracy"],
                         [[s["step"], s["layer"], s["channels"], s["params"], f"{s['accuracy']:.3f}"]
                          for s in plant_result["steps"]])]
    name = "pruning_planting_digits" + ("_quick" if args.quick else "")
    paths = write_results(name, {"hfp": hfp_rows, "plant": plant_result}, "\n".join(md))
    print("\n".join(md))
    print("written:", *paths)


if __name__ == "__main__":
    main()
