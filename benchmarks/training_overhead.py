"""Time per training step with each regularizer and each prox constraint against the plain model.

Protocol: docs/benchmarks/speed.md, "Training overhead: protocol". Targets (issue "Foundation"):
regularizers <= 1.15x, prox constraints <= 1.10x of the plain model's median step time.

    python -m benchmarks.training_overhead            # Fashion-MNIST subset
    python -m benchmarks.training_overhead --quick    # digits, fewer epochs (smoke run)
    KERAS_BACKEND=jax python -m benchmarks.training_overhead    # results/training_overhead_jax.*
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras

from benchmarks.harness import cnn, load, publish, render
from tf_groupsparse import regularize, regularizers as R
from tf_groupsparse.callbacks import ProximalStep

TARGETS = {"baseline": None, "regularizer": 1.15, "prox": 1.10}


def block_diagonal(model, s=1e-4, k=2):
    """BlockDiagonal needs a structure: a fixed k-block interleaving per layer."""
    return {layer.name: R.BlockDiagonal(s, input_groups=[i % k for i in range(layer.kernel.shape[-2])],
                                        output_groups=[o % k for o in range(layer.kernel.shape[-1])])
            for layer in model.layers if getattr(layer, "kernel", None) is not None}


def configurations(s=1e-4):
    """(name, kind, regularizer or None or "block_diagonal", proximal) of every configuration."""
    yield "plain", "baseline", None, False
    regs = {"L1": R.L1(s), "GroupLasso": R.GroupLasso(s), "ExclusiveSparsity": R.ExclusiveSparsity(s),
            "GroupL12": R.GroupL12(s), "SparseGroupLasso": R.SparseGroupLasso(s),
            "CombinedL11L12": R.CombinedL11L12(s, s), "CombinedGroupExclusive": R.CombinedGroupExclusive(s),
            **{f"HGSR {v}": R.HierarchicalGroupSparse(s, variant=v) for v in R.HGSR_VARIANTS},
            "BlockDiagonal": "block_diagonal"}
    proxes = {"ProxL1": R.L1(s), "ProxGroupLasso": R.GroupLasso(s), "ProxSparseGroupLasso": R.SparseGroupLasso(s),
              "ProxExclusive": R.ExclusiveSparsity(s), "ProxCombinedL11L12": R.CombinedL11L12(s, s),
              "ProxCGES": R.CombinedGroupExclusive(s)}
    yield from ((name, "regularizer", reg, False) for name, reg in regs.items())
    yield from ((name, "prox", reg, True) for name, reg in proxes.items())


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training step and of every epoch of the ``fit`` calls it is passed to."""

    def __init__(self):
        super().__init__()
        self.steps, self.epochs, self.t = [], [], {}

    def on_epoch_begin(self, epoch, logs=None):
        self.t["epoch"] = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.t["step"] = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(time.perf_counter() - self.t["step"])

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self.t["epoch"])


def build_config(reg, prox, input_shape):
    """The compiled model of one configuration and the callbacks its ``fit`` needs."""
    model = cnn(input_shape, (16, "pool", 32, "pool", 64), name="overhead_cnn")
    if reg is not None:
        model = regularize(model, block_diagonal(model) if reg == "block_diagonal" else reg, proximal=prox)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, [ProximalStep()] if prox else []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits data, 2 epochs, 1 round")
    parser.add_argument("--samples", type=int, default=12000, help="training samples (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    if args.quick:
        x, y, _, _ = load("digits")
        data_name, args.epochs, args.rounds = "digits", 2, 1
    else:
        x, y, _, _ = load("fashion", args.samples)
        data_name = f"fashion-mnist[:{len(x)}]"

    configs = list(configurations())
    built = {name: build_config(reg, prox, x.shape[1:]) for name, _, reg, prox in configs}
    timers = {name: StepTimer() for name in built}
    fit = lambda name, callbacks=(): built[name][0].fit(  # noqa: E731
        x, y, epochs=1, batch_size=args.batch_size, verbose=0, callbacks=built[name][1] + list(callbacks))
    for name in built:  # trace every train step before timing
        fit(name)
    names = list(built)  # one epoch per configuration per turn, the starting configuration rotating
    for turn in range(args.epochs * args.rounds):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            fit(name, [timers[name]])
    med = {name: (statistics.median(t.steps), statistics.median(t.epochs)) for name, t in timers.items()}
    rows = []
    for name, kind, _, _ in configs:
        ratio, target = med[name][0] / med["plain"][0], TARGETS[kind]
        rows.append({"method": name, "kind": kind, "step_ms": round(1e3 * med[name][0], 3),
                     "steps": len(timers[name].steps), "ratio": round(ratio, 3), "epoch_s": round(med[name][1], 3),
                     "epoch_ratio": round(med[name][1] / med["plain"][1], 3),
                     "target": target, "met": None if target is None else bool(ratio <= target)})
    backend = keras.backend.backend()
    lines = render(f"Training overhead per step ({data_name}, small CNN, all Conv/Dense layers, {backend} backend)",
                   f"Batch {args.batch_size}, SGD with momentum, {args.epochs * args.rounds} timed epochs per "
                   "configuration, interleaved one epoch at a time; ratios of median step times (docs/benchmarks/"
                   "speed.md, \"Training overhead: protocol\").", rows)
    suffix = "" if backend == "tensorflow" else f"_{backend}"
    publish("training_overhead" + suffix, {"data": data_name, "backend": backend, "settings": vars(args), "rows": rows},
            lines, args.quick, extra_versions=("jax", "torch") if suffix else ())
    return rows


if __name__ == "__main__":
    main()
