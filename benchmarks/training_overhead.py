"""Time per epoch with each regularizer and each prox constraint against the plain model.

Every configuration trains the same small CNN (same initial weights, data, batch size and
optimizer) with the penalty or constraint on ALL its Conv/Dense layers. Configurations run in
interleaved rounds so that machine noise hits all of them alike; the first epoch of every fit
(tracing) is dropped, and the figure is the median epoch time over the remaining epochs of all
rounds. Ratios are against the plain model measured in the same run.

Targets (issue "Foundation"): regularizers <= 1.15x, prox constraints <= 1.10x.

    python -m benchmarks.training_overhead            # Fashion-MNIST subset
    python -m benchmarks.training_overhead --quick    # digits, fewer epochs (smoke run)
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from benchmarks.common import write_results
from tf_groupsparse import datasets, proximal, regularizers
from tf_groupsparse.callbacks import ProximalStep
from tf_groupsparse.regularize import regularize

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


class _EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def time_config(reg, prox, x, y, epochs, batch_size):
    base = build_cnn(x.shape[1:])
    callbacks = [_EpochTimer()]
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
    model.fit(x, y, epochs=epochs + 1, batch_size=batch_size, verbose=0, callbacks=callbacks)
    return callbacks[0].times[1:]  # drop the tracing epoch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits data, 2 epochs, 1 round")
    parser.add_argument("--samples", type=int, default=12000, help="training samples (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per fit (default: %(default)s)")
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
    times = {name: [] for name, *_ in configs}
    time_config(None, False, x, y, 1, args.batch_size)  # warm up the process (first-fit costs)
    keras.backend.clear_session()
    for r in range(args.rounds):
        for name, kind, reg, prox in configs:
            times[name].extend(time_config(reg, prox, x, y, args.epochs, args.batch_size))
            keras.backend.clear_session()
    base = statistics.median(times["plain"])
    rows = []
    for name, kind, _, _ in configs:
        med = statistics.median(times[name])
        target = {"baseline": None, "regularizer": REG_TARGET, "prox": PROX_TARGET}[kind]
        ratio = med / base
        rows.append({"method": name, "kind": kind, "epoch_s": round(med, 4), "ratio": round(ratio, 3),
                     "target": target, "met": None if target is None else bool(ratio <= target)})
    lines = [f"# Training overhead per epoch ({data_name}, small CNN, all Conv/Dense layers)", "",
             "| method | kind | median epoch (s) | ratio to plain | target | met |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['kind']} | {r['epoch_s']:.3f} | {r['ratio']:.3f} | "
              f"{'' if r['target'] is None else '<= %.2f' % r['target']} | {'' if r['met'] is None else r['met']} |"
              for r in rows]
    write_results("training_overhead" + ("_quick" if args.quick else ""),
                  {"data": data_name, "settings": vars(args), "rows": rows}, "\n".join(lines))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
