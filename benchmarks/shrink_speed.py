"""LiteRT speed-up of a shrunk group-sparse CNN against its dense export, and shrink() time on ResNet50.

Protocol and the reasons for its settings: docs/benchmarks/speed.md, "Shrink speed: protocol".

    python -m benchmarks.shrink_speed            # Fashion-MNIST subset, ResNet50 (~10 min on 2 cores)
    python -m benchmarks.shrink_speed --quick    # digits, tiny CNN, a small residual net (smoke run)
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np

from benchmarks.harness import (accuracy, cnn, load, max_abs_error, median_us, publish, render,
                                timed, train, verdict)
from tf_groupsparse.callbacks import ProximalStep
from tf_groupsparse.deploy import convert_tflite, paired_ratio, run_tflite, tflite_latency_rounds
from tf_groupsparse.metrics import count_params, flops, layer_costs
from tf_groupsparse import regularize
from tf_groupsparse.regularizers import GroupLasso
from tf_groupsparse.pruning.shrink import shrink

SPEEDUP_FRACTION = 0.8  # target: latency speedup >= SPEEDUP_FRACTION x FLOP ratio
RESNET_TARGET_S = 30.0  # target: shrink() on ResNet50 in less than this
XNNPACK_TILE = 16  # output channels per tile of XNNPack's f32 conv kernels on this CPU


def build_cnn(input_shape, widths=(32, 32, 64, 64, 128), n_classes=10, seed=0):
    """VGG-style CNN: conv w1-w2-pool-w3-w4-pool-w5, global average pooling, Dense logits."""
    w1, w2, w3, w4, w5 = widths
    return cnn(input_shape, (w1, w2, "pool", w3, w4, "pool", w5), n_classes, seed, "vgg_cnn")


def penalized_layers(model):
    """The convolutions after the first (not the classifier: docs/benchmarks/speed.md)."""
    return [layer.name for layer in model.layers if getattr(layer, "kernel", None) is not None][1:-1]


def build_tiny_resnet(input_shape=(32, 32, 3), width=16, blocks=2, n_classes=10):
    """A small functional residual network (bottleneck blocks with BatchNorm) for smoke runs."""
    L = keras.layers
    x = inputs = keras.Input(input_shape)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(L.Conv2D(4 * width, 3, padding="same",
                                                                               name="stem_conv")(x)))
    for b in range(1, blocks + 1):
        y = x
        for j, (w, k) in enumerate(((width, 1), (width, 3), (4 * width, 1)), 1):
            y = L.Conv2D(w, k, padding="same", name=f"block{b}_{j}_conv")(y)
            y = L.BatchNormalization(name=f"block{b}_{j}_bn")(y)
            y = L.ReLU(name=f"block{b}_{j}_relu")(y) if j < 3 else y
        x = L.ReLU(name=f"block{b}_out")(L.Add(name=f"block{b}_add")([x, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(n_classes, name="logits")(x), name="tiny_resnet")


RESNETS = {"ResNet50": lambda: keras.applications.ResNet50(weights=None, classifier_activation=None),
           "tiny_resnet": build_tiny_resnet}


def zero_random_filters(model, fraction, seed=0):
    """A copy of `model` with a random `fraction` of every Conv2D's filters (and biases) set to 0."""
    rng = np.random.default_rng(seed)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    zeroed = 0
    for layer in copy.layers:
        if type(layer) is keras.layers.Conv2D:
            values, hit = layer.get_weights(), rng.random(layer.filters) < fraction
            for v in values[:1 + layer.use_bias]:
                v[..., hit] = 0.0
            layer.set_weights(values)
            zeroed += int(hit.sum())
    return copy, zeroed


def time_shrink(model, x, threshold=1e-3):
    """Wall time of shrink(model), what it removed and the largest output change on `x`."""
    (small, report), seconds = timed(shrink, model, threshold, return_report=True)
    t = report.totals
    return small, {"seconds": round(seconds, 3), **{k: t[k] for k in ("groups_removed", "params_before", "params_after")},
                   "params_removed_fraction": round(t["params_removed_fraction"], 4),
                   "max_abs_error": max_abs_error(model, small, x)}


