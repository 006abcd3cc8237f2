"""Seed spread: how much of a suite row's accuracy loss is the draw of its seed.

Reruns rows of the full suite with other seeds, each beside its model's dense baseline at the
same seed. The seed initializes the weights and orders the batches of every phase (the dense
model, the model a method starts from, its fine-tuning), so a seed is a whole new run of the row
on the same data and budget: trained on the model's training samples (all, or the suite's cap,
e.g. the CNNs' first 20,000), measured on the test set, as in the suite. ``--train-samples N``
(and ``--epochs``) run at another budget: those runs, models and table
(``seed_spread_<data>_<model>_n<N>.md``) are kept apart, and the suite's summary lists such a
spread under the verdict as one at another budget. Per seed the table gives each row's accuracy
difference to the same seed's dense model and its speed-up (latencies timed in each job); then
the mean and the sample standard deviation over the seeds, and how many seeds stay within
``--max-loss`` points (the headline target's 0.5 for the MLPs).

    python -m benchmarks.seed_spread fashion/mlp_b32 --methods filter_pruning_strong scratch_target \\
        --seeds 0 1 2 3

Each (row, seed) run is kept in ``benchmarks/results/seed_spread_jobs/`` under a name that ends
in the fingerprint of its configuration (as in :mod:`benchmarks.tune`), so an interrupted run
resumes and a change in ``jobs.py`` trains again; seed 0 is the suite's own seed (its models are
shared with the suite through the cache). A seed repeats a run bit for bit within one process (tested);
on another host (another CPU's kernels round differently) it is another draw: the batch-32 MLP's dense model,
89.79% in the suite, was 89.98% here at seed 0 on another host. The table goes to
``benchmarks/results/seed_spread_<data>_<model>.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import harness as common  # noqa: E402
from benchmarks.rerun import (add_budget_arguments, budget_label, budget_tag, contexts_by_seed,  # noqa: E402
                              fingerprint, run_once, suite_jobs)
from benchmarks.suite.methods import TARGET_SIZE  # noqa: E402
from benchmarks.suite.verdicts import within_loss  # noqa: E402

COLUMNS = ("accuracy", "params", "macs", "tflite_float_gzip_bytes", "latency_float_s", "train_s", "setting")


def spread(deltas, max_loss):
    """Mean, sample standard deviation (0 for one seed) and the count of `deltas` (points, one per
    seed) at most `max_loss` points below zero."""
    mean = statistics.fmean(deltas)
    sd = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
    return {"mean": round(mean, 2), "sd": round(sd, 2), "within": sum(within_loss(d, max_loss) for d in deltas)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", metavar="DATA/MODEL", help="a (data, model) of the suite, e.g. fashion/mlp_b32")
    parser.add_argument("--methods", nargs="+", required=True, help="suite methods of that model (dense is added)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--max-loss", type=float, default=0.5,
                        help="points of loss a seed may have and count as within")
    add_budget_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)

    methods = ["dense"] + [m for m in args.methods if m != "dense"]
    jobs = suite_jobs("seed_spread", args.mode, args.model, methods)
    data, model = args.model.split("/")
    tag = "" if args.mode == "full" else f"_{args.mode}"
    jobs_dir = common.RESULTS / f"seed_spread{tag}_jobs"
    # the suite's model cache (seed 0's models are the suite's); .tflite files apart from the suite
    # rows' (seed 0 shares their directory otherwise)
    budget = budget_tag(args)  # runs at another budget than the suite's are kept apart, with their own table
    make = contexts_by_seed(args.mode, args, tflite_subdir="tflite_seed_spread{seed}" + budget)

    def run(job, seed):
        tag = f"__seed{seed}{budget}"
        return run_once(job, lambda: make(job, seed), jobs_dir / f"{job.data}__{job.model}__{job.method}{tag}__"
                        f"{fingerprint(job, args.mode, budget + f'__seed{seed}')}.json", COLUMNS,
                        label=f"seed {seed}")

    runs = {m: {s: run(jobs[m], s) for s in args.seeds} for m in methods}
    dense = runs["dense"]
    result = {}
    for m in methods:
        deltas = [round(100 * (runs[m][s]["accuracy"] - dense[s]["accuracy"]), 2) for s in args.seeds]
        result[m] = {"accuracy": {s: runs[m][s]["accuracy"] for s in args.seeds},
                     "params": {s: runs[m][s]["params"] for s in args.seeds},
                     "macs": {s: runs[m][s]["macs"] for s in args.seeds},
                     "latency_float_s": {s: runs[m][s]["latency_float_s"] for s in args.seeds},
                     "delta_pt": dict(zip(args.seeds, deltas)), **spread(deltas, args.max_loss),
                     "setting": runs[m][args.seeds[0]]["setting"]}
    seeds = " | ".join(f"seed {s} Δ pt" for s in args.seeds)
    n = args.train_samples or jobs["dense"].train_samples
    samples = "the whole training set" if n is None else f"the first {n:,} training samples (or all there are)"
    # the size the model's headline target counts: parameters for the MLPs, MACs for the CNNs
    size = TARGET_SIZE.get(jobs["dense"].arch, ("params", None))[0]
    md = [f"# Seed spread: {args.model}", "",
          "Each seed is a whole run of the row and of its model's dense baseline (weights and batch order of "
          f"every phase), trained on {samples} and measured on the test set; Δ is against the dense "
          f"model of the same seed (with the seed's {dict(params='parameter', macs='MACs')[size]} ratio in brackets "
          "when the rows' sizes differ by "
          "seed). Latency x: the dense model's float LiteRT latency over the row's, per seed, each timed in its "
          f"own job (not paired in rounds as the suite's re-timing is). Within: seeds at most {args.max_loss:g} "
          "point(s) below dense.", "",
          "Dense accuracy by seed: " + ", ".join(f"{s}: {100 * dense[s]['accuracy']:.2f}%" for s in args.seeds), "",
          f"| method | params x | MACs x | latency x | {seeds} | mean Δ pt | sd | within |",
          "|---|---|---|---|" + "---|" * len(args.seeds) + "---|---|---|"]

    def span(ratios):  # "lo" or "lo-hi" of the per-seed ratios
        lo, hi = min(ratios.values()), max(ratios.values())
        return f"{lo:.2f}" + ("" if round(lo, 2) == round(hi, 2) else f"-{hi:.2f}")

    for m in methods[1:]:
        r = result[m]
        ratios = {key: {s: dense[s][key] / v for s, v in r[key].items()}
                  for key in ("params", "macs", "latency_float_s")}
        same = "-" not in span(ratios[size])  # else each seed's cell gives its own
        md.append(f"| {m} | {span(ratios['params'])} | {span(ratios['macs'])} | {span(ratios['latency_float_s'])} | "
                  + " | ".join(f"{d:+.2f}" + ("" if same else f" ({ratios[size][s]:.1f}x)")
                               for s, d in r["delta_pt"].items())
                  + f" | {r['mean']:+.2f} | {r['sd']:.2f} | {r['within']} of {len(args.seeds)} |")
    md += ["", "Settings:", ""] + [f"- {m}: {result[m]['setting']}" for m in methods[1:]]
    common.write_results(f"seed_spread{tag}_{data}_{model}{budget.replace('__', '_')}",
                         {"model": args.model, "seeds": args.seeds, "max_loss": args.max_loss,
                          "train_samples": n, "budget": budget_label(args) or None,
                          "rows": result},
                         "\n".join(md))
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
