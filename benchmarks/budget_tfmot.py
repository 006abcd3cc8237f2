"""The tfmot row of the budget benchmark: magnitude pruning of the same trained MobileNetV2.

tensorflow-model-optimization needs the legacy Keras 2 (``tf_keras``), which cannot share a
process with Keras 3, so this runs on its own: it rebuilds the architecture with
``tf_keras.applications`` (same layers in the same order), loads the dense row's weights (saved
by the budget benchmark as a list of arrays), wraps it in ``prune_low_magnitude`` with a
polynomial schedule from 0 to the target sparsity over the fine-tuning epochs (the same SGD,
cosine schedule and batch as the other rows), strips the wrappers and measures the test
accuracy, the .tflite size (plain and gzip: magnitude pruning keeps every shape, so only the
compressed size moves) and the LiteRT latency.

Reference: Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
compression", 2017 (arXiv 1710.01878).

    python -m benchmarks.budget_tfmot WEIGHTS.npz OUT.json --sparsity 0.5 --epochs 5

(the data are those of :func:`benchmarks.budget_pruning.load_data`).
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # this script's own process only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def run(weights, *, sparsity, epochs, batch, learning_rate, seed):
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from benchmarks.budget_pruning import load_data
    from benchmarks.harness import gzip_bytes
    from tf_groupsparse.deploy import tflite_latency

    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=1.0, weights=None, classes=10,
                                              classifier_activation=None)
    model.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
    (x, y), _, (xt, yt) = load_data()
    steps = epochs * -(-len(x) // batch)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=max(steps - 1, 1))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    lr = tf_keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
    pruned.compile(tf_keras.optimizers.SGD(lr, momentum=0.9),
                   tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    pruned.fit(x, y, epochs=epochs, batch_size=batch, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    seconds = time.perf_counter() - start
    final = tfmot.sparsity.keras.strip_pruning(pruned)
    final.compile(metrics=["accuracy"], loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    accuracy = float(final.evaluate(xt, yt, verbose=0, batch_size=512)[1])
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(final, tmp)
        blob = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    nonzero = sum(int(np.count_nonzero(w)) for w in final.get_weights())
    return {"method": f"tfmot prune_low_magnitude {int(100 * sparsity)}% (shapes unchanged)", "kind": "tfmot",
            "test_accuracy": accuracy, "params": int(final.count_params()), "nonzero_params": nonzero,
            "tflite_bytes": len(blob), "gzip_bytes": gzip_bytes(blob),
            "latency_ms": 1e3 * tflite_latency(blob, xt[:1], runs=50), "fine_tune_seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, blob


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights")
    parser.add_argument("out")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with np.load(args.weights) as weights:
        row, blob = run(weights, sparsity=args.sparsity, epochs=args.epochs, batch=args.batch,
                        learning_rate=args.learning_rate, seed=args.seed)
    with open(args.out.replace(".json", ".tflite"), "wb") as f:
        f.write(blob)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(row, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
