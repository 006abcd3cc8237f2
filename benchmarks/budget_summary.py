"""The summary of the budget pruning benchmark: rows from the cache, each row's latency timed once
in rounds against the dense model of the same architecture and seed, goals beside the figures.

Writes ``benchmarks/results/budget_pruning_<arch>.md`` and ``.json`` for each architecture (with the
command, versions and machine). Rows of the Torch-Pruning peer (``torch_*.json`` in the cache, written by
``benchmarks/torch_peer.py``) join the table with their own accuracies, MACs and pruning time.

The cache is not kept in git, the summaries are: :func:`restore` writes the rows of a recorded
summary back to an empty cache, so that a fresh checkout adds seeds or rows to what was measured
before instead of training it again. A restored row has no LiteRT file and keeps the latency it
was timed at then (against the same seed's dense model).
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from benchmarks.budget_pruning import CACHE, GOALS, RESULTS, _key
from benchmarks.harness import mean_sd
from tf_groupsparse.pruning.latency import TIMING_SECONDS  # the shortest timing of a model, as tgs.prune's

ROUNDS = 9  # alternating-order rounds per row: one ratio read to about a tenth with 3 rounds
_EPS = 1e-9  # a mean equal to a goal's limit is at it (float noise of averaged fractions)
#: the order of the row kinds in the tables
ORDER = {"dense": 0, "prune": 1, "coupled": 2, "prune_filters": 3, "scaled": 4, "torch": 5, "tfmot": 6}


def row_key(row):
    """The cache key of a recorded row (as :func:`benchmarks.budget_pruning.plan` names it)."""
    if row["kind"] in ("prune", "torch"):
        variant = row.get("variant") or ("uniform" if row.get("ranking") == "uniform" else None)
        return _key(row["kind"], row["arch"], row["target"], row["seed"], row["importance"], row["steps"], variant)
    return _key(row["kind"], row["arch"], row["target"], row["seed"])


def restore(archs):
    """Write every row of ``results/budget_pruning_<arch>.json`` that the cache lacks back to the
    cache; returns the keys written."""
    written = []
    CACHE.mkdir(parents=True, exist_ok=True)
    for arch in archs:
        recorded = RESULTS / f"budget_pruning_{arch}.json"
        if not recorded.exists():
            continue
        for row in json.loads(recorded.read_text())["rows"]:
            path = CACHE / f"{row_key(row)}.json"
            if not path.exists():
                path.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
                written.append(path.stem)
    return written


def _load(archs, targets, seeds):
    rows = []
    for path in sorted(CACHE.glob("*.json")):
        row = json.loads(path.read_text())
        if row.get("arch") in archs and row.get("seed") in seeds and (
                row.get("kind") in ("dense", "prune_filters") or row.get("target") in targets):
            rows.append(row)
    return rows


def retime(rows, runs=100, retime_all=False):
    """Time every row not timed before against its dense model: `ROUNDS` rounds, each timing the
    row and its dense model (alternating which goes first) for at least `runs` calls and
    ``TIMING_SECONDS``; the ratio is dense / row within each round, then the median.

    A row is timed once, at the first summary that finds its LiteRT file and its dense model's:
    it then records ``latency_rounds`` and the UTC date (``latency_timed``), in the cache too, and
    later summaries keep its figures, so adding a row does not move the published ones (on this
    machine two timings of the same pair a few hours apart differ by more than the seeds do).
    ``retime_all`` times every row with files again (the summary's ``--retime-all``)."""
    from tf_groupsparse.deploy import paired_ratio, tflite_latency_rounds

    dense = {(r["arch"], r["seed"]): r for r in rows if r["kind"] == "dense" and r.get("tflite")}
    x = np.random.default_rng(0).random((1, 32, 32, 3), "float32")
    for row in rows:
        base = dense.get((row["arch"], row["seed"]))
        if base is None or not row.get("tflite") or not all((CACHE / r["tflite"]).exists() for r in (base, row)):
            continue  # a peer row, or one restored from a summary: the latency it was timed at
        if row.get("latency_rounds") and not retime_all:
            continue  # timed by an earlier summary
        t = tflite_latency_rounds({"dense": CACHE / base["tflite"], "row": CACHE / row["tflite"]}, x, rounds=ROUNDS,
                                  runs=runs, min_seconds=TIMING_SECONDS)  # long enough to average noise
        row.update({"latency_ms": 1e3 * float(np.median(t["row"])), "latency_ratio": paired_ratio(t["dense"], t["row"]),
                    "latency_rounds": ROUNDS, "latency_timed": time.strftime("%Y-%m-%d", time.gmtime())})
        (CACHE / f"{row_key(row)}.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")  # kept
    return rows


def _baseline(row, dense):
    """The test accuracy a row's drop is taken from: the dense model it started from when it
    records one (``dense_test_accuracy``: a peer's own, or a dense model trained again), else
    `dense`, the same seed's dense row (or None)."""
    return row.get("dense_test_accuracy", (dense or {}).get("test_accuracy"))


def _target_verdicts(rows, dense, arch, target):
    """The accuracy, latency, from-scratch and peer comparisons at one MACs target (the accuracy
    and latency goals are set for half the MACs; other targets report the same figures). A row's
    drop is from the dense model it started from (``dense_test_accuracy``) when it records one."""
    seed, goal = dense["seed"], target == 0.5
    at = lambda *kinds: [r for r in rows if r["arch"] == arch and r["kind"] in kinds  # noqa: E731
                         and r["target"] == target and r["seed"] == seed]
    drop = lambda r: 100 * (_baseline(r, dense) - r["test_accuracy"])  # noqa: E731
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
    for arch in sorted({r["arch"] for r in rows if r["kind"] == "dense"}):  # the pruning-time goals, once each
        timed = [r for r in rows if r["arch"] == arch and r["kind"] == "prune" and r.get("importance") in
                 ("l2", "bn_scale", "taylor")]
        if timed:
            slowest = max(timed, key=lambda r: r["prune_seconds"])
            worst, limit = slowest["prune_seconds"], GOALS["prune_seconds"]
            by_macs = [r["prune_seconds"] for r in timed if r.get("variant") != "latency"]
            beside = (f" (the MACs-targeted rows at most {max(by_macs):.1f} s)"
                      if by_macs and len(by_macs) < len(timed) else "")
            out.append(f"- {arch}: slowest pruning (l2/bn_scale/taylor, without fine-tuning) {worst:.1f} s, "
                       f"'{slowest['method']}' at seed {slowest['seed']}{beside} "
                       f"(goal <= {limit:.0f} s: {'met' if worst <= limit else 'not met'})")
        pf = max((r for r in rows if r["arch"] == arch and r["kind"] == "prune_filters"),
                 key=lambda r: r["prune_seconds"], default=None)  # the slowest seed's
        if pf:
            out.append(f"- {arch}: prune_filters at 512 samples {pf['prune_seconds']:.1f} s at seed {pf['seed']} "
                       f"(the slowest seed), {pf['evaluations']} loss evaluations (goal <= "
                       f"{GOALS['prune_filters_seconds']:.0f} s: "
                       f"{'met' if pf['prune_seconds'] <= GOALS['prune_filters_seconds'] else 'not met'})")
    return out


def _table(rows):
    cols = ["arch", "target", "method", "test_accuracy", "val_accuracy", "macs", "params", "latency_ms",
            "latency_ratio", "int8_test_accuracy", "int8_latency_ms", "prune_seconds", "peak_rss_mb", "seed"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r["arch"], -(r.get("target") or 1.0), ORDER.get(r["kind"], 9), r["method"])):
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


