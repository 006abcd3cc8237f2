"""LiteRT latency of widths rounded to XNNPack's tiles: ``shrink`` rounding up, ``prune_filters`` down.

XNNPack computes output channels in tiles (16 on this project's AVX2 CPU: a 3x3 conv with 17-32
filters costs the same as one with 32), so latency is not proportional to width. Each part times
its models (random weights) in interleaved rounds: ``shrink`` (``results/channel_multiple.*``) a
784-w-64-10 MLP scan and the suite's shrunk MLP and VGG-style CNN widths shrunk with no rounding and
with ``channel_multiple`` 8 and 16 (outputs compared); ``tiles`` (``results/tile_widths.*``) one
Conv2D's scan and the suite's wide VGG with its ``filter_pruning_strong`` widths, rounded down and up.

    python -m benchmarks.channel_multiple                  # both parts (about two minutes)
    python -m benchmarks.channel_multiple --parts shrink   # channel_multiple.{json,md} only
    python -m benchmarks.channel_multiple --parts tiles    # tile_widths.{json,md} only
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.harness import max_abs_error, median_us, publish, render  # noqa: E402
from tf_groupsparse.deploy import paired_ratio, tflite_latency_rounds  # noqa: E402

MULTIPLES = (None, 8, 16)
#: name -> per-conv widths of the wide VGG-style net (two convs per stage, max-pool after each stage)
VGG_CASES = {
    "dense": [32, 32, 64, 64, 128, 128],
    "pruned (filter_pruning_strong)": [16, 20, 36, 37, 64, 70],
    "pruned, rounded down to 8 or 16": [16, 16, 32, 32, 64, 64],
    "pruned, rounded up to 8": [16, 24, 40, 40, 64, 72],
    "pruned, rounded up to 16": [16, 32, 48, 48, 64, 80],
    "16-16-32-32-48-64": [16, 16, 32, 32, 48, 64],
}


def zero_all_but(model, alive):
    """Zero every output channel (kernel column and bias) of each layer in `alive` but the first n."""
    for name, n in alive.items():
        layer = model.get_layer(name)
        kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
        kernel[..., n:], bias[n:] = 0.0, 0.0
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    return model


def shrink_cases(model, x, layers):
    """(rows, blobs) for `model` shrunk with every multiple of :data:`MULTIPLES`."""
    from tf_groupsparse.deploy import convert_tflite
    from tf_groupsparse.metrics import flops
    from tf_groupsparse.pruning.shrink import shrink

    rows, blobs = [], {}
    for multiple in MULTIPLES:
        small = shrink(model, threshold=0, round_to=multiple)
        key = f"multiple {multiple}" if multiple else "no rounding"
        rows.append({"case": key, "widths": [int(small.get_layer(n).kernel.shape[-1]) for n in layers],
                     "params": small.count_params(), "macs": flops(small),
                     "max_abs_error": max_abs_error(small, model, x)})
        blobs[key] = convert_tflite(small)
    return rows, blobs


def scan_rows(label, scan_us, per_table=16):
    """The latency scan as one-row tables (``label | width ...``, then ``µs | latency ...``) of `per_table` widths."""
    widths = list(scan_us)
    return [[{label: "µs", **{str(w): scan_us[w] for w in widths[i:i + per_table]}}]
            for i in range(0, len(widths), per_table)]


def shrink_part(args, keras, rng):
    """Shrunk widths rounded up (``shrink(channel_multiple=...)``): scan and the suite's two models."""
    from benchmarks.suite import models
    from tf_groupsparse.deploy import convert_tflite

    x = rng.random((1, 28, 28, 1)).astype("float32")
    probe = rng.random((32, 28, 28, 1)).astype("float32")
    scan = {w: convert_tflite(models.build(keras, models.spec("mlp", [w, 64]))) for w in range(*args.mlp_scan)}
    scan_us = median_us(tflite_latency_rounds(scan, x, rounds=args.rounds, runs=args.runs))
    vgg_layers = ["s1c1_conv", "s1c2_conv", "s2c1_conv", "s2c2_conv", "s3c1_conv", "s3c2_conv"]
    parts = {}
    for name, spec, alive in (("mlp", models.spec("mlp", [1000, 500]), {"fc1": 102, "fc2": 344}),
                              ("vgg", models.spec("vgg", [16, 32, 64], batch_norm=False),
                               dict(zip(vgg_layers, (11, 13, 22, 27, 45, 51))))):
        rows, blobs = shrink_cases(zero_all_but(models.build(keras, spec), alive), probe, list(alive))
        us = median_us(tflite_latency_rounds(blobs, x, rounds=args.rounds, runs=args.runs))
        for row in rows:
            row["latency_us"] = us[row["case"]]
            row["speedup_vs_no_rounding"] = us["no rounding"] / us[row["case"]]
        parts[name] = rows
        print(name, [(r["case"], r["widths"], round(r["latency_us"], 1)) for r in rows], flush=True)

    md = render("Rounding shrunk widths to multiples of a tile (`shrink(channel_multiple=...)`)", timing(args),
                "## 784-w-64-10 MLP: latency against the first width", *scan_rows("w", scan_us, len(scan_us)),
                "## 784-1000-500-10 MLP, 102 and 344 units alive", parts["mlp"],
                "## VGG-style 16-32-64 CNN, 11-13-22-27-45-51 filters alive", parts["vgg"])
    publish("channel_multiple", {"rounds": args.rounds, "runs": args.runs,
                                 "scan_us": {str(k): v for k, v in scan_us.items()}, "parts": parts}, md)
    return scan_us, parts


