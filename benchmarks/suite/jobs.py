"""The job table: the (data, model, method) jobs of each mode, in run order (docs/benchmarks/suite.md,
"Protocol"; why each setting has its value: "Settings").

Model options: ``widths``, ``batch_norm``, ``arch`` (the ``models.BUILDERS`` architecture when the
name is not one), ``train_samples`` (the first N training images; the test set is always complete),
``methods`` (a subset of the mode's) and ``settings`` (overrides of the mode's settings and budget).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from .methods import applies

#: methods run first across every (data, model): the ones behind the headline targets
PRIORITY = ("dense", "group_lasso", "tfmot", "filter_pruning", "cges", "sparse_group_lasso", "em_blockdiag",
            "hgsr_squared_group_l12")
#: every method in run (and report) order
ALL_METHODS = PRIORITY + tuple("""group_lasso_weak group_lasso_weaker group_lasso_weakest group_lasso_mild
    filter_pruning_strong filter_pruning_max filter_pruning_light filter_pruning_distilled filter_pruning_tiles l1
    exclusive l11_l12 hgsr_sqrt_group_lasso hgsr_squared_group_lasso hgsr_sqrt_exclusive hgsr_squared_exclusive
    hgsr_sqrt_group_l12 planting scratch_target""".split())
#: rows that only the models naming them in their own "methods" run
OPT_IN = ("filter_pruning_light", "filter_pruning_distilled")
#: the CNN rows of the full mode (each VGG/ResNet job costs 4-25 min on 2 cores)
CNN_METHODS = ("dense", "group_lasso", "group_lasso_weak", "group_lasso_weaker", "tfmot", "filter_pruning", "cges",
               "em_blockdiag", "hgsr_squared_group_l12", "scratch_target", "filter_pruning_strong",
               "filter_pruning_max")
RESNET_METHODS = ("dense", "tfmot", "filter_pruning", "scratch_target", "filter_pruning_strong", "filter_pruning_max")
#: the VGG at twice the widths (4x the MACs: the narrow one's latency hardly follows MACs); its
#: filter_pruning_tiles row rounds pruned widths down to multiples of 16 (channel_multiple --parts tiles)
WIDE_METHODS = RESNET_METHODS + ("filter_pruning_tiles",)
#: the MLP at batch 32 (its prox strengths re-chosen: 4x the prox steps per epoch)
MLP_B32_METHODS = ("dense", "group_lasso_weak", "tfmot", "filter_pruning", "filter_pruning_strong",
                   "filter_pruning_max", "scratch_target", "filter_pruning_light", "filter_pruning_distilled")

#: the BN-free CNNs: proximal phases with Adam (SGD diverged), strengths O(0.01-0.1)
ADAM_PROX = {"prox_optimizer": "adam", "learning_rate": 3e-3, "group_lasso_strength": 0.08,
             "group_lasso_weak_strength": 0.04, "group_lasso_weaker_strength": 0.02,
             "group_lasso_weakest_strength": 0.01, "group_lasso_mild_strength": 0.005, "cges_strength": 0.08,
             "sparse_group_lasso_strength": 0.08, "l1_strength": 0.05, "exclusive_strength": 0.01,
             "l11_l12_strength": 0.08, "hgsr_strength": 2e-5}
#: three tolerance levels spanning tfmot's 50-90% (set on the test set, before the validation split)
VGG_SETTINGS = {**ADAM_PROX, "hgsr_strength": 5e-6, "prune_tolerance_strong": 0.5, "prune_tolerance_max": 1.5}
MNIST1D_BUDGET = {"epochs": 30, "finetune_epochs": 10}  # 9 epochs of 8,000 sequences were too few steps
#: the wide VGG: HGSR 1e-7 and the tile row's settings chosen on the validation split
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
        "models": {"fashion": {
            # every setting below: chosen on the validation split unless docs/benchmarks/suite.md says otherwise
            "mlp": {"widths": [1000, 500],
                    "settings": {"hgsr_sqrt_group_lasso_strength": 2e-4,
                                 "prune_hgsr_strength": 0.0, "prune_at_epoch": 3, "prune_layers": ("fc1",),
                                 "prune_tolerance": 0.4, "prune_tolerance_strong": 1.0,
                                 "filter_pruning_strong_max_fraction": 0.91,  # the most compression within 0.5
                                 "prune_tolerance_max": 1.0}},
            # the same MLP, every row at batch 32 (4x the steps in the same epochs)
            "mlp_b32": {"arch": "mlp", "widths": [1000, 500], "methods": MLP_B32_METHODS,
                        "settings": {"batch_size": 32, "group_lasso_weak_strength": 7e-4,
                                     "prune_hgsr_strength": 0.0, "prune_at_epoch": 3,
                                     "prune_layers": ("fc1",),  # fc1 only: 785,000 of the 1,290,510 parameters
                                     "prune_tolerance": 0.1, "prune_tolerance_strong": 0.4,
                                     "filter_pruning_strong_max_fraction": 0.92, "prune_tolerance_max": 0.4,
                                     # half of fc1's units: tfmot's 50% nonzero count, set by the peer, not tuned
                                     "prune_tolerance_light": 1.0, "filter_pruning_light_max_fraction": 0.5,
                                     # filter_pruning_strong fine-tuned by distillation from the dense row's model
                                     "prune_tolerance_distilled": 0.4, "filter_pruning_distilled_max_fraction": 0.92,
                                     "filter_pruning_distilled_distill_temperature": 2}},
            "vgg": {"widths": [16, 32, 64], "batch_norm": False, "train_samples": 20000,
                    "methods": CNN_METHODS, "settings": VGG_SETTINGS},
            "vgg_wide": {**VGG_WIDE, "train_samples": 20000, "methods": WIDE_METHODS},
            "vgg_wide_full": {**VGG_WIDE, "methods": WIDE_METHODS},  # all 60,000 images: the data budget
            "resnet": {"widths": [16, 32, 64], "train_samples": 20000, "methods": RESNET_METHODS,
                       # the HFP setting of benchmarks/pruning_planting_fashion.py (a BN net)
                       "settings": {**ADAM_PROX, "hgsr_strength": 5e-5, "prune_candidates": "consumer_norm",
                                    "prune_tolerance": 0.05, "prune_tolerance_strong": 1.0,
                                    "prune_tolerance_max": 2.0}}},
            # MNIST-1D: filter pruning of the dense models (with HGSR they lost 5 points or more)
            "mnist1d": {"cnn1d": {"widths": [32, 64, 64], "batch_norm": False,
                                  "settings": {**ADAM_PROX, **MNIST1D_BUDGET, "prune_hgsr_strength": 0.0,
                                               "prune_tolerance": 0.1, "prune_tolerance_strong": 0.3,
                                               "prune_tolerance_max": 1.0}},
                        "mlp": {"widths": [256, 128],
                                "settings": {**MNIST1D_BUDGET, "prune_hgsr_strength": 0.0, "prune_tolerance": 0.03,
                                             "prune_tolerance_strong": 0.1, "prune_tolerance_max": 0.3}}}},
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
    arch: str = ""  # the architecture (models.BUILDERS)

    @property
    def key(self):
        return f"{self.data}/{self.model}/{self.method}"

    def file(self, jobs_dir):
        return Path(jobs_dir) / f"{self.data}__{self.model}__{self.method}.json"


def job_table(mode, only=None):
    """The jobs of `mode` in run order (per dataset the :data:`PRIORITY` methods on every model first,
    so a run stopped early has the headline rows), those matching a shell pattern of `only`
    (against ``data/model/method``, e.g. ``"fashion/mlp/*"``, ``"*/*/tfmot"``) when given."""
    if mode not in MODES:
        raise ValueError(f"job_table: Expected mode in {sorted(MODES)}. Received: mode={mode!r}")
    cfg, order = MODES[mode], []
    for data in cfg["datasets"]:
        pairs = list(cfg["models"][data].items())
        order += [(data, method, pair) for method in PRIORITY for pair in pairs]
        order += [(data, method, pair) for pair in pairs for method in ALL_METHODS if method not in PRIORITY]
    jobs = [Job(d, m, method, tuple(o["widths"]), o.get("batch_norm", True), o.get("train_samples"),
                tuple(sorted(o.get("settings", {}).items())), o.get("arch", m))
            for d, method, (m, o) in order if method in o.get("methods", cfg["methods"])]
    return [j for j in jobs if applies(j.method, j.arch)
            and (not only or any(fnmatch.fnmatchcase(j.key, p) for p in only))]
