"""Filter pruning by loss increase (HFP) and channel planting (PLANT) on the 8x8 digits.

HFP: a small CNN trained with and without HGSR (``squared_group_l12(1e-5, l1_mix=0.5)``, feature-wise
groups; the reference strengths 1e-3 and 1e-4 collapse this BN-free 5k-parameter model), pruned by
``prune_filters`` (tolerance 0.02, 512 training samples) and fine-tuned. PLANT: a tiny student grown
by ``plant`` with a larger teacher, candidates compared on the last 270 training images, against the
same final architecture trained from scratch. Every training run: Adam 3e-3 at a constant rate, batch
64; accuracies are on the test split.

    python -m benchmarks.pruning_planting_digits            # full run (~2-3 min on 2 cores)
    python -m benchmarks.pruning_planting_digits --quick    # smaller smoke run
"""

from __future__ import annotations

import argparse

import keras

from benchmarks.harness import accuracy, cnn, load, publish, render, timed, train
from tf_groupsparse.metrics import count_params, flops
from tf_groupsparse.pruning.planting import plant
from tf_groupsparse import prune_filters
from tf_groupsparse import regularize
from tf_groupsparse.regularizers import HierarchicalGroupSparse

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fit(model, x, y, epochs):
    """Adam 3e-3 at a constant rate, batch 64; returns `model`."""
    train(model, x, y, epochs=epochs, batch_size=64, learning_rate=3e-3, cosine=False)
    return model


def net(widths, name, seed=0):
    # no BatchNormalization: with 21 batches per epoch its moving statistics lag the weights
    # and the inference-mode accuracy of these tiny models swings by >10 points per epoch
    return cnn((8, 8, 1), widths, seed=seed, name=name)


def hfp(xt, yt, xv, yv, epochs, tolerance):
    rows = []
    for label, reg in (("plain", None), ("HGSR", HierarchicalGroupSparse.squared_group_l12(1e-5, l1_mix=0.5))):
        model = net((16, 32), f"cnn_{label.lower()}")
        model = fit(model if reg is None else regularize(model, reg, layers=["conv1", "conv2"]), xt, yt, epochs)
        (pruned, report), seconds = timed(prune_filters, model, (xt, yt), loss=LOSS, samples=512, tolerance=tolerance,
                                          fine_tune={"epochs": max(2, epochs // 5)}, verbose=0)
        # accuracy right after removal (before fine-tuning)
        pruned_only, _ = prune_filters(model, (xt, yt), loss=LOSS, samples=512, tolerance=tolerance, verbose=0)
        t = report.totals
        rows.append({"training": label, "tolerance": tolerance,
                     "filters": " / ".join(f"{r['filters_before']}->{r['filters_after']}" for r in report.rows),
                     "params_before": count_params(model), "params_after": count_params(pruned),
                     "params_removed_%": 100.0 * t["params_removed"] / t["params_before"],
                     "macs_removed_%": 100.0 * t["macs_removed"] / t["macs_before"],
                     "test_acc_before": accuracy(model, xv, yv), "test_acc_pruned": accuracy(pruned_only, xv, yv),
                     "test_acc_fine_tuned": accuracy(pruned, xv, yv), "loss_increase": t["loss_increase"],
                     "seconds": seconds})
    return rows


def planting(xt, yt, xv, yv, epochs, steps):
    teacher = fit(net((32, 64), "teacher"), xt, yt, epochs)
    student = fit(net((2, 4), "student", seed=None), xt, yt, epochs)
    # candidates are compared on a validation split of the training set, never on the test set
    (grown, report), seconds = timed(plant, student, teacher, (xt[:-270], yt[:-270]),
                                     validation_data=(xt[-270:], yt[-270:]), channels_per_step=4, max_steps=steps,
                                     epochs_per_step=3, learning_rate=1e-2, verbose=0)
    widths = (grown.get_layer("conv1").filters, grown.get_layer("conv2").filters)
    scratch = fit(net(widths, "scratch"), xt, yt, epochs + 3 * steps)
    return {"teacher_params": count_params(teacher), "teacher_macs": flops(teacher),
            "teacher_test_acc": accuracy(teacher, xv, yv), "student_params": count_params(student),
            "student_test_acc": accuracy(student, xv, yv), "planted_widths": list(widths),
            "planted_params": count_params(grown),
            "planted_params_%_of_teacher": 100.0 * count_params(grown) / count_params(teacher),
            "planted_test_acc": accuracy(grown, xv, yv), "scratch_same_size_test_acc": accuracy(scratch, xv, yv),
            "steps": [{k: row[k] for k in ("step", "layer", "channels", "params", "accuracy")} for row in report.rows],
            "seconds": seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and steps")
    args = parser.parse_args(argv)
    epochs, steps = (5, 2) if args.quick else (30, 5)
    xt, yt, xv, yv = load("digits")
    hfp_rows = hfp(xt, yt, xv, yv, epochs, tolerance=0.02)
    plant_result = planting(xt, yt, xv, yv, epochs, steps)

    md = render("Filter pruning and channel planting on the 8x8 digits",
                "## prune_filters (HFP reading): CNN conv16-conv32-GAP-dense (ReLU), 512 training samples for the loss",
                hfp_rows, "## plant: student conv2-conv4 grown with a conv32-conv64 teacher (4 channels per step)",
                {k: v for k, v in plant_result.items() if k != "steps"}, plant_result["steps"])
    publish("pruning_planting_digits", {"hfp": hfp_rows, "plant": plant_result}, md, args.quick)


if __name__ == "__main__":
    main()
