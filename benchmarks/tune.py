"""Choose a suite setting on a validation split instead of the test set.

The last 10% of the training set is held out; each value of one setting (e.g. a strength) trains
a suite method on the rest (then the model's ``train_samples`` cap, as in the suite) with the
suite's budget and seed, and is measured on the held-out part; the dense baseline is measured the
same way. The chosen value is the one with the fewest parameters (``--minimize macs``: MACs; then
the smallest gzip'd float file) among those within ``--max-loss`` points of the dense model's
validation accuracy; it goes into the model's settings in ``benchmarks/suite/jobs.py`` by hand, and
the suite row is then trained on the whole training set and measured on the test set, which the
choice never saw.

    python -m benchmarks.tune fashion/mlp hgsr_sqrt_group_lasso --key hgsr_sqrt_group_lasso_strength \\
        --values 1e-4 2e-4 3e-4 --max-loss 0.5

Each (method, value) run is kept in ``benchmarks/results/tune_jobs/`` under a name that ends in
a fingerprint of everything that trained it (the job's settings with the value, its model, the
mode's budget): a rerun with the same configuration skips it, and a change to any other setting
(e.g. in ``jobs.py``) trains again instead of reusing a stale result (runs saved before the
fingerprint, without it, are no longer read). The table goes to
``benchmarks/results/tune_<data>_<model>_<method>_<key>.{json,md}`` (``..._<key>_<tag>`` with
``--tag``: a table of the same key under other fixed settings then does not replace it). When
every value gives the same model and accuracy the setting probably did not reach the method
(e.g. a method-specific key of the same setting shadows it): the run says so.

A value is a number, JSON (e.g. one cap per layer for filter pruning,
``--values '{"fc1": 0.92}' '{"fc1": 0.872, "fc2": 0.744}'``) or a word (``--values down nearest``);
``--set KEY=VALUE`` fixes another setting for the table (it is named in it). With ``--seeds``
every value (and the dense model) trains once per seed (the seed sets the weights and batch order
of every phase) and the choice goes by the mean accuracy over the seeds: on 6,000 validation
images one run's accuracy moves by about 0.4 point (binomial standard error), as much as the
differences a setting makes near its best value. The sizes in the table are the first seed's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import harness as common  # noqa: E402
from benchmarks.rerun import (add_budget_arguments, budget_label, budget_tag, contexts_by_seed,  # noqa: E402
                              fingerprint, run_once, suite_jobs)
from benchmarks.suite.verdicts import within_loss  # noqa: E402

logger = logging.getLogger("benchmarks.tune")

HOLDOUT = 0.1  # fraction of the training set held out for validation
COLUMNS = ("accuracy", "params", "nonzero_params", "macs", "tflite_float_bytes", "tflite_float_gzip_bytes",
           "latency_float_s", "train_s", "setting")


def parse_value(text):
    """A ``--values`` or ``--set`` item: a number (float), else JSON (e.g. ``{"fc1": 0.9}``, a
    list), else the text itself (e.g. ``nearest``)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def value_text(value):
    """`value` for file names and tables: ``0.0001``, ``fc1:0.872,fc2:0.744``."""
    if isinstance(value, dict):
        return ",".join(f"{k}:{v:g}" if isinstance(v, (int, float)) else f"{k}:{v}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _assignment(text):
    """``KEY=VALUE`` of ``--set`` -> (key, value as :func:`parse_value` reads it)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"tune: --set expects KEY=VALUE, got {text!r}")
    return key, parse_value(value)


def choose(runs, dense_accuracy, max_loss, minimize="params"):
    """The run with the fewest parameters (or MACs, `minimize`; then the smallest gzip'd file)
    whose validation accuracy is at most `max_loss` points below `dense_accuracy`, or None."""
    ok = [r for r in runs if within_loss(100 * (r["accuracy"] - dense_accuracy), max_loss)]
    return min(ok, key=lambda r: (r[minimize], r["tflite_float_gzip_bytes"]), default=None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", metavar="DATA/MODEL", help="a (data, model) of the full suite, e.g. fashion/mlp")
    parser.add_argument("method", help="a suite method of that model, e.g. hgsr_sqrt_group_lasso")
    parser.add_argument("--key", required=True, help="the setting to vary, e.g. hgsr_sqrt_group_lasso_strength")
    parser.add_argument("--values", type=parse_value, nargs="+", required=True,
                        help="the values to try: numbers, JSON such as '{\"fc1\": 0.9}', or words")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="other settings of the method fixed for this tuning (numbers, JSON or words), "
                             "e.g. prune_tolerance_strong=1.0")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="train every value and the dense model once per seed; choose by the mean (default 0)")
    parser.add_argument("--max-loss", type=float, default=0.5,
                        help="largest validation accuracy loss (points) against dense of a value that may be chosen")
    parser.add_argument("--minimize", default="params", choices=("params", "macs"),
                        help="what the chosen value has least of (the MLP target counts parameters, the CNN one MACs)")
    parser.add_argument("--tag", default="",
                        help="appended to the table's name: keeps tables of one key under other fixed settings apart")
    add_budget_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)

    wanted = suite_jobs("tune", args.mode, args.model, ("dense", args.method))
    data, model = args.model.split("/")
    tag = "" if args.mode == "full" else f"_{args.mode}"
    jobs_dir = common.RESULTS / f"tune{tag}_jobs"
    # the suite's model cache: models trained on the same samples are shared
    make = contexts_by_seed(args.mode, args, holdout=HOLDOUT)
    budget = budget_tag(args)

    def run(job, name, seed, label=""):
        # seed 0 keeps the names (and fingerprints) of the runs made before --seeds
        tag = budget + (f"__seed{seed}" if seed else "")
        return run_once(job, lambda: make(job, seed), jobs_dir / f"{data}__{model}__{name}{tag}"
                        f"__{fingerprint(job, args.mode, tag)}.json", COLUMNS,
                        label=label + (f" seed {seed}" if seed else ""))

    dense = {seed: run(wanted["dense"], "dense", seed) for seed in args.seeds}
    base = {**dense[args.seeds[0]], "accuracy": statistics.fmean(d["accuracy"] for d in dense.values())}
    runs, template = [], wanted[args.method]
    fixed = dict(_assignment(a) for a in args.set)
    if fixed:
        template = dataclasses.replace(template, settings=tuple(sorted({**dict(template.settings), **fixed}.items())))
    for value in args.values:
        settings = tuple(sorted({**dict(template.settings), args.key: value}.items()))
        job = dataclasses.replace(template, settings=settings)
        per_seed = {seed: run(job, f"{args.method}__{args.key}={value_text(value)}", seed,
                              f"{args.key}={value_text(value)}") for seed in args.seeds}
        deltas = [round(100 * (per_seed[s]["accuracy"] - dense[s]["accuracy"]), 2) for s in args.seeds]
        row = {**per_seed[args.seeds[0]], "accuracy": statistics.fmean(r["accuracy"] for r in per_seed.values())}
        runs.append({**row, "value": value, "delta_pt": round(statistics.fmean(deltas), 2),
                     **({"seed_delta_pt": deltas} if len(args.seeds) > 1 else {})})
    if len(runs) > 1 and len({(r["accuracy"], r["params"], r["macs"]) for r in runs}) == 1:
        logger.warning("tune: every value of %s gave the same model and accuracy: the setting probably does not "
                       "reach %s (is it shadowed by a method-specific setting in jobs.py?)", args.key, args.method)
    chosen = choose(runs, base["accuracy"], args.max_loss, args.minimize)
    seeds = len(args.seeds) > 1
    over = f" (means over seeds {', '.join(map(str, args.seeds))}; params etc. of seed {args.seeds[0]})" if seeds else ""
    md = [f"# Validation tuning: {args.model} / {args.method}, {args.key}", "",
          f"Trained on the first {100 - round(100 * HOLDOUT)}% of the training set (then "
          + (f"the first {args.train_samples:,} of those" if args.train_samples else "the model's train_samples cap")
          + f"), measured on the last {round(100 * HOLDOUT)}%; the test set is not used. Dense validation "
          f"accuracy {100 * base['accuracy']:.2f}%{over} with {base['params']:,} parameters. Rule: the fewest "
          f"{args.minimize} within {args.max_loss:g} point(s) of dense{' on average' if seeds else ''}."
          + (f" Budget other than the suite's: {budget_label(args)}." if budget else "")
          + (f" Fixed for this table: {', '.join(f'{k} = {value_text(v)}' for k, v in fixed.items())}." if fixed else ""),
          "",
          f"| {args.key} | val acc % | Δ pt |{' Δ per seed |' if seeds else ''} params | params x | MACs x | "
          "float gz KB | float µs |",
          "|---|---|---|" + ("---|" if seeds else "") + "---|---|---|---|---|"]
    for r in runs:
        per_seed = f" {' / '.join(f'{d:+.2f}' for d in r['seed_delta_pt'])} |" if seeds else ""
        md.append(f"| {value_text(r['value'])}{' (chosen)' if r is chosen else ''} | {100 * r['accuracy']:.2f} | "
                  f"{r['delta_pt']:+.2f} |{per_seed} {r['params']:,} | {base['params'] / r['params']:.2f} | "
                  f"{base['macs'] / r['macs']:.2f} | "
                  f"{r['tflite_float_gzip_bytes'] / 1024:.1f} | {1e6 * r['latency_float_s']:.1f} |")
    md += ["", f"Chosen: {args.key} = {value_text(chosen['value'])}" if chosen else
           f"Chosen: none (no value within {args.max_loss:g} point(s) of dense)"]
    name = f"tune{tag}_{data}_{model}_{args.method}_{args.key}" + (f"_{args.tag}" if args.tag else "")
    common.write_results(name, {"key": args.key, "max_loss": args.max_loss, "minimize": args.minimize,
                                "holdout": HOLDOUT, "seeds": args.seeds, "fixed": fixed, "dense": base,
                                "runs": runs, "chosen": None if chosen is None else chosen["value"]}, "\n".join(md))
    print("\n".join(md))
    return base, runs, chosen


if __name__ == "__main__":
    main()
