"""Budget pruning benchmark: MobileNetV2 (and ResNet-20) on Fashion-MNIST at 50% / 30% of the MACs.

Fashion-MNIST, all 60,000 training images (the last 5,000 are the validation split every choice
is made on; the 10,000 test images give the final figures), 28x28 grey resized bilinearly to
32x32 and repeated over three channels, in [0, 1]. Every row runs in its own process (so that
its peak memory is its own) and is cached under ``benchmarks/results/budget_cache/``:

- ``dense``: the architecture trained from scratch (SGD momentum 0.9, cosine-decayed learning
  rate, batch 128, ``SCHEDULES[arch][0]`` epochs; BatchNormalization momentum 0.99);
- ``prune/<importance>/<steps>``: ``tgs.prune(dense, data, macs=target, importance=...,
  steps=...)`` fine-tuned for ``SCHEDULES[arch][1]`` epochs in total (split over the steps; by
  images when there are fewer epochs than steps, :func:`step_fine_tuning`), the same optimizer;
  pruning time without fine-tuning from the report; variants of the l2 row:
  ``round8`` (``round_to=8``), ``latency`` (``latency=target``), ``uniform``
  (``ranking="uniform"``: the same share of every layer), and of the 5-step l2 row ``cosine``
  (the steps' fine-tuning on one cosine learning rate instead of one cosine per step) and
  ``final`` (``FINAL_SHARE`` of the fine-tuning images after the last step, the rest split over
  the earlier ones);
- ``coupled``: the dense model trained further with the coupled proximal group lasso driven by
  ``SparsityTarget`` to the target, then ``tgs.prune(importance="l2")`` (Torch-Pruning's
  "sparse training, then prune" recipe) and the same fine-tuning;
- ``scaled``: the same architecture width-scaled to the target MACs, trained from scratch for
  the sum of the two epochs of ``SCHEDULES[arch]``;
- ``prune_filters``: filter pruning by loss increase (512 samples, bisection) timed on the dense
  model (its wall time is a goal of its own);
- ``tfmot``: tensorflow-model-optimization's magnitude pruning of the dense model to 50% sparsity
  over the fine-tuning epochs (``benchmarks/budget_tfmot.py``, tf_keras in its own process; it
  changes no shape, so only the gzip size moves).

Per row: test accuracy, MACs, parameters, float LiteRT latency (XNNPack, one thread, batch 1,
median of rounds alternating with the dense model's, timed once by the first summary that finds
the row) and its ratio to the dense model, int8 LiteRT accuracy and latency, pruning wall time,
peak memory (max RSS of the row's process). The Torch-Pruning peer (``benchmarks/torch_peer.py``,
PyTorch CPU) runs the same architectures (equal MACs and parameters), data and budget: its group
magnitude pruner, 1 and 5 steps with global ranking, and 1 step with its default uniform
per-layer ratio.

    python -m benchmarks.budget_pruning                       # every row not cached yet, then the summary
    python -m benchmarks.budget_pruning --only mobilenetv2 --targets 0.5
    python -m benchmarks.budget_pruning --summary-only
    python -m benchmarks.budget_pruning --summary-only --retime-all   # time every row with a file again
    python -m benchmarks.budget_pruning --only mobilenetv2 --targets 0.5 --seeds 0 1 2   # more seeds

The cache is not in git; a run first restores the rows of the recorded summaries
(``results/budget_pruning_<arch>.json``) into it, so that a fresh checkout only runs what is new.

Needs Fashion-MNIST (``apt-get install dataset-fashion-mnist``) and the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = os.environ.get("TGS_BUDGET_QUICK") == "1"   # --quick: a smoke run (children inherit it)
CACHE = RESULTS / ("budget_cache_quick" if QUICK else "budget_cache")
#: (training epochs of the dense model, fine-tuning epochs of a pruned one) per architecture:
#: ResNet-20 has 6.7x MobileNetV2's MACs at 32x32, so it gets a shorter schedule on 2 cores (its
#: 5-step rows fine-tune each step on its own 2/5 of the training images: the same 2 epochs)
SCHEDULES = {"mobilenetv2": (15, 5), "resnet20": (4, 2)}
TRAIN_SAMPLES = 2000 if QUICK else None
BATCH = 128
LEARNING_RATE = 0.05
VALIDATION = 5000
TARGETS = (0.5, 0.3)
IMPORTANCES = ("l2", "bn_scale", "taylor", "random")
STEPS = (1, 5)
ARCHS = ("mobilenetv2", "resnet20")
#: the "final" variant of a 5-step row: this share of the fine-tuning images comes after the last cut
FINAL_SHARE = 0.8
GOALS = {
    "accuracy_drop_points": 1.0,    # MobileNetV2 at half the MACs
    "latency_ratio": 1.6,
    "prune_seconds": 60.0,          # l2 / bn_scale / taylor on MobileNetV2
    "prune_filters_seconds": 120.0,
}


# --------------------------------------------------------------------------- data and models


def prepare_images(x):
    """28x28 grey (N, 28, 28) or (N, 28, 28, 1) in [0, 1] -> (N, 32, 32, 3) float32, bilinear."""
    import numpy as np
    import tensorflow as tf

    x = np.asarray(x, "float32").reshape(-1, 28, 28, 1)
    big = tf.image.resize(x, (32, 32), method="bilinear").numpy()
    return np.repeat(np.clip(big, 0.0, 1.0), 3, axis=-1)


def load_data():
    """``(x_train, y_train), (x_val, y_val), (x_test, y_test)`` at 32x32x3."""
    import tf_groupsparse as tgs

    (x, y), (xt, yt) = tgs.datasets.load_fashion_mnist(download=False)
    n = 1000 if QUICK else None  # a quick run evaluates on 1,000 validation and test images
    train_x, train_y = x[:-VALIDATION][:TRAIN_SAMPLES], y[:-VALIDATION][:TRAIN_SAMPLES]
    return ((prepare_images(train_x), train_y), (prepare_images(x[-VALIDATION:][:n]), y[-VALIDATION:][:n]),
            (prepare_images(xt[:n]), yt[:n]))


def _bn_momentum(model, momentum=0.99):
    import keras

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["momentum"] = momentum
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def mobilenetv2(alpha=1.0):
    import keras

    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=alpha, weights=None, classes=10,
                                          classifier_activation=None)
    return _bn_momentum(base)


def resnet20(width=1.0):
    """CIFAR-style ResNet-20: a 16-channel stem, 3 stages of 3 basic blocks (16/32/64 channels x
    `width`), 1x1 strided projection shortcuts where the shape changes, global pool, Dense."""
    import keras

    L = keras.layers
    widths = [max(1, round(w * width)) for w in (16, 32, 64)]
    inp = keras.Input((32, 32, 3))
    x = L.ReLU()(L.BatchNormalization(momentum=0.99)(L.Conv2D(widths[0], 3, padding="same", use_bias=False)(inp)))
    for stage, w in enumerate(widths):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            h = L.Conv2D(w, 3, strides=stride, padding="same", use_bias=False)(x)
            h = L.ReLU()(L.BatchNormalization(momentum=0.99)(h))
            h = L.BatchNormalization(momentum=0.99)(L.Conv2D(w, 3, padding="same", use_bias=False)(h))
            if stride != 1 or x.shape[-1] != w:
                x = L.BatchNormalization(momentum=0.99)(L.Conv2D(w, 1, strides=stride, use_bias=False)(x))
            x = L.ReLU()(L.Add()([x, h]))
    out = L.Dense(10)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name="resnet20")


BUILDERS = {"mobilenetv2": mobilenetv2, "resnet20": resnet20}


def scaled_width(arch, target):
    """The width multiplier whose model has the MACs closest to `target` of the full model's."""
    import tf_groupsparse as tgs

    full = tgs.flops(BUILDERS[arch]())
    lo, hi = 0.1, 1.0
    for _ in range(12):
        mid = (lo + hi) / 2
        if tgs.flops(BUILDERS[arch](mid)) > target * full:
            hi = mid
        else:
            lo = mid
    return lo