def tiles_part(args, keras, rng):
    """Conv widths that do or do not fill the tiles: one conv's scan and the wide VGG's widths."""
    from benchmarks.suite import models
    from tf_groupsparse.deploy import convert_tflite
    from tf_groupsparse.metrics import flops

    def single_conv(filters):
        inputs = keras.Input((14, 14, 32))
        return keras.Model(inputs, keras.layers.Conv2D(filters, 3, padding="same")(inputs))

    keras.utils.set_random_seed(0)
    scan = {w: convert_tflite(single_conv(w)) for w in range(*args.conv_scan)}
    scan_us = median_us(tflite_latency_rounds(scan, rng.random((1, 14, 14, 32)).astype("float32"),
                                              rounds=args.rounds, runs=args.runs))
    nets = {name: models.build(keras, models.spec("vgg", [], conv_widths=w, batch_norm=False))
            for name, w in VGG_CASES.items()}
    times = tflite_latency_rounds({k: convert_tflite(m) for k, m in nets.items()},
                                  rng.random((1, 28, 28, 1)).astype("float32"), rounds=args.rounds, runs=args.runs)
    us, dense_macs, rows = median_us(times), flops(nets["dense"]), []
    for name, model in nets.items():
        macs = flops(model)
        rows.append({"case": name, "widths": VGG_CASES[name], "macs": macs, "macs_x": dense_macs / macs,
                     "latency_us": us[name], "speedup": paired_ratio(times["dense"], times[name]),
                     "macs_per_us": macs / us[name]})
        print(name, VGG_CASES[name], f"{us[name]:.1f} µs", flush=True)

    md = render("Conv widths and XNNPack tiles (`prune_filters(channel_multiple=...)`)",
                timing(args) + " Random weights.",
                "## One Conv2D 3x3 on a 14x14x32 input: latency against its number of filters",
                *scan_rows("filters", scan_us),
                "## VGG-style CNN (28x28x1 input, no BatchNormalization): per-conv widths",
                "Speed-up: the median over rounds of the dense net's latency over the row's, timed in the same round.",
                rows)
    publish("tile_widths", {"rounds": args.rounds, "runs": args.runs,
                            "scan_us": {str(k): v for k, v in scan_us.items()}, "vgg": rows}, md)
    return scan_us, rows


def timing(args):
    return (f"LiteRT float32, XNNPack, 1 thread, batch 1; median of {args.rounds} interleaved rounds of {args.runs} "
            "invokes.")


PARTS = {"shrink": shrink_part, "tiles": tiles_part}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--mlp-scan", type=int, nargs=3, default=(96, 161, 4), metavar=("START", "STOP", "STEP"),
                        help="first widths of the shrink part's MLP scan, as range(START, STOP, STEP)")
    parser.add_argument("--conv-scan", type=int, nargs=3, default=(8, 65, 1), metavar=("START", "STOP", "STEP"),
                        help="conv widths of the tiles part's scan, as range(START, STOP, STEP)")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    return {part: PARTS[part](args, keras, np.random.default_rng(0)) for part in args.parts}


if __name__ == "__main__":
    main()
