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
import logging
import os
import sys
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402
from benchmarks.rerun import add_budget_arguments, budget_tag, fingerprint, run_once, suite_jobs  # noqa: E402

logger = logging.getLogger("benchmarks.tune")

HOLDOUT = 0.1  # fraction of the training set held out for validation
COLUMNS = ("accuracy", "params", "nonzero_params", "macs", "tflite_float_bytes", "tflite_float_gzip_bytes",
           "latency_float_s", "train_s", "setting")


def choose(runs, dense_accuracy, max_loss, minimize="params"):
    """The run with the fewest parameters (or MACs, `minimize`; then the smallest gzip'd file)
    whose validation accuracy is at most `max_loss` points below `dense_accuracy`, or None."""
    ok = [r for r in runs if 100 * (dense_accuracy - r["accuracy"]) <= max_loss + 1e-9]
    return min(ok, key=lambda r: (r[minimize], r["tflite_float_gzip_bytes"]), default=None)


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
    add_budget_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    from benchmarks import run_all

    wanted = suite_jobs("tune", args.mode, args.model, ("dense", args.method))
    data, model = args.model.split("/")
    tag = "" if args.mode == "full" else f"_{args.mode}"
    jobs_dir = common.RESULTS / f"tune{tag}_jobs"
    cache = run_all.paths(args.mode)[2]  # the suite's: models trained on the same samples are shared
    make = run_all.context_factory(args.mode, SimpleNamespace(train_samples=None, epochs=args.epochs,
                                                              finetune_epochs=args.finetune_epochs, seed=0),
                                   cache, holdout=HOLDOUT)
    budget = budget_tag(args)
    base = run_once(wanted["dense"], lambda: make(wanted["dense"]), jobs_dir / f"{data}__{model}__dense{budget}"
                    f"__{fingerprint(wanted['dense'], args.mode, budget)}.json", COLUMNS)
    runs, template = [], wanted[args.method]
    for value in args.values:
        settings = tuple(sorted({**dict(template.settings), args.key: value}.items()))
        job = dataclasses.replace(template, settings=settings)
        row = run_once(job, lambda: make(job), jobs_dir / f"{data}__{model}__{args.method}__{args.key}={value:g}"
                       f"{budget}__{fingerprint(job, args.mode, budget)}.json", COLUMNS, label=f"{args.key}={value:g}")
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
