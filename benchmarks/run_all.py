"""The comparison benchmark suite: every method against the dense baseline and tfmot.

A table of (data, model, method) jobs (see ``benchmarks/suite/jobs.py``); each job trains on the
same data, epochs, batch size and seed, and records test accuracy, parameters, multiply-adds,
.tflite bytes (float32 and int8, raw and gzip), the int8 model's accuracy, training time and
the one-sample LiteRT latency. At the end of every run ALL finished rows are timed again in one
interleaved pass, so latency ratios to the dense baseline come from the same run. Output:
``benchmarks/results/suite[_quick].{json,md}`` and ``suite[_quick]_{params,latency}.png``;
finished jobs are kept in ``benchmarks/results/suite[_quick]_jobs/`` (a rerun skips them unless
``--force``), models and .tflite files in ``benchmarks/results/suite_cache/`` (not committed).

    python -m benchmarks.run_all                      # full: Fashion-MNIST + MNIST-1D (hours on 2 cores)
    python -m benchmarks.run_all --quick              # digits, tiny models, a subset of methods (~3 min)
    python -m benchmarks.run_all --only 'fashion/mlp/*' '*/*/tfmot'
    python -m benchmarks.run_all --list               # print the job table and exit
    python -m benchmarks.run_all --summary-only       # re-time and report what has finished
    python -m benchmarks.run_all --summary-only --retime-only fashion/mlp_b32   # re-time one model's rows
    python -m benchmarks.run_all --summary-only --retime-only none     # report again, re-time nothing
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.harness import write_results  # noqa: E402
from benchmarks.suite import jobs as jobs_mod  # noqa: E402
from benchmarks.suite import report, verdicts  # noqa: E402
from benchmarks.suite.measure import add_ratios, retime  # noqa: E402

logger = logging.getLogger("benchmarks.run_all")

INPUT_SHAPES = {"digits": [8, 8, 1], "fashion": [28, 28, 1], "mnist1d": [40, 1]}
SUMMARY = ("data", "model", "method", "setting", "accuracy", "accuracy_int8", "accuracy_delta_pt", "params",
           "nonzero_params", "params_x", "macs", "macs_x", "tflite_float_bytes", "tflite_float_gzip_bytes",
           "tflite_int8_bytes", "tflite_int8_gzip_bytes", "latency_float_s", "latency_int8_s",
           "latency_float_rounds", "latency_int8_rounds", "speedup_float", "speedup_int8", "bytes_float_x",
           "bytes_int8_x", "train_s", "retimed",
           "target_sparsity", "int8_error", "train_samples", "epochs", "finetune_epochs", "batch_size",
           "optimizer", "learning_rate", "sgd_learning_rate", "seed", "batch_norm")


#: Context arguments a mode sets and a model's ``settings`` may override
TRAINING_KEYS = ("epochs", "finetune_epochs", "batch_size", "learning_rate", "sgd_learning_rate")


def paths(mode, seed=0):
    """(results name, jobs directory, cache directory) of `mode` under ``common.RESULTS``; a run
    at a `seed` other than 0 gets its own results and jobs (``suite_seed<seed>``), so it never
    replaces the suite's rows (the cache is shared: its models are keyed by seed)."""
    from benchmarks import harness as common

    name = ("suite" if mode == "full" else f"suite_{mode}") + (f"_seed{seed}" if seed else "")
    return name, common.RESULTS / f"{name}_jobs", common.RESULTS / "suite_cache" / mode


def context_factory(mode, args, cache, holdout=None, tflite_subdir=None):
    """job -> methods.Context, loading each dataset once.

    With `holdout` (a fraction, e.g. 0.1) the last ``holdout`` of each training set becomes the
    evaluation set in place of the test set, and training uses the samples before it (then the
    model's ``train_samples`` cap): the validation split of :mod:`benchmarks.tune`. Trained models
    are cached by their number of training samples, always the first ones, so a model whose cap
    leaves the same samples is shared with the test-set run; .tflite files go elsewhere. The rows'
    .tflite files go to `tflite_subdir` of the cache when given, else to ``tflite`` (the suite's,
    re-timed by :func:`summarize`), ``tflite_validation`` with `holdout`, plus ``_seed<seed>`` at
    a seed other than 0."""
    from benchmarks import harness as data_mod
    from benchmarks.suite.methods import Context

    cfg = jobs_mod.MODES[mode]
    loaded = {}

    def make(job):
        if job.data not in loaded:
            loaded[job.data] = data_mod.load(job.data)
            if holdout:
                x, y, _, _ = loaded[job.data]
                k = max(1, round(len(x) * holdout))
                loaded[job.data] = (x[:-k], y[:-k], x[-k:], y[-k:])
        spec = {"arch": job.arch or job.model, "input_shape": INPUT_SHAPES[job.data],
                "classes": 10, "widths": list(job.widths), "batch_norm": job.batch_norm}
        x, y, xt, yt = loaded[job.data]
        n = job.train_samples if args.train_samples is None else args.train_samples
        # a model's settings may override the mode's training budget and learning rates
        settings = {**cfg["settings"], **dict(job.settings)}
        budget = {k: settings.pop(k, cfg[k]) for k in TRAINING_KEYS}
        if args.epochs:
            budget["epochs"] = args.epochs
        if args.finetune_epochs is not None:
            budget["finetune_epochs"] = args.finetune_epochs
        return Context(job.data, job.model, spec, (x[:n], y[:n], xt, yt), **budget, seed=args.seed, cache=cache,
                       latency_runs=cfg["latency_runs"], settings=settings,
                       tflite_subdir=tflite_subdir or (("tflite_validation" if holdout else "tflite")
                                                       + (f"_seed{args.seed}" if args.seed else "")))

    return make


