"""How close plain training gets to the MLP headline target, without any compression method.

The suite's MLP target asks for >= 10x fewer parameters than the dense 784-1000-500-10 MLP at
<= 0.5 point accuracy loss on Fashion-MNIST. With the suite's budget (9 epochs, Adam 1e-3 on a
cosine to 0, batch 128, seed 0) this trains MLPs of about a tenth of the parameters on the labels
and distilled from the dense model (T = 4, alpha = 0.5), on all pixels or (``pixels``) on the k
inputs with the largest first-layer weight rows of the dense model, against the dense model trained
in the same run.

    python -m benchmarks.mlp_size_bound                    # about 7 minutes on 2 cores
    python -m benchmarks.mlp_size_bound --batch-size 32    # every model at batch 32: mlp_size_bound_bs32.*
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.harness import accuracy, kd_targets, load, publish, render, train  # noqa: E402

#: (name, hidden widths, input pixels or None for all 784)
SMALL = (("784-150-64", (150, 64), None), ("784-128-128", (128, 128), None),
         ("392 pixels-256-96", (256, 96), 392), ("300 pixels-300-96", (300, 96), 300))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--train-samples", type=int, default=None, help="first N training images (default all)")
    parser.add_argument("--batch-size", type=int, default=128, help="of every model, the dense one too (default 128)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")

    import keras
    import numpy as np

    from benchmarks.suite import models

    x, y, xt, yt = load("fashion", args.train_samples)
    start = time.perf_counter()
    dense = models.build(keras, models.spec("mlp", [1000, 500]))
    train(dense, x, y, epochs=args.epochs, batch_size=args.batch_size)
    base = accuracy(dense, xt, yt)
    rows = [{"model": "784-1000-500 (dense)", "how": "labels", "params": dense.count_params(), "accuracy": base}]
    print(f"dense {base:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)

    packed, kd = kd_targets(y, dense.predict(x, batch_size=1024, verbose=0))
    rank = np.argsort(-np.linalg.norm(dense.get_layer("fc1").kernel.numpy(), axis=1))
    for name, widths, pixels in SMALL:
        xs, xts = x, xt
        if pixels:
            keep = np.sort(rank[:pixels])
            xs, xts = x.reshape(len(x), -1)[:, keep], xt.reshape(len(xt), -1)[:, keep]
        for how, loss, target in (("labels", None, y), ("distilled from the dense model", kd, packed)):
            model = models.build(keras, models.spec("mlp", widths, [pixels] if pixels else (28, 28, 1)))
            train(model, xs, target, epochs=args.epochs, batch_size=args.batch_size, loss=loss, metrics=())
            acc = accuracy(model, xts, yt)
            rows.append({"model": name, "how": how, "params": model.count_params(), "accuracy": acc})
            print(f"{name} {how}: {acc:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    for r in rows:
        r["params_x"] = rows[0]["params"] / r["params"]
        r["delta_pt"] = 100 * (r["accuracy"] - base)

    best = max(rows[1:], key=lambda r: r["accuracy"])
    md = render("Plain training at the MLP target's size (Fashion-MNIST)",
                f"Every model: {args.epochs} epochs, Adam 1e-3 on a cosine to 0, batch {args.batch_size}, seed 0, "
                f"{len(x):,} training images, the full test set.", rows,
                f"Best small model: {best['model']} ({best['how']}), {best['params_x']:.1f}x fewer parameters at "
                f"{best['delta_pt']:+.2f} points; the target allows -0.50.")
    name = "mlp_size_bound" if args.batch_size == 128 else f"mlp_size_bound_bs{args.batch_size}"
    publish(name, {"epochs": args.epochs, "batch_size": args.batch_size, "rows": rows}, md)
    return rows


if __name__ == "__main__":
    main()