def schedule(arch):
    """``(epochs, fine_tune_epochs)`` of `arch`: one epoch each in a quick run."""
    return (1, 1) if QUICK else SCHEDULES[arch]


def train(model, data, epochs, seed, callbacks=(), cosine_span=None):
    """SGD with momentum 0.9, the learning rate on a cosine to 0 (over these epochs, or the
    ``(offset, total)`` batches of `cosine_span`), batch ``BATCH``; returns `model`."""
    from benchmarks.harness import train as fit

    (x, y), _, _ = data
    if epochs:
        fit(model, x, y, epochs=epochs, batch_size=BATCH, optimizer="sgd", learning_rate=LEARNING_RATE,
            callbacks=callbacks, seed=seed, cosine_span=cosine_span)
    return model


# --------------------------------------------------------------------------- measuring


def measure(model, data, runs=50):
    """Accuracies, size and LiteRT figures of one Keras model (float and int8)."""
    import tf_groupsparse as tgs
    from benchmarks.harness import accuracy
    from tf_groupsparse.deploy import convert_tflite, tflite_latency

    (x, y), (xv, yv), (xt, yt) = data
    row = {"val_accuracy": accuracy(model, xv, yv), "test_accuracy": accuracy(model, xt, yt),
           "macs": tgs.flops(model), "params": tgs.count_params(model)}
    blob = convert_tflite(model)
    blob8 = convert_tflite(model, quantize="int8", representative_data=x[:200])
    row["latency_ms"] = 1e3 * tflite_latency(blob, xt[:1], runs=runs)
    try:
        row["int8_latency_ms"] = 1e3 * tflite_latency(blob8, xt[:1], runs=runs)
        row["int8_test_accuracy"] = accuracy(blob8, xt, yt)
    except RuntimeError as exc:  # LiteRT refuses some degenerate int8 graphs (a 1-channel layer, say)
        row["int8_error"] = str(exc).splitlines()[0]
    row["tflite_bytes"], row["int8_tflite_bytes"] = len(blob), len(blob8)
    return row, blob


