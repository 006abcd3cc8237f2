"""The suite's methods: :data:`METHODS` maps a name to ``run(ctx) -> rows``, most of them one
function with the row's settings from a table. Every method spends ``epochs + finetune_epochs``
epochs, each phase with a fresh cosine-decayed optimizer; what each does and why:
docs/benchmarks/suite.md, "Methods" and "Settings"; what a row records: "Protocol".
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from . import models
from ..harness import accuracy, nonzero_params, plain_copy, tflite_figures, timed, train

logger = logging.getLogger(__name__)
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

    def trained(self, key, make, epochs):
        """``make()`` trained `epochs` epochs with Adam, cached as ``<key>_e<epochs>_n<samples>[_s<seed>].keras``
        so that methods sharing a starting point train it once. Returns (model, seconds)."""
        import keras

        path = self.path(f"{key}_e{epochs}_n{len(self.data[0])}" + (f"_s{self.seed}" if self.seed else "") + ".keras")
        meta = path.with_suffix(".json")
        if path.is_file() and meta.is_file():
            return keras.models.load_model(path, safe_mode=True), json.loads(meta.read_text())["seconds"]
        model = make()
        seconds = self.fit(model, epochs)
        model.save(path)
        meta.write_text(json.dumps({"seconds": seconds}))
        return model, seconds

    def row(self, method, model, seconds, **info):
        """The row named `method` of the final Keras 3 `model`; its .tflite files go to the cache."""
        from tf_groupsparse.deploy import convert_tflite
        from tf_groupsparse.metrics import count_params, flops

        x_train, _, x_test, y_test = self.data
        row = {"accuracy": accuracy(model, x_test, y_test), "params": count_params(model),
               "nonzero_params": nonzero_params(model), "macs": flops(model)}
        for label, options in (("float", {}), ("int8", {"quantize": "int8", "representative_data": x_train})):
            blob = convert_tflite(model, **options)
            try:
                tflite_figures(row, label, blob, self.path(self.tflite_subdir, f"{method}_{label}.tflite"), x_test,
                               y_test, self.latency_runs)
            except RuntimeError as exc:  # LiteRT refuses some int8 graphs (XNNPack, 1-channel convs)
                if label == "float":
                    raise
                logger.warning("%s: the int8 .tflite file does not run in LiteRT: %s", method, exc)
                row.update({"tflite_int8": None, "latency_int8_s": None, "accuracy_int8": None,
                            "int8_error": str(exc).splitlines()[0][:200]})
        return {"data": self.data_name, "model": self.model_name, "method": method, "train_s": round(seconds, 2),
                **row, **info, **self.budget()}

    def budget(self):
        """The training settings every row records (jobs may come from different runs)."""
        prox = "Adam" if self.settings.get("prox_optimizer", "sgd") == "adam" else "SGD momentum 0.9"
        return {"train_samples": len(self.data[0]), "epochs": self.epochs, "finetune_epochs": self.finetune_epochs,
                "batch_size": self.batch_size, "optimizer": f"cosine decay; Adam, prox phases {prox}",
                "learning_rate": self.learning_rate, "sgd_learning_rate": self.sgd_learning_rate, "seed": self.seed,
                "batch_norm": self.spec.get("batch_norm", True)}


def dense(ctx):
    model, seconds = ctx.trained("dense", ctx.build, ctx.epochs + ctx.finetune_epochs)
    return [ctx.row("dense", model, seconds)]


def _penalized_layers(model):
    """Every kernel layer but the first, whose input groups are the input features (pixels): no pass
    can remove them, and a 1-channel image's single group dying kills the model."""
    return [layer.name for layer in model.layers if getattr(layer, "kernel", None) is not None][1:]


def _cges(r, strength, model):
    names = _penalized_layers(model)
    return {n: r.CombinedGroupExclusive(strength, mu=mu, scale_by_size=True)
            for n, mu in zip(names, r.cges_mu_schedule(len(names)))}


