"""Budget-driven structural pruning: keep a fraction of a model's MACs, parameters or latency.

The unit is the coupled channel group of the dependency graph (every layer tied by residual
adds, concatenations, BatchNormalization or depthwise convolutions decides together). Each step:

1. score every removable group with an importance criterion (:mod:`.importance`: a group's
   score is the mean of its slices' normalized scores);
2. rank the groups globally, across layers, and remove the weakest until the step's target is
   met, never more than ``max_fraction`` of a layer's original channels and never a layer's last
   channel, a model input or output, or a layer in ``ignored_layers``; the cost of each removal
   is exact (:class:`~.cost.CostModel`). With ``ranking="uniform"`` the cap is lowered to the
   smallest share of every layer's channels that still meets the target (bisection), so every
   layer loses about the same share, its weakest channels first;
3. optionally round every layer's width to a multiple of ``round_to`` (the one rounding rule of
   :class:`~.plan.ChannelPlan`);
4. rebuild the smaller model with copied weights and fine-tune it (``fine_tune``).

With ``steps=N`` the kept fraction goes down linearly, ``1 - (1 - target) * s / N`` at step
``s``, and importance is measured again on the fine-tuned model of the previous step (iterative
pruning). A ``latency`` target is reached through a per-layer cost table measured once in LiteRT
(:mod:`.latency`) and up to four measure-and-adjust rounds (a one-shot prune of the model is
converted and timed; the table's aim moves by the measured ratio until one trial is too slow and
another fast enough, then searches between them, :func:`.latency.calibrate_aim`); the result is
timed and the measured ratio reported beside the target.

Reference: the group-level importance and global ranking follow Torch-Pruning (Fang et al.,
"DepGraph: Towards Any Structural Pruning", CVPR 2023); the latency table follows NetAdapt (Yang
et al., ECCV 2018).

Examples:
    >>> import numpy as np, keras
    >>> import tf_groupsparse as tgs
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
    ...                       keras.layers.Dense(32, activation="relu"), keras.layers.Dense(3)])
    >>> small, report = tgs.prune(m, macs=0.5, verbose=0)
    >>> report.totals["macs_fraction"] <= 0.5
    True
"""

from __future__ import annotations

import logging
import math
import time
import warnings

import keras
import numpy as np

from .._validation import (
    check_bool, check_choice, check_graph_model, check_int, check_number, check_seed, check_verbose,
)
from ..graph import build_graph, remove_groups
from ..metrics import layer_costs
from ..report import Report
from . import importance as imp
from .cost import CostModel
from .data import (
    FIT_KEYS, LossEvaluator, check_fine_tune, check_inputs, check_trained, draw_samples, fine_tune_meta,
    fine_tune_model, gradients, resolve_loss,
)
from .plan import ROUNDINGS, ChannelPlan

logger = logging.getLogger(__name__)

_OWNER = "prune"
TARGETS = ("macs", "params", "latency")
RANKINGS = ("global", "uniform")
UNIFORM_BISECTIONS = 12     # bisection steps on the common share of a uniform ranking (2^-12)

__all__ = ["prune", "PruneReport", "TARGETS", "RANKINGS"]


class PruneReport(Report):
    """What :func:`prune` did: one row per channel-creating layer (channels, parameters and MACs
    before and after) and totals: the target and what was reached (``macs_fraction``,
    ``params_fraction``, and for a latency target the predicted and measured
    ``latency_fraction``), groups removed, steps, the pruning time (``prune_seconds``: the whole
    call's wall time but the fine-tuning; for a latency target it includes the per-layer table,
    ``latency_table_seconds``, and the calibration trials, ``latency_calibration_seconds``; its
    meta has the trials, the processor's ``vector_widths`` per layer kind and the widest of them,
    ``vector_width``, a ``round_to`` that wastes nothing), the
    fine-tuning time, and the loss/accuracy on the evaluation sample before pruning, after it and
    after fine-tuning (when data was given).

    Examples:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2, name="out")])
        >>> small, report = prune(m, params=0.5, verbose=0)   # each of h's channels: 7 params
        >>> [(row["layer"], row["channels_before"], row["channels_after"]) for row in report.rows]
        [('h', 8, 3), ('out', 2, 2)]
        >>> report.totals["params_after"] == small.count_params(), report.totals["groups_removed"]
        (True, 5)
    """


