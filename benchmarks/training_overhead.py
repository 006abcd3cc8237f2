"""Time per training step with each regularizer and each prox constraint against the plain model.

Every configuration trains the same small CNN (same initial weights, data, batch size and
optimizer) with the penalty or constraint on ALL its Conv/Dense layers. Every model first runs
one untimed epoch (tracing); then the configurations take turns, one epoch each per turn with
the starting configuration rotating, so that a burst of load from elsewhere on the shared
machine lands on a few epochs of every configuration rather than on all epochs of one. The
figure is the median time of one training step (``on_train_batch_begin`` to
``on_train_batch_end``) over all timed steps; whole epochs on a shared virtual machine vary by a
factor of two or more, while the median over hundreds of steps is stable. The median epoch time
is reported beside it. Ratios are against the plain model measured in the same run.

Targets (issue "Foundation"): regularizers <= 1.15x, prox constraints <= 1.10x.

    python -m benchmarks.training_overhead            # Fashion-MNIST subset
    python -m benchmarks.training_overhead --quick    # digits, fewer epochs (smoke run)
    KERAS_BACKEND=jax python -m benchmarks.training_overhead    # results/training_overhead_jax.*
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras

from benchmarks.harness import md_table, write_results
from tf_groupsparse import datasets, regularizers
from tf_groupsparse.callbacks import ProximalStep
from tf_groupsparse import regularize

REG_TARGET, PROX_TARGET = 1.15, 1.10


def build_cnn(input_shape, n_classes=10, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10 if n_classes is None else n_classes, name="head"),
        ],
        name="overhead_cnn",
    )


def _block_diagonal_per_layer(model, strength=1e-4, k=2):
    """BlockDiagonal needs a structure: a fixed k-block interleaving per layer."""
    mapping = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        c_in, c_out = kernel.shape[-2], kernel.shape[-1]
        mapping[layer.name] = regularizers.BlockDiagonal(
            strength, input_groups=[i % k for i in range(c_in)], output_groups=[o % k for o in range(c_out)]
        )
    return mapping


def configurations():
    s = 1e-4
    hgsr = regularizers.HierarchicalGroupSparse
    regs = {
        "L1": regularizers.L1(s),
        "GroupLasso": regularizers.GroupLasso(s),
        "ExclusiveSparsity": regularizers.ExclusiveSparsity(s),
        "GroupL12": regularizers.GroupL12(s),
        "SparseGroupLasso": regularizers.SparseGroupLasso(s),
        "CombinedL11L12": regularizers.CombinedL11L12(s, s),
        "CombinedGroupExclusive": regularizers.CombinedGroupExclusive(s),
        **{f"HGSR {v}": hgsr(s, variant=v) for v in (
            "sqrt_group_lasso", "squared_group_lasso", "sqrt_exclusive",
            "squared_exclusive", "sqrt_group_l12", "squared_group_l12")},
        "BlockDiagonal": "block_diagonal",
    }
    proxes = {
        "ProxL1": regularizers.L1(s),
        "ProxGroupLasso": regularizers.GroupLasso(s),
        "ProxSparseGroupLasso": regularizers.SparseGroupLasso(s),
        "ProxExclusive": regularizers.ExclusiveSparsity(s),
        "ProxCombinedL11L12": regularizers.CombinedL11L12(s, s),
        "ProxCGES": regularizers.CombinedGroupExclusive(s),
    }
    yield "plain", "baseline", None, False
    for name, reg in regs.items():
        yield name, "regularizer", reg, False
    for name, reg in proxes.items():
        yield name, "prox", reg, True


class _StepTimer(keras.callbacks.Callback):
    """Wall time of every training step and of the whole epoch of one ``fit`` call."""

    def __init__(self):
        super().__init__()
        self.steps, self.epochs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._t_epoch = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(time.perf_counter() - self._t)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self._t_epoch)


def build_config(reg, prox, input_shape):
    """The compiled model of one configuration and the callbacks its ``fit`` needs."""
    base = build_cnn(input_shape)
    callbacks = []
    if reg is None:
        model = base
    else:
        if reg == "block_diagonal":
            reg = _block_diagonal_per_layer(base)
        model = regularize(base, reg, proximal=prox)
        if prox:
            callbacks.append(ProximalStep())
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, callbacks


def time_epoch(model, callbacks, timer, x, y, batch_size):
    """One epoch of ``fit``; its step and epoch times go to `timer` (None: untimed warm-up)."""
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0,
              callbacks=list(callbacks) + ([] if timer is None else [timer]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits data, 2 epochs, 1 round")
    parser.add_argument("--samples", type=int, default=12000, help="training samples (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    if args.quick:
        (x, y), _ = datasets.load_digits()
        data_name, args.epochs, args.rounds = "digits", 2, 1
    else:
        (x, y), _ = datasets.load_fashion_mnist()
        x, y = x[: args.samples], y[: args.samples]
        data_name = f"fashion-mnist[:{len(x)}]"

    configs = list(configurations())
    built = {name: build_config(reg, prox, x.shape[1:]) for name, _, reg, prox in configs}
    timers = {name: _StepTimer() for name in built}
    for name, (model, callbacks) in built.items():  # trace every train step before timing
        time_epoch(model, callbacks, None, x, y, args.batch_size)
    # One epoch per configuration per turn, `epochs * rounds` turns, the starting configuration
    # rotating: a burst of load from elsewhere lands on a few epochs of every configuration
    # instead of on all epochs of one.
    names = list(built)
    for turn in range(args.epochs * args.rounds):
        start = turn % len(names)
        for name in names[start:] + names[:start]:
            model, callbacks = built[name]
            time_epoch(model, callbacks, timers[name], x, y, args.batch_size)
    steps = {name: t.steps for name, t in timers.items()}
    epochs = {name: t.epochs for name, t in timers.items()}
    base = statistics.median(steps["plain"])
    base_epoch = statistics.median(epochs["plain"])
    rows = []
    for name, kind, _, _ in configs:
        med = statistics.median(steps[name])
        med_epoch = statistics.median(epochs[name])
        target = {"baseline": None, "regularizer": REG_TARGET, "prox": PROX_TARGET}[kind]
        ratio = med / base
        rows.append({"method": name, "kind": kind, "step_ms": round(1e3 * med, 3), "steps": len(steps[name]),
                     "ratio": round(ratio, 3), "epoch_s": round(med_epoch, 3),
                     "epoch_ratio": round(med_epoch / base_epoch, 3),
                     "target": target, "met": None if target is None else bool(ratio <= target)})
    backend = keras.backend.backend()
    lines = [f"# Training overhead per step ({data_name}, small CNN, all Conv/Dense layers, {backend} backend)", "",
             f"Batch {args.batch_size}, SGD with momentum, {args.epochs * args.rounds} timed epochs per "
             "configuration, interleaved one epoch at a time. The ratio is of median step times; the median "
             "epoch time and its ratio are shown for reference (noisier on a shared machine).", "",
             *md_table(["method", "kind", "median step (ms)", "steps timed", "ratio to plain", "median epoch (s)",
                        "epoch ratio", "target", "met"],
                       [[r["method"], r["kind"], f"{r['step_ms']:.2f}", r["steps"], f"{r['ratio']:.3f}",
                         f"{r['epoch_s']:.3f}", f"{r['epoch_ratio']:.3f}",
                         "" if r["target"] is None else f"<= {r['target']:.2f}", "" if r["met"] is None else r["met"]]
                        for r in rows])]
    suffix = "" if backend == "tensorflow" else f"_{backend}"
    write_results("training_overhead" + suffix + ("_quick" if args.quick else ""),
                  {"data": data_name, "backend": backend, "settings": vars(args), "rows": rows}, "\n".join(lines),
                  extra_versions=("jax", "torch") if suffix else ())
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