_GL = "GroupLasso (input groups, sqrt(|g|) weights)"
#: proximal method -> (factory(regularizers, strength, model) -> regularizer or {layer: regularizer},
#: strength, text); strengths for SGD on the Fashion-MNIST MLP (docs/benchmarks/suite.md, "Settings")
PROX_FAMILIES = {
    "l1": (lambda r, s, m: r.L1(s), 2e-3, "L1"),
    **{name: (lambda r, s, m: r.GroupLasso(s, scale_by_size=True), strength, _GL + text) for name, strength, text in (
        ("group_lasso", 2e-3, ""), ("group_lasso_weak", 1.5e-3, ", weaker"),
        ("group_lasso_weaker", 1.2e-3, ", weaker still"), ("group_lasso_weakest", 1e-3, ", weakest"),
        ("group_lasso_mild", 7e-4, ", mild"))},
    "sparse_group_lasso": (lambda r, s, m: r.SparseGroupLasso(s, alpha=0.2, scale_by_size=True), 1.5e-3,
                           "SparseGroupLasso alpha=0.2, sqrt(|g|) weights"),
    "exclusive": (lambda r, s, m: r.ExclusiveSparsity(s), 3e-4, "ExclusiveSparsity"),
    "l11_l12": (lambda r, s, m: r.CombinedL11L12(s, s / 20), 2e-3, "CombinedL11L12 l11=s, l12=s/20"),
    "cges": (_cges, 1.5e-3, "CGES, mu 0.8 -> 0 by 0.2 per layer, sqrt(|g|) weights"),
}
HGSR_VARIANTS = ("sqrt_group_lasso", "squared_group_lasso", "sqrt_exclusive", "squared_exclusive",
                 "sqrt_group_l12", "squared_group_l12")
HGSR_STRENGTH = 1e-4


def _shrink_and_finetune(ctx, model, method, seconds, setting):
    from tf_groupsparse.pruning.shrink import shrink

    small = plain_copy(shrink(model, threshold=1e-3))
    seconds += ctx.fit(small, ctx.finetune_epochs) if ctx.finetune_epochs else 0.0
    return [ctx.row(method, small, seconds, setting=setting)]


def proximal(name, ctx):
    from tf_groupsparse import regularize, regularizers
    from tf_groupsparse.callbacks import ProximalStep

    make, strength, setting = PROX_FAMILIES[name]
    strength = ctx.settings.get(f"{name}_strength", strength)
    base = ctx.build()
    reg = make(regularizers, strength, base)
    model = regularize(base, reg, proximal=True, **({} if isinstance(reg, dict) else
                                                      {"layers": _penalized_layers(base)}))
    kind = ctx.settings.get("prox_optimizer", "sgd")
    seconds = ctx.fit(model, ctx.epochs, [ProximalStep()], kind=kind)
    return _shrink_and_finetune(ctx, model, name, seconds, f"{setting}, strength {strength:g}, prox with {kind}")


def _hgsr_strength(ctx, variant):
    """``settings["hgsr_<variant>_strength"]``, else the model's ``hgsr_strength``, else :data:`HGSR_STRENGTH`."""
    return ctx.settings.get(f"hgsr_{variant}_strength", ctx.settings.get("hgsr_strength", HGSR_STRENGTH))


def _hgsr_model(ctx, variant, epochs=None, strength=None):
    from tf_groupsparse import regularize
    from tf_groupsparse.regularizers import HierarchicalGroupSparse

    strength = _hgsr_strength(ctx, variant) if strength is None else strength
    reg = HierarchicalGroupSparse(strength, variant=variant, l1_mix=0.5 if variant == "squared_group_l12" else 0.0)
    return ctx.trained(f"hgsr_{variant}_{strength:g}",
                       lambda: regularize(ctx.build(), reg, layers=_penalized_layers(ctx.build())),
                       epochs or ctx.epochs)


def hgsr(variant, ctx):
    model, seconds = _hgsr_model(ctx, variant)
    model = plain_copy(model)
    model.set_weights([np.where(np.abs(w) < ZERO_BELOW, 0.0, w).astype(w.dtype) if w.ndim > 1 else w
                       for w in model.get_weights()])
    mix = ", l1_mix 0.5" if variant == "squared_group_l12" else ""
    setting = f"HGSR {variant}, strength {_hgsr_strength(ctx, variant):g}{mix}, loss; |w| < 1e-3 -> 0"
    return _shrink_and_finetune(ctx, model, f"hgsr_{variant}", seconds, setting)


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
    return [ctx.row("em_blockdiag", to_block_diagonal(masked, structure), seconds,
                    setting=f"fit_groups K={k} balanced on {', '.join(names)}, masked fine-tune")]


#: filter pruning row -> default loss tolerance (``settings["prune_tolerance_<level>"]`` overrides)
#: and, for the tile row, the default multiple its widths are rounded to (``settings["tile_multiple"]``)
FILTER_PRUNING = {"filter_pruning": (0.02, None), "filter_pruning_strong": (0.1, None),
                  "filter_pruning_max": (0.5, None), "filter_pruning_light": (0.01, None),
                  "filter_pruning_distilled": (0.1, None), "filter_pruning_tiles": (0.5, 16)}