def over_seeds(rows):
    """One entry per (arch, target, method) with the seeds it ran with: test accuracies, drops
    from the same seed's dense model (a peer row: from its own dense model), latency ratios and
    MACs as a fraction of the same seed's dense model."""
    dense = {(r["arch"], r["seed"]): r for r in rows if r["kind"] == "dense"}
    groups = {}
    for r in rows:
        own = dense.get((r["arch"], r["seed"]), {})
        base = _baseline(r, own)
        if base is None:
            continue
        g = groups.setdefault((r["arch"], r.get("target") or 1.0, r["kind"], r["method"]), {
            "arch": r["arch"], "target": r.get("target") or 1.0, "kind": r["kind"], "method": r["method"],
            "variant": r.get("variant"), "seeds": [], "test_accuracy": [], "drop_points": [], "latency_ratio": [],
            "macs_fraction": []})
        g["seeds"].append(r["seed"])
        g["test_accuracy"].append(r["test_accuracy"])
        g["drop_points"].append(100 * (base - r["test_accuracy"]))
        if r.get("latency_ratio") is not None:
            g["latency_ratio"].append(r["latency_ratio"])
        if r.get("macs") and own.get("macs"):
            g["macs_fraction"].append(r["macs"] / own["macs"])
    return list(groups.values())


