"""The suite's summary: re-timing in rounds, ratios to the dense row, the headline verdicts (each a
dict: ``met`` True, False or None when rows are missing, the ``target`` text and the figures behind
it), markdown tables and plots. The rules: docs/benchmarks/suite.md, "Protocol"."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..harness import md_table, verdict
from .methods import TARGET_SIZE

LABELS = ("float", "int8")
_EPS_PT = 1e-9  # a loss equal to the limit is within it (float noise of test-set fractions)


def retime(rows, sample, rounds=3, runs=100):
    """Time the rows' .tflite files again with ``tflite_latency_rounds``, one call per dataset (input
    ``sample[data]``), rows ordered by (data, model), dense first; each row gets
    ``latency_<label>_rounds`` and their median. A (data, model) group with a file missing keeps its
    figures and gets ``"retimed": False``. Returns `rows`."""
    from tf_groupsparse.deploy import tflite_latency_rounds

    def files(r):
        return {label: r[f"tflite_{label}"] for label in LABELS if r.get(f"tflite_{label}")}

    incomplete = {(r["data"], r["model"]) for r in rows if not all(Path(p).is_file() for p in files(r).values())}
    chosen = sorted((i for i, r in enumerate(rows) if (r["data"], r["model"]) not in incomplete),
                    key=lambda i: (rows[i]["data"], rows[i]["model"], rows[i]["method"] != "dense"))
    for r in rows:
        r["retimed"] = False
    for data in dict.fromkeys(rows[i]["data"] for i in chosen):
        models = {(i, label): path for i in chosen if rows[i]["data"] == data for label, path in files(rows[i]).items()}
        for (i, label), seconds in tflite_latency_rounds(models, sample[data], rounds=rounds, runs=runs).items():
            rows[i].update({f"latency_{label}_rounds": seconds, f"latency_{label}_s": statistics.median(seconds),
                            "retimed": True})
    return rows


def speedup(base, row, label):
    """Baseline latency / row latency: the median of the per-round ratios when both rows were timed in
    the same rounds, else the ratio of their latencies."""
    mine, theirs = row.get(f"latency_{label}_rounds"), base.get(f"latency_{label}_rounds")
    if mine and theirs and len(mine) == len(theirs):
        from tf_groupsparse.deploy import paired_ratio

        return paired_ratio(theirs, mine)
    mine, theirs = row.get(f"latency_{label}_s"), base.get(f"latency_{label}_s")
    return theirs / mine if mine and theirs else None


def add_ratios(rows):
    """dense / row of the same (data, model) for params, MACs, file bytes and latency (> 1 is better),
    and the accuracy change in points (row - dense)."""
    dense = {(r["data"], r["model"]): r for r in rows if r["method"] == "dense"}
    for row in rows:
        base = dense.get((row["data"], row["model"]))
        if base is None:
            continue
        row["params_x"] = base["params"] / row["params"]
        row["nonzero_x"] = base["nonzero_params"] / max(1, row["nonzero_params"])
        row["macs_x"] = base["macs"] / row["macs"] if row.get("macs") else None
        for label in LABELS:
            row[f"speedup_{label}"] = speedup(base, row, label)
            row[f"bytes_{label}_x"] = base[f"tflite_{label}_bytes"] / row[f"tflite_{label}_bytes"]
        row["accuracy_delta_pt"] = 100.0 * (row["accuracy"] - base["accuracy"])
    return rows


# --------------------------------------------------------------------------- verdicts


def within_loss(delta_pt, max_loss_pt):
    """Whether an accuracy change of `delta_pt` points is a loss of at most `max_loss_pt`."""
    return delta_pt >= -max_loss_pt - _EPS_PT


def _summary(row, *keys):
    return None if row is None else {"method": row["method"], **{k: row.get(k) for k in keys}}


def _ours(rows, data, model, method=None):
    """Our rows of (data, model) with ratios: not the dense baseline, the peer, the scratch reference;
    with `method`, that method's rows only."""
    return [r for r in rows if r["data"] == data and r["model"] == model and "accuracy_delta_pt" in r and (
        r["method"] == method if method else r["method"] not in ("dense", "scratch_target")
        and not r["method"].startswith("tfmot"))]