_ROUNDING_TEXT = {"down": "down to", "up": "up to", "nearest": "to the nearest", "blocks": "in blocks of"}


def filter_pruning(name, ctx):
    """``prune_filters`` of the HGSR (or at ``prune_hgsr_strength`` 0 the dense) model, then fine-tuning;
    each setting is the row's own ``<name>_<key>``, else ``prune_<key>``."""
    import keras

    from tf_groupsparse.pruning import prune_filters
    from tf_groupsparse.pruning.filters import OLD_CANDIDATES

    def setting(key, default=None):
        return ctx.settings.get(f"{name}_{key}", ctx.settings.get(f"prune_{key}", default))

    default_tolerance, default_multiple = FILTER_PRUNING[name]
    tolerance = ctx.settings.get("prune_tolerance" + name[len("filter_pruning"):], default_tolerance)
    multiple = ctx.settings.get("tile_multiple", default_multiple) if default_multiple else None
    candidates = ctx.settings.get("prune_candidates", "norm")
    at = int(setting("at_epoch", ctx.epochs))  # pruned after `at` epochs of the budget
    finetune_epochs = ctx.epochs + ctx.finetune_epochs - at
    strength = ctx.settings.get("prune_hgsr_strength", _hgsr_strength(ctx, "squared_group_l12"))
    model, seconds = (_hgsr_model(ctx, "squared_group_l12", at, strength) if strength
                      else ctx.trained("dense", ctx.build, at))
    samples = int(ctx.settings.get("prune_samples", 512))
    layers = list(setting("layers") or []) or None
    max_fraction = setting("max_fraction")  # a size the tolerance cannot overshoot
    if isinstance(max_fraction, dict):  # one cap per layer: the layers it names are the ones pruned
        layers = list(max_fraction)
    rounding = setting("rounding", "down")
    (pruned, _), prune_seconds = timed(lambda: prune_filters(
        plain_copy(model), (ctx.data[0], ctx.data[1]), samples=samples, tolerance=tolerance,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), importance=OLD_CANDIDATES[candidates](),
        layers=layers, max_fraction=max_fraction, round_to=multiple, rounding=rounding, search="greedy", verbose=0,
        allow_untrained=bool(ctx.settings.get("allow_untrained", False))))
    seconds += prune_seconds
    pruned = plain_copy(pruned)
    lr, seed, temperature = setting("finetune_learning_rate"), setting("finetune_seed"), setting("distill_temperature")
    alpha, teacher = float(setting("distill_alpha", 0.5)), None
    if temperature and finetune_epochs:  # fine-tuned by distillation; the teacher's training counts
        teacher, teacher_seconds = ctx.trained("dense", ctx.build, ctx.epochs + ctx.finetune_epochs)
        seconds += teacher_seconds
    if finetune_epochs:
        seconds += ctx.fit(pruned, finetune_epochs, learning_rate=lr, seed=seed, teacher=teacher,
                           temperature=temperature or 2.0, alpha=alpha)
    caps = "" if not max_fraction else (
        ", at most " + ", ".join(f"{v:g} of {k}" for k, v in max_fraction.items()) + "'s filters"
        if isinstance(max_fraction, dict) else f", at most {max_fraction:g} of a layer's filters")
    text = ((f"HGSR squared_group_l12 model (strength {strength:g})" if strength else "dense model (HGSR strength 0)")
            + f", prune_filters tolerance {tolerance}, candidates {candidates}, {samples} samples"
            + (f", widths rounded {_ROUNDING_TEXT.get(rounding, rounding)} multiples of {multiple}" if multiple else "")
            + (f", layers {', '.join(layers)} only" if layers else "") + caps
            + (f", fine-tuned from learning rate {lr:g}" if lr else "")
            + (f", pruned after epoch {at} of {ctx.epochs + ctx.finetune_epochs}" if at != ctx.epochs else "")
            + (f", fine-tune seed {int(seed)}" if seed is not None else "")
            + (f", fine-tuned by distillation from the dense model (T {temperature:g}, alpha {alpha:g})"
               if teacher is not None else ""))
    return [ctx.row(name, pruned, seconds, setting=text)]