def _check_target(macs, params, latency):
    given = {k: v for k, v in (("macs", macs), ("params", params), ("latency", latency)) if v is not None}
    if len(given) != 1:
        raise ValueError(
            f"{_OWNER}: Expected exactly one of `macs`, `params`, `latency` (the fraction of the "
            f"original to keep, e.g. macs=0.5 for half the multiply-adds). Received: {given or 'none'}"
        )
    (kind, value), = given.items()
    return kind, check_number(kind, value, _OWNER, strict=True, maximum=1.0)


def _check_fine_tune(fine_tune, model):
    if fine_tune is None or callable(fine_tune):
        return fine_tune
    return check_fine_tune(fine_tune, model, _OWNER, extra_keys=FIT_KEYS)


def _layer_names(model, layers, name):
    if layers is None:
        return set()
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    names = set()
    for item in layers:
        n = item.name if isinstance(item, keras.layers.Layer) else item
        if not isinstance(n, str):
            raise TypeError(f"{_OWNER}: Expected `{name}` to be layer names or layers. Received: {item!r}")
        names.add(n)
    return names


def _blocked_groups(graph, ignored):
    """Groups that may not be removed: frozen, or holding channels of an ignored layer. (Groups
    seen by a cross-channel normalization, LayerNormalization say, may go: pruning changes the
    outputs anyway and fine-tuning follows; only ``shrink`` must keep them.)"""
    blocked = graph.frozen_groups.copy()
    unknown = set(ignored)
    for node in graph.nodes:
        if node.name in ignored or node.layer.name in ignored:
            unknown.discard(node.name)
            unknown.discard(node.layer.name)
            for _, ids in node.unit_sets():
                blocked[graph.labels[ids]] = True
    if unknown:
        raise ValueError(
            f"{_OWNER}: Expected `ignored_layers` to name layers of the model. Received: unknown "
            f"{sorted(unknown)}"
        )
    return blocked


class _Step:
    """One pruning step on `graph`: rank, remove to `target`, round (the caller rebuilds)."""

    def __init__(self, graph, ignored, removed_before, original_width, max_fraction):
        self.graph = graph
        self.cost = CostModel(self.graph)
        self.blocked = _blocked_groups(self.graph, ignored)
        limits = {}
        for name in original_width:
            if name in removed_before:
                budget = int(math.floor(max_fraction * original_width[name])) - removed_before[name]
                limits[name] = max(budget, 0)
        self.plan = ChannelPlan(self.graph, limits=limits)

    def run(self, scores, target, measure, round_to, rounding):
        scores = np.where(np.isfinite(scores), scores, np.inf)
        order = [int(g) for g in np.argsort(scores, kind="stable") if not self.blocked[g] and np.isfinite(scores[g])]
        for g in order:
            if measure(self.cost) <= target:
                break
            if self.plan.can_remove([g]):
                self.plan.remove([g])
                self.cost.remove([g])
        if round_to is not None and round_to > 1:
            before = self.plan.removed.copy()
            by_group = {int(g): float(v) for g, v in enumerate(scores) if np.isfinite(v)}
            for name in self.plan.owned:
                if self.plan.removed_count[name]:
                    self.plan.round(name, round_to, rounding, by_group)
            self.cost.remove(np.nonzero(self.plan.removed & ~before)[0])
            self.cost.restore(np.nonzero(before & ~self.plan.removed)[0])
        return np.nonzero(self.plan.removed)[0]


