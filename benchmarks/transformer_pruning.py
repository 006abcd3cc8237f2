"""Transformer pruning benchmark: a ViT on Fashion-MNIST and sequence models on MNIST-1D, at half the MACs.

ViT (keras-hub ``ViTBackbone``: 28x28x1 images, patch 4 so 49 patches and a class token, width
128, 6 pre-norm blocks of 4 heads and MLP 256, a Dense head on the class token; 43.3 M MACs),
Fashion-MNIST, all 60,000 training images (the last 5,000 are the validation split), test set for
the figures. AdamW (weight decay ``WEIGHT_DECAY``), learning rate ``LEARNING_RATE`` decayed to 0
along a cosine, batch 128, XLA. Rows, each cached under ``benchmarks/results/transformer_cache/``:

- ``dense``: trained from scratch for ``EPOCHS`` epochs;
- ``prune_heads_mlp``: ``tgs.prune(dense, data, macs=0.5, importance="l2")`` with the residual
  width kept (``ignored_layers=["vit_patching_and_embedding"]``), so whole heads, key/value dims
  inside the heads and MLP units go; fine-tuned for ``FINE_TUNE_EPOCHS``;
- ``prune_all``: the same with every coupled group allowed (the residual width too);
- ``scaled``: a ViT of the same MACs from scratch (2 heads of 32 dims, MLP 128, every block),
  ``EPOCHS + FINE_TUNE_EPOCHS`` epochs;
- ``torch``: Torch-Pruning's head pruning of the same ViT in PyTorch (``benchmarks/torch_vit_peer.py``),
  same data and budget.

MNIST-1D (10,000 signals of length 40, 8,000 to train of which the last 1,000 validate, 2,000 to
test): a Conv1D front end with two post-norm attention blocks (Keras ``MultiHeadAttention``), and
an LSTM; each dense, pruned to half its MACs with ``tgs.prune`` and fine-tuned, and an equal-MACs
model from scratch. Per row: test accuracy, MACs, parameters, float LiteRT latency (XNNPack, one
thread, batch 1) and its ratio to the dense model timed in alternating rounds.

    python -m benchmarks.transformer_pruning                # every row not cached yet, then the summary
    python -m benchmarks.transformer_pruning --only mnist1d
    python -m benchmarks.transformer_pruning --summary-only
    python -m benchmarks.transformer_pruning --seeds 1 2 --kinds dense prune_heads_mlp scaled prune

Needs Fashion-MNIST (``apt-get install dataset-fashion-mnist``), the ``hub`` and ``bench`` extras.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = os.environ.get("TGS_BENCH_QUICK") == "1"
CACHE = RESULTS / ("transformer_cache_quick" if QUICK else "transformer_cache")
EPOCHS = 1 if QUICK else 4
FINE_TUNE_EPOCHS = 1 if QUICK else 2
SEQ_EPOCHS, SEQ_FINE_TUNE = (2, 1) if QUICK else (40, 10)
BATCH = 128
LEARNING_RATE = 5e-4
WEIGHT_DECAY = 0.05
VALIDATION = 5000
TARGET = 0.5
GOALS = {"accuracy_drop_points": 1.0, "latency_ratio": 1.5}
SUITES = ("vit", "mnist1d")


# --------------------------------------------------------------------------- data and models


def load_fashion():
    """``(x_train, y_train), (x_val, y_val), (x_test, y_test)``: 28x28x1 in [0, 1]."""
    import tf_groupsparse as tgs

    (x, y), (xt, yt) = tgs.datasets.load_fashion_mnist(download=False)
    x, xt = x.reshape(-1, 28, 28, 1).astype("float32"), xt.reshape(-1, 28, 28, 1).astype("float32")
    train = (x[:-VALIDATION][:2000], y[:-VALIDATION][:2000]) if QUICK else (x[:-VALIDATION], y[:-VALIDATION])
    n = 1000 if QUICK else None  # a quick run evaluates on 1,000 validation and test images
    return train, (x[-VALIDATION:][:n], y[-VALIDATION:][:n]), (xt[:n], yt[:n])


def load_sequences():
    """MNIST-1D: ``(x_train, y_train), (x_val, y_val), (x_test, y_test)`` of shape (N, 40, 1)."""
    import tf_groupsparse as tgs

    (x, y), (xt, yt) = tgs.datasets.load_mnist1d(n_samples=2000 if QUICK else 10000, seed=0)
    val = len(x) // 8
    return (x[:-val], y[:-val]), (x[-val:], y[-val:]), (xt, yt)


def vit(seed=0):
    """The ViT-Tiny-style classifier: keras-hub ViTBackbone and a Dense head on the class token."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(image_shape=(28, 28, 1), patch_size=4, num_layers=6, num_heads=4,
                                            hidden_dim=128, mlp_dim=256)
    return keras.Model(backbone.input, keras.layers.Dense(10, name="classes")(backbone.output[:, 0, :]), name="vit")