def _cached(name):
    return CACHE / f"{name}.json"


def _dense_path(arch, seed):
    return CACHE / f"{arch}_dense_seed{seed}.keras"


# --------------------------------------------------------------------------- rows


def row_dense(arch, target, seed, data):
    model = train(BUILDERS[arch](), data, schedule(arch)[0], seed)
    model.save(_dense_path(arch, seed))
    return {"method": "dense"}, model


def _load_dense(arch, seed):
    import keras

    return keras.models.load_model(_dense_path(arch, seed))


def step_fine_tuning(data, epochs, steps, seed, one_cosine=False, final_share=None):
    """The fine-tuning after each of `steps` pruning steps, `epochs` in total: ``epochs // steps``
    epochs each when there are at least as many epochs as steps, else one pass per step over the
    step's own consecutive share of ``epochs / steps`` of the training images (wrapping around),
    so that the steps see the same number of images as `epochs` epochs. Each step's learning rate
    runs its own cosine to 0, or with `one_cosine` its share of one cosine over all the steps.
    With `final_share` (in (0, 1)) the last step gets that share of the ``epochs`` epochs' images
    and the earlier steps split the rest equally, each one pass over its slice (a slice longer
    than the training set wraps around)."""
    import itertools

    import numpy as np

    (x, y), rest = data[0], data[1:]
    step = itertools.count()
    whole = steps <= epochs and final_share is None
    if final_share is not None and (not 0 < final_share < 1 or steps < 2):
        raise ValueError(f"step_fine_tuning: `final_share` must be in (0, 1) with steps >= 2, got {final_share!r} "
                         f"with steps={steps}.")
    passes = epochs // steps if whole else 1

    def sizes():  # images of each step's fine-tuning (read when the data is there: a test passes none)
        if final_share is None:
            return [len(x) if whole else round(len(x) * epochs / steps)] * steps
        total = epochs * len(x)
        return [round(total * (1 - final_share) / (steps - 1))] * (steps - 1) + [round(total * final_share)]

    def fine_tune(m):
        k, size = next(step), sizes()
        batches = [passes * -(-n // BATCH) for n in size]  # optimizer steps per pruning step
        span = (sum(batches[:k]), sum(batches)) if one_cosine else None
        if whole:
            return train(m, data, passes, seed, cosine_span=span)
        rows = (sum(size[:k]) + np.arange(size[k])) % len(x)
        return train(m, ((x[rows], y[rows]), *rest), 1, seed, cosine_span=span)

    return fine_tune


def row_prune(arch, target, seed, data, importance="l2", steps=1, variant=None):
    """tgs.prune at `target` of the MACs; `variant` "round8" keeps widths at multiples of 8,
    "latency" prunes to `target` of the LiteRT latency instead, "uniform" removes the same share of
    every layer (``ranking="uniform"``), "cosine" fine-tunes the steps on one cosine learning rate
    (:func:`step_fine_tuning`'s `one_cosine`), "final" gives the last step ``FINAL_SHARE`` of the
    fine-tuning images and the earlier steps the rest (`final_share`)."""
    import tf_groupsparse as tgs

    dense = _load_dense(arch, seed)
    (x, y), _, _ = data
    epochs = schedule(arch)[1]
    fine_tune = step_fine_tuning(data, epochs, steps, seed, one_cosine=variant == "cosine",
                                 final_share=FINAL_SHARE if variant == "final" else None)
    budget = {"latency": target} if variant == "latency" else {"macs": target}
    pruned, report = tgs.prune(dense, (x, y), importance=importance, steps=steps, fine_tune=fine_tune, seed=seed,
                               round_to=8 if variant == "round8" else None, allow_untrained=QUICK, verbose=0,
                               ranking="uniform" if variant == "uniform" else "global", **budget)
    label = {"round8": ", widths rounded to 8", "latency": f", to {target:g} of the LiteRT latency",
             "uniform": ", uniform per-layer share", "cosine": ", one cosine over the steps",
             "final": f", {FINAL_SHARE:.0%} of the fine-tuning after the last step"}.get(variant, "")
    row = {"method": f"prune {importance}, {steps} step{'s' if steps > 1 else ''}{label}", "importance": importance,
           "steps": steps, "variant": variant, "prune_seconds": report.totals["prune_seconds"],
           "fine_tune_epochs": epochs if steps > epochs else epochs // steps * steps}
    if variant == "latency":  # the calibration trials [aim, measured], the end point, and where the time went
        row.update({k: report.totals[k] for k in ("latency_fraction", "latency_fraction_predicted",
                                                  "latency_table_seconds", "latency_calibration_seconds")},
                   latency_trials=report.meta["latency_trials"], vector_width=report.meta.get("vector_width"),
                   vector_widths=report.meta.get("vector_widths"))
    return row, pruned


def row_coupled(arch, target, seed, data):
    import tf_groupsparse as tgs

    dense = _load_dense(arch, seed)
    (x, y), _, _ = data
    sparse = tgs.regularize(dense, tgs.regularizers.GroupLasso(1e-4), proximal=True, coupled=True)
    controller = tgs.callbacks.SparsityTarget(macs=target, interval=50)
    train(sparse, data, schedule(arch)[1], seed, callbacks=[tgs.callbacks.ProximalStep(), controller])
    from benchmarks.harness import plain_copy

    plain = plain_copy(sparse)
    start = time.perf_counter()
    pruned, report = tgs.prune(plain, (x, y), macs=target, importance="l2", allow_untrained=QUICK, verbose=0)
    seconds = time.perf_counter() - start
    train(pruned, data, 2, seed)
    return {"method": "coupled proximal group lasso to the budget, then prune l2", "prune_seconds": seconds,
            "strength_scale": controller.scale, "fine_tune_epochs": schedule(arch)[1] + 2}, pruned


def row_scaled(arch, target, seed, data):
    width = scaled_width(arch, target)
    model = train(BUILDERS[arch](width), data, sum(schedule(arch)), seed)
    return {"method": f"width-scaled x{width:.3f}, from scratch", "width": width}, model


def row_prune_filters(arch, target, seed, data):
    import tf_groupsparse as tgs

    dense = _load_dense(arch, seed)
    (x, y), _, _ = data
    start = time.perf_counter()
    pruned, report = tgs.prune_filters(dense, (x, y), samples=512, tolerance=0.05, seed=seed,
                                       allow_untrained=QUICK, verbose=0)
    seconds = time.perf_counter() - start
    return {"method": "prune_filters, tolerance 0.05, 512 samples (no fine-tuning)", "prune_seconds": seconds,
            "evaluations": report.totals["evaluations"]}, pruned


def row_tfmot(arch, target, seed, data):
    """Runs benchmarks.budget_tfmot in a child process (tf_keras), on the dense row's weights."""
    dense = _load_dense(arch, seed)
    weights = CACHE / f"{arch}_dense_seed{seed}_weights.npz"
    import numpy as np

    np.savez(weights, **{f"w{i}": w for i, w in enumerate(dense.get_weights())})
    out = CACHE / f"{arch}_tfmot_seed{seed}.json"
    subprocess.run([sys.executable, "-m", "benchmarks.budget_tfmot", str(weights), str(out), "--sparsity", "0.5",
                    "--epochs", str(schedule(arch)[1]), "--batch", str(BATCH), "--learning-rate", str(LEARNING_RATE),
                    "--seed", str(seed)], check=True, env=dict(os.environ, TF_USE_LEGACY_KERAS="1"))
    return json.loads(out.read_text())


def dense_accuracy(arch, seed, data):
    """Test accuracy of the dense model a row started from (the file in the cache): the row's own
    baseline, so that a dense model trained again (a fresh machine) does not shift its drop."""
    from benchmarks.harness import accuracy

    return accuracy(_load_dense(arch, seed), *data[2])


#: the row kinds that start from the cached dense model of their seed
FROM_DENSE = ("prune", "coupled", "prune_filters", "tfmot")

ROWS = {"dense": row_dense, "prune": row_prune, "coupled": row_coupled, "scaled": row_scaled,
        "prune_filters": row_prune_filters}


def run_row(kind, arch, target, seed, **kwargs):
    """Run one row in this process and write its JSON to the cache."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    data = load_data()
    start = time.perf_counter()

    def baseline():  # measured after the row, outside its wall time and peak memory
        return {"dense_test_accuracy": dense_accuracy(arch, seed, data)} if kind in FROM_DENSE else {}

    if kind == "tfmot":
        row = row_tfmot(arch, target, seed, data)
        row.update({"arch": arch, "target": target, "seed": seed, "wall_seconds": time.perf_counter() - start,
                    "tflite": f"{arch}_tfmot_seed{seed}.tflite", **baseline()})
        return row, (CACHE / row["tflite"]).read_bytes()
    row, model = ROWS[kind](arch, target, seed, data, **kwargs)
    row["wall_seconds"] = time.perf_counter() - start
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures, blob = measure(model, data)
    row.update(figures, **baseline())
    row.update({"arch": arch, "target": target, "seed": seed, "kind": kind})
    return row, blob


def _key(kind, arch, target, seed, importance=None, steps=None, variant=None):
    parts = [arch, kind, f"t{target}", f"seed{seed}"] + ([importance, f"steps{steps}"] if importance else [])
    return "_".join(str(p) for p in parts) + (f"_{variant}" if variant else "")


def plan(archs, targets, seeds, headline_only=False):
    """Every (key, argv) row of the benchmark, in priority order.

    The headline rows come first (dense, one-step l2 pruning, the width-scaled model, the
    Torch-Pruning peer, tfmot, filter pruning), then the other importances, the five-step
    schedules and the variants, so that an interrupted run (rows are cached, a rerun resumes)
    has already measured the comparisons the goals are about. ``headline_only`` (the quick
    run): those rows alone.
    """
    first, rest = [], []
    for seed in seeds:
        for arch in archs:
            # the peer's steps split whole epochs (ResNet-20: one step); ours also split them by images
            peer_steps = [s for s in STEPS if s <= schedule(arch)[1]]
            first.append((_key("dense", arch, 1.0, seed), ["dense", arch, "1.0", str(seed)]))
            for target in targets:
                first.append((_key("prune", arch, target, seed, "l2", 1),
                              ["prune", arch, str(target), str(seed), "l2", "1"]))
                first.append((_key("scaled", arch, target, seed), ["scaled", arch, str(target), str(seed)]))
                for steps in peer_steps:  # the peer: Torch-Pruning's group magnitude pruner
                    (first if steps == 1 else rest).append(
                        (_key("torch", arch, target, seed, "l2", steps),
                         ["torch", arch, str(target), str(seed), "l2", str(steps)]))
                # the peer with its default ranking (every layer by the same ratio)
                rest.append((_key("torch", arch, target, seed, "l2", 1, "uniform"),
                             ["torch", arch, str(target), str(seed), "l2", "1", "uniform"]))
                for importance in IMPORTANCES:
                    for steps in STEPS:
                        if (importance, steps) != ("l2", 1):
                            rest.append((_key("prune", arch, target, seed, importance, steps),
                                         ["prune", arch, str(target), str(seed), importance, str(steps)]))
                rest.append((_key("coupled", arch, target, seed), ["coupled", arch, str(target), str(seed)]))
                for variant in ("uniform", "round8", "latency"):
                    rest.append((_key("prune", arch, target, seed, "l2", 1, variant),
                                 ["prune", arch, str(target), str(seed), "l2", "1", variant]))
                for variant in ("cosine", "final"):  # the steps on one schedule; most epochs after the last cut
                    rest.append((_key("prune", arch, target, seed, "l2", 5, variant),
                                 ["prune", arch, str(target), str(seed), "l2", "5", variant]))
            if arch == "mobilenetv2":
                first.append((_key("tfmot", arch, 0.5, seed), ["tfmot", arch, "0.5", str(seed)]))
            first.append((_key("prune_filters", arch, 1.0, seed), ["prune_filters", arch, "1.0", str(seed)]))
    rest.sort(key=lambda row: row[1][0] == "prune" and row[1][5] == "5")  # one-step rows first
    return first if headline_only else first + rest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=ARCHS, default=["mobilenetv2"])
    parser.add_argument("--targets", nargs="+", type=float, default=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--retime-all", action="store_true",
                        help="time every row with a LiteRT file again (by default a row is timed once, at the "
                             "first summary that finds it)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of the headline rows: 1 + 1 epochs on 2,000 images")
    parser.add_argument("--row", nargs="+", help=argparse.SUPPRESS)  # one row, in a child process
    args = parser.parse_args(argv)
    if args.quick and not QUICK:  # re-run with the setting in the environment, for the children too
        env = dict(os.environ, TGS_BUDGET_QUICK="1")
        return subprocess.run([sys.executable, "-m", "benchmarks.budget_pruning", *(argv or sys.argv[1:])],
                              env=env).returncode
    if args.row:
        kind, arch, target, seed, *rest = args.row
        kwargs = {"importance": rest[0], "steps": int(rest[1])} if rest else {}
        if len(rest) > 2:
            kwargs["variant"] = rest[2]
        row, blob = run_row(kind, arch, float(target), int(seed), **kwargs)
        key = _key(kind, arch, float(target), int(seed), **kwargs)
        (CACHE / f"{key}.tflite").write_bytes(blob)
        row["tflite"] = f"{key}.tflite"
        _cached(key).write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
        return 0
    from benchmarks.harness import require

    require("fashion")  # stops with the install hint before any training
    CACHE.mkdir(parents=True, exist_ok=True)
    if not QUICK:  # a fresh checkout resumes from the recorded summaries (the cache is not in git)
        from benchmarks.budget_summary import restore

        for key in restore(args.only):
            print(f"[budget_pruning] {key}: restored from the recorded summary", flush=True)
    if not args.summary_only:
        for key, row_argv in plan(args.only, args.targets, args.seeds, headline_only=QUICK):
            if _cached(key).exists():
                continue
            print(f"[budget_pruning] {key}", flush=True)
            if row_argv[0] == "torch":
                kind, arch, target, seed, importance, steps, *variant = row_argv
                command = [sys.executable, "-m", "benchmarks.torch_peer", arch, "--target", target, "--seed", seed,
                           "--importance", importance, "--steps", steps, "--out", str(_cached(key)),
                           *(["--ranking", variant[0]] if variant else [])]
            else:
                command = [sys.executable, "-m", "benchmarks.budget_pruning", "--row", *row_argv]
            done = subprocess.run(command, stdout=subprocess.DEVNULL)
            if done.returncode:
                print(f"[budget_pruning] {key} failed (exit {done.returncode})", flush=True)
    from benchmarks.budget_summary import summarize

    summarize(args.only, args.targets, args.seeds, retime_all=args.retime_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