#: the figures of a row that :func:`measure.retime` measures again
TIMING_KEYS = ("latency_float_s", "latency_int8_s", "latency_float_rounds", "latency_int8_rounds")


def carry_timings(rows, previous):
    """Give each row the latencies of the `previous` summary's row of the same job when it is the
    same model (same accuracy and parameters). A group that cannot be re-timed (its .tflite files
    are not on this machine) then keeps figures timed together in one session's rounds instead of
    each job's own, timed apart. Returns the number of rows that took figures over."""
    old = {(r["data"], r["model"], r["method"]): r for r in previous}
    taken = 0
    for row in rows:
        before = old.get((row["data"], row["model"], row["method"]))
        if before and (before.get("accuracy"), before.get("params")) == (row.get("accuracy"), row.get("params")):
            row.update({k: before[k] for k in TIMING_KEYS if before.get(k) is not None})
            taken += 1
    return taken


def _spread_files(results, mode, data):
    """(name after the prefix, content) of the ``seed_spread[_<mode>]_<data>_*.json`` in `results`."""
    prefix = "seed_spread" + ("" if mode == "full" else f"_{mode}") + f"_{data}_"
    return [(p.stem[len(prefix):], json.loads(p.read_text(encoding="utf-8")))
            for p in sorted(results.glob(f"{prefix}*.json"))]


def seed_spreads(results, mode, data):
    """{model: rows} of the seed spreads that ``benchmarks.seed_spread`` wrote to `results` for
    `mode`'s models on `data` (``seed_spread[_<mode>]_<data>_<model>.json``), leaving out those
    run at another budget than the suite's (``--epochs``, ``--train-samples``, ...)."""
    return {model: spread["rows"] for model, spread in _spread_files(results, mode, data)
            if not spread.get("budget")}


def other_budget_spreads(results, mode, data):
    """{model: {budget label: rows}} of the seed spreads run at another budget than the suite's
    (the label is the spread's ``budget`` text, e.g. "60,000 training samples")."""
    out = {}
    for _, spread in _spread_files(results, mode, data):
        if spread.get("budget"):
            out.setdefault(spread["model"].split("/", 1)[1], {})[spread["budget"]] = spread["rows"]
    return out