def vit_scaled(seed=0, num_heads=2, mlp=128):
    """A uniform ViT of fewer heads (32 dims each) and a narrower MLP, built from the toolkit's
    own PatchEmbedding and TransformerStack (keras-hub ties head size to width)."""
    import keras

    import tf_groupsparse as tgs

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = tgs.graph.PatchEmbedding((28, 28), (4, 4), 128, num_channels=1)(inp)
    x = tgs.graph.TransformerStack([{"num_heads": num_heads, "key_dim": 32, "intermediate_dim": mlp}] * 6)(x)
    return keras.Model(inp, keras.layers.Dense(10, name="classes")(x[:, 0, :]), name="vit_scaled")


def attention_1d(seed=0, num_heads=4, key_dim=16, ffn=128, width=64):
    """Conv1D front end, two post-norm attention blocks (MHA, feed-forward), mean pool, Dense."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inp = keras.Input((40, 1))
    x = L.Conv1D(width, 5, padding="same", activation="relu")(inp)
    for _ in range(2):
        x = L.LayerNormalization()(L.Add()([x, L.MultiHeadAttention(num_heads, key_dim)(x, x)]))
        h = L.Dense(width)(L.Dense(ffn, activation="relu")(x))
        x = L.LayerNormalization()(L.Add()([x, h]))
    return keras.Model(inp, L.Dense(10)(L.GlobalAveragePooling1D()(x)), name="attention_1d")


def lstm_1d(seed=0, units=64):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((40, 1))
    return keras.Model(inp, keras.layers.Dense(10)(keras.layers.LSTM(units)(inp)), name="lstm_1d")


def equal_macs(builder, target_macs, options):
    """The option of `builder` (keyword dicts) whose MACs are closest to `target_macs`."""
    import tf_groupsparse as tgs

    return min(options, key=lambda kw: abs(tgs.flops(builder(**kw)) - target_macs))


def train(model, data, epochs, seed):
    from benchmarks.harness import train as fit

    (x, y), _, _ = data
    if epochs:
        fit(model, x, y, epochs=epochs, batch_size=BATCH, optimizer="adamw", learning_rate=LEARNING_RATE,
            weight_decay=WEIGHT_DECAY, seed=seed, jit_compile=not QUICK)  # XLA pays off over full epochs
    return model


def measure(model, data):
    import tf_groupsparse as tgs
    from benchmarks.harness import accuracy
    from tf_groupsparse.deploy import convert_tflite

    _, (xv, yv), (xt, yt) = data
    return {"val_accuracy": accuracy(model, xv, yv), "test_accuracy": accuracy(model, xt, yt),
            "macs": tgs.flops(model), "params": tgs.count_params(model)}, convert_tflite(model)


# --------------------------------------------------------------------------- rows


def row(arch, kind, seed):
    """``(row, model)`` of one row; the dense model's weights are saved for the rows after it."""
    import tf_groupsparse as tgs

    data = load_fashion() if arch == "vit" else load_sequences()
    epochs, fine = (EPOCHS, FINE_TUNE_EPOCHS) if arch == "vit" else (SEQ_EPOCHS, SEQ_FINE_TUNE)
    builder = {"vit": vit, "attention_1d": attention_1d, "lstm_1d": lstm_1d}[arch]
    if kind == "dense":
        model = train(builder(seed), data, epochs, seed)
        model.save_weights(CACHE / f"{arch}_dense_seed{seed}.weights.h5")  # keras-hub's ViT does not load
        return {"method": "dense"}, model                                     # back from .keras (0.32)
    if kind == "scaled":
        full = tgs.flops(builder())
        if arch == "vit":
            options = [{"num_heads": h, "mlp": m} for h in (1, 2, 3) for m in (64, 128, 192, 256)]
            kw = equal_macs(vit_scaled, TARGET * full, options)
            model = vit_scaled(seed, **kw)
        elif arch == "attention_1d":
            options = [{"width": w, "ffn": f, "num_heads": h} for w in (32, 40, 48, 56, 64) for f in (32, 64, 96, 128)
                       for h in (2, 3, 4)]
            kw = equal_macs(attention_1d, TARGET * full, options)
            model = attention_1d(seed, **kw)
        else:
            kw = equal_macs(lstm_1d, TARGET * full, [{"units": u} for u in range(16, 65)])
            model = lstm_1d(seed, **kw)
        train(model, data, epochs + fine, seed)
        return {"method": "equal MACs, from scratch (" + ", ".join(f"{k} {v}" for k, v in kw.items()) + ")",
                "architecture": kw}, model
    dense = builder(seed)
    dense.load_weights(CACHE / f"{arch}_dense_seed{seed}.weights.h5")
    (x, y), _, _ = data
    ignored = ["vit_patching_and_embedding"] if kind == "prune_heads_mlp" else None
    pruned, report = tgs.prune(dense, (x, y), macs=TARGET, importance="l2", ignored_layers=ignored, seed=seed,
                               allow_untrained=QUICK, verbose=0)
    train(pruned, data, fine, seed)
    what = {"prune_heads_mlp": "heads, key/value dims, MLP units", "prune_all": "every coupled group"}.get(kind, "")
    info = {"method": f"tgs.prune l2 ({what}), 1 step" if what else "tgs.prune l2, 1 step",
            "prune_seconds": report.totals["prune_seconds"], "fine_tune_epochs": fine}
    if arch == "vit":
        blocks = pruned.get_layer("vit_encoder").blocks
        info.update(heads=[b.num_heads for b in blocks], key_dims=[b.key_dim for b in blocks],
                    value_dims=[b.value_dim for b in blocks], mlp=[b.intermediate_dim for b in blocks],
                    width=int(pruned.get_layer("vit_patching_and_embedding").hidden_dim))
    return info, pruned