#: architecture -> (verdict name, loss limit in points, speed-up factor or None) of its size target,
#: whose size measure and factor are ``methods.TARGET_SIZE``'s (the 1-D CNN has none: the targets are
#: set for Fashion-MNIST's MLP and 2-D CNNs)
TARGETS = {"mlp": ("mlp_params", 0.5, None), "vgg": ("cnn_flops_latency", 1.0, 2.5),
           "resnet": ("cnn_flops_latency", 1.0, 2.5)}


def size_verdict(rows, data="fashion", model="mlp", arch=None):
    """``mlp_params``: >= 10x fewer parameters at <= 0.5 point loss (the most compressed row within the
    loss; when not met, also the least loss at >= 10x); ``cnn_flops_latency``: >= 3x fewer MACs and
    >= 2.5x lower float latency at <= 1 point loss (the best smaller of the two ratios over their
    targets). Both show the ``scratch_target`` reference."""
    _, max_loss, speed = TARGETS[arch or model]
    size, factor = TARGET_SIZE[arch or model]
    keys = (f"{size}_x", "speedup_float", "accuracy_delta_pt") if speed else (f"{size}_x", "accuracy_delta_pt", size)
    ref = _ours(rows, data, model, "scratch_target")
    common = {"target": f"{data} {model}: >= {factor:g}x fewer {'FLOPs' if speed else 'parameters'}"
                        + (f" and >= {speed:g}x lower TFLite latency" if speed else "")
                        + f" at <= {max_loss:g} point accuracy loss",
              "model": model, "max_loss_pt": max_loss, "size": (size, factor),
              **({"speedup_factor": speed} if speed else {}), "reference": _summary(ref[0], *keys) if ref else None}
    ours = _ours(rows, data, model)
    if not ours:
        return {**common, "met": None, "best": None, **({} if speed else {"nearest_at_size": None})}

    def score(r):  # >= 1: the target's size (and speed) reached
        return min(r[f"{size}_x"] / factor, r["speedup_float"] / speed) if speed else r[f"{size}_x"] / factor

    best = max([r for r in ours if within_loss(r["accuracy_delta_pt"], max_loss) and r.get(f"{size}_x")], key=score,
               default=None)
    met = bool(best is not None and score(best) >= 1.0)
    out = {**common, "met": met, "best": _summary(best, *keys)}
    if not speed:  # when not met, the nearest miss from the other side: the least loss at the target size
        out["nearest_at_size"] = None if met else _summary(max(
            (r for r in ours if score(r) >= 1.0), key=lambda r: r["accuracy_delta_pt"], default=None), *keys)
    return out


def vs_tfmot(rows, data="fashion", model="mlp", tolerance_pt=0.5):
    """Per tfmot level: our fastest row at equal accuracy beats it on latency and file size."""
    target = (f"{data} {model}: at equal accuracy (within {tolerance_pt:g} point) lower TFLite latency "
              "and a smaller .tflite file (raw and gzip) than every tfmot level")
    peers = [r for r in rows if r["data"] == data and r["model"] == model and r["method"].startswith("tfmot_")
             and r.get("target_sparsity")]
    ours = _ours(rows, data, model)
    if not peers or not ours:
        return {"target": target, "met": None, "best": None, "levels": []}

    def beats(row, peer):  # faster: the median of the per-round latency ratios when timed in rounds
        return (speedup(peer, row, "float") > 1.0 and row["tflite_float_bytes"] < peer["tflite_float_bytes"]
                and row["tflite_float_gzip_bytes"] < peer["tflite_float_gzip_bytes"])

    levels = []
    for peer in sorted(peers, key=lambda r: r["target_sparsity"]):
        ok = [r for r in ours if within_loss(100.0 * (r["accuracy"] - peer["accuracy"]), tolerance_pt)]
        # the fastest row that beats the peer on all three counts, else the fastest row
        best = min([r for r in ok if beats(r, peer)] or ok, key=lambda r: r["latency_float_s"], default=None)
        levels.append({"peer": peer["method"], "peer_accuracy": peer["accuracy"],
                       **{f"peer_{k}": peer[k] for k in ("latency_float_s", "tflite_float_bytes",
                                                          "tflite_float_gzip_bytes")},
                       "met": bool(best is not None and beats(best, peer)),
                       "ours": _summary(best, "accuracy", "latency_float_s", "tflite_float_bytes",
                                        "tflite_float_gzip_bytes")})
    return {"target": target, "met": all(level["met"] for level in levels), "best": None, "levels": levels}