def summarize(mode, jobs_dir, rounds, runs, seed=0, retime_only=None):
    """Collect finished rows, re-time them together, add ratios and verdicts; write the results.
    With `retime_only` (``data/model`` patterns) only the matching models' rows are re-timed (in
    rounds, dense first, as always); every other row keeps the previous summary's figures where
    it is the same model (same accuracy and parameters), else its job's, and is marked not re-timed."""
    import numpy as np

    from benchmarks import harness as data_mod

    rows, errors = jobs_mod.collect(jobs_dir)
    if not rows:
        return None
    order = {m: i for i, m in enumerate(jobs_mod.ALL_METHODS)}
    rows.sort(key=lambda r: (r["method"].startswith("tfmot"), order.get(r["method"], len(order)), r["method"]))
    name, _, _ = paths(mode, seed)
    last = jobs_dir.parent / f"{name}.json"
    if last.is_file():
        carry_timings(rows, json.loads(last.read_text(encoding="utf-8")).get("rows", []))
    sample = {d: np.asarray(data_mod.load(d)[2][:1]) for d in {r["data"] for r in rows}}
    groups = None
    if retime_only:
        groups = {(r["data"], r["model"]) for r in rows
                  if any(fnmatch.fnmatchcase(f"{r['data']}/{r['model']}", p) for p in retime_only)}
    retime(rows, sample, rounds=rounds, runs=runs, groups=groups)
    add_ratios(rows)
    datasets = list(dict.fromkeys(r["data"] for r in rows))
    all_verdicts = {d: verdicts.verdicts(rows, d, jobs_mod.archs(mode)) for d in datasets}
    for d in datasets:
        verdicts.add_seed_spreads(all_verdicts[d], seed_spreads(jobs_dir.parent, mode, d),
                                  other_budget_spreads(jobs_dir.parent, mode, d))
    md = [f"# Benchmark suite ({mode})", "",
          "Every method trains the same architecture on the same data with the same seed, batch size and "
          "epoch budget (the scratch_target reference trains the same architecture with narrower layers); "
          "ratios (x) are dense / row; all latencies are re-measured together at the end of the run (LiteRT, "
          "1 thread, batch 1) in rounds that time each model's rows together, dense first: a latency is the "
          "median over rounds, a speed-up the median over rounds of dense latency / row latency. Parameters are "
          "those of the final (physically smaller) model; `nonzero` counts weights that are not exactly zero "
          "(tfmot's pruning keeps the shapes, so only its nonzero count and gzip size drop). Accuracy is the "
          "Keras model's on the test set; int8 accuracy is the int8 .tflite file's in LiteRT.", ""]
    for d in datasets:
        md += [f"## Headline verdicts ({d})", "", *report.verdict_lines(all_verdicts[d]), ""]
    if groups is not None:
        md += ["Re-timed in this run: " + (", ".join(sorted(f"{d}/{m}" for d, m in groups)) or "no model")
               + f" (`--retime-only {' '.join(retime_only)}`); the other models' latencies are those of the previous "
               "summary's re-timing where the row is the same model.", ""]
    stale = list(dict.fromkeys(f"{r['data']}/{r['model']}" for r in rows if not r.get("retimed", True)))
    if stale:
        md += ["Not re-timed in this run (some of their .tflite files are not on this machine, or `--retime-only` "
               "left them out): " + ", ".join(stale) + "; their latencies are those of the previous summary where the "
               "row is the same model, else of its job.", ""]
    md += ["## Results", "", report.table(rows)]
    md += ["## Method settings", ""]
    md += sorted({f"- {r['method']}: {r.get('setting', '')}" for r in rows})
    md += ["", "## Job commands", "", "Each job ran in one of these commands (the tables above were made by the "
           "command at the end of this file):", ""]
    for cmd, keys in jobs_mod.commands(jobs_dir).items():
        md.append(f"- `{cmd}`: {', '.join(keys)}" if cmd else
                  f"- command not recorded (jobs run before commands were saved with each job): {', '.join(keys)}")
    if errors:
        md += ["", "## Failed jobs (retried on the next run)", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    pngs = [report.plot(rows, jobs_dir.parent / f"{name}_{axis}.png", axis) for axis in ("params", "latency")]
    md += ["", "Plots: " + ", ".join(f"`{p.name}`" for p in pngs)]
    summary = [{k: r.get(k) for k in SUMMARY} for r in rows]
    write_results(name, {"mode": mode, "settings": jobs_mod.MODES[mode], "verdicts": all_verdicts,
                         "rows": summary, "failed_jobs": errors}, "\n".join(md))
    return rows, all_verdicts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, tiny models, a subset of methods")
    parser.add_argument("--only", nargs="+", metavar="PATTERN", help="run only jobs whose data/model/method matches")
    parser.add_argument("--force", action="store_true", help="rerun jobs whose results exist")
    parser.add_argument("--list", action="store_true", help="print the job table (done / pending) and exit")
    parser.add_argument("--no-summary", action="store_true", help="run jobs only, skip the re-timing and report")
    parser.add_argument("--summary-only", action="store_true",
                        help="run no job: re-time and report the rows finished so far")
    parser.add_argument("--epochs", type=int, default=None, help="override the mode's epochs")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="override the mode's fine-tune epochs")
    parser.add_argument("--train-samples", type=int, default=None, help="use the first N training samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retime-rounds", type=int, default=3)
    parser.add_argument("--retime-only", nargs="+", metavar="DATA/MODEL",
                        help="re-time only these models' rows (patterns); the others keep the last summary's figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    mode = "quick" if args.quick else "full"
    _, jobs_dir, cache = paths(mode, args.seed)
    table = jobs_mod.job_table(mode, args.only)
    todo = jobs_mod.pending(table, jobs_dir, args.force)
    if args.list:
        for job in table:
            print(("pending " if job in todo else "done    ") + job.key)
        return None
    if todo and not args.summary_only:
        from benchmarks.harness import require

        require(*{job.data for job in todo})  # stops with the install hint before any training
    make = context_factory(mode, args, cache)
    line = "python -m benchmarks.run_all " + shlex.join(sys.argv[1:] if argv is None else argv)
    for i, job in enumerate([] if args.summary_only else todo, 1):
        start = time.perf_counter()
        logger.info("[%d/%d] %s ...", i, len(todo), job.key)
        rows = jobs_mod.run_job(job, make, jobs_dir, command=line)
        logger.info("[%d/%d] %s %s in %.0f s", i, len(todo), job.key, "done" if rows else "FAILED",
                    time.perf_counter() - start)
        import keras

        keras.backend.clear_session()
    if args.no_summary:
        return None
    out = summarize(mode, jobs_dir, args.retime_rounds, jobs_mod.MODES[mode]["latency_runs"], args.seed,
                    retime_only=args.retime_only)
    if out is not None:
        print((jobs_dir.parent / f"{paths(mode, args.seed)[0]}.md").read_text(encoding="utf-8"))
    return out


if __name__ == "__main__":
    main()
