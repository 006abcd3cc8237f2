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
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402
from benchmarks.suite import jobs as jobs_mod  # noqa: E402

logger = logging.getLogger("benchmarks.tune")

HOLDOUT = 0.1  # fraction of the training set held out for validation
COLUMNS = ("accuracy", "params", "nonzero_params", "macs", "tflite_float_bytes", "tflite_float_gzip_bytes",
           "latency_float_s", "train_s", "setting")


def choose(runs, dense_accuracy, max_loss, minimize="params"):
    """The run with the fewest parameters (or MACs, `minimize`; then the smallest gzip'd file)
    whose validation accuracy is at most `max_loss` points below `dense_accuracy`, or None."""
    ok = [r for r in runs if 100 * (dense_accuracy - r["accuracy"]) <= max_loss + 1e-9]
    return min(ok, key=lambda r: (r[minimize], r["tflite_float_gzip_bytes"]), default=None)


def fingerprint(job, mode, budget=""):
    """A short hash of what trains `job`: its fields (settings included) and the `mode`'s budget
    and default settings, plus `budget` (an override of the epochs). The dense baseline's hash
    leaves out the settings other than the training budget (``run_all.TRAINING_KEYS``), which it
    never reads: changing a method's setting does not retrain it."""
    from benchmarks.run_all import TRAINING_KEYS

    cfg = {k: v for k, v in jobs_mod.MODES[mode].items() if k not in ("models", "methods")}
    fields = dataclasses.asdict(job)
    if job.method == "dense":  # the dense baseline reads only the training budget of the settings
        fields["settings"] = [kv for kv in job.settings if kv[0] in TRAINING_KEYS]
        cfg["settings"] = {k: v for k, v in cfg["settings"].items() if k in TRAINING_KEYS}
    text = json.dumps({"job": fields, "mode": cfg, "budget": budget}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _run(job, make, path):
    """Run `job` (its settings already hold the value) unless `path` has its result; one row."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    from benchmarks.suite.methods import METHODS

    rows = METHODS[job.method](make(job))
    row = {k: rows[0].get(k) for k in COLUMNS}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1, default=float), encoding="utf-8")
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", metavar="DATA/MODEL", help="a (data, model) of the full suite, e.g. fashion/mlp")
    parser.add_argument("method", help="a suite method of that model, e.g. hgsr_sqrt_group_lasso")
    parser.add_argument("--key", required=True, help="the setting to vary, e.g. hgsr_sqrt_group_lasso_strength")
    parser.add_argument("--values", type=float, nargs="+", required=True, help="the values to try")
    parser.add_argument("--max-loss", type=float, default=0.5,
                        help="largest validation accuracy loss (points) against dense of a value that may be chosen")
    parser.add_argument("--minimize", default="params", choices=("params", "macs"),
                        help="what the chosen value has least of (the MLP target counts parameters, the CNN one MACs)")
    parser.add_argument("--tag", default="",
                        help="appended to the table's name: keeps tables of one key under other fixed settings apart")
    parser.add_argument("--mode", default="full", choices=sorted(jobs_mod.MODES))
    parser.add_argument("--epochs", type=int, default=None, help="override the mode's epochs (tests)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="override the fine-tune epochs (tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    from benchmarks import run_all

    table = {j.key: j for j in jobs_mod.job_table(args.mode)}
    wanted = {m: table.get(f"{args.model}/{m}") for m in ("dense", args.method)}
    missing = [f"{args.model}/{m}" for m, j in wanted.items() if j is None]
    if missing:
        raise SystemExit(f"tune: no job {', '.join(missing)} in the {args.mode} suite; see "
                         "`python -m benchmarks.run_all --list` for the (data/model/method) jobs")
    data, model = args.model.split("/")
    tag = "" if args.mode == "full" else f"_{args.mode}"
    jobs_dir = common.RESULTS / f"tune{tag}_jobs"
    cache = run_all.paths(args.mode)[2]  # the suite's: models trained on the same samples are shared
    make = run_all.context_factory(args.mode, SimpleNamespace(train_samples=None, epochs=args.epochs,
                                                              finetune_epochs=args.finetune_epochs, seed=0),
                                   cache, holdout=HOLDOUT)
    budget = "" if args.epochs is None and args.finetune_epochs is None else \
        f"__e{args.epochs}_f{args.finetune_epochs}"  # runs with another budget are kept apart
    base = _run(wanted["dense"], make, jobs_dir / f"{data}__{model}__dense{budget}"
                f"__{fingerprint(wanted['dense'], args.mode, budget)}.json")
    runs, template = [], wanted[args.method]
    for value in args.values:
        settings = tuple(sorted({**dict(template.settings), args.key: value}.items()))
        job = dataclasses.replace(template, settings=settings)
        logger.info("%s %s=%g ...", job.key, args.key, value)
        row = _run(job, make, jobs_dir / f"{data}__{model}__{args.method}__{args.key}={value:g}{budget}"
                   f"__{fingerprint(job, args.mode, budget)}.json")
        runs.append({**row, "value": value, "delta_pt": round(100 * (row["accuracy"] - base["accuracy"]), 2)})
    if len(runs) > 1 and len({(r["accuracy"], r["params"], r["macs"]) for r in runs}) == 1:
        logger.warning("tune: every value of %s gave the same model and accuracy: the setting probably does not "
                       "reach %s (is it shadowed by a method-specific setting in jobs.py?)", args.key, args.method)
    chosen = choose(runs, base["accuracy"], args.max_loss, args.minimize)
    md = [f"# Validation tuning: {args.model} / {args.method}, {args.key}", "",
          f"Trained on the first {100 - round(100 * HOLDOUT)}% of the training set (then the model's train_samples "
          f"cap), measured on the last {round(100 * HOLDOUT)}%; the test set is not used. Dense validation "
          f"accuracy {100 * base['accuracy']:.2f}% with {base['params']:,} parameters. Rule: the fewest "
          f"{args.minimize} within {args.max_loss:g} point(s) of dense.", "",
          f"| {args.key} | val acc % | Δ pt | params | params x | MACs x | float gz KB | float µs |",
          "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        md.append(f"| {r['value']:g}{' (chosen)' if r is chosen else ''} | {100 * r['accuracy']:.2f} | "
                  f"{r['delta_pt']:+.2f} | {r['params']:,} | {base['params'] / r['params']:.2f} | "
                  f"{base['macs'] / r['macs']:.2f} | "
                  f"{r['tflite_float_gzip_bytes'] / 1024:.1f} | {1e6 * r['latency_float_s']:.1f} |")
    md += ["", f"Chosen: {args.key} = {chosen['value']:g}" if chosen else
           f"Chosen: none (no value within {args.max_loss:g} point(s) of dense)"]
    name = f"tune{tag}_{data}_{model}_{args.method}_{args.key}" + (f"_{args.tag}" if args.tag else "")
    common.write_results(name, {"key": args.key, "max_loss": args.max_loss, "minimize": args.minimize,
                                "holdout": HOLDOUT, "dense": base,
                                "runs": runs, "chosen": None if chosen is None else chosen["value"]}, "\n".join(md))
    print("\n".join(md))
    return base, runs, chosen


if __name__ == "__main__":
    main()