def planting(ctx):
    from tf_groupsparse.pruning.planting import plant

    steps = ctx.settings.get("plant_steps", 3)
    teacher, _ = ctx.trained("dense", ctx.build, ctx.epochs + ctx.finetune_epochs)
    small_spec = {**ctx.spec, "widths": [max(2, w // 8) for w in ctx.spec["widths"]]}
    student, seconds = ctx.trained("planting_student", lambda: ctx.build(small_spec), ctx.epochs)
    x, y = ctx.data[0], ctx.data[1]
    n_val, per_step = max(100, len(x) // 10), max(2, min(ctx.spec["widths"]) // 8)
    (grown, _), plant_seconds = timed(plant, student, teacher, (x[:-n_val], y[:-n_val]),
                                      validation_data=(x[-n_val:], y[-n_val:]), channels_per_step=per_step,
                                      max_steps=steps, epochs_per_step=1, learning_rate=ctx.learning_rate,
                                      batch_size=ctx.batch_size, verbose=0)
    return [ctx.row("planting", grown, seconds + plant_seconds,
                    setting=f"student widths {small_spec['widths']}, {steps} steps of {per_step} channels")]


#: architecture -> (size measure, factor) of its headline target, the size ``scratch_target`` scales
#: down to (the 1-D CNN's is used for that only: no verdict judges it)
TARGET_SIZE = {"mlp": ("params", 10.0), "vgg": ("macs", 3.0), "resnet": ("macs", 3.0), "cnn1d": ("macs", 3.0)}


def target_widths(ctx):
    """The widths ``round(w * p / 100)`` for the largest whole percentage ``p`` (found by bisection:
    the size grows with ``p``) whose model is at most the dense model's size over the target factor."""
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
    return [ctx.row("scratch_target", model, seconds, setting=f"reference: widths {widths} (<= dense {measure_of} / "
                    f"{factor:g}) trained from scratch with the dense budget")]


def tfmot(ctx):
    """Run :mod:`benchmarks.tfmot_peer` in its own process and turn its JSON into rows."""
    from tf_groupsparse.metrics import flops

    workdir = ctx.path("tfmot" + (f"_s{ctx.seed}" if ctx.seed else ""))  # models of other seeds are other models
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, data_path, out_path = workdir / "spec.json", workdir / "data.npz", workdir / "peer.json"
    spec_path.write_text(json.dumps(ctx.spec))
    x, y, xt, yt = ctx.data
    np.savez(data_path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    epochs = max(1, ctx.finetune_epochs)
    cmd = [sys.executable, "-m", "benchmarks.tfmot_peer", "--spec", str(spec_path), "--data", str(data_path),
           "--out", str(out_path), "--tflite-dir", str(workdir / "tflite"), "--epochs", str(ctx.epochs),
           "--prune-epochs", str(epochs), "--seed", str(ctx.seed), "--batch-size", str(ctx.batch_size),
           "--learning-rate", str(ctx.learning_rate), "--latency-runs", str(ctx.latency_runs)]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                          env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise RuntimeError(f"tfmot peer failed (exit {done.returncode}): {done.stderr[-2000:]}")
    payload = json.loads(out_path.read_text())
    data_path.unlink()
    macs = flops(ctx.build())
    return [{"data": ctx.data_name, "model": ctx.model_name, **r, "macs": macs, **(
        {"method": "tfmot_dense", "setting": "tf_keras dense model of the peer (reference only)"}
        if r["method"] == "dense" else {"method": r["method"], "setting": "prune_low_magnitude PolynomialDecay 0 -> "
                                        f"{r['target_sparsity']}, {epochs} epochs, strip_pruning"}),
             "peer_versions": payload["versions"], **ctx.budget()} for r in payload["rows"]]


#: method name -> run(ctx) -> rows
METHODS = {"dense": dense, "em_blockdiag": em_blockdiag, "planting": planting, "tfmot": tfmot,
           "scratch_target": scratch_target, **{name: partial(proximal, name) for name in PROX_FAMILIES},
           **{f"hgsr_{v}": partial(hgsr, v) for v in HGSR_VARIANTS},
           **{name: partial(filter_pruning, name) for name in FILTER_PRUNING}}
#: methods that need a linear chain (EM rewrite) or a chain of Dense/Conv2D (planting); the tile
#: rounding is measured for 2-D convs only (benchmarks/channel_multiple.py)
APPLIES = {"em_blockdiag": {"mlp", "vgg", "cnn1d"}, "planting": {"mlp", "vgg"},
           "filter_pruning_tiles": {"vgg", "resnet"}}


def applies(method, arch):
    """Whether `method` runs on architecture `arch`."""
    return arch in APPLIES.get(method, {arch})
