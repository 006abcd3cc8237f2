"""The re-timing of the suite's rows in rounds and their ratios to the dense row
(docs/benchmarks/suite.md, "Protocol"); what a row records is measured by ``methods.Context.row``."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..harness import paired_speedup, time_rounds

LABELS = ("float", "int8")


def retime(rows, sample, rounds=3, runs=100, groups=None):
    """Time the rows' .tflite files again with ``harness.time_rounds``, one call per dataset (input
    ``sample[data]``), rows ordered by (data, model), dense first; each row gets
    ``latency_<label>_rounds`` and their median. A (data, model) group with a file missing or left out
    of `groups` keeps its figures and gets ``"retimed": False``. Returns `rows`."""
    def group(r):
        return r["data"], r["model"]

    def files(r):
        return {label: r[f"tflite_{label}"] for label in LABELS if r.get(f"tflite_{label}")}

    incomplete = {group(r) for r in rows if not all(Path(p).is_file() for p in files(r).values())}
    chosen = [i for i, r in enumerate(rows) if (groups is None or group(r) in groups) and group(r) not in incomplete]
    chosen.sort(key=lambda i: (*group(rows[i]), rows[i]["method"] != "dense"))
    for r in rows:
        r["retimed"] = False
    for data in dict.fromkeys(rows[i]["data"] for i in chosen):
        models = {(i, label): path for i in chosen if rows[i]["data"] == data for label, path in files(rows[i]).items()}
        for (i, label), seconds in time_rounds(models, sample[data], rounds=rounds, runs=runs).items():
            rows[i].update({f"latency_{label}_rounds": seconds, f"latency_{label}_s": statistics.median(seconds),
                            "retimed": True})
    return rows


def speedup(base, row, label):
    """Baseline latency / row latency: the median of the per-round ratios when both rows were timed in
    the same rounds, else the ratio of their latencies."""
    mine, theirs = row.get(f"latency_{label}_rounds"), base.get(f"latency_{label}_rounds")
    if mine and theirs and len(mine) == len(theirs):
        return paired_speedup(theirs, mine)
    mine, theirs = row.get(f"latency_{label}_s"), base.get(f"latency_{label}_s")
    return theirs / mine if mine and theirs else None


def add_ratios(rows):
    """Ratios to the dense row of the same (data, model): dense / row for params, MACs, file bytes and
    latency (> 1 is better), and the accuracy change in points (row - dense)."""
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
