"""What the scripts that rerun suite jobs outside the suite share (:mod:`benchmarks.tune` on a
validation split, :mod:`benchmarks.seed_spread` at other seeds): the budget options, the job
lookup, and one row per run kept on disk under a fingerprint of its configuration."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

from benchmarks.suite import jobs as jobs_mod

logger = logging.getLogger("benchmarks.rerun")


def add_budget_arguments(parser):
    """The ``--mode``, ``--epochs``, ``--finetune-epochs`` and ``--train-samples`` options."""
    parser.add_argument("--mode", default="full", choices=sorted(jobs_mod.MODES))
    parser.add_argument("--epochs", type=int, default=None, help="override the mode's epochs (tests)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="override the fine-tune epochs (tests)")
    parser.add_argument("--train-samples", type=positive_int, default=None,
                        help="train on the first N training samples instead of the model's cap (e.g. 60000: "
                             "all of Fashion-MNIST for the CNNs, which the suite trains on 20,000)")


def positive_int(text):
    """argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(f"expected an integer >= 1, got {text}")
    return value


def budget_tag(args):
    """``""``, or ``"__e<epochs>_f<finetune_epochs>"`` when the command line overrides the epochs,
    plus ``"__n<train_samples>"`` when it overrides the training samples (runs of another budget
    are kept apart)."""
    tag = "" if args.epochs is None and args.finetune_epochs is None else f"__e{args.epochs}_f{args.finetune_epochs}"
    return tag + ("" if args.train_samples is None else f"__n{args.train_samples}")


def budget_label(args):
    """The overrides of :func:`budget_tag` in words (``""`` without any), e.g. "60,000 training
    samples, epochs 2": how a table names a run at another budget than the suite's."""
    words = [f"{args.train_samples:,} training samples" if args.train_samples is not None else "",
             f"epochs {args.epochs}" if args.epochs is not None else "",
             f"fine-tune epochs {args.finetune_epochs}" if args.finetune_epochs is not None else ""]
    return ", ".join(w for w in words if w)


def contexts_by_seed(mode, args, holdout=None, tflite_subdir=None):
    """``make(job, seed) -> methods.Context`` at the budget of `args` (``--epochs``,
    ``--finetune-epochs`` and ``--train-samples``), with the suite's model cache (models of one seed and sample count
    are shared with the suite) and one ``run_all.context_factory`` per seed. `holdout` as there;
    `tflite_subdir` a pattern with ``{seed}`` (default: the factory's own choice)."""
    from types import SimpleNamespace

    from benchmarks import run_all

    cache = run_all.paths(mode)[2]
    factories = {}

    def make(job, seed):
        if seed not in factories:
            budget = SimpleNamespace(train_samples=args.train_samples, epochs=args.epochs,
                                     finetune_epochs=args.finetune_epochs, seed=seed)
            factories[seed] = run_all.context_factory(
                mode, budget, cache, holdout=holdout,
                tflite_subdir=tflite_subdir.format(seed=seed) if tflite_subdir else None)
        return factories[seed](job)

    return make


def suite_jobs(prog, mode, model, methods):
    """``{method: Job}`` of ``<model>/<method>`` in `mode`'s job table; exits naming the jobs that
    are not there (`prog` is the script's name)."""
    table = {j.key: j for j in jobs_mod.job_table(mode)}
    missing = [f"{model}/{m}" for m in methods if f"{model}/{m}" not in table]
    if missing:
        raise SystemExit(f"{prog}: no job {', '.join(missing)} in the {mode} suite; see "
                         "`python -m benchmarks.run_all --list` for the (data/model/method) jobs")
    return {m: table[f"{model}/{m}"] for m in methods}


def fingerprint(job, mode, budget=""):
    """A short hash of what trains `job`: its fields (settings included) and the `mode`'s budget
    and default settings, plus `budget` (an override of the epochs, or any other tag of the run).
    The dense baseline's hash leaves out the settings other than the training budget
    (``run_all.TRAINING_KEYS``), which it never reads: changing a method's setting does not
    retrain it."""
    from benchmarks.run_all import TRAINING_KEYS

    cfg = {k: v for k, v in jobs_mod.MODES[mode].items() if k not in ("models", "methods")}
    fields = dataclasses.asdict(job)
    if job.method == "dense":  # the dense baseline reads only the training budget of the settings
        fields["settings"] = [kv for kv in job.settings if kv[0] in TRAINING_KEYS]
        cfg["settings"] = {k: v for k, v in cfg["settings"].items() if k in TRAINING_KEYS}
    text = json.dumps({"job": fields, "mode": cfg, "budget": budget}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def run_once(job, context, path, columns, label=""):
    """The first row of `job` run in `context` (a callable returning its ``methods.Context``),
    reduced to `columns` and kept at `path`; read back instead when `path` exists (only a run
    that trains is logged, with `label`)."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    logger.info("%s %s ...", job.key, label)
    import keras

    from benchmarks.suite.methods import METHODS

    rows = METHODS[job.method](context())
    row = {k: rows[0].get(k) for k in columns}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1, default=float), encoding="utf-8")
    keras.backend.clear_session()
    return row