def prune(model, data=None, *, macs=None, params=None, latency=None, importance="l2", steps=1,
          fine_tune=None, round_to=None, rounding="down", max_fraction=0.9, ranking="global",
          ignored_layers=None, loss=None, samples=512, batch_size=256, allow_untrained=False, seed=None,
          verbose=1):
    """Prune `model` to a fraction of its MACs, parameters or LiteRT latency.

    Coupled channel groups are ranked globally by `importance` and the weakest removed until the
    target is met (see the module docstring for the steps); with ``ranking="uniform"`` every layer
    gives up the same share of its channels instead.

    Args:
        model: a built Sequential or functional keras.Model. Not modified.
        data: ``(x, y)`` arrays or a tf.data.Dataset of ``(x, y)`` batches; needed by the
            importances that read the loss ("taylor", "loss"), by dict `fine_tune`, and for the
            loss/accuracy figures and the untrained-model guard. Default None.
        macs, params, latency: exactly one, the fraction of the original to keep in (0, 1]
            (``macs=0.5``: half the multiply-adds). ``latency`` is LiteRT with XNNPack on one
            thread at the model's input shape, predicted from a per-layer table measured once and
            then measured on the result.
        importance: "l2" (default), "l1", "bn_scale", "taylor", "lamp", "random", "loss", a
            :mod:`tgs.importance <tf_groupsparse.pruning.importance>` object, or a callable
            ``(graph, context) -> one score per group``.
        steps: prune in this many steps towards the target, re-measuring importance (and
            fine-tuning) after each (default 1).
        fine_tune: None (default), a dict of ``fit`` arguments (``epochs`` required;
            ``batch_size``, ``callbacks``, ``validation_data``, ``shuffle``, and ``teacher``
            with ``temperature``/``alpha`` to distil from a model) used with `model`'s own compile
            settings after every step, or a callable ``model -> model`` that trains the pruned
            model (and returns it).
        round_to: None (default) or an int >= 1: every pruned layer keeps a multiple of this many
            channels (8 or 16 suit XNNPack), as `rounding` says: "down" (default: remove down to
            the multiple below, never below one), "nearest" or "up".
        max_fraction: the largest fraction of a layer's original channels to remove, in (0, 1]
            (default 0.9), so that no layer collapses.
        ranking: "global" (default): the weakest groups of the whole model go first, so layers
            whose channels score low lose more of them; "uniform": every layer loses the same
            share of its channels (the smallest share that meets the target, found by bisection;
            the weakest channels of each layer go first; Torch-Pruning's default, local
            pruning). Uniform suits models whose layers' scores do not compare, e.g. when global
            ranking empties the early, cheap layers of a MobileNet.
        ignored_layers: layer names (or layers) whose output channels are never removed.
        loss: loss for the importances, the figures and the guard; default the compiled loss,
            else sparse categorical cross-entropy.
        samples: samples drawn from `data` for importance and figures (default 512).
        batch_size: batch size of those evaluations and of dict fine-tuning (default 256).
        allow_untrained: skip the guard that refuses a model whose loss is within 5% of chance
            (``log C`` for C classes) or whose accuracy is below ``1.5 / C`` (default False).
        seed: seed of the sample draw and of Random importance (default 0).
        verbose: 1 (default) a progress bar over the steps, 0 silent.

    Returns:
        ``(pruned_model, report)``: a new keras.Model and a :class:`PruneReport`.

    Raises:
        TypeError / ValueError: bad arguments (the message names the argument), no target or
            several, data that does not fit the model, an importance that needs data without
            it, or a model that looks untrained (see `allow_untrained`).
        RuntimeError: a `latency` target on a Keras backend other than TensorFlow (the LiteRT
            timings need it; prune by `macs` or `params` there, or switch backends).

    Warns:
        UserWarning: a `latency` target that no calibration trial reached (the model cannot get
            that fast with the given `max_fraction` and `ignored_layers`); the returned model is
            the search's last aim and its measured fraction is in ``report.totals``.

    Examples:
        >>> import numpy as np, keras
        >>> x = np.random.rand(256, 8).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
        >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
        ...                       keras.layers.Dense(2)])
        >>> m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> _ = m.fit(x, y, epochs=20, verbose=0)
        >>> small, report = prune(m, (x, y), params=0.5, importance="taylor", verbose=0)
        >>> report.totals["params_fraction"] <= 0.5, report.totals["accuracy_before"] > 0.75
        (True, True)
    """
    check_graph_model(model, _OWNER)
    kind, target = _check_target(macs, params, latency)
    if kind == "latency":
        from .latency import check_backend

        check_backend(_OWNER)
    steps = check_int("steps", steps, _OWNER, minimum=1)
    criterion = imp.get(importance, _OWNER)
    needs_data = getattr(criterion, "needs_data", False)
    if needs_data and data is None:
        raise ValueError(
            f"{_OWNER}: Expected `data` for importance={getattr(criterion, 'name', importance)!r}, which "
            "reads the loss. Received: data=None; pass (x, y) or use importance='l2'"
        )
    fine_tune = _check_fine_tune(fine_tune, model)
    if isinstance(fine_tune, dict) and data is None:
        raise ValueError(f"{_OWNER}: Expected `data` to fine-tune on with fine_tune={fine_tune!r}. Received: data=None")
    if round_to is not None:
        round_to = check_int("round_to", round_to, _OWNER, minimum=1)
    rounding = check_choice("rounding", rounding, ROUNDINGS, _OWNER)
    max_fraction = check_number("max_fraction", max_fraction, _OWNER, strict=True, maximum=1.0)
    ranking = check_choice("ranking", ranking, RANKINGS, _OWNER)
    ignored = _layer_names(model, ignored_layers, "ignored_layers")
    samples = check_int("samples", samples, _OWNER, minimum=1)
    batch_size = check_int("batch_size", batch_size, _OWNER, minimum=1)
    check_bool("allow_untrained", allow_untrained, _OWNER)
    seed = check_seed(seed, _OWNER)
    verbose = check_verbose(verbose, _OWNER)
    if isinstance(criterion, imp.Random) and importance == "random":
        criterion = imp.Random(seed)

    called = time.perf_counter()  # the pruning time is the whole call but the fine-tuning
    x = y = loss_fn = None
    totals = {"target": kind, "target_fraction": target}
    if data is not None:
        loss_fn, _ = resolve_loss(model, loss, _OWNER)
        x, y = draw_samples(data, samples, seed, _OWNER)
        check_inputs(model, x, _OWNER)
        totals["loss_before"], totals["accuracy_before"] = check_trained(
            LossEvaluator(model, loss_fn, x, y, batch_size), model, _OWNER, allow_untrained)

    from .latency import TOLERANCE, LatencyTable, calibrate_aim

    original = build_graph(model)
    table = None
    if kind == "latency":
        started = time.perf_counter()
        table = LatencyTable(model, original)
        totals["latency_table_seconds"] = time.perf_counter() - started
    original_width = {name: len(ids) for node in original.nodes for name, ids in node.unit_sets()}
    base_cost = CostModel(original)
    if kind == "latency":
        full = None
    else:  # the target is a fraction of the ORIGINAL model's cost
        full = base_cost.macs_full if kind == "macs" else base_cost.params_full

    def prune_step(current, goal):
        """One step on `current` towards `goal`: (pruned model, groups removed, reached)."""
        widths = _widths(current)
        removed_before = {n: original_width[n] - widths.get(n, original_width[n]) for n in original_width}
        graph = build_graph(current)
        context = imp.Context()
        if x is not None:
            context.evaluate = LossEvaluator(current, loss_fn, x, y, batch_size)
            context.gradients = lambda m=current: gradients(m, loss_fn, x, y, batch_size)
        scores = imp.scores_for(criterion, graph, context, _OWNER)
        if kind == "latency":
            measure = table.fraction
        else:
            measure = (lambda c: (c.macs if kind == "macs" else c.params) / max(full, 1))

        def attempt(share):  # global ranking with at most `share` of each layer's channels removed
            work = _Step(graph, ignored, removed_before, original_width, share)
            return work, work.run(scores, goal, measure, round_to, rounding)

        work, labels = attempt(max_fraction)
        if ranking == "uniform" and measure(work.cost) <= goal:
            low, high = 0.0, max_fraction  # the smallest common share that still meets the goal
            for _ in range(UNIFORM_BISECTIONS):
                share = (low + high) / 2
                trial, trial_labels = attempt(share)
                if measure(trial.cost) <= goal:
                    high, work, labels = share, trial, trial_labels
                else:
                    low = share
        pruned = remove_groups(graph, labels, owner=_OWNER) if len(labels) else current
        return pruned, len(labels), measure(work.cost)

    aim = target
    if kind == "latency":  # measure and adjust (NetAdapt): the table's prediction is only a guide
        started = time.perf_counter()
        aim, trials = calibrate_aim(lambda share: table.measured_fraction(prune_step(model, share)[0]), target)
        totals["latency_aim_predicted"] = aim
        totals["latency_calibration_seconds"] = time.perf_counter() - started
    current, tune_seconds, removed_groups = model, 0.0, 0
    progress = keras.utils.Progbar(steps, verbose=verbose, unit_name="step")
    for step in range(1, steps + 1):
        current, removed, reached = prune_step(current, 1.0 - (1.0 - aim) * step / steps)
        removed_groups += removed
        if fine_tune is not None:
            started = time.perf_counter()
            current = _fine_tune(current, model, data, fine_tune, batch_size)
            tune_seconds += time.perf_counter() - started
        progress.update(step, values=[(kind, reached)])
    if current is model:
        current = _copy(model)
    report = _report(model, current, original_width, totals, removed_groups, steps, tune_seconds)
    report.meta.update({"importance": getattr(criterion, "name", repr(criterion)), "round_to": round_to,
                        "rounding": rounding, "max_fraction": max_fraction, "ranking": ranking,
                        "ignored_layers": sorted(ignored),
                        "samples": None if x is None else int(len(x)),
                        "fine_tune": fine_tune_meta(fine_tune) if isinstance(fine_tune, dict) else (
                            None if fine_tune is None else getattr(fine_tune, "__name__", "callable")),
                        "unit": "MACs are multiply-adds per sample (FLOPs ~ 2 x MACs)"})
    if kind == "latency":
        report.meta["latency_trials"] = trials  # [aim, measured fraction] of each calibration trial
        report.meta["vector_width"] = table.vector_width  # a round_to that fills the kernels' tiles
        report.meta["vector_widths"] = dict(table.vector_widths)  # per kind: convolutions, depthwise
    if table is not None:
        report.totals.update(table.report(current))
    if kind == "latency" and all(measured > target + TOLERANCE for _, measured in trials):
        warnings.warn(
            f"{_OWNER}: `latency={target:g}` was not reached: no calibration trial measured at or below it "
            f"(fastest {min(m for _, m in trials):.2f} of the original's LiteRT latency); the model was pruned to "
            f"{aim:.2f} of the predicted latency, the search's last aim, with each layer capped by "
            f"`max_fraction={max_fraction:g}`, and measures {report.totals.get('latency_fraction', float('nan')):.2f}. "
            f"Raise `max_fraction`, pass fewer `ignored_layers`, or accept a larger `latency` target.", stacklevel=2)
    if x is not None:
        after = LossEvaluator(current, loss_fn, x, y, batch_size)
        report.totals["loss_after"] = after()
        report.totals["accuracy_after"] = after.accuracy() if report.totals.get("accuracy_before") is not None else None
    report.totals["prune_seconds"] = time.perf_counter() - called - tune_seconds
    return current, report


