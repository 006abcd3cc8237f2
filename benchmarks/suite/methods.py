"""The benchmark methods: one function per method, looked up in :data:`METHODS`.

Every method gets a :class:`Context` (data, model spec, epochs, seed, cache) and returns rows
measured by :func:`benchmarks.suite.measure.measure`; all spend the same budget, ``epochs +
finetune_epochs`` epochs, each phase with a fresh cosine-decayed optimizer. What each method does
and why: docs/benchmarks/suite.md, "Methods" and "Settings".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import models
from .measure import measure
from .verdicts import CNN_MACS_FACTOR, MLP_PARAMS_FACTOR
from ..harness import plain_copy, train

ZERO_BELOW = 1e-3  # HGSR reference: a weight counts as zero below 1e-3


@dataclass
class Context:
    """Everything a method needs; `cache` holds trained models shared between methods."""

    data_name: str
    model_name: str
    spec: dict
    data: tuple
    epochs: int
    finetune_epochs: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    sgd_learning_rate: float = 0.05
    seed: int = 0
    cache: Path = Path("benchmarks/results/suite_cache")
    latency_runs: int = 50
    settings: dict = field(default_factory=dict)
    tflite_subdir: str = "tflite"  # where rows' .tflite files go under the cache (kept apart per seed)

    def path(self, *parts):
        p = Path(self.cache, self.data_name, self.model_name, *parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def build(self, spec=None):
        import keras

        return models.build(keras, spec or self.spec, self.seed)

    def fit(self, model, epochs, callbacks=(), kind="adam", learning_rate=None, seed=None, teacher=None,
            temperature=2.0, alpha=0.5):
        """:func:`harness.train` for one phase: Adam (``learning_rate``) or ``kind="sgd"`` (SGD at
        ``sgd_learning_rate``, momentum 0.9), `learning_rate` overriding; shuffled from `seed`
        (default the context's); with a `teacher`, the distillation loss. Returns the seconds."""
        lr = learning_rate or {"adam": self.learning_rate, "sgd": self.sgd_learning_rate}[kind]
        return train(model, self.data[0], self.data[1], epochs=epochs, batch_size=self.batch_size, optimizer=kind,
                     learning_rate=lr, callbacks=callbacks, seed=self.seed if seed is None else int(seed),
                     teacher=teacher, temperature=temperature, alpha=alpha)

    def trained(self, key, make, epochs, callbacks=()):
        """A model trained for `epochs` epochs with Adam, cached as
        ``<cache>/.../<key>_e<epochs>_n<samples>[_s<seed>].keras`` so that methods sharing a starting
        point train it once. Returns (model, seconds)."""
        import keras

        seed = f"_s{self.seed}" if self.seed else ""  # models of other seeds are other models
        path = self.path(f"{key}_e{epochs}_n{len(self.data[0])}{seed}.keras")
        meta = path.with_suffix(".json")
        if path.is_file() and meta.is_file():
            return keras.models.load_model(path, safe_mode=True), json.loads(meta.read_text())["seconds"]
        model = make()
        seconds = self.fit(model, epochs, callbacks)
        model.save(path)
        meta.write_text(json.dumps({"seconds": seconds}))
        return model, seconds

    def row(self, method, model, seconds, **info):
        """Measure `model` into a row named `method`."""
        figures = measure(model, self.data, self.path(self.tflite_subdir), method, runs=self.latency_runs)
        return {"data": self.data_name, "model": self.model_name, "method": method,
                "train_s": round(seconds, 2), **figures, **info, **self.budget()}

    def budget(self):
        """The training settings every row records (jobs may come from different runs)."""
        return {"train_samples": len(self.data[0]), "epochs": self.epochs, "finetune_epochs": self.finetune_epochs,
                "batch_size": self.batch_size, "optimizer": "cosine decay; Adam, prox phases "
                + ("Adam" if self.settings.get("prox_optimizer", "sgd") == "adam" else "SGD momentum 0.9"),
                "learning_rate": self.learning_rate, "sgd_learning_rate": self.sgd_learning_rate, "seed": self.seed,
                "batch_norm": self.spec.get("batch_norm", True)}


def dense(ctx):
    model, seconds = ctx.trained("dense", ctx.build, ctx.epochs + ctx.finetune_epochs)
    return [ctx.row("dense", model, seconds)]


def _penalized_layers(model):
    """Every kernel layer but the first: the first layer's input groups are the input features
    (pixels), which no pass can remove (a 1-channel image has a single group, whose death kills
    the model)."""
    return [layer.name for layer in model.layers if getattr(layer, "kernel", None) is not None][1:]


def _r():
    from tf_groupsparse import regularizers

    return regularizers


def _cges(strength, model):
    names = _penalized_layers(model)
    mus = _r().cges_mu_schedule(len(names))
    return {n: _r().CombinedGroupExclusive(strength, mu=mu, scale_by_size=True) for n, mu in zip(names, mus)}


def _gl(strength, model):
    return _r().GroupLasso(strength, scale_by_size=True)


_GL = "GroupLasso (input groups, sqrt(|g|) weights)"
#: proximal method -> (factory(strength, model) -> regularizer or {layer: regularizer}, strength, text);
#: strengths for SGD on the Fashion-MNIST MLP (docs/benchmarks/suite.md, "Settings")
PROX_FAMILIES = {
    "l1": (lambda s, m: _r().L1(s), 2e-3, "L1"),
    "group_lasso": (_gl, 2e-3, _GL),
    **{f"group_lasso_{name}": (_gl, strength, f"{_GL}, {text}") for name, strength, text in (
        ("weak", 1.5e-3, "weaker"), ("weaker", 1.2e-3, "weaker still"), ("weakest", 1e-3, "weakest"),
        ("mild", 7e-4, "mild"))},
    "sparse_group_lasso": (lambda s, m: _r().SparseGroupLasso(s, alpha=0.2, scale_by_size=True), 1.5e-3,
                           "SparseGroupLasso alpha=0.2, sqrt(|g|) weights"),
    "exclusive": (lambda s, m: _r().ExclusiveSparsity(s), 3e-4, "ExclusiveSparsity"),
    "l11_l12": (lambda s, m: _r().CombinedL11L12(s, s / 20), 2e-3, "CombinedL11L12 l11=s, l12=s/20"),
    "cges": (_cges, 1.5e-3, "CGES, mu 0.8 -> 0 by 0.2 per layer, sqrt(|g|) weights"),
}

HGSR_VARIANTS = ("sqrt_group_lasso", "squared_group_lasso", "sqrt_exclusive", "squared_exclusive",
                 "sqrt_group_l12", "squared_group_l12")
HGSR_STRENGTH = 1e-4


def _shrink_and_finetune(ctx, model, method, seconds, info):
    from tf_groupsparse.pruning.shrink import shrink

    small = shrink(model, threshold=1e-3)
    small = plain_copy(small)
    seconds += ctx.fit(small, ctx.finetune_epochs) if ctx.finetune_epochs else 0.0
    return [ctx.row(method, small, seconds, **info)]


def prox_method(name):
    def run(ctx):
        from tf_groupsparse.callbacks import ProximalStep
        from tf_groupsparse import regularize

        make, strength, setting = PROX_FAMILIES[name]
        strength = ctx.settings.get(f"{name}_strength", strength)
        base = ctx.build()
        reg = make(strength, base)
        if isinstance(reg, dict):
            model = regularize(base, reg, proximal=True)
        else:
            model = regularize(base, reg, proximal=True, layers=_penalized_layers(base))
        kind = ctx.settings.get("prox_optimizer", "sgd")
        seconds = ctx.fit(model, ctx.epochs, [ProximalStep()], kind=kind)
        return _shrink_and_finetune(ctx, model, name, seconds,
                                    {"setting": f"{setting}, strength {strength:g}, prox with {kind}"})

    return run


def _hgsr_model(ctx, variant, epochs=None, strength=None):
    from tf_groupsparse import regularize
    from tf_groupsparse.regularizers import HierarchicalGroupSparse

    l1_mix = 0.5 if variant == "squared_group_l12" else 0.0
    strength = _hgsr_strength(ctx, variant) if strength is None else strength
    reg = HierarchicalGroupSparse(strength, variant=variant, l1_mix=l1_mix)
    return ctx.trained(f"hgsr_{variant}_{strength:g}",
                       lambda: regularize(ctx.build(), reg, layers=_penalized_layers(ctx.build())),
                       epochs or ctx.epochs)


def _hgsr_strength(ctx, variant):
    """The strength of HGSR `variant`: ``settings["hgsr_<variant>_strength"]``, else the model's
    ``hgsr_strength``, else :data:`HGSR_STRENGTH`."""
    return ctx.settings.get(f"hgsr_{variant}_strength", ctx.settings.get("hgsr_strength", HGSR_STRENGTH))


def hgsr_method(variant):
    def run(ctx):
        model, seconds = _hgsr_model(ctx, variant)
        model = plain_copy(model)
        model.set_weights([np.where(np.abs(w) < ZERO_BELOW, 0.0, w).astype(w.dtype) if w.ndim > 1 else w
                           for w in model.get_weights()])
        return _shrink_and_finetune(ctx, model, f"hgsr_{variant}", seconds,
                                    {"setting": f"HGSR {variant}, strength {_hgsr_strength(ctx, variant):g}"
                                                + (", l1_mix 0.5" if variant == "squared_group_l12" else "")
                                                + ", loss; |w| < 1e-3 -> 0"})

    return run


def em_blockdiag(ctx):
    from tf_groupsparse.grouping import fit_groups
    from tf_groupsparse.grouping.rewrite import apply_mask, to_block_diagonal

    k = ctx.settings.get("em_groups", 4)
    dense_model, seconds = ctx.trained("dense", ctx.build, ctx.epochs)
    # every kernel layer but the logits whose channels split into k equal blocks (not a 1-channel input)
    names = [layer.name for layer in dense_model.layers[:-1] if getattr(layer, "kernel", None) is not None
             and layer.kernel.shape[-2] % k == 0 and layer.kernel.shape[-1] % k == 0]
    structure = fit_groups(dense_model, k, layers=names, balanced=True, seed=ctx.seed)
    masked = apply_mask(dense_model, structure)
    seconds += ctx.fit(masked, ctx.finetune_epochs)
    small = to_block_diagonal(masked, structure)
    return [ctx.row("em_blockdiag", small, seconds, setting=f"fit_groups K={k} balanced on {', '.join(names)}, masked fine-tune")]


def filter_pruning_method(name, tolerance_key, default_tolerance, multiple_key=None, default_multiple=None):
    """``filter_pruning`` at the loss tolerance ``settings[tolerance_key]``; with `multiple_key`,
    pruned widths rounded down to a multiple of ``settings[multiple_key]``."""

    def run(ctx):
        multiple = ctx.settings.get(multiple_key, default_multiple) if multiple_key else None
        return _filter_pruning(ctx, name, ctx.settings.get(tolerance_key, default_tolerance), multiple)

    return run


def _pruning_setting(ctx, name, key, default=None):
    """A filter pruning row's setting: the row's own ``<name>_<key>``, else ``prune_<key>``."""
    return ctx.settings.get(f"{name}_{key}", ctx.settings.get(f"prune_{key}", default))


def _filter_pruning(ctx, name, tolerance, multiple=None):
    import keras

    from tf_groupsparse.pruning import prune_filters
    from tf_groupsparse.pruning.filters import OLD_CANDIDATES

    candidates = ctx.settings.get("prune_candidates", "norm")
    at = int(_pruning_setting(ctx, name, "at_epoch", ctx.epochs))  # pruned after `at` epochs of the budget
    finetune_epochs = ctx.epochs + ctx.finetune_epochs - at
    # the HGSR model's strength for the pruning rows; at 0 the pruned model is the dense one after `at` epochs
    strength = ctx.settings.get("prune_hgsr_strength", _hgsr_strength(ctx, "squared_group_l12"))
    model, seconds = _hgsr_model(ctx, "squared_group_l12", at, strength) if strength else \
        ctx.trained("dense", ctx.build, at)
    start = time.perf_counter()
    samples = int(ctx.settings.get("prune_samples", 512))
    layers = _pruning_setting(ctx, name, "layers")
    layers = list(layers) if layers else None
    max_fraction = _pruning_setting(ctx, name, "max_fraction")  # a size the tolerance cannot overshoot
    if isinstance(max_fraction, dict):  # one cap per layer: the layers it names are the ones pruned
        layers = list(max_fraction)
    rounding = _pruning_setting(ctx, name, "rounding", "down")
    pruned, _ = prune_filters(plain_copy(model), (ctx.data[0], ctx.data[1]), samples=samples, tolerance=tolerance,
                              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              importance=OLD_CANDIDATES[candidates](), layers=layers, max_fraction=max_fraction,
                              round_to=multiple, rounding=rounding, search="greedy", verbose=0,
                              allow_untrained=bool(ctx.settings.get("allow_untrained", False)))
    seconds += time.perf_counter() - start
    pruned = plain_copy(pruned)
    finetune_lr = _pruning_setting(ctx, name, "finetune_learning_rate")
    finetune_seed = _pruning_setting(ctx, name, "finetune_seed")  # the fine-tune's shuffling seed
    # fine-tuned by distillation from the dense model; the teacher's training is added to the seconds
    temperature = _pruning_setting(ctx, name, "distill_temperature")
    alpha = float(_pruning_setting(ctx, name, "distill_alpha", 0.5))
    teacher = None
    if temperature and finetune_epochs:
        teacher, teacher_seconds = ctx.trained("dense", ctx.build, ctx.epochs + ctx.finetune_epochs)
        seconds += teacher_seconds
    seconds += ctx.fit(pruned, finetune_epochs, learning_rate=finetune_lr, seed=finetune_seed, teacher=teacher,
                       temperature=temperature or 2.0, alpha=alpha) if finetune_epochs else 0.0
    return [ctx.row(name, pruned, seconds,
                    setting=(f"HGSR squared_group_l12 model (strength {strength:g})" if strength else
                             "dense model (HGSR strength 0)") + f", prune_filters tolerance "
                            f"{tolerance}, candidates {candidates}, {samples} samples"
                            + (f", widths rounded {_ROUNDING_TEXT.get(rounding, rounding)} multiples of {multiple}"
                               if multiple else "")
                            + (f", layers {', '.join(layers)} only" if layers else "")
                            + (_caps_text(max_fraction) if max_fraction else "")
                            + (f", fine-tuned from learning rate {finetune_lr:g}" if finetune_lr else "")
                            + (f", pruned after epoch {at} of {ctx.epochs + ctx.finetune_epochs}" if at != ctx.epochs
                               else "")
                            + (f", fine-tune seed {int(finetune_seed)}" if finetune_seed is not None else "")
                            + (f", fine-tuned by distillation from the dense model (T {temperature:g}, alpha {alpha:g})"
                               if teacher is not None else ""))]


_ROUNDING_TEXT = {"down": "down to", "up": "up to", "nearest": "to the nearest", "blocks": "in blocks of"}


def _caps_text(max_fraction):
    """The setting text of a filter pruning cap: one number, or one per layer."""
    if isinstance(max_fraction, dict):
        return ", at most " + ", ".join(f"{v:g} of {k}" for k, v in max_fraction.items()) + "'s filters"
    return f", at most {max_fraction:g} of a layer's filters"


def planting(ctx):
    from tf_groupsparse.pruning.planting import plant

    steps = ctx.settings.get("plant_steps", 3)
    teacher, _ = ctx.trained("dense", ctx.build, ctx.epochs + ctx.finetune_epochs)
    small_spec = {**ctx.spec, "widths": [max(2, w // 8) for w in ctx.spec["widths"]]}
    student, seconds = ctx.trained("planting_student", lambda: ctx.build(small_spec), ctx.epochs)
    x, y = ctx.data[0], ctx.data[1]
    n_val = max(100, len(x) // 10)
    per_step = max(2, min(ctx.spec["widths"]) // 8)
    start = time.perf_counter()
    grown, _ = plant(student, teacher, (x[:-n_val], y[:-n_val]), validation_data=(x[-n_val:], y[-n_val:]),
                     channels_per_step=per_step, max_steps=steps, epochs_per_step=1,
                     learning_rate=ctx.learning_rate, batch_size=ctx.batch_size, verbose=0)
    seconds += time.perf_counter() - start
    return [ctx.row("planting", grown, seconds,
                    setting=f"student widths {small_spec['widths']}, {steps} steps of {per_step} channels")]


#: architecture -> (size measure, factor) of the headline target for ``scratch_target``
TARGET_SIZE = {"mlp": ("params", MLP_PARAMS_FACTOR), "vgg": ("macs", CNN_MACS_FACTOR),
               "resnet": ("macs", CNN_MACS_FACTOR), "cnn1d": ("macs", CNN_MACS_FACTOR)}


def target_widths(ctx):
    """The widths ``round(w * p / 100)`` for the largest whole percentage ``p`` whose model is at
    most the dense model's size over the target factor (see :data:`TARGET_SIZE`); the size grows
    with ``p``, so ``p`` is found by bisection."""
    from tf_groupsparse.metrics import count_params, flops

    measure_of, factor = TARGET_SIZE[ctx.spec["arch"]]
    size = {"params": count_params, "macs": flops}[measure_of]
    limit = size(ctx.build()) / factor

    def widths(pct):
        return [max(1, round(w * pct / 100)) for w in ctx.spec["widths"]]

    def fits(pct):
        return size(ctx.build({**ctx.spec, "widths": widths(pct)})) <= limit

    if not fits(1):
        raise ValueError(f"target_widths: no scaling of widths {ctx.spec['widths']} reaches 1/{factor:g} of the "
                         f"dense {measure_of}; give the model wider layers")
    lo, hi = 1, 100  # fits(lo), not fits(hi): the dense model is larger than its 1/factor
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return widths(lo), measure_of, factor


def scratch_target(ctx):
    widths, measure_of, factor = target_widths(ctx)
    model, seconds = ctx.trained(f"scratch_{'-'.join(map(str, widths))}",
                                 lambda: ctx.build({**ctx.spec, "widths": widths}), ctx.epochs + ctx.finetune_epochs)
    return [ctx.row("scratch_target", model, seconds,
                    setting=f"reference: widths {widths} (<= dense {measure_of} / {factor:g}) trained from scratch "
                            "with the dense budget")]


def tfmot(ctx):
    """Run :mod:`benchmarks.tfmot_peer` in its own process and turn its JSON into rows."""
    workdir = ctx.path("tfmot" + (f"_s{ctx.seed}" if ctx.seed else ""))  # models of other seeds are other models
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, data_path, out_path = workdir / "spec.json", workdir / "data.npz", workdir / "peer.json"
    spec_path.write_text(json.dumps(ctx.spec))
    x, y, xt, yt = ctx.data
    np.savez(data_path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    cmd = [sys.executable, "-m", "benchmarks.tfmot_peer", "--spec", str(spec_path), "--data", str(data_path),
           "--out", str(out_path), "--tflite-dir", str(workdir / "tflite"), "--epochs", str(ctx.epochs),
           "--prune-epochs", str(max(1, ctx.finetune_epochs)), "--seed", str(ctx.seed),
           "--batch-size", str(ctx.batch_size), "--learning-rate", str(ctx.learning_rate),
           "--latency-runs", str(ctx.latency_runs)]
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tfmot peer failed (exit {done.returncode}): {done.stderr[-2000:]}")
    payload = json.loads(out_path.read_text())
    data_path.unlink()
    macs = _dense_macs(ctx)
    rows = []
    for r in payload["rows"]:
        if r["method"] == "dense":
            name, setting = "tfmot_dense", "tf_keras dense model of the peer (reference only)"
        else:
            name = r["method"]
            setting = (f"prune_low_magnitude PolynomialDecay 0 -> {r['target_sparsity']}, "
                       f"{max(1, ctx.finetune_epochs)} epochs, strip_pruning")
        rows.append({"data": ctx.data_name, "model": ctx.model_name, **r, "method": name, "macs": macs,
                     "setting": setting, "peer_versions": payload["versions"], **ctx.budget()})
    return rows


def _dense_macs(ctx):
    from tf_groupsparse.metrics import flops

    return flops(ctx.build())


#: method name -> run(ctx) -> rows
METHODS = {"dense": dense}
METHODS.update({name: prox_method(name) for name in PROX_FAMILIES})
METHODS.update({f"hgsr_{v}": hgsr_method(v) for v in HGSR_VARIANTS})
METHODS.update({"em_blockdiag": em_blockdiag, "planting": planting,
                "filter_pruning": filter_pruning_method("filter_pruning", "prune_tolerance", 0.02),
                "filter_pruning_strong": filter_pruning_method("filter_pruning_strong", "prune_tolerance_strong", 0.1),
                "filter_pruning_max": filter_pruning_method("filter_pruning_max", "prune_tolerance_max", 0.5),
                "filter_pruning_light": filter_pruning_method("filter_pruning_light", "prune_tolerance_light", 0.01),
                "filter_pruning_distilled": filter_pruning_method("filter_pruning_distilled",
                                                                  "prune_tolerance_distilled", 0.1),
                "filter_pruning_tiles": filter_pruning_method("filter_pruning_tiles", "prune_tolerance_tiles", 0.5,
                                                              "tile_multiple", 16),
                "tfmot": tfmot, "scratch_target": scratch_target})

#: methods that need a linear chain (EM rewrite) or a chain of Dense/Conv2D (planting); the
#: tile rounding is measured for 2-D convs only (benchmarks/channel_multiple.py)
APPLIES = {"em_blockdiag": {"mlp", "vgg", "cnn1d"}, "planting": {"mlp", "vgg"},
           "filter_pruning_tiles": {"vgg", "resnet"}}


def applies(method, arch):
    """Whether `method` runs on architecture `arch`."""
    return arch in APPLIES.get(method, {arch})
