"""The suite's markdown tables and plots (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

from ..harness import md_table

COLUMNS = (  # (header, row -> text)
    ("method", lambda r: r["method"]),
    ("acc %", lambda r: f"{100 * r['accuracy']:.2f}"),
    ("Δ pt", lambda r: _f(r.get("accuracy_delta_pt"), "{:+.2f}")),
    ("int8 acc %", lambda r: _f(r.get("accuracy_int8"), "{:.2f}", 100)),
    ("params", lambda r: f"{r['params']:,}"),
    ("nonzero", lambda r: f"{r['nonzero_params']:,}"),
    ("params x", lambda r: _f(r.get("params_x"), "{:.2f}")),
    ("MACs", lambda r: f"{r['macs']:,}" if r.get("macs") else ""),
    ("MACs x", lambda r: _f(r.get("macs_x"), "{:.2f}")),
    ("float KB", lambda r: f"{r['tflite_float_bytes'] / 1024:.1f}"),
    ("float gz KB", lambda r: f"{r['tflite_float_gzip_bytes'] / 1024:.1f}"),
    ("int8 KB", lambda r: f"{r['tflite_int8_bytes'] / 1024:.1f}"),
    ("int8 gz KB", lambda r: f"{r['tflite_int8_gzip_bytes'] / 1024:.1f}"),
    ("float µs", lambda r: f"{1e6 * r['latency_float_s']:.1f}"),
    ("speed-up", lambda r: _f(r.get("speedup_float"), "{:.2f}")),
    ("int8 µs", lambda r: _f(r.get("latency_int8_s"), "{:.1f}", 1e6)),
    ("int8 speed-up", lambda r: _f(r.get("speedup_int8"), "{:.2f}")),
    ("train s", lambda r: f"{r['train_s']:.1f}"),
)


def _f(value, fmt, scale=1.0):
    return "" if value is None else fmt.format(value * scale)


def _groups(rows):
    keys = list(dict.fromkeys((r["data"], r["model"]) for r in rows))
    return [(k, [r for r in rows if (r["data"], r["model"]) == k]) for k in keys]


def budget_lines(group):
    """The training budget of a (data, model) group, one line per distinct budget."""
    keys = ("train_samples", "epochs", "finetune_epochs", "batch_size", "optimizer", "learning_rate",
            "sgd_learning_rate")
    budgets = list(dict.fromkeys(tuple((k, r.get(k)) for k in keys if r.get(k) is not None) for r in group))
    lines = ["Training: " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in b)
             for b in budgets if b]
    return lines + [""] if lines else []


def table(rows):
    """One markdown table per (data, model)."""
    out = []
    for (data, model), group in _groups(rows):
        out += [f"### {data} / {model}", "", *budget_lines(group),
                *md_table([h for h, _ in COLUMNS], [[fn(r) for _, fn in COLUMNS] for r in group]), ""]
    return "\n".join(out)


def _verdict_text(v):
    return {True: "**met**", False: "**not met**", None: "not measured (rows missing)"}[v["met"]]


def _figures(summary):
    """``"key value, ..."`` of a verdict's row summary, floats to 3 significant digits."""
    return ", ".join(f"{k} {val:.3g}" if isinstance(val, float) else f"{k} {val}" for k, val in summary.items())


def verdict_lines(all_verdicts):
    """Markdown bullets for the verdicts of :func:`benchmarks.suite.verdicts.verdicts`."""
    lines = []
    for name, v in all_verdicts.items():
        best = v.get("best")
        detail = "" if not best else " — best: " + _figures(best)
        lines.append(f"- {v['target']}: {_verdict_text(v)}{detail}")
        if v.get("nearest_at_size"):
            lines.append("  - nearest miss, the least loss at the target size: " + _figures(v["nearest_at_size"]))
        ref = v.get("reference")
        if ref:
            lines.append("  - reference, the dense architecture at the target size trained from scratch "
                         "(scratch_target): " + _figures({k: val for k, val in ref.items() if k != "method"}))
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
    front = []
    for i, (c, a) in enumerate(points):
        dominated = any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for j, (c2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


AXES = {"params": ("params", "parameters (final model)", 1.0),
        "latency": ("latency_float_s", "float LiteRT latency, 1 thread (µs)", 1e6)}

#: (label, colour, marker, test on the method name), first match wins
FAMILIES = (
    ("dense", "black", "*", lambda m: m == "dense"),
    ("tfmot (peer)", "tab:red", "s", lambda m: m.startswith("tfmot")),
    ("filter pruning", "tab:orange", "^", lambda m: m.startswith("filter_pruning")),
    ("EM grouping", "tab:green", "D", lambda m: m.startswith("em_")),
    ("planting", "tab:purple", "v", lambda m: m == "planting"),
    ("from scratch, narrower", "tab:gray", "X", lambda m: m.startswith("scratch")),
    ("penalty training", "tab:blue", "o", lambda m: True),
)


def _family(method):
    return next(f for f in FAMILIES if f[3](method))


def plot(rows, path, axis, columns=2):
    """Accuracy against `axis` ("params" or "latency") per (data, model) in a grid of panels,
    one colour and marker per method family, one legend, the Pareto front as a grey step line;
    saved as a PNG at `path` (readable at page width: no per-point labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    key, label, scale = AXES[axis]
    groups = _groups(rows)
    n_rows = max(1, -(-len(groups) // columns))
    fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.0 * n_rows + 0.8), squeeze=False)
    for ax, ((data, model), group) in zip(axes.flat, groups):
        pts = [(r[key] * scale, 100 * r["accuracy"]) for r in group]
        for r, (x, y) in zip(group, pts):
            _, colour, marker, _ = _family(r["method"])
            ax.scatter([x], [y], marker=marker, s=60 if marker == "*" else 28, color=colour, alpha=0.85,
                       edgecolors="none")
        front = [pts[i] for i in pareto(pts)]
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{data} / {model}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel(label, fontsize=7)
        ax.set_ylabel("test accuracy (%)", fontsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, marker=m, linestyle="none", markersize=7, label=name)
               for name, c, m, _ in FAMILIES]
    handles.append(plt.Line2D([], [], color="gray", lw=0.8, label="Pareto front"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.8 / (3.0 * n_rows + 0.8), 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
