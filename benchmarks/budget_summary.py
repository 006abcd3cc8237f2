"""The summary of the budget pruning benchmark: rows from the cache, latency re-timed in rounds
against the dense model of the same architecture and seed, goals beside the figures.

Writes ``benchmarks/results/budget_pruning_<arch>.md`` and ``.json`` for each architecture (with the
command, versions and machine). Rows of the Torch-Pruning peer (``torch_*.json`` in the cache, written by
``benchmarks/torch_peer.py``) join the table with their own accuracies, MACs and pruning time.
"""

from __future__ import annotations

import json

import numpy as np

from benchmarks.budget_pruning import CACHE, GOALS

ROUNDS = 3


def _load(archs, targets, seeds):
    rows = []
    for path in sorted(CACHE.glob("*.json")):
        row = json.loads(path.read_text())
        if row.get("arch") in archs and row.get("seed") in seeds and (
                row.get("kind") in ("dense", "prune_filters") or row.get("target") in targets):
            rows.append(row)
    return rows


def retime(rows, runs=100):
    """Median float latency of every row over `ROUNDS` rounds, each round timing the row's dense
    model right before it; the ratio is dense / row within each round, then the median."""
    from benchmarks.harness import paired_speedup, time_rounds

    dense = {(r["arch"], r["seed"]): r for r in rows if r["kind"] == "dense" and r.get("tflite")}
    x = np.random.default_rng(0).random((1, 32, 32, 3), "float32")
    for row in rows:
        base = dense.get((row["arch"], row["seed"]))
        if base is None or not row.get("tflite"):
            continue
        t = time_rounds({"dense": CACHE / base["tflite"], "row": CACHE / row["tflite"]}, x, rounds=ROUNDS, runs=runs)
        row["latency_ms"] = 1e3 * float(np.median(t["row"]))
        row["latency_ratio"] = paired_speedup(t["dense"], t["row"])
    return rows


def _target_verdicts(rows, dense, arch, target):
    """The accuracy, latency, from-scratch and peer comparisons at one MACs target (the accuracy
    and latency goals are set for half the MACs; other targets report the same figures)."""
    seed, goal = dense["seed"], target == 0.5
    at = lambda *kinds: [r for r in rows if r["arch"] == arch and r["kind"] in kinds  # noqa: E731
                         and r["target"] == target and r["seed"] == seed]
    drop = lambda r: 100 * (dense["test_accuracy"] - r["test_accuracy"])  # noqa: E731
    pruned = at("prune", "coupled")
    best, within = min(pruned, key=drop), [r for r in pruned if drop(r) <= GOALS["accuracy_drop_points"]]
    verdict = (f"(goal: within {GOALS['accuracy_drop_points']:g}: {'met' if within else 'not met'})" if goal
               else "(no goal at this target)")
    out = [f"- {arch}, seed {seed}, at {target:g} of the MACs: best accuracy '{best['method']}' {-drop(best):+.2f} "
           f"points against the dense model {verdict}"]
    fastest = max(within if goal else pruned, key=lambda r: r.get("latency_ratio", 0), default=None)
    if fastest is not None and "latency_ratio" in fastest:
        ratio = fastest["latency_ratio"]
        out.append(f"- {arch}, seed {seed}, at {target:g}: the fastest row" + (
            f" within the accuracy goal, '{fastest['method']}', runs {ratio:.2f}x faster in LiteRT (goal >= "
            f"{GOALS['latency_ratio']}: {'met' if ratio >= GOALS['latency_ratio'] else 'not met'})" if goal
            else f", '{fastest['method']}', runs {ratio:.2f}x faster in LiteRT"))
    equal = [r for r in at("prune") if r.get("variant") != "latency"]  # MACs-targeted rows: equal MACs
    best = max(equal, key=lambda r: r["test_accuracy"], default=None)
    for kind, label in (("scaled", "width-scaled from scratch"), ("torch", "the best Torch-Pruning row")):
        other = max(at(kind), key=lambda r: r["test_accuracy"], default=None)
        if best is not None and other is not None:
            out.append(f"- {arch}, seed {seed}, at {target:g} of the MACs: best MACs-targeted pruned row "
                       f"{100 * best['test_accuracy']:.2f}% "
                       f"vs {label} {100 * other['test_accuracy']:.2f}% "
                       f"({'met' if best['test_accuracy'] >= other['test_accuracy'] else 'not met'})")
    return out