def verdicts(rows, data="fashion", archs=None):
    """All headline verdicts for `data` (name -> verdict): ``mlp_params`` of the model named ``mlp``,
    ``<verdict>[<model>]`` of every other model whose architecture (`archs` maps a model to it; default
    the name) has a size target, and ``vs_tfmot[<model>]`` of every model."""
    models = sorted({r["model"] for r in rows if r["data"] == data})
    archs = {m: (archs or {}).get(m, m) for m in models}
    return {"mlp_params": size_verdict(rows, data, "mlp"),
            **{f"{TARGETS[archs[m]][0]}[{m}]": size_verdict(rows, data, m, archs[m]) for m in models
               if archs[m] in TARGETS and m != "mlp"},
            **{f"vs_tfmot[{m}]": vs_tfmot(rows, data, m) for m in models}}


# --------------------------------------------------------------------------- markdown and plots


#: (header, row key, format, scale) of the table's columns; a missing figure is an empty cell
COLUMNS = (("method", "method", "{}"), ("acc %", "accuracy", "{:.2f}", 100), ("Δ pt", "accuracy_delta_pt", "{:+.2f}"),
           ("int8 acc %", "accuracy_int8", "{:.2f}", 100), ("params", "params", "{:,}"),
           ("nonzero", "nonzero_params", "{:,}"), ("params x", "params_x", "{:.2f}"), ("MACs", "macs", "{:,}"),
           ("MACs x", "macs_x", "{:.2f}"), ("float KB", "tflite_float_bytes", "{:.1f}", 1 / 1024),
           ("float gz KB", "tflite_float_gzip_bytes", "{:.1f}", 1 / 1024),
           ("int8 KB", "tflite_int8_bytes", "{:.1f}", 1 / 1024),
           ("int8 gz KB", "tflite_int8_gzip_bytes", "{:.1f}", 1 / 1024),
           ("float µs", "latency_float_s", "{:.1f}", 1e6), ("speed-up", "speedup_float", "{:.2f}"),
           ("int8 µs", "latency_int8_s", "{:.1f}", 1e6), ("int8 speed-up", "speedup_int8", "{:.2f}"),
           ("train s", "train_s", "{:.1f}"))
BUDGET_KEYS = ("train_samples", "epochs", "finetune_epochs", "batch_size", "optimizer", "learning_rate",
               "sgd_learning_rate")


def _cell(row, key, fmt, scale=1):
    value = row.get(key)
    return "" if value is None else fmt.format(value if scale == 1 else value * scale)


def _groups(rows):
    keys = list(dict.fromkeys((r["data"], r["model"]) for r in rows))
    return [(k, [r for r in rows if (r["data"], r["model"]) == k]) for k in keys]


def table(rows):
    """One markdown table per (data, model), under a line per distinct training budget."""
    out = []
    for (data, model), group in _groups(rows):
        budgets = dict.fromkeys(tuple((k, r[k]) for k in BUDGET_KEYS if r.get(k) is not None) for r in group)
        lines = ["Training: " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in b)
                 for b in budgets if b]
        out += [f"### {data} / {model}", "", *lines, *([""] if lines else []),
                *md_table([c[0] for c in COLUMNS], [[_cell(r, *c[1:]) for c in COLUMNS] for r in group]), ""]
    return "\n".join(out)


def _figures(summary):
    """``"key value, ..."`` of a verdict's row summary, floats to 3 significant digits."""
    return ", ".join(f"{k} {val:.3g}" if isinstance(val, float) else f"{k} {val}" for k, val in summary.items())


