"""What every suite row records about a final Keras 3 model, the re-timing in rounds and the ratios
to the dense row (docs/benchmarks/suite.md, "Protocol")."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from ..harness import accuracy, gzip_bytes, nonzero_params, paired_speedup, time_rounds

logger = logging.getLogger(__name__)
LABELS = ("float", "int8")


def measure(model, data, tflite_dir, name, runs=50):
    """The row figures of `model`; its float32 and int8 .tflite files go to `tflite_dir`."""
    from tf_groupsparse.deploy import convert_tflite, tflite_latency
    from tf_groupsparse.metrics import count_params, flops

    x_train, _, x_test, y_test = data
    Path(tflite_dir).mkdir(parents=True, exist_ok=True)
    row = {"accuracy": accuracy(model, x_test, y_test), "params": count_params(model),
           "nonzero_params": nonzero_params(model), "macs": flops(model)}
    for label in LABELS:
        blob = convert_tflite(model, **({"quantize": "int8", "representative_data": x_train} if label == "int8" else {}))
        path = Path(tflite_dir) / f"{name}_{label}.tflite"
        path.write_bytes(blob)
        row.update({f"tflite_{label}": str(path), f"tflite_{label}_bytes": len(blob),
                    f"tflite_{label}_gzip_bytes": gzip_bytes(blob)})
        try:
            row[f"latency_{label}_s"] = tflite_latency(blob, x_test[:1], runs=runs)
            if label == "int8":
                row["accuracy_int8"] = accuracy(blob, x_test, y_test)
        except RuntimeError as exc:
            if label == "float":
                raise
            # LiteRT refuses some int8 graphs (XNNPack with 1-channel convolutions): the row keeps its float figures
            logger.warning("%s: the int8 .tflite file does not run in LiteRT: %s", name, exc)
            row.update({"tflite_int8": None, "latency_int8_s": None, "accuracy_int8": None,
                        "int8_error": str(exc).splitlines()[0][:200]})
    return row


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
