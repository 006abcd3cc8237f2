"""Shrink and prune wall time on each Keras backend: MobileNetV2 on TensorFlow, JAX and PyTorch.

``keras.applications.MobileNetV2(alpha=1.0, input_shape=(32, 32, 3), weights=None)`` (2.2 M
parameters; the budget benchmark's model), built the same way on each backend, one process per
backend (``KERAS_BACKEND`` set for the child). Per backend, wall time of:

- ``shrink(model, threshold=0)`` after zeroing a random 30% of the filters (kernel slice and
  BatchNormalization gamma/beta) of every pointwise Conv2D, with the number of parameters removed
  (equal on every backend: the graph is the same);
- ``tgs.prune(model, macs=0.5, importance="l2")`` without data;
- ``tgs.prune(model, (x, y), macs=0.5, importance="taylor", samples=256)`` on random images (the
  gradient pass runs on the backend).

The median of ``--repeats`` runs (after one warm-up run that pays for tracing), and each
backend's ratio to TensorFlow's. The machine is the same for all, one backend after another.

    python -m benchmarks.backend_pruning_time                  # all three backends
    python -m benchmarks.backend_pruning_time --backends tensorflow jax
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")


def _zero_filters(model, fraction, seed):
    """Zero `fraction` of every pointwise Conv2D's filters and the BatchNormalization after it."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    layers = {layer.name: layer for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape[:2] == (1, 1) and layer.filters > 8:
            gone = rng.choice(layer.filters, int(fraction * layer.filters), replace=False)
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            kernel[..., gone] = 0
            layer.kernel.assign(kernel)
            bn = layers.get(layer.name + "_BN") or layers.get(layer.name + "_bn")
            if bn is not None:
                for v in (bn.gamma, bn.beta):
                    value = keras.ops.convert_to_numpy(v)
                    value[gone] = 0
                    v.assign(value)


def measure(repeats, seed=0, warm_up=True):
    """Wall times on this process's backend (after a warm-up run of each job, unless `warm_up` is
    False: then the first run, tracing included, is timed)."""
    import keras
    import numpy as np

    import tf_groupsparse as tgs

    def model():
        keras.utils.set_random_seed(seed)
        return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=1.0, weights=None, classes=10,
                                              classifier_activation=None)

    rng = np.random.default_rng(seed)
    x, y = rng.random((256, 32, 32, 3)).astype("float32"), rng.integers(0, 10, 256)
    sparse = model()
    _zero_filters(sparse, 0.3, seed)
    dense = model()
    jobs = {
        "shrink_seconds": lambda: tgs.shrink(sparse, threshold=0.0),
        "prune_l2_seconds": lambda: tgs.prune(dense, macs=0.5, importance="l2", allow_untrained=True, verbose=0),
        "prune_taylor_seconds": lambda: tgs.prune(dense, (x, y), macs=0.5, importance="taylor", samples=256,
                                                  allow_untrained=True, verbose=0),
    }
    row = {"backend": keras.backend.backend(), "keras": keras.__version__, "params": tgs.count_params(dense)}
    for name, job in jobs.items():
        if warm_up:
            job()  # tracing and compilation
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = job()
            times.append(time.perf_counter() - start)
        row[name] = statistics.median(times)
        if name == "shrink_seconds":
            row["shrink_params_removed"] = tgs.count_params(sparse) - tgs.count_params(out)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-warm-up", action="store_true",
                        help="time the first run of each job too (tracing included; a smoke run)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.repeats, warm_up=not args.no_warm_up)))
        return 0
    rows = []
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run([sys.executable, "-m", "benchmarks.backend_pruning_time", "--child", "--repeats",
                               str(args.repeats), *(["--no-warm-up"] if args.no_warm_up else [])],
                              env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{backend} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["backend"] == "tensorflow"), None)
    lines = ["# Shrink and prune wall time per backend (MobileNetV2, 32x32x3)", "",
             "| backend | shrink s | prune l2 s | prune taylor s | params removed by shrink | ratio to TF (shrink / l2 / taylor) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "-" if base is None else " / ".join(
            f"{r[k] / base[k]:.2f}x" for k in ("shrink_seconds", "prune_l2_seconds", "prune_taylor_seconds"))
        lines.append(f"| {r['backend']} | {r['shrink_seconds']:.2f} | {r['prune_l2_seconds']:.2f} | "
                     f"{r['prune_taylor_seconds']:.2f} | {r['shrink_params_removed']:,} | {ratio} |")
    from benchmarks.harness import write_results

    write_results("backend_pruning_time", {"rows": rows, "repeats": args.repeats, "warm_up": not args.no_warm_up},
                  "\n".join(lines),
                  extra_versions=("jax", "torch"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
