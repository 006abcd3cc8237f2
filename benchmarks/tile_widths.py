"""LiteRT latency of conv layers and VGG-style CNNs whose widths do or do not fill XNNPack's tiles.

XNNPack's float convolutions compute output channels in blocks (16 on this project's AVX2 CPU:
a 3x3 conv with 17-32 filters costs the same, and 33-48 the next step up), so a conv whose
width leaves a remainder over a multiple of 16 pays for the whole block. Two parts, each timed
in interleaved rounds (LiteRT, XNNPack, 1 thread, batch 1, median of the rounds; random weights,
since latency does not depend on the values):

1. ``scan``: one Conv2D 3x3 on a 14x14x32 input with w = 8 ... 64 filters: latency against w.
2. ``vgg``: the suite's wide VGG-style CNN (32-32-64-64-128-128, no BatchNormalization) and the
   per-layer widths filter pruning left in it (``filter_pruning_strong`` in the suite:
   16-20-36-37-64-70), with those widths rounded down (to 8 or 16 alike here) and up to multiples
   of 8 and 16, and a 16-16-32-32-48-64 net: MACs and latency against the dense net measured in
   the same rounds.

This is what ``prune_filters(channel_multiple=16)`` (rounding down) is for: the rounded-down net
has ~20% fewer MACs than the unrounded one, but is much faster than that alone would make it,
while rounding up (more MACs, but whole tiles) is no faster.

Run: ``python -m benchmarks.tile_widths`` (about a minute); writes
``benchmarks/results/tile_widths.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.harness import write_results  # noqa: E402

#: name -> per-conv widths of the VGG-style net (two convs per stage, max-pool after each stage)
VGG_CASES = {
    "dense": [32, 32, 64, 64, 128, 128],
    "pruned (filter_pruning_strong)": [16, 20, 36, 37, 64, 70],
    "pruned, rounded down to 8 or 16": [16, 16, 32, 32, 64, 64],
    "pruned, rounded up to 8": [16, 24, 40, 40, 64, 72],
    "pruned, rounded up to 16": [16, 32, 48, 48, 64, 80],
    "16-16-32-32-48-64": [16, 16, 32, 32, 48, 64],
}


def single_conv(keras, filters, input_shape=(14, 14, 32)):
    """One Conv2D 3x3 'same' with `filters` outputs."""
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Conv2D(filters, 3, padding="same")(inputs))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--scan", type=int, nargs=3, default=(8, 65, 1), metavar=("START", "STOP", "STEP"),
                        help="conv widths of the scan, as range(START, STOP, STEP)")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from benchmarks.harness import time_rounds
    from benchmarks.suite import models as suite_models
    from tf_groupsparse.deploy import convert_tflite
    from tf_groupsparse.metrics import flops

    def interleaved(blobs, x):  # {key: [per-round latency in µs]}
        seconds = time_rounds(blobs, x, runs=args.runs, warmup=5, rounds=args.rounds)
        return {k: [1e6 * t for t in v] for k, v in seconds.items()}

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    scan_blobs = {w: convert_tflite(single_conv(keras, w)) for w in range(*args.scan)}
    scan_us = {w: statistics.median(v)
               for w, v in interleaved(scan_blobs, rng.random((1, 14, 14, 32)).astype("float32")).items()}

    models = {name: suite_models.build(keras, {"arch": "vgg", "input_shape": [28, 28, 1], "classes": 10,
                                               "widths": [], "conv_widths": widths, "batch_norm": False})
              for name, widths in VGG_CASES.items()}
    times = interleaved({k: convert_tflite(m) for k, m in models.items()}, rng.random((1, 28, 28, 1)).astype("float32"))
    dense_macs = flops(models["dense"])
    rows = []
    for name, model in models.items():
        macs = flops(model)
        us = statistics.median(times[name])
        rows.append({"case": name, "widths": VGG_CASES[name], "macs": macs, "macs_x": dense_macs / macs,
                     "latency_us": us,
                     "speedup": statistics.median(d / t for d, t in zip(times["dense"], times[name])),
                     "macs_per_us": macs / us})
        print(name, VGG_CASES[name], f"{us:.1f} µs", flush=True)

    md = ["# Conv widths and XNNPack tiles (`prune_filters(channel_multiple=...)`)", "",
          f"LiteRT float32, XNNPack, 1 thread, batch 1; median of {args.rounds} interleaved rounds of "
          f"{args.runs} invokes; random weights.", "",
          "## One Conv2D 3x3 on a 14x14x32 input: latency against its number of filters", ""]
    widths = list(scan_us)
    for start in range(0, len(widths), 16):  # 16 widths per table
        part = widths[start:start + 16]
        md += ["| filters | " + " | ".join(str(w) for w in part) + " |", "|---|" + "---|" * len(part),
               "| µs | " + " | ".join(f"{scan_us[w]:.1f}" for w in part) + " |", ""]
    md += ["## VGG-style CNN (28x28x1 input, no BatchNormalization): per-conv widths", "",
          "Speed-up: the median over rounds of the dense net's latency over the row's, timed in the same round.", "",
          "| net | widths | MACs | MACs x | µs | speed-up | MACs per µs |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['case']} | {'-'.join(map(str, r['widths']))} | {r['macs']:,} | {r['macs_x']:.2f} | "
           f"{r['latency_us']:.1f} | {r['speedup']:.2f} | {r['macs_per_us']:,.0f} |" for r in rows]
    md.append("")
    write_results("tile_widths", {"rounds": args.rounds, "runs": args.runs,
                                  "scan_us": {str(k): v for k, v in scan_us.items()}, "vgg": rows}, "\n".join(md))
    return scan_us, rows


if __name__ == "__main__":
    main()
