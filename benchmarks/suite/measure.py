"""What every suite row records about a final Keras 3 model, and the re-timing in rounds.

Accuracy (Keras, test set), parameters (all, and nonzero), multiply-adds per sample
(``metrics.flops``), the float32 and int8 .tflite bytes raw and gzip'd, the int8 file's accuracy in
LiteRT and the median one-sample LiteRT latency (1 thread); :func:`retime` times all rows again.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from ..harness import accuracy, gzip_bytes, nonzero_params

logger = logging.getLogger(__name__)


def measure(model, data, tflite_dir, name, runs=50):
    """The row figures of `model` (see the module docstring); .tflite files go to `tflite_dir`."""
    from tf_groupsparse.deploy import convert_tflite, tflite_latency
    from tf_groupsparse.metrics import count_params, flops

    x_train, _, x_test, y_test = data
    tflite_dir = Path(tflite_dir)
    tflite_dir.mkdir(parents=True, exist_ok=True)
    row = {"accuracy": accuracy(model, x_test, y_test), "params": count_params(model),
           "nonzero_params": nonzero_params(model), "macs": flops(model)}
    for label, quantize in (("float", None), ("int8", "int8")):
        kwargs = {"representative_data": x_train} if quantize else {}
        blob = convert_tflite(model, quantize=quantize, **kwargs)
        path = tflite_dir / f"{name}_{label}.tflite"
        path.write_bytes(blob)
        row[f"tflite_{label}"] = str(path)
        row[f"tflite_{label}_bytes"] = len(blob)
        row[f"tflite_{label}_gzip_bytes"] = gzip_bytes(blob)
        try:
            row[f"latency_{label}_s"] = tflite_latency(blob, x_test[:1], runs=runs)
            if quantize == "int8":
                row["accuracy_int8"] = accuracy(blob, x_test, y_test)
        except RuntimeError as exc:
            if quantize is None:
                raise
            # LiteRT refuses some int8 graphs (e.g. XNNPack with 1-channel convolutions): the row keeps
            # its float figures and records why the int8 ones are missing.
            logger.warning("%s: the int8 .tflite file does not run in LiteRT: %s", name, exc)
            row[f"tflite_{label}"] = None
            row[f"latency_{label}_s"] = row["accuracy_int8"] = None
            row["int8_error"] = str(exc).splitlines()[0][:200]
    return row


def retime(rows, sample, rounds=3, runs=100, groups=None):
    """Time every row's float and int8 .tflite files again, in `rounds` rounds, each timing the rows
    (data, model) group by group, dense first, so a row and its baseline are timed seconds apart (the
    CPU's speed drifts within minutes: the same file measured 1.5x apart in two runs); each row
    keeps its per-round figures (``latency_<label>_rounds``, for :func:`add_ratios`) and their median.
    A group with any file missing (a fresh checkout has none: they live in the cache) or left out of
    `groups` (a set of (data, model)) keeps its figures and gets ``"retimed": False``. Returns `rows`.
    """
    from tf_groupsparse.deploy import tflite_latency

    def group(i):
        return rows[i]["data"], rows[i]["model"]

    def has_files(row):
        return all(Path(row[f"tflite_{label}"]).is_file() for label in ("float", "int8") if row.get(f"tflite_{label}"))

    incomplete = {group(i) for i in range(len(rows)) if not has_files(rows[i])}
    chosen = {i for i in range(len(rows)) if groups is None or group(i) in groups}
    order = sorted((i for i in chosen if group(i) not in incomplete),
                   key=lambda i: (*group(i), rows[i]["method"] != "dense"))
    samples = {}
    for r in range(rounds):
        for i in order:
            row = rows[i]
            for label in ("float", "int8"):
                path = row.get(f"tflite_{label}")
                if path:
                    samples.setdefault((i, label), []).append(tflite_latency(path, sample[row["data"]], runs=runs))
    for i, row in enumerate(rows):
        if i not in chosen:
            row["retimed"] = False
            continue
        row["retimed"] = all((i, label) in samples for label in ("float", "int8") if row.get(f"tflite_{label}"))
        for label in ("float", "int8"):
            if (i, label) in samples:
                row[f"latency_{label}_rounds"] = samples[(i, label)]
                row[f"latency_{label}_s"] = statistics.median(samples[(i, label)])
    return rows


def speedup(base, row, label):
    """Baseline latency / row latency: the median of the per-round ratios when both rows were
    timed in the same rounds (see :func:`retime`), else the ratio of their latencies."""
    mine, theirs = row.get(f"latency_{label}_rounds"), base.get(f"latency_{label}_rounds")
    if mine and theirs and len(mine) == len(theirs):
        return statistics.median(t / m for t, m in zip(theirs, mine))
    mine, theirs = row.get(f"latency_{label}_s"), base.get(f"latency_{label}_s")
    return theirs / mine if mine and theirs else None


def add_ratios(rows):
    """Add ratios to the dense baseline of the same (data, model): params, MACs, file size
    (dense / row, so > 1 is better), latency speed-up (dense latency / row latency, see :func:`speedup`) and the
    accuracy change in points (row - dense)."""
    dense = {(r["data"], r["model"]): r for r in rows if r["method"] == "dense"}
    for row in rows:
        base = dense.get((row["data"], row["model"]))
        if base is None:
            continue
        row["params_x"] = base["params"] / row["params"]
        row["nonzero_x"] = base["nonzero_params"] / max(1, row["nonzero_params"])
        row["macs_x"] = base["macs"] / row["macs"] if row.get("macs") else None
        for label in ("float", "int8"):
            row[f"speedup_{label}"] = speedup(base, row, label)
            row[f"bytes_{label}_x"] = base[f"tflite_{label}_bytes"] / row[f"tflite_{label}_bytes"]
        row["accuracy_delta_pt"] = 100.0 * (row["accuracy"] - base["accuracy"])
    return rows
