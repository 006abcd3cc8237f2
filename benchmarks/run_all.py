"""The comparison benchmark suite: every method against the dense baseline and tfmot.

Runs the (data, model, method) jobs of ``suite/jobs.py`` (each resumable: its rows on disk), re-times
the finished rows in rounds and writes ``results/suite[_quick].{json,md}`` with two plots; with several
``--seeds``, the seed spread ``seed_spread[_quick]_<data>_<model>[<budget>].{json,md}`` instead.
Protocol: docs/benchmarks/suite.md.

    python -m benchmarks.run_all                      # full: Fashion-MNIST + MNIST-1D (hours on 2 cores)
    python -m benchmarks.run_all --quick              # digits, tiny models, a subset of methods (~3 min)
    python -m benchmarks.run_all --only 'fashion/mlp/*' '*/*/tfmot'
    python -m benchmarks.run_all --list               # print the job table and exit
    python -m benchmarks.run_all --summary-only       # re-time and report what has finished
    python -m benchmarks.run_all --only 'fashion/mlp_b32/filter_pruning_strong' --seeds 0 1 2 3   # seed spread
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import statistics
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import harness  # noqa: E402
from benchmarks.suite import jobs as jobs_mod, models, report  # noqa: E402
from benchmarks.suite.methods import METHODS, TARGET_SIZE, Context  # noqa: E402

logger = logging.getLogger("benchmarks.run_all")
INPUT_SHAPES = {"digits": [8, 8, 1], "fashion": [28, 28, 1], "mnist1d": [40, 1]}
#: Context arguments a mode sets and a model's ``settings`` may override
TRAINING_KEYS = ("epochs", "finetune_epochs", "batch_size", "learning_rate", "sgd_learning_rate")
#: the figures of a row that :func:`report.retime` measures again
TIMING_KEYS = ("latency_float_s", "latency_int8_s", "latency_float_rounds", "latency_int8_rounds")


def budget_tag(args):
    """``""``, or ``_n<train_samples>``, ``_e<epochs>``, ``_f<finetune_epochs>`` for the overrides."""
    return "".join(f"_{k}{v}" for k, v in (("n", args.train_samples), ("e", args.epochs), ("f", args.finetune_epochs))
                   if v is not None)


def paths(mode, seed=0, budget=""):
    """(results name, jobs directory, cache directory) of `mode` under ``harness.RESULTS``; another
    seed or budget gets its own results and jobs, the cache is shared (its models are keyed by seed
    and sample count)."""
    name = ("suite" if mode == "full" else f"suite_{mode}") + (f"_seed{seed}" if seed else "") + budget
    return name, harness.RESULTS / f"{name}_jobs", harness.RESULTS / "suite_cache" / mode


def context_factory(mode, args, cache, seed=0):
    """job -> methods.Context at `seed`, loading each dataset once; the rows' .tflite files go to
    ``tflite[_seed<seed>][<budget tag>]`` of the cache."""
    cfg, loaded = jobs_mod.MODES[mode], {}

    def make(job):
        if job.data not in loaded:
            loaded[job.data] = harness.load(job.data)
        x, y, xt, yt = loaded[job.data]
        n = job.train_samples if args.train_samples is None else args.train_samples
        settings = {**cfg["settings"], **dict(job.settings)}  # a model's settings may override the mode's budget
        budget = {k: settings.pop(k, cfg[k]) for k in TRAINING_KEYS}
        if args.epochs:
            budget["epochs"] = args.epochs
        if args.finetune_epochs is not None:
            budget["finetune_epochs"] = args.finetune_epochs
        spec = models.spec(job.arch or job.model, job.widths, INPUT_SHAPES[job.data], batch_norm=job.batch_norm)
        return Context(job.data, job.model, spec, (x[:n], y[:n], xt, yt), **budget, seed=seed, cache=cache,
                       latency_runs=cfg["latency_runs"], settings=settings,
                       tflite_subdir="tflite" + (f"_seed{seed}" if seed else "") + budget_tag(args))

    return make


def pending(jobs, jobs_dir, force=False):
    """The jobs to run: all with `force`, else those without a result file."""
    return list(jobs) if force else [j for j in jobs if not j.file(jobs_dir).is_file()]


def run_job(job, make_context, jobs_dir, command=None):
    """Run one job; write its rows (or its error, as ``.json.error``, retried next time) to disk with the
    `command` line that ran it. Returns the rows (None on error)."""
    path = job.file(jobs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    err = path.with_suffix(".json.error")
    try:
        rows, seconds = harness.timed(lambda: METHODS[job.method](make_context(job)))
    except Exception:  # a failing method must not stop the other jobs; the error is recorded
        err.write_text(traceback.format_exc(), encoding="utf-8")
        logger.exception("job %s failed", job.key)
        return None
    payload = {"job": job.key, "seconds": round(seconds, 2), "command": command,
               "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    path.with_suffix(".tmp").write_text(json.dumps(payload, indent=1, default=float), encoding="utf-8")
    path.with_suffix(".tmp").replace(path)
    err.unlink(missing_ok=True)
    return rows


def collect(jobs_dir):
    """The finished jobs under `jobs_dir`: (rows, {job file: last error line}, {command: [job keys]});
    jobs written before commands were recorded are under None."""
    rows, errors, commands = [], {}, {}
    for path in sorted(Path(jobs_dir).glob("*.json")):
        payload = json.loads(path.read_text(encoding="utf-8"))
        rows.extend(payload["rows"])
        commands.setdefault(payload.get("command"), []).append(payload["job"])
    for path in sorted(Path(jobs_dir).glob("*.json.error")):
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        errors[path.name[: -len(".json.error")]] = lines[-1] if lines else ""
    return rows, errors, commands


def carry_timings(rows, previous):
    """Give each row the latencies of the `previous` summary's row of the same job when it is the
    same model (same accuracy and parameters): a group that cannot be re-timed (its .tflite files
    are not on this machine) keeps figures timed together in rounds. Returns the number taken."""
    old = {(r["data"], r["model"], r["method"]): r for r in previous}
    taken = 0
    for row in rows:
        before = old.get((row["data"], row["model"], row["method"]))
        if before and (before.get("accuracy"), before.get("params")) == (row.get("accuracy"), row.get("params")):
            row.update({k: before[k] for k in TIMING_KEYS if before.get(k) is not None})
            taken += 1
    return taken


def summarize(mode, jobs_dir, rounds, runs, name):
    """Collect finished rows, re-time them together, add ratios and verdicts; write and print the results."""
    import numpy as np

    rows, errors, commands = collect(jobs_dir)
    if not rows:
        return None
    order = {m: i for i, m in enumerate(jobs_mod.ALL_METHODS)}
    rows.sort(key=lambda r: (r["method"].startswith("tfmot"), order.get(r["method"], len(order)), r["method"]))
    last = jobs_dir.parent / f"{name}.json"
    if last.is_file():
        carry_timings(rows, json.loads(last.read_text(encoding="utf-8")).get("rows", []))
    report.retime(rows, {d: np.asarray(harness.load(d)[2][:1]) for d in {r["data"] for r in rows}}, rounds, runs)
    report.add_ratios(rows)
    archs = {j.model: j.arch for j in jobs_mod.job_table(mode)}
    all_verdicts = {d: report.verdicts(rows, d, archs) for d in dict.fromkeys(r["data"] for r in rows)}
    md = [f"# Benchmark suite ({mode})", "", "Protocol: docs/benchmarks/suite.md; ratios (x) are dense / row.", ""]
    for d, v in all_verdicts.items():
        md += [f"## Headline verdicts ({d})", "", *report.verdict_lines(v), ""]
    stale = list(dict.fromkeys(f"{r['data']}/{r['model']}" for r in rows if not r.get("retimed", True)))
    if stale:
        md += ["Not re-timed (a .tflite file is not on this machine; latencies of the previous summary's same row, "
               "else of the job): " + ", ".join(stale), ""]
    md += ["## Results", "", report.table(rows), "## Method settings", "",
           *sorted({f"- {r['method']}: {r.get('setting', '')}" for r in rows}), "", "## Job commands", "",
           *[f"- `{cmd}`: {', '.join(keys)}" if cmd else f"- command not recorded: {', '.join(keys)}"
             for cmd, keys in commands.items()]]
    if errors:
        md += ["", "## Failed jobs (retried on the next run)", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    pngs = [report.plot(rows, jobs_dir.parent / f"{name}_{axis}.png", axis) for axis in ("params", "latency")]
    md += ["", "Plots: " + ", ".join(f"`{p.name}`" for p in pngs)]
    summary = [{k: v for k, v in r.items() if k not in ("tflite_float", "tflite_int8")} for r in rows]  # local paths
    harness.publish(name, {"mode": mode, "settings": jobs_mod.MODES[mode], "verdicts": all_verdicts,
                           "rows": summary, "failed_jobs": errors}, md)
    return rows, all_verdicts


def seed_spread(mode, table, by_seed, args):
    """Write ``seed_spread[_<mode>]_<data>_<model><budget>`` per model of `table`: `by_seed` maps a
    seed to its finished rows. Returns {data/model: {method: figures}}."""
    seeds, out = list(by_seed), {}
    for data, model, arch in dict.fromkeys((j.data, j.model, j.arch) for j in table):
        rows = {s: {r["method"]: r for r in by_seed[s] if (r["data"], r["model"]) == (data, model)} for s in seeds}
        methods = [m for m in dict.fromkeys(j.method for j in table if j.model == model and j.data == data)
                   if m != "dense" and all(m in rows[s] and "dense" in rows[s] for s in seeds)]
        size = TARGET_SIZE.get(arch, ("params", None))[0]
        n = args.train_samples or next(j.train_samples for j in table if (j.data, j.model) == (data, model))
        samples = "the whole training set" if n is None else f"the first {n:,} training samples (or all there are)"
        result = {}
        for m in methods:
            d = {s: round(100 * (rows[s][m]["accuracy"] - rows[s]["dense"]["accuracy"]), 2) for s in seeds}
            ratios = {k: {s: rows[s]["dense"][k] / rows[s][m][k] for s in seeds}
                      for k in ("params", "macs", "latency_float_s")}
            result[m] = {"delta_pt": d, "mean": round(statistics.fmean(d.values()), 2),
                         "sd": round(statistics.stdev(d.values()), 2) if len(d) > 1 else 0.0,
                         "within": sum(report.within_loss(v, args.max_loss) for v in d.values()),
                         **{f"{k}_x": v for k, v in ratios.items()}, "setting": rows[seeds[0]][m].get("setting")}

        def span(r):  # "lo" or "lo-hi" of the per-seed ratios
            lo, hi = min(r.values()), max(r.values())
            return f"{lo:.2f}" + ("" if round(lo, 2) == round(hi, 2) else f"-{hi:.2f}")

        md = [f"# Seed spread: {data}/{model}", "",
              f"Each seed trained on {samples}; Δ against the same seed's dense model; within: seeds at most "
              f"{args.max_loss:g} point(s) below dense (docs/benchmarks/suite.md, \"Protocol\").", "",
              "Dense accuracy by seed: " + ", ".join(f"{s}: {100 * rows[s]['dense']['accuracy']:.2f}%" for s in seeds),
              "", *harness.md_table(
                  ["method", "params x", "MACs x", "latency x", *(f"seed {s} Δ pt" for s in seeds), "mean Δ pt", "sd",
                   "within"],
                  [[m, span(r["params_x"]), span(r["macs_x"]), span(r["latency_float_s_x"]),
                    *(f"{v:+.2f}" + ("" if "-" not in span(r[f"{size}_x"]) else f" ({r[f'{size}_x'][s]:.1f}x)")
                      for s, v in r["delta_pt"].items()),
                    f"{r['mean']:+.2f}", f"{r['sd']:.2f}", f"{r['within']} of {len(seeds)}"]
                   for m, r in result.items()])]
        md += ["", "Settings:", ""] + [f"- {m}: {r['setting']}" for m, r in result.items()]
        harness.publish("seed_spread" + ("" if mode == "full" else f"_{mode}") + f"_{data}_{model}" + budget_tag(args),
                        {"model": f"{data}/{model}", "seeds": seeds, "max_loss": args.max_loss, "rows": result}, md)
        out[f"{data}/{model}"] = result
    return out


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
    parser.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0],
                        help="one seed: the suite at that seed; several: a seed spread of the chosen jobs")
    parser.add_argument("--max-loss", type=float, default=0.5, help="seed spread: points a seed may lose, 'within'")
    parser.add_argument("--retime-rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    mode = "quick" if args.quick else "full"
    table = jobs_mod.job_table(mode, args.only)
    if len(args.seeds) > 1:  # a seed spread is against the dense model of the same seed
        dense = {(j.data, j.model) for j in table}
        table = [j for j in jobs_mod.job_table(mode) if j.method == "dense" and (j.data, j.model) in dense
                 and j not in table] + table
    line = "python -m benchmarks.run_all " + shlex.join(sys.argv[1:] if argv is None else argv)
    by_seed = {}
    for seed in args.seeds:
        name, jobs_dir, cache = paths(mode, seed, budget_tag(args))
        todo = pending(table, jobs_dir, args.force)
        if args.list:
            print("\n".join(("pending " if job in todo else "done    ") + job.key + (f" seed {seed}" if seed else "")
                            for job in table))
            continue
        if todo and not args.summary_only:
            harness.require(*{job.data for job in todo})  # stops with the install hint before any training
        make = context_factory(mode, args, cache, seed)
        for i, job in enumerate([] if args.summary_only else todo, 1):
            logger.info("[%d/%d] %s seed %d ...", i, len(todo), job.key, seed)
            rows, took = harness.timed(run_job, job, make, jobs_dir, command=line)
            logger.info("[%d/%d] %s %s in %.0f s", i, len(todo), job.key, "done" if rows else "FAILED", took)
            import keras

            keras.backend.clear_session()
        by_seed[seed] = collect(jobs_dir)[0]
    if args.list or args.no_summary:
        return None
    if len(args.seeds) > 1:
        return seed_spread(mode, table, by_seed, args)
    return summarize(mode, jobs_dir, args.retime_rounds, jobs_mod.MODES[mode]["latency_runs"], name)


if __name__ == "__main__":
    main()
