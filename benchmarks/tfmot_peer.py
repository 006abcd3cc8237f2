"""The peer method: tensorflow-model-optimization's magnitude pruning, in its own (tf_keras) process.

Trains the spec (:mod:`benchmarks.suite.models`) in tf_keras, prunes a copy at every sparsity, and
writes one row per model (``dense``, ``tfmot_50``, ...) to ``--out``; the suite runs it with
``subprocess`` (docs/benchmarks/suite.md, "Methods").

    TF_USE_LEGACY_KERAS=1 python -m benchmarks.tfmot_peer --spec spec.json --data data.npz \
        --epochs 3 --prune-epochs 2 --seed 0 --out peer.json --tflite-dir peer_tflite
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # this script's own process only (it is a __main__ script)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.harness import dist_version, make_optimizer, nonzero_params, tflite_figures, timed  # noqa: E402
from benchmarks.suite.models import build  # noqa: E402

MAX_CALIBRATION_SAMPLES = 500


def convert(model, quantize, x_cal):
    """The .tflite bytes of a tf_keras model, float32 (quantize=None) or int8, as ``deploy.convert_tflite``."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="tfmot-peer-") as tmp:
        tf.saved_model.save(model, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x_cal[i: i + 1].astype(np.float32)]
                                                        for i in range(min(MAX_CALIBRATION_SAMPLES, len(x_cal))))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def measure(name, model, data, tflite_dir, runs, seconds, sparsity):
    x_train, _, x_test, y_test = data
    row = {"method": name, "target_sparsity": sparsity, "train_s": round(seconds, 2)}
    row["accuracy"] = float(model.evaluate(x_test, y_test, verbose=0)[1])
    row["params"], row["nonzero_params"] = int(sum(w.size for w in model.get_weights())), nonzero_params(model)
    for label, quantize in (("float", None), ("int8", "int8")):
        tflite_figures(row, label, convert(model, quantize, x_train), Path(tflite_dir) / f"{name}_{label}.tflite",
                       x_test, y_test, runs)
    return row


def run(spec, data, *, epochs, prune_epochs, seed, sparsities, batch_size, learning_rate, tflite_dir, runs):
    """Train dense, prune at each sparsity, measure; returns the list of rows."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    x_train, y_train, x_test, y_test = data
    Path(tflite_dir).mkdir(parents=True, exist_ok=True)

    steps_per_epoch = -(-len(x_train) // batch_size)

    def compile_(m, n_epochs):
        m.compile(make_optimizer("adam", learning_rate, n_epochs * steps_per_epoch, keras=tf_keras),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    dense = build(tf_keras, spec, seed)
    compile_(dense, epochs)
    _, dense_s = timed(dense.fit, x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    rows = [measure("dense", dense, data, tflite_dir, runs, dense_s, 0.0)]
    steps = steps_per_epoch * prune_epochs
    for s in sparsities:
        tf_keras.utils.set_random_seed(seed)
        sched = tfmot.sparsity.keras.PolynomialDecay(0.0, s, begin_step=0, end_step=max(1, int(steps * 0.8)),
                                                     frequency=max(1, steps // 20))
        base = tf_keras.models.clone_model(dense)
        base.set_weights(dense.get_weights())
        pruned = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=sched)
        compile_(pruned, prune_epochs)
        _, seconds = timed(pruned.fit, x_train, y_train, epochs=prune_epochs, batch_size=batch_size, verbose=0,
                           callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        final = tfmot.sparsity.keras.strip_pruning(pruned)
        compile_(final, prune_epochs)
        rows.append(measure(f"tfmot_{round(100 * s)}", final, data, tflite_dir, runs, dense_s + seconds, s))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="JSON file with the model spec")
    parser.add_argument("--data", required=True, help=".npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--tflite-dir", required=True, help="directory for the .tflite files")
    parser.add_argument("--epochs", type=int, default=3, help="dense training epochs (default: %(default)s)")
    parser.add_argument("--prune-epochs", type=int, default=2, help="pruning fine-tune epochs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--latency-runs", type=int, default=50)
    args = parser.parse_args(argv)
    for s in args.sparsities:
        if not 0.0 < s < 1.0:
            parser.error(f"Expected every sparsity in (0, 1). Received: sparsities={args.sparsities}")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    with np.load(args.data) as f:
        data = tuple(f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    rows = run(spec, data, runs=args.latency_runs, **{k: getattr(args, k) for k in (
        "epochs", "prune_epochs", "seed", "sparsities", "batch_size", "learning_rate", "tflite_dir")})
    payload = {"spec": spec, "settings": vars(args), "rows": rows, "versions": {
        d: dist_version(d) for d in ("tensorflow", "tf_keras", "tensorflow-model-optimization", "ai-edge-litert")}}
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return payload


if __name__ == "__main__":
    main()
