"""LiteRT latency of shrunk models whose widths are rounded up with ``shrink(channel_multiple=...)``.

XNNPack computes output channels in tiles, so a layer's latency is not proportional to its width.
Three parts, each timed in interleaved rounds (LiteRT, XNNPack, 1 thread, batch 1, median):

1. ``scan``: 784-w-64-10 MLPs (random weights) for w = 96 ... 160: latency against width.
2. ``mlp``: the suite's 784-1000-500-10 MLP with units zeroed so that 102 and 344 stay alive
   (the widths group lasso 1.5e-3 left in the suite), shrunk exactly (``threshold=0``) with no
   rounding and with ``channel_multiple`` 8 and 16.
3. ``vgg``: the suite's VGG-style 16-32-64 CNN (no BatchNormalization) with filters zeroed so that
   11-13-22-27-45-51 stay alive, shrunk the same ways.

Every shrunk model's outputs are compared with the unshrunk model's (they must agree: the kept
extra channels are zero).

Run: ``python -m benchmarks.channel_multiple`` (about a minute); writes
``benchmarks/results/channel_multiple.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.harness import time_rounds, write_results  # noqa: E402

MULTIPLES = (None, 8, 16)


def zero_all_but(model, alive):
    """Zero every output channel (kernel column and bias) of each layer in `alive` but the first n."""
    for name, n in alive.items():
        layer = model.get_layer(name)
        kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
        kernel[..., n:], bias[n:] = 0.0, 0.0
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    return model


def time_all(blobs, x, rounds, runs):
    """{key: median latency in µs} over `rounds` interleaved rounds of `runs` invokes."""
    return {k: 1e6 * statistics.median(v) for k, v in time_rounds(blobs, x, rounds=rounds, runs=runs).items()}


def shrink_cases(keras, model, x, layers):
    """(rows, blobs) for `model` shrunk with every multiple of :data:`MULTIPLES`."""
    import numpy as np

    from tf_groupsparse.deploy import convert_tflite
    from tf_groupsparse.metrics import flops
    from tf_groupsparse.pruning.shrink import shrink

    reference = model.predict(x, verbose=0)
    rows, blobs = [], {}
    for multiple in MULTIPLES:
        small = shrink(model, threshold=0, round_to=multiple)
        widths = [int(small.get_layer(n).kernel.shape[-1]) for n in layers]
        key = f"multiple {multiple}" if multiple else "no rounding"
        rows.append({"case": key, "widths": widths, "params": small.count_params(), "macs": flops(small),
                     "max_abs_error": float(np.abs(small.predict(x, verbose=0) - reference).max())})
        blobs[key] = convert_tflite(small)
    return rows, blobs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--scan", type=int, nargs=3, default=(96, 161, 4), metavar=("START", "STOP", "STEP"),
                        help="first widths of the scan, as range(START, STOP, STEP)")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from benchmarks.suite import models
    from tf_groupsparse.deploy import convert_tflite

    rng = np.random.default_rng(0)
    x = rng.random((1, 28, 28, 1)).astype("float32")
    probe = rng.random((32, 28, 28, 1)).astype("float32")

    # 1. width scan
    scan = {}
    for w in range(*args.scan):
        spec = {"arch": "mlp", "input_shape": [28, 28, 1], "classes": 10, "widths": [w, 64]}
        scan[w] = convert_tflite(models.build(keras, spec))
    scan_us = time_all(scan, x, args.rounds, args.runs)

    # 2./3. shrunk suite models
    parts = {}
    mlp = models.build(keras, {"arch": "mlp", "input_shape": [28, 28, 1], "classes": 10, "widths": [1000, 500]})
    vgg = models.build(keras, {"arch": "vgg", "input_shape": [28, 28, 1], "classes": 10, "widths": [16, 32, 64],
                               "batch_norm": False})
    vgg_layers = ["s1c1_conv", "s1c2_conv", "s2c1_conv", "s2c2_conv", "s3c1_conv", "s3c2_conv"]
    for name, model, alive in (("mlp", mlp, {"fc1": 102, "fc2": 344}),
                               ("vgg", vgg, dict(zip(vgg_layers, (11, 13, 22, 27, 45, 51))))):
        rows, blobs = shrink_cases(keras, zero_all_but(model, alive), probe, list(alive))
        us = time_all(blobs, x, args.rounds, args.runs)
        for row in rows:
            row["latency_us"] = us[row["case"]]
            row["speedup_vs_no_rounding"] = us["no rounding"] / us[row["case"]]
        parts[name] = rows
        print(name, [(r["case"], r["widths"], round(r["latency_us"], 1)) for r in rows], flush=True)

    md = ["# Rounding shrunk widths to multiples of a tile (`shrink(channel_multiple=...)`)", "",
          f"LiteRT float32, XNNPack, 1 thread, batch 1; median of {args.rounds} interleaved rounds of "
          f"{args.runs} invokes.", "", "## 784-w-64-10 MLP: latency against the first width", "",
          "| w | " + " | ".join(str(w) for w in scan_us) + " |", "|---|" + "---|" * len(scan_us),
          "| µs | " + " | ".join(f"{v:.1f}" for v in scan_us.values()) + " |", ""]
    titles = {"mlp": "784-1000-500-10 MLP, 102 and 344 units alive",
              "vgg": "VGG-style 16-32-64 CNN, 11-13-22-27-45-51 filters alive"}
    for name, rows in parts.items():
        md += [f"## {titles[name]}", "", "| shrink | widths | params | MACs | max abs error | µs | speed-up |",
               "|---|---|---|---|---|---|---|"]
        md += [f"| {r['case']} | {'-'.join(map(str, r['widths']))} | {r['params']:,} | {r['macs']:,} | "
               f"{r['max_abs_error']:.1e} | {r['latency_us']:.1f} | {r['speedup_vs_no_rounding']:.2f} |" for r in rows]
        md.append("")
    write_results("channel_multiple", {"rounds": args.rounds, "runs": args.runs,
                                       "scan_us": {str(k): v for k, v in scan_us.items()}, "parts": parts},
                  "\n".join(md))
    return scan_us, parts


if __name__ == "__main__":
    main()