def verdict_lines(all_verdicts):
    """Markdown bullets for the verdicts of :func:`verdicts`."""
    lines = []
    for v in all_verdicts.values():
        met = "not measured (rows missing)" if v["met"] is None else verdict(v["met"])
        lines.append(f"- {v['target']}: {met}" + (" — best: " + _figures(v["best"]) if v.get("best") else ""))
        if v.get("nearest_at_size"):
            lines.append("  - nearest miss, the least loss at the target size: " + _figures(v["nearest_at_size"]))
        if v.get("reference"):
            lines.append("  - reference, the dense architecture at the target size trained from scratch "
                         "(scratch_target): " + _figures({k: x for k, x in v["reference"].items() if k != "method"}))
        for level in v.get("levels", []):
            ours = level["ours"]
            mine = "no row of ours at equal accuracy" if ours is None else (
                f"{ours['method']} acc {100 * ours['accuracy']:.2f}%, {1e6 * ours['latency_float_s']:.1f} µs, "
                f"{ours['tflite_float_bytes']:,} B (gzip {ours['tflite_float_gzip_bytes']:,} B)")
            lines.append(f"  - vs {level['peer']} (acc {100 * level['peer_accuracy']:.2f}%, "
                         f"{1e6 * level['peer_latency_float_s']:.1f} µs, {level['peer_tflite_float_bytes']:,} B, "
                         f"gzip {level['peer_tflite_float_gzip_bytes']:,} B): {mine} -> "
                         f"{'met' if level['met'] else 'not met'}")
    return lines


def pareto(points):
    """Indices of the points (cost, accuracy) not dominated by another (lower-or-equal cost and
    higher-or-equal accuracy, one strictly), sorted by cost."""
    front = [i for i, (c, a) in enumerate(points) if not any(
        c2 <= c and a2 >= a and (c2 < c or a2 > a) for j, (c2, a2) in enumerate(points) if j != i)]
    return sorted(front, key=lambda i: points[i][0])


AXES = {"params": ("params", "parameters (final model)", 1.0),
        "latency": ("latency_float_s", "float LiteRT latency, 1 thread (µs)", 1e6)}
#: (label, colour, marker, method name prefix), first match wins
FAMILIES = (("dense", "black", "*", "dense"), ("tfmot (peer)", "tab:red", "s", "tfmot"),
            ("filter pruning", "tab:orange", "^", "filter_pruning"), ("EM grouping", "tab:green", "D", "em_"),
            ("planting", "tab:purple", "v", "planting"), ("from scratch, narrower", "tab:gray", "X", "scratch"),
            ("penalty training", "tab:blue", "o", ""))


def plot(rows, path, axis, columns=2):
    """Accuracy against `axis` ("params" or "latency") per (data, model) in a grid of panels, one colour
    and marker per method family, the Pareto front as a grey step line; a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, label, scale = AXES[axis]
    groups = _groups(rows)
    n_rows = max(1, -(-len(groups) // columns))
    with plt.rc_context({"font.size": 7}):
        fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.0 * n_rows + 0.8), squeeze=False)
        for ax in list(axes.flat)[len(groups):]:
            ax.axis("off")
        for ax, ((data, model), group) in zip(axes.flat, groups):
            pts = [(r[key] * scale, 100 * r["accuracy"]) for r in group]
            for r, (x, y) in zip(group, pts):
                _, colour, marker, _ = next(f for f in FAMILIES if r["method"].startswith(f[3]))
                ax.scatter([x], [y], marker=marker, s=60 if marker == "*" else 28, color=colour, alpha=0.85,
                           edgecolors="none")
            ax.step(*zip(*(pts[i] for i in pareto(pts))), where="post", color="gray", lw=0.8)
            ax.set(xscale="log", title=f"{data} / {model}", xlabel=label, ylabel="test accuracy (%)")
        handles = [plt.Line2D([], [], color=c, marker=m, linestyle="none", markersize=7, label=name)
                   for name, c, m, _ in FAMILIES] + [plt.Line2D([], [], color="gray", lw=0.8, label="Pareto front")]
        fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.8 / (3.0 * n_rows + 0.8), 1, 1))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