PLAN = {"vit": [("vit", k) for k in ("dense", "prune_heads_mlp", "scaled", "torch", "prune_all")],
        "mnist1d": [(a, k) for a in ("attention_1d", "lstm_1d") for k in ("dense", "prune", "scaled")]}
#: the rows of a quick run (``make bench-quick``): each model dense and pruned, and the peer; the
#: equal-MACs models from scratch and the whole-width ViT pruning wait for the full run
QUICK_KINDS = ("dense", "prune_heads_mlp", "prune", "torch")


def run_row(arch, kind, seed):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    start = time.perf_counter()
    info, model = row(arch, kind, seed)
    figures, blob = measure(model, load_fashion() if arch == "vit" else load_sequences())
    name = f"{arch}_{kind}_seed{seed}"
    (CACHE / f"{name}.tflite").write_bytes(blob)
    info.update(figures, arch=arch, kind=kind, seed=seed, tflite=f"{name}.tflite",
                wall_seconds=time.perf_counter() - start)
    (CACHE / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- summary


def summarize(suites, seeds):
    """Time every cached row's LiteRT file against its seed's dense model, then write one line
    per row (mean and sample standard deviation over the seeds found) and one per seed."""
    import statistics

    import numpy as np

    from benchmarks.harness import md_table, mean_sd, write_results
    from tf_groupsparse.deploy import paired_ratio, tflite_latency_rounds

    rows = [json.loads(path.read_text()) for suite in suites for arch, kind in PLAN[suite] for seed in seeds
            if (path := CACHE / f"{arch}_{kind}_seed{seed}.json").exists()]
    dense = {(r["arch"], r["seed"]): r for r in rows if r["kind"] == "dense"}
    sample = {"vit": np.zeros((1, 28, 28, 1), "float32"), "seq": np.zeros((1, 40, 1), "float32")}
    for arch in sorted({r["arch"] for r in rows}):
        mine = [r for r in rows if r["arch"] == arch and "tflite" in r and (arch, r["seed"]) in dense]
        blobs = {r["tflite"]: (CACHE / r["tflite"]).read_bytes() for r in mine}
        times = tflite_latency_rounds(blobs, sample["vit" if arch == "vit" else "seq"], rounds=1 if QUICK else 3, runs=50)
        for r in mine:
            r["latency_ms"] = 1e3 * statistics.median(times[r["tflite"]])
            r["latency_ratio"] = paired_ratio(times[dense[arch, r["seed"]]["tflite"]], times[r["tflite"]])
    for r in rows:
        base = dense.get((r["arch"], r["seed"]))
        if base:  # the peer's drop is from its own dense model
            r["macs_ratio"] = r["macs"] / base["macs"]
            r["accuracy_drop_points"] = 100 * (r.get("dense_test_accuracy", base["test_accuracy"]) - r["test_accuracy"])

    groups = {}
    for r in rows:
        groups.setdefault((r["arch"], r["kind"]), []).append(r)
    summary = []
    for (arch, kind), rs in groups.items():
        summary.append({
            "arch": arch, "kind": kind, "method": rs[0]["method"], "seeds": [r["seed"] for r in rs],
            "test_accuracy": [r["test_accuracy"] for r in rs],
            "accuracy_drop_points": [r.get("accuracy_drop_points") for r in rs],
            "macs_ratio": [r.get("macs_ratio") for r in rs], "latency_ratio": [r.get("latency_ratio") for r in rs]})
    table = md_table(
        ["model", "method", "seeds", "test acc. (%)", "drop (pts)", "MACs ratio", "LiteRT latency ratio"],
        [[g["arch"], g["method"], len(g["seeds"]), mean_sd([100 * a for a in g["test_accuracy"]]),
          mean_sd(g["accuracy_drop_points"]), mean_sd(g["macs_ratio"], "{:.3f}"),
          mean_sd(g["latency_ratio"])] for g in summary])
    per_seed = md_table(
        ["model", "method", "seed", "test acc.", "drop (pts)", "MACs", "MACs ratio", "params", "LiteRT ms",
         "latency ratio"],
        [[r["arch"], r["method"], r["seed"], f"{100 * r['test_accuracy']:.2f}%",
          f"{r.get('accuracy_drop_points', 0):.2f}", f"{r['macs']:,}", f"{r.get('macs_ratio', 1):.3f}",
          f"{r['params']:,}", f"{r['latency_ms']:.3f}" if "latency_ms" in r else "-",
          f"{r['latency_ratio']:.2f}x" if "latency_ratio" in r else "-"] for r in rows])
    lines = ["# Transformer pruning at half the MACs", "",
             f"ViT on Fashion-MNIST: {EPOCHS} epochs dense, {FINE_TUNE_EPOCHS} of fine-tuning; MNIST-1D: "
             f"{SEQ_EPOCHS} + {SEQ_FINE_TUNE}. Seeds: {', '.join(map(str, seeds))}. Mean ± sample standard "
             "deviation over the seeds each row ran with; drops and latency ratios are against the same seed's "
             "dense model (the peer's drop against its own dense model).", "", *table, "", "## Per seed", "",
             *per_seed]
    for r in rows:
        if "dense_test_accuracy" in r:
            lines += ["", f"{r['method']} (seed {r['seed']}): its own dense ViT (PyTorch, same budget) scored "
                          f"{100 * r['dense_test_accuracy']:.2f}%, the drop is from that."]
    write_results("transformer_pruning", {"rows": rows, "summary": summary, "goals": GOALS, "epochs": EPOCHS,
                                          "fine_tune_epochs": FINE_TUNE_EPOCHS, "seeds": list(seeds)},
                  "\n".join(lines), extra_versions=("keras-hub", "torch", "torch-pruning"))
    print("\n".join(lines))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--kinds", nargs="+", help="run only these rows (e.g. dense prune_heads_mlp scaled prune)")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--row", nargs=3, help=argparse.SUPPRESS)  # arch kind seed, in a child process
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.row:
        run_row(args.row[0], args.row[1], int(args.row[2]))
        return 0
    from benchmarks.harness import require

    if "vit" in args.only:
        require("fashion")
    if not args.summary_only:
        wanted = args.kinds or (QUICK_KINDS if QUICK else None)
        for seed in args.seeds:
            for suite in args.only:
                for arch, kind in PLAN[suite]:
                    out = CACHE / f"{arch}_{kind}_seed{seed}.json"
                    if out.exists() or (wanted and kind not in wanted):
                        continue
                    print(f"[transformer_pruning] {arch} {kind} seed {seed}", flush=True)
                    if kind == "torch":
                        command = [sys.executable, "-m", "benchmarks.torch_vit_peer", "--target", str(TARGET),
                                   "--seed", str(seed), "--out", str(out)]
                    else:
                        command = [sys.executable, "-m", "benchmarks.transformer_pruning", "--row", arch, kind,
                                   str(seed)]
                    if subprocess.run(command).returncode:
                        print(f"[transformer_pruning] {arch} {kind} seed {seed} failed", flush=True)
    summarize(args.only, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