def _seed_lines(groups):
    """The table over seeds; the latency goal at half the MACs for the fastest row that ran with more
    than one seed and stays within the accuracy goal on average; and, where both sides ran with
    more than one seed, the equal-MACs comparisons within the seed spread (met when the pruned
    mean is at least the other mean less the larger of the two standard deviations)."""
    groups = sorted(groups, key=lambda g: (-g["target"], ORDER.get(g["kind"], 9), g["method"]))
    lines = ["| target | method | seeds | test accuracy (%) | drop (points) | LiteRT latency ratio |",
             "|---|---|---|---|---|---|"]
    for g in groups:
        lines.append(f"| {g['target']:g} | {g['method']} | {', '.join(map(str, g['seeds']))} | "
                     f"{mean_sd([100 * a for a in g['test_accuracy']])} | {mean_sd(g['drop_points'])} | "
                     f"{mean_sd(g['latency_ratio'])} |")
    verdicts = []
    goal = GOALS["accuracy_drop_points"]
    within = [g for g in groups if g["target"] == 0.5 and g["kind"] in ("prune", "coupled") and len(g["seeds"]) > 1
              and len(g["latency_ratio"]) == len(g["seeds"]) and statistics.mean(g["drop_points"]) <= goal + _EPS
              and len(g["macs_fraction"]) == len(g["seeds"]) and max(g["macs_fraction"]) <= 0.5]  # 2x fewer MACs
    fastest = max(within, key=lambda g: statistics.mean(g["latency_ratio"]), default=None)
    if fastest is not None:  # the headline goal over seeds: the fastest row within the accuracy goal on average
        ratio = statistics.mean(fastest["latency_ratio"])
        verdicts.append(f"- at 0.5 of the MACs, over seeds: the fastest row within {goal:g} point of its dense model "
                        f"on average, '{fastest['method']}' (drop {mean_sd(fastest['drop_points'])}), runs "
                        f"{mean_sd(fastest['latency_ratio'])}x faster in LiteRT (goal >= {GOALS['latency_ratio']}: "
                        f"{'met' if ratio >= GOALS['latency_ratio'] - _EPS else 'not met'} on the mean)")
    for target in sorted({g["target"] for g in groups if g["kind"] == "prune"}, reverse=True):
        at = [g for g in groups if g["target"] == target and len(g["seeds"]) > 1]
        pruned = max((g for g in at if g["kind"] == "prune" and g["variant"] != "latency"),
                     key=lambda g: statistics.mean(g["test_accuracy"]), default=None)
        for kind, label in (("scaled", "width-scaled from scratch"), ("torch", "the best Torch-Pruning row")):
            other = max((g for g in at if g["kind"] == kind), key=lambda g: statistics.mean(g["test_accuracy"]),
                        default=None)
            if pruned is None or other is None:
                continue
            a, b = (statistics.mean(g["test_accuracy"]) for g in (pruned, other))
            sd = max(statistics.stdev(g["test_accuracy"]) for g in (pruned, other))
            verdicts.append(f"- at {target:g} of the MACs, over seeds: '{pruned['method']}' "
                            f"{mean_sd([100 * x for x in pruned['test_accuracy']])}% vs {label} '{other['method']}' "
                            f"{mean_sd([100 * x for x in other['test_accuracy']])}% "
                            f"({'met' if a >= b - sd else 'not met'} within the seed spread)")
    return lines, verdicts


def summarize(archs, targets, seeds, retime_all=False):
    """Time the rows not timed before (every row with ``retime_all``, see :func:`retime`) and write
    ``results/budget_pruning_<arch>.{json,md}`` for each of `archs`."""
    from benchmarks.budget_pruning import QUICK
    from benchmarks.harness import write_results

    every = []
    for arch in archs:
        rows = retime(_load([arch], targets, seeds), retime_all=retime_all)
        verdicts = _verdicts(rows)
        groups = over_seeds(rows)
        seed_table, seed_verdicts = _seed_lines(groups) if len({r["seed"] for r in rows}) > 1 else ([], [])
        verdicts += seed_verdicts
        md = "\n".join([
            f"# Budget pruning: {arch} on Fashion-MNIST (32x32x3)",
            "",
            "Figures are measured by `python -m benchmarks.budget_pruning` (see its docstring for the setup); "
            "the float LiteRT latency of a row is timed here in rounds against its dense model, once: the first "
            "summary that finds its file records it (`latency_timed`), later ones keep it (`--retime-all` times "
            "every row again).",
            "",
            "## Goals",
            "",
            *(verdicts or ["- no complete architecture yet"]),
            "",
            *(["## Over seeds", "", "Mean ± sample standard deviation over the seeds each row ran with; drops "
               "from the same seed's dense model (a Torch-Pruning row: from its own dense model).", "",
               *seed_table, ""] if seed_table else []),
            "## Rows",
            "",
            _table(rows),
        ])
        write_results(f"budget_pruning_{arch}" + ("_quick" if QUICK else ""),
                      {"rows": rows, "over_seeds": groups, "verdicts": verdicts, "goals": GOALS}, md)
        print(md)
        every += rows
    return every
