"""Speed of the EM grouping pass and of block-diagonal Dense layers in LiteRT.

1. ``fit_groups`` on one 4096 x 4096 Dense layer holding 4 planted, permuted blocks plus noise
   (target: <= 5 s), with the default restarts and with ``n_init=4``.
2. Dense(W) against BlockDiagonalDense(W, groups=K) for K = 2, 4, 8 in every implementation, timed
   in LiteRT in interleaved rounds (:func:`tf_groupsparse.deploy.tflite_latency_rounds`); speed-up = dense /
   block latency of the same run (target: >= 0.8 K).

    python -m benchmarks.grouping_speed                 # full run
    python -m benchmarks.grouping_speed --quick         # smaller, fewer runs (smoke run)
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
from sklearn.metrics import adjusted_rand_score

from benchmarks.harness import median_us, publish, render
from tf_groupsparse.deploy import convert_tflite, tflite_latency_rounds
from tf_groupsparse.grouping.em import fit_groups
from tf_groupsparse.grouping.rewrite import TARGETS
from tf_groupsparse.layers import BlockDiagonalDense

IMPLEMENTATIONS = ("batched", "grouped_conv", "split")


def planted_kernel(n, k, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n // k)
    w = rng.normal(0, 0.05, (n, n)) + (labels[:, None] == labels[None, :]) * rng.normal(0, 1, (n, n))
    pi, po = rng.permutation(n), rng.permutation(n)
    return w[pi][:, po].astype("float32"), labels[pi], labels[po]


def time_fit(n, k, n_init):
    w, c_true, g_true = planted_kernel(n, k)
    model = keras.Sequential([keras.Input((n,)), keras.layers.Dense(n, name="big"), keras.layers.Dense(2)])
    model.get_layer("big").kernel.assign(w)
    kwargs = {} if n_init is None else {"n_init": n_init}
    start, cpu = time.perf_counter(), time.process_time()
    s = fit_groups(model, k, random_state=0, **kwargs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"width": n, "n_groups": k, "n_init": n_init or "default (auto: 1 at this size)",
            "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
            "ari_inputs": round(adjusted_rand_score(c_true, s["big"].input_groups), 4),
            "ari_outputs": round(adjusted_rand_score(g_true, s["big"].output_groups), 4)}


def layer_model(width, k=None, implementation=None, seed=0):
    keras.utils.set_random_seed(seed)
    layer = (keras.layers.Dense(width) if k is None
             else BlockDiagonalDense(width, groups=k, implementation=implementation))
    return keras.Sequential([keras.Input((width,)), layer])


def latency_table(width, ks, batch, runs, rounds):
    x = np.random.default_rng(0).standard_normal((batch, width)).astype("float32")
    configs = {("dense", 1): convert_tflite(layer_model(width)),
               **{(impl, k): convert_tflite(layer_model(width, k, impl)) for k in ks for impl in IMPLEMENTATIONS}}
    lat = median_us(tflite_latency_rounds(configs, x, rounds=rounds, runs=runs, warmup=max(5, runs // 10)))
    dense = lat.pop(("dense", 1))
    rows = [{"width": width, "batch": batch, "layer": "Dense", "K": 1, "implementation": "-",
             "latency_us": round(dense, 2), "speedup": 1.0, "target_speedup": None, "meets_target": None}]
    for (impl, k), us in lat.items():
        rows.append({"width": width, "batch": batch, "layer": "BlockDiagonalDense", "K": k, "implementation": impl,
                     "targets": ",".join(t for t, v in TARGETS.items() if v == impl) or "-",
                     "latency_us": round(us, 2), "speedup": round(dense / us, 3),
                     "target_speedup": round(0.8 * k, 2), "meets_target": bool(dense / us >= 0.8 * k)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-width", type=int, default=4096,
                        help="width of the layer grouped by fit_groups (default %(default)s)")
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048],
                        help="layer widths timed in LiteRT (default %(default)s)")
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8], help="numbers of blocks (default %(default)s)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes (default %(default)s)")
    parser.add_argument("--runs", type=int, default=200, help="timed invokes per measurement (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="fit width 1024, width 1024, batch 1, 50 runs, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.fit_width, args.widths, args.batches, args.runs, args.rounds = 1024, [1024], [1], 50, 2

    fit_rows = [time_fit(args.fit_width, 4, n_init) for n_init in (None, 4)]
    rows = [r for width in args.widths for batch in args.batches
            for r in latency_table(width, args.ks, batch, args.runs, args.rounds)]

    md = render("Grouping speed", "## fit_groups (4 planted blocks + noise, permuted; target <= 5 s)",
                "Wall time depends on the load other processes put on the 2 shared cores; CPU time is the process's "
                "own (all threads).", fit_rows, "## One layer in LiteRT (XNNPack delegate, 1 thread; speedup vs Dense "
                "of the same width, target >= 0.8 K)", f"Target mapping of `to_block_diagonal`/`for_target`: {TARGETS}",
                rows)
    publish("grouping_speed", {"fit_groups": fit_rows, "latency": rows, "settings": vars(args), "targets": TARGETS}, md,
            args.quick)


if __name__ == "__main__":
    main()