def tile_padded_macs(model, tile=XNNPACK_TILE):
    """MACs with every Conv/Dense layer's output channels rounded up to a multiple of `tile`."""
    total = 0
    for row in layer_costs(model).rows:
        kernel = getattr(model.get_layer(row["layer"]), "kernel", None)
        c_out = int(kernel.shape[-1]) if kernel is not None else 0
        total += row["macs"] * (-(-c_out // tile) * tile) // c_out if c_out else row["macs"]
    return int(total)


def input_group_norms(model, names):
    """Per layer in `names`: the L2 norms of its input-channel groups ``W[..., i, :]``."""
    kernels = {n: np.moveaxis(np.asarray(model.get_layer(n).kernel.numpy(), "float64"), -2, 0) for n in names}
    return {n: np.linalg.norm(k.reshape(len(k), -1), axis=1) for n, k in kernels.items()}


def threshold_row(model, threshold, x, penalized):
    """Groups, MACs and output error of shrink(model, threshold), with the near-zero group count."""
    norms = np.concatenate(list(input_group_norms(model, penalized).values()))
    small, report = shrink(model, threshold, return_report=True)
    return {"threshold": threshold, "groups_removed": report.totals["groups_removed"],
            "exact_zero_input_groups": int(np.sum(norms == 0)),
            "nonzero_input_groups_below_threshold": int(np.sum((norms > 0) & (norms < threshold))),
            "macs": flops(small), "max_abs_error": max_abs_error(model, small, x)}


def channel_widths(model):
    return {layer.name: int(layer.kernel.shape[-1]) for layer in model.layers
            if getattr(layer, "kernel", None) is not None}


def cnn_part(args, data):
    """Train dense and group-sparse CNNs, shrink, export both, measure latency and FLOPs."""
    (x, y), (xt, yt) = data
    dense = build_cnn(x.shape[1:], tuple(args.widths))
    sparse = regularize(build_cnn(x.shape[1:], tuple(args.widths)), GroupLasso(args.strength, axis="input"),
                        layers=penalized_layers(dense), proximal=True)
    # SGD rather than Adam, which brings zeroed groups back (docs/benchmarks/speed.md)
    train_kw = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "sgd", "learning_rate": args.lr,
                "cosine": False}
    dense_fit_s = train(dense, x, y, **train_kw)
    sparse_fit_s = train(sparse, x, y, callbacks=[ProximalStep()], **train_kw)
    check = xt[: args.check_samples]
    small, shrunk = time_shrink(sparse, check, args.threshold)

    flat = {"dense": convert_tflite(dense), "sparse_unshrunk": convert_tflite(sparse), "shrunk": convert_tflite(small)}
    tflite_error = float(np.max(np.abs(run_tflite(flat["shrunk"], check) - small.predict(check, verbose=0))))
    load_before = os.getloadavg()
    samples = tflite_latency_rounds(flat, xt[:1], runs=args.runs, warmup=args.warmup, rounds=args.rounds)
    load_after = os.getloadavg()

    macs = {"dense": flops(dense), "shrunk": flops(small)}
    flop_ratio = macs["dense"] / macs["shrunk"]
    speedup = paired_ratio(samples["dense"], samples["shrunk"])
    padded = {"dense": tile_padded_macs(dense), "shrunk": tile_padded_macs(small)}
    return {
        "widths_dense": channel_widths(dense), "widths_shrunk": channel_widths(small),
        "train_seconds": {"dense": round(dense_fit_s, 1), "sparse": round(sparse_fit_s, 1)},
        "test_accuracy": {"dense": accuracy(dense, xt, yt), "sparse": accuracy(sparse, xt, yt),
                          "shrunk": accuracy(small, xt, yt)},
        "shrink_seconds": shrunk["seconds"], "groups_removed": shrunk["groups_removed"],
        "max_abs_error_keras": shrunk["max_abs_error"],
        "thresholds": [threshold_row(sparse, t, check, penalized_layers(dense)) for t in sorted({args.threshold, 1e-3})],
        "max_abs_error_tflite_vs_keras": tflite_error,
        "params": {"dense": count_params(dense), "shrunk": count_params(small)}, "macs": macs,
        "tflite_bytes": {name: len(b) for name, b in flat.items()},
        "latency_us": {name: round(v, 2) for name, v in median_us(samples).items()},
        "latency_rounds_us": {name: [round(s * 1e6, 2) for s in v] for name, v in samples.items()},
        "flop_ratio": round(flop_ratio, 4), "tile_padded_macs": padded,
        "tile_padded_flop_ratio": round(padded["dense"] / padded["shrunk"], 4),
        "speedup": round(speedup, 4),
        "speedup_sparse_unshrunk": round(paired_ratio(samples["dense"], samples["sparse_unshrunk"]), 4),
        "speedup_over_flop_ratio": round(speedup / flop_ratio, 4),
        "target": f"speedup >= {SPEEDUP_FRACTION} x FLOP ratio", "met": bool(speedup >= SPEEDUP_FRACTION * flop_ratio),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
    }


def resnet_part(name, fraction, samples=2, seed=0):
    """shrink() time on `name` with nothing to remove and after zeroing random filters."""
    model, build_s = timed(RESNETS[name])
    x = np.random.default_rng(seed).normal(size=(samples, *model.input_shape[1:])).astype("float32")
    zeroed_model, zeroed = zero_random_filters(model, fraction, seed)
    rows = [{"model": name, "case": case, "filters_zeroed": n, **time_shrink(m, x)[1]} for case, n, m in (
        ("nothing to remove", 0, model), (f"random {fraction:.0%} of Conv2D filters zeroed", zeroed, zeroed_model))]
    for r in rows:
        r.update(target_s=RESNET_TARGET_S, met=bool(r["seconds"] < RESNET_TARGET_S))
    return {"build_seconds": round(build_s, 2), "rows": rows}


def markdown(data_name, settings, c, resnet):
    """The results page (the protocol: docs/benchmarks/speed.md, "Shrink speed: protocol")."""
    models = [{"model": name, "channels": list(c[f"widths_{size}"].values()), "params": c["params"][size],
               "MACs": c["macs"][size], "test accuracy": c["test_accuracy"][acc],
               "TFLite bytes": c["tflite_bytes"][blob], "latency (us)": c["latency_us"][blob]}
              for name, size, acc, blob in (
        ("dense", "dense", "dense", "dense"), ("group-sparse, unshrunk", "dense", "sparse", "sparse_unshrunk"),
        ("group-sparse, shrunk", "shrunk", "shrunk", "shrunk"))]
    keys = ("flop_ratio", "tile_padded_flop_ratio", "speedup", "speedup_sparse_unshrunk", "speedup_over_flop_ratio",
            "groups_removed", "shrink_seconds", "max_abs_error_keras", "max_abs_error_tflite_vs_keras")
    load = c["load_average_1min"]
    return render(f"Shrink speed ({data_name})",
                  "## Group-sparse CNN: LiteRT latency of the shrunk export vs the dense export",
                  settings, models, {k: c[k] for k in keys},
                  f"Target {c['target']}: {verdict(c['met'])}. 1-min load average {load['before']} before, "
                  f"{load['after']} after the latency measurement.", "## shrink of the same model at other thresholds",
                  c["thresholds"], f"## shrink() time (target < {RESNET_TARGET_S:g} s)", resnet["rows"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="digits data, widths 8-8-16-16-32, 10 epochs, a tiny residual net (smoke run)")
    for flag, default, text in (
            ("--samples", 12000, "training samples"), ("--epochs", 5, ""), ("--batch-size", 64, ""),
            ("--lr", 0.05, "SGD learning rate, momentum 0.9"),
            ("--strength", 0.04, "group lasso strength; prox step lr * strength"),
            ("--threshold", 1e-9, "shrink threshold (1e-3 is also reported)"),
            ("--runs", 200, "timed invokes per round"), ("--warmup", 20, ""), ("--rounds", 10, "interleaved rounds"),
            ("--check-samples", 512, "test images for the output comparisons"),
            ("--zero-fraction", 0.3, "fraction of filters zeroed per Conv2D")):
        parser.add_argument(flag, type=type(default), default=default, help=f"{text} (default: %(default)s)".lstrip())
    parser.add_argument("--widths", type=int, nargs=5, default=[32, 32, 64, 64, 128],
                        help="conv widths (default: %(default)s)")
    parser.add_argument("--resnet", choices=tuple(RESNETS), default="ResNet50", help="(default: %(default)s)")
    args = parser.parse_args(argv)

    if args.quick:
        x, y, xt, yt = load("digits")
        data_name = "digits"
        args.widths, args.epochs, args.runs, args.rounds, args.warmup = [8, 8, 16, 16, 32], 10, 50, 3, 5
        args.resnet, args.strength, args.lr = "tiny_resnet", 0.1, 0.05
    else:
        x, y, xt, yt = load("fashion", args.samples)
        data_name = f"Fashion-MNIST, {len(x)} training images, {len(xt)} test images"
    cnn_rows = cnn_part(args, ((x, y), (xt, yt)))
    keras.backend.clear_session()
    resnet = resnet_part(args.resnet, args.zero_fraction)
    payload = {"data": data_name, "settings": vars(args), "cnn": cnn_rows, "resnet": resnet}
    publish("shrink_speed", payload, markdown(data_name, vars(args), cnn_rows, resnet), args.quick)
    return payload


if __name__ == "__main__":
    main()