def _verdicts(rows):
    out = []
    for (arch, seed) in sorted({(r["arch"], r["seed"]) for r in rows}):
        dense = next((r for r in rows if r["arch"] == arch and r["seed"] == seed and r["kind"] == "dense"), None)
        if dense is None:
            continue
        for target in sorted({r["target"] for r in rows if r["arch"] == arch and r["kind"] in ("prune", "coupled")
                              and r["seed"] == seed}, reverse=True):
            out += _target_verdicts(rows, dense, arch, target)
        timed = [r for r in rows if r["arch"] == arch and r["kind"] == "prune" and r.get("importance") in
                 ("l2", "bn_scale", "taylor")]
        if timed:
            worst = max(r["prune_seconds"] for r in timed)
            out.append(f"- {arch}: slowest pruning (l2/bn_scale/taylor, without fine-tuning) {worst:.1f} s "
                       f"(goal <= {GOALS['prune_seconds']:.0f} s: {'met' if worst <= GOALS['prune_seconds'] else 'not met'})")
        pf = [r for r in rows if r["arch"] == arch and r["kind"] == "prune_filters"]
        if pf:
            out.append(f"- {arch}: prune_filters at 512 samples {pf[0]['prune_seconds']:.1f} s, "
                       f"{pf[0]['evaluations']} loss evaluations (goal <= {GOALS['prune_filters_seconds']:.0f} s: "
                       f"{'met' if pf[0]['prune_seconds'] <= GOALS['prune_filters_seconds'] else 'not met'})")
    return out


def _table(rows):
    cols = ["arch", "target", "method", "test_accuracy", "val_accuracy", "macs", "params", "latency_ms",
            "latency_ratio", "int8_test_accuracy", "int8_latency_ms", "prune_seconds", "peak_rss_mb", "seed"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    order = {"dense": 0, "prune": 1, "coupled": 2, "prune_filters": 3, "scaled": 4, "torch": 5, "tfmot": 6}
    for r in sorted(rows, key=lambda r: (r["arch"], -(r.get("target") or 1.0), order.get(r["kind"], 9), r["method"])):
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                v = f"{100 * v:.2f}%" if "accuracy" in c else f"{v:.3g}"
            elif isinstance(v, int) and c in ("macs", "params"):
                v = f"{v:,}"
            cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(archs, targets, seeds):
    """Re-time and write ``results/budget_pruning_<arch>.{json,md}`` for each of `archs`."""
    from benchmarks.budget_pruning import QUICK
    from benchmarks.harness import write_results

    every = []
    for arch in archs:
        rows = retime(_load([arch], targets, seeds))
        verdicts = _verdicts(rows)
        md = "\n".join([
            f"# Budget pruning: {arch} on Fashion-MNIST (32x32x3)",
            "",
            "Figures are measured by `python -m benchmarks.budget_pruning` (see its docstring for the setup); "
            "the float LiteRT latency of every row is re-timed here in rounds against its dense model.",
            "",
            "## Goals",
            "",
            *(verdicts or ["- no complete architecture yet"]),
            "",
            "## Rows",
            "",
            _table(rows),
        ])
        write_results(f"budget_pruning_{arch}" + ("_quick" if QUICK else ""),
                      {"rows": rows, "verdicts": verdicts, "goals": GOALS}, md)
        print(md)
        every += rows
    return every