def _widths(model):
    graph = build_graph(model)
    return {name: len(ids) for node in graph.nodes for name, ids in node.unit_sets()}


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _fine_tune(pruned, model, data, fine_tune, batch_size):
    if callable(fine_tune):
        trained = fine_tune(pruned)
        if not isinstance(trained, keras.Model):
            raise TypeError(
                f"{_OWNER}: Expected the `fine_tune` callable to return the trained keras.Model. "
                f"Received: {type(trained).__name__}"
            )
        return trained
    fine_tune_model(pruned, model, data, fine_tune, batch_size, _OWNER)
    return pruned


def _report(model, pruned, original_width, totals, removed_groups, steps, tune_seconds):
    before, after = layer_costs(model), layer_costs(pruned)
    before_rows = {r["layer"]: r for r in before.rows}
    after_rows = {r["layer"]: r for r in after.rows}
    widths = _widths(pruned)
    rows = []
    for name, width in original_width.items():
        b, a = before_rows.get(name, {}), after_rows.get(name, {})
        rows.append({"layer": name, "channels_before": width, "channels_after": widths.get(name, width),
                     "params_before": b.get("params"), "params_after": a.get("params"),
                     "macs_before": b.get("macs"), "macs_after": a.get("macs")})
    totals.update({
        "macs_before": before.totals["macs"], "macs_after": after.totals["macs"],
        "macs_fraction": after.totals["macs"] / max(before.totals["macs"], 1),
        "params_before": before.totals["params"], "params_after": after.totals["params"],
        "params_fraction": after.totals["params"] / max(before.totals["params"], 1),
        "groups_removed": int(removed_groups), "steps": steps,
        "fine_tune_seconds": tune_seconds,
    })
    return PruneReport(f"prune to {totals['target_fraction']:g} of the {totals['target']}", rows, totals, {})
