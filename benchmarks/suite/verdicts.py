"""The headline targets of the suite, computed from the rows after ``measure.add_ratios``; what they
are and which rows count: docs/benchmarks/suite.md, "Protocol". Each verdict is a dict: ``met``
(True, False, or None when the rows needed are missing), the ``target`` text and the figures behind it."""

from __future__ import annotations

from .measure import speedup

PEER_PREFIX = "tfmot"
REFERENCES = ("dense", "scratch_target")
EQUAL_ACCURACY_PT = 0.5
#: the size factors of the targets (also the sizes ``methods.scratch_target`` scales down to)
MLP_PARAMS_FACTOR = 10.0
CNN_MACS_FACTOR = 3.0
_EPS_PT = 1e-9  # a loss equal to the limit is within it (float noise of test-set fractions)


def within_loss(delta_pt, max_loss_pt):
    """Whether an accuracy change of `delta_pt` points is a loss of at most `max_loss_pt`."""
    return delta_pt >= -max_loss_pt - _EPS_PT


def _ours(rows, data, model):
    return [r for r in rows if r["data"] == data and r["model"] == model and r["method"] not in REFERENCES
            and not r["method"].startswith(PEER_PREFIX) and "accuracy_delta_pt" in r]


def _reference(rows, data, model, *keys):
    ref = [r for r in rows if r["data"] == data and r["model"] == model and r["method"] == "scratch_target"
           and "accuracy_delta_pt" in r]
    return _summary(ref[0], *keys) if ref else None


def _summary(row, *keys):
    return None if row is None else {"method": row["method"], **{k: row.get(k) for k in keys}}


def mlp_params(rows, data="fashion", model="mlp", factor=MLP_PARAMS_FACTOR, max_loss_pt=0.5):
    """>= `factor` x fewer parameters at <= `max_loss_pt` accuracy loss."""
    target = f"{data} {model}: >= {factor:g}x fewer parameters at <= {max_loss_pt:g} point accuracy loss"
    ours = _ours(rows, data, model)
    # what every answer carries: the model and the limits the seed spread is judged by, too
    common = {"target": target, "model": model, "max_loss_pt": max_loss_pt, "size": ("params", factor),
              "reference": _reference(rows, data, model, "params_x", "accuracy_delta_pt", "params")}
    if not ours:
        return {**common, "met": None, "best": None, "nearest_at_size": None}
    ok = [r for r in ours if within_loss(r["accuracy_delta_pt"], max_loss_pt)]
    best = max(ok, key=lambda r: r["params_x"], default=None)  # the most compressed within the loss
    met = bool(best is not None and best["params_x"] >= factor)
    # when not met, the nearest miss from the other side: the least loss at the target size
    nearest = None if met else max((r for r in ours if r["params_x"] >= factor),
                                   key=lambda r: r["accuracy_delta_pt"], default=None)
    keys = ("params_x", "accuracy_delta_pt", "params")
    return {**common, "met": met, "best": _summary(best, *keys), "nearest_at_size": _summary(nearest, *keys)}


def cnn_flops_latency(rows, data="fashion", model="vgg", macs_factor=CNN_MACS_FACTOR, speedup=2.5, max_loss_pt=1.0):
    """>= `macs_factor` x fewer MACs and >= `speedup` x lower float latency at <= `max_loss_pt` loss."""
    target = (f"{data} {model}: >= {macs_factor:g}x fewer FLOPs and >= {speedup:g}x lower TFLite latency "
              f"at <= {max_loss_pt:g} point accuracy loss")
    ours = _ours(rows, data, model)
    common = {"target": target, "model": model, "max_loss_pt": max_loss_pt, "size": ("macs", macs_factor),
              "speedup_factor": speedup,
              "reference": _reference(rows, data, model, "macs_x", "speedup_float", "accuracy_delta_pt")}
    if not ours:
        return {**common, "met": None, "best": None}
    ok = [r for r in ours if within_loss(r["accuracy_delta_pt"], max_loss_pt) and r.get("macs_x")]
    score = lambda r: min(r["macs_x"] / macs_factor, r["speedup_float"] / speedup)  # noqa: E731
    best = max(ok, key=score, default=None)
    return {**common, "met": bool(best is not None and score(best) >= 1.0),
            "best": _summary(best, "macs_x", "speedup_float", "accuracy_delta_pt")}


def vs_tfmot(rows, data="fashion", model="mlp", tolerance_pt=EQUAL_ACCURACY_PT):
    """Per tfmot level: our fastest row at equal accuracy beats it on latency and file size."""
    target = (f"{data} {model}: at equal accuracy (within {tolerance_pt:g} point) lower TFLite latency "
              "and a smaller .tflite file (raw and gzip) than every tfmot level")
    peers = [r for r in rows if r["data"] == data and r["model"] == model
             and r["method"].startswith(PEER_PREFIX + "_") and r.get("target_sparsity")]
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
        met = bool(best is not None and beats(best, peer))
        levels.append({"peer": peer["method"], "peer_accuracy": peer["accuracy"],
                       "peer_latency_float_s": peer["latency_float_s"],
                       "peer_tflite_float_bytes": peer["tflite_float_bytes"],
                       "peer_tflite_float_gzip_bytes": peer["tflite_float_gzip_bytes"], "met": met,
                       "ours": _summary(best, "accuracy", "latency_float_s", "tflite_float_bytes",
                                        "tflite_float_gzip_bytes")})
    return {"target": target, "met": all(level["met"] for level in levels), "best": None, "levels": levels}


#: architecture -> (verdict name, verdict) of the size target its models are judged by; the 1-D CNN
#: has none (the targets are set for Fashion-MNIST's MLP and 2-D CNNs)
SIZE_TARGETS = {"mlp": ("mlp_params", mlp_params), "vgg": ("cnn_flops_latency", cnn_flops_latency),
                "resnet": ("cnn_flops_latency", cnn_flops_latency)}


def verdicts(rows, data="fashion", archs=None):
    """All headline verdicts for `data` (name -> verdict); `archs` maps a model name to its architecture
    (default: the name itself; ``jobs.archs(mode)`` for the suite), which picks its size target."""
    models = sorted({r["model"] for r in rows if r["data"] == data})
    out = {"mlp_params": mlp_params(rows, data)}
    for model in models:
        name, verdict = SIZE_TARGETS.get((archs or {}).get(model, model), (None, None))
        if verdict is not None and model != "mlp":
            out[f"{name}[{model}]"] = verdict(rows, data, model)
    for model in models:
        out[f"vs_tfmot[{model}]"] = vs_tfmot(rows, data, model)
    return out
