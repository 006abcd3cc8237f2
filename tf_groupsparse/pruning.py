"""Filter pruning by loss increase: remove the filters whose removal barely changes the loss.

The project's reading of Mitsuno & Kurita, "Filter Pruning using Hierarchical Group Sparse
Regularization for Deep Convolutional Neural Networks", ICPR 2020 (arXiv 2011.02389), whose
full text is not public (see METHODS.md, HFP):

1. Candidates are the output channels (filters) of each layer in ascending order of their group
   norm ``||W[..., :, o]||_2`` (or a score of your own); the model is usually trained with a
   hierarchical group sparse regularizer first, which drives unneeded filters towards zero.
2. On ``n`` randomly drawn training samples, with ``L`` the mean loss, each candidate ``f`` is
   removed on top of the filters already removed, ``R``:

       delta(R + f) = L(model without R + f) - L(model)

   and ``f`` joins ``R`` when ``delta(R + f) <= tolerance``; otherwise it is put back. The total
   increase therefore never exceeds ``tolerance``.
3. The filters in ``R`` are removed physically with
   :func:`tf_groupsparse.surgery.prune_channels` (the removal follows the channel dependency
   graph to BatchNormalization, consumers, residual adds, ...), and the smaller model can be
   fine-tuned with the model's own compile settings.

A candidate is "removed" during the search by zeroing every weight slice of its channel group
(kernel columns, bias, BatchNormalization entries and the consumers' input slices) in place on
ONE working copy of the model, evaluating the loss with one compiled function on a fixed batch,
and restoring the slices when the candidate is rejected: no model is rebuilt per candidate.
Candidates are visited across layers in order of their rank within their layer relative to the
layer's width (the weakest filters of every layer first), so no layer spends the whole budget.

Example:
    >>> import numpy as np, keras
    >>> from tf_groupsparse.pruning import prune_filters
    >>> x = np.random.rand(64, 6).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
    >>> m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="h"),
    ...                       keras.layers.Dense(2, name="out")])
    >>> small, report = prune_filters(m, (x, y), loss=keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), tolerance=1.0, verbose=0)
    >>> small.get_layer("h").units < 8
    True
"""

from __future__ import annotations

import logging
import math

import keras
import numpy as np

from ._validation import check_choice, check_int, check_keras_model, check_number
from .distillation import Distiller, check_distillation
from .graph import build_graph
from .metrics import layer_costs
from .report import Report
from .surgery import prune_channels, zero_slices

logger = logging.getLogger(__name__)

_OWNER = "prune_filters"


class PruningReport(Report):
    """Per pruned layer: filters before/after, loss increase, params and MACs removed.

    A row's ``params_removed`` / ``macs_removed`` count that layer's own weights and work (its
    kernel columns, bias, per-channel parameters); the consumers' input slices removed with them
    are counted in ``totals``, which hold the model-wide differences.

    ``totals`` holds the loss on the evaluation samples before and after (zeroed working copy
    and the physically pruned model), the parameter and MAC counts, the number of loss
    evaluations and, after fine-tuning, the loss after it. ``meta["plan"]`` is the
    ``{layer: removed channel indices}`` given to ``prune_channels``.
    """


def _l2_scores(layer):
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    return np.sqrt(np.sum(np.square(kernel.reshape(-1, kernel.shape[-1])), axis=0))


def _l1_scores(layer):
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    return np.sum(np.abs(kernel.reshape(-1, kernel.shape[-1])), axis=0)


def _consumer_norm_scores(graph):
    """Score of channel o of a layer: the L2 norm of every consumer's input slice of o's channel
    group (the feature-wise group that HGSR and input-axis group lasso drive to zero). With
    BatchNormalization after a conv, the filter's own norm says nothing about its importance."""

    weights = {}  # (layer name, weight index) -> NumPy array, read once

    def consumer_norm(layer):
        node = graph.node(layer.name)
        values = []
        for channel in range(len(node.out_ids)):
            total = 0.0
            for s in graph.group(node.name, channel).slices:
                if s.role == "consume":
                    key = (s.layer.name, s.weight_index)
                    if key not in weights:
                        weights[key] = keras.ops.convert_to_numpy(s.layer.weights[s.weight_index])
                    total += float(np.sum(np.take(weights[key], list(s.indices), axis=s.axis) ** 2))
            values.append(math.sqrt(total))
        return np.asarray(values)

    return consumer_norm


#: Built-in candidate orders: a score per output channel, lowest tried first.
CANDIDATE_SCORES = {"norm": _l2_scores, "l1": _l1_scores}
#: Built-in orders that read the channel dependency graph (consumers of each channel).
GRAPH_CANDIDATE_SCORES = {"consumer_norm": _consumer_norm_scores}


def _ends_in_softmax(model):
    last = model.layers[-1]
    return isinstance(last, keras.layers.Softmax) or getattr(last, "activation", None) is keras.activations.softmax


def _resolve_loss(model, loss):
    if loss is not None:
        try:
            return keras.losses.get(loss), "argument"
        except (ValueError, TypeError):
            raise ValueError(
                f"{_OWNER}: Expected `loss` to be a Keras loss name, a keras.losses.Loss or a "
                f"callable (y_true, y_pred). Received: loss={loss!r}"
            ) from None
    compiled = getattr(model, "loss", None)
    if compiled is not None and not isinstance(compiled, (dict, list, tuple)):
        return keras.losses.get(compiled), "model.compile"
    from_logits = not _ends_in_softmax(model)
    logger.info("prune_filters: no loss given or compiled; using sparse categorical cross-entropy "
                "(from_logits=%s)", from_logits)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), "default"


def _draw_samples(data, samples, rng):
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        xs, ys, count = [], [], 0
        for x, y in data:
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
            count += len(xs[-1])
            if count >= samples:
                break
        if not xs:
            raise ValueError(f"{_OWNER}: Expected `data` to yield at least one (x, y) batch. Received: an empty dataset")
        return np.concatenate(xs)[:samples], np.concatenate(ys)[:samples]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"{_OWNER}: Expected `data` to hold as many labels as samples (and at least one). "
                f"Received: data with {len(x)} samples and {len(y)} labels"
            )
        idx = np.sort(rng.choice(len(x), size=min(samples, len(x)), replace=False))
        return x[idx], y[idx]
    raise TypeError(
        f"{_OWNER}: Expected `data` to be an (x, y) tuple of arrays or a tf.data.Dataset of (x, y) "
        f"batches. Received: data of type {type(data).__name__}"
    )


def _loss_function(model, loss_fn, x, y, batch_size):
    """A compiled function returning the mean loss of `model`'s current weights on (x, y)."""
    import tensorflow as tf

    batches = [(tf.constant(x[i:i + batch_size]), tf.constant(y[i:i + batch_size]))
               for i in range(0, len(x), batch_size)]
    sizes = [int(b[0].shape[0]) for b in batches]

    @tf.function
    def batch_loss(xb, yb):
        return tf.reduce_mean(loss_fn(yb, model(xb, training=False)))

    def evaluate():
        total = sum(float(batch_loss(xb, yb)) * n for (xb, yb), n in zip(batches, sizes))
        return total / sum(sizes)

    return evaluate


def _default_layers(graph):
    names = []
    for node in graph.nodes:
        if node.owned is None or not hasattr(node.layer, "kernel"):
            continue
        if any(not graph.frozen_groups[lab] for lab in graph.labels[node.owned]):
            names.append(node.name)
    return names


_FINE_TUNE_KEYS = ("epochs", "batch_size", "teacher", "temperature", "alpha")


def _check_fine_tune(fine_tune, model):
    if fine_tune is None:
        return None
    if not isinstance(fine_tune, dict) or set(fine_tune) - set(_FINE_TUNE_KEYS) or "epochs" not in fine_tune:
        raise ValueError(
            f"{_OWNER}: Expected `fine_tune` to be None or a dict like {{'epochs': 2}} (optional "
            "'batch_size', and 'teacher' with optional 'temperature' and 'alpha' to fine-tune by "
            f"distillation). Received: fine_tune={fine_tune!r}"
        )
    out = {"epochs": check_int("fine_tune['epochs']", fine_tune["epochs"], _OWNER, minimum=1)}
    if "batch_size" in fine_tune:
        out["batch_size"] = check_int("fine_tune['batch_size']", fine_tune["batch_size"], _OWNER, minimum=1)
    if fine_tune.get("teacher") is None:
        if {"temperature", "alpha"} & set(fine_tune):
            raise ValueError(
                f"{_OWNER}: Expected fine_tune['teacher'] (a trained keras.Model) with 'temperature' "
                f"or 'alpha'. Received: fine_tune={fine_tune!r}; add the teacher or drop them"
            )
        return out
    out["teacher"] = fine_tune["teacher"]
    # the teacher, the temperature and alpha are checked now, before the (long) search
    out["temperature"], out["alpha"] = check_distillation(model, out["teacher"], fine_tune.get("temperature", 4.0),
                                                          fine_tune.get("alpha", 0.5))
    return out


def _fine_tune_meta(fine_tune):
    if fine_tune is None:
        return None
    out = dict(fine_tune)
    if "teacher" in out:
        out["teacher"] = out["teacher"].name
    return out


def _fine_tune(pruned, model, data, fine_tune, batch_size):
    """Fit `pruned` with `model`'s compile settings, on the labels or by distillation."""
    pruned.compile_from_config(model.get_compile_config())
    trained = pruned
    if "teacher" in fine_tune:
        config = keras.saving.deserialize_keras_object(model.get_compile_config())
        config = {k: v for k, v in config.items() if k not in ("loss", "loss_weights")}
        trained = Distiller(pruned, fine_tune["teacher"], fine_tune["temperature"], fine_tune["alpha"],
                            name=f"{_OWNER}_fine_tune")
        trained.compile(**config)
    kwargs = {"epochs": fine_tune["epochs"], "verbose": 0}
    if isinstance(data, (tuple, list)):
        trained.fit(np.asarray(data[0]), np.asarray(data[1]), batch_size=fine_tune.get("batch_size", batch_size),
                    **kwargs)
    else:
        trained.fit(data, **kwargs)


def prune_filters(
    model,
    data,
    *,
    loss=None,
    samples=512,
    tolerance=0.01,
    candidates="norm",
    layers=None,
    max_fraction=None,
    fine_tune=None,
    channel_multiple=None,
    rounding="down",
    batch_size=256,
    random_state=0,
    verbose=1,
):
    """Remove the filters whose joint removal raises the loss by at most `tolerance`.

    With ``L`` the mean loss on `samples` randomly drawn training samples and ``R`` the filters
    accepted so far, a candidate ``f`` (visited in ascending score within its layer) is accepted
    when ``L(without R + f) - L(model) <= tolerance``; accepted filters are then removed
    physically through the channel dependency graph.

    Args:
        model: a built keras.Model (Sequential or functional). Not modified.
        data: training data, ``(x, y)`` arrays or a tf.data.Dataset of ``(x, y)`` batches (its
            first `samples` samples are used; shuffle it yourself).
        loss: loss name, keras.losses.Loss or callable ``(y_true, y_pred)``; default None uses
            the model's compiled loss, else sparse categorical cross-entropy (from logits unless
            the model ends in softmax).
        samples: number of samples drawn for the loss (default 512).
        tolerance: largest allowed increase of the mean loss, in loss units (default 0.01).
        candidates: "norm" (L2 norm of ``W[..., :, o]``, default), "l1", "consumer_norm"
            (L2 norm of the input slices of channel o in every layer that reads it, through
            residual adds and concatenations: the group that feature-wise HGSR or input-axis
            group lasso drives to zero; use it when BatchNormalization follows the convs), or a
            callable ``layer -> one score per output channel`` (lowest tried first).
        layers: names of the layers whose filters may be removed; default None: every
            Dense/Conv-like layer with removable channels (model outputs are never removed).
        max_fraction: largest fraction of a layer's filters to remove, in (0, 1] (default
            None: all but one), or a dict ``{layer name: fraction}`` of one cap per layer (layers
            it does not name are not capped; each name must be one of the layers pruned).
            Channels coupled across layers (residual adds) count for every layer that creates
            them; no layer ever loses all of its channels. With a generous `tolerance` it sets
            the pruned width itself (the loss still picks which filters go): the way to reach a
            size, since one tolerance prunes models trained on other samples or for other epochs
            to other widths.
        fine_tune: None (default) or ``{"epochs": n, "batch_size": b}`` to fit the pruned model
            on `data` with the model's compile settings (the model must be compiled). With
            ``"teacher": m`` (for example the unpruned model) the fit minimizes the distillation
            loss against ``m`` instead of the compiled loss (:class:`tf_groupsparse.Distiller`;
            ``"temperature"`` default 4.0, ``"alpha"`` default 0.5); metrics and optimizer as
            compiled.
        channel_multiple: None (default) or an int >= 1: after the loss-based pass every pruned
            layer keeps a multiple of this many filters (or all it had), so that its width fills
            whole tiles of the target's kernels (LiteRT's XNNPack on an AVX2 x86 CPU runs a conv
            whose width is a multiple of 16 much faster per MAC: ``benchmarks/results/tile_widths.md``).
            Filters are removed further (lowest score first) or given back (highest score
            first) as `rounding` says; the tolerance then no longer bounds the loss: the
            report's ``loss_after`` is the pruned model's and ``filters_rounded`` the net number
            of filters the rounding removed (negative: given back).
        rounding: how widths become multiples of `channel_multiple` (unused without it):
            "down" (default: remove filters down to the multiple below, but never below one
            multiple), "nearest" (ties go up) or "up" (give back filters) after the filter-by-filter
            pass; or "blocks": search in whole blocks instead, so that the tolerance bounds the
            loss again. A layer's first block is its ``width % channel_multiple`` weakest filters
            (a whole multiple if the width is one), then ``channel_multiple`` at a time, never the
            last multiple; blocks of all layers are visited weakest first (by relative rank, as
            single filters are), and a layer's first rejected block ends its search. One loss
            evaluation per block instead of per filter: far faster, but at the same tolerance it
            removes fewer filters than "down" (a block costs more loss than its weakest filter).
        batch_size: batch size of the loss evaluation and fine-tuning (default 256).
        random_state: seed of the sample draw (default 0).
        verbose: 1 shows a progress bar over the candidates, 0 is silent (default 1).

    Returns:
        ``(pruned_model, report)``: a new, smaller keras.Model and a :class:`PruningReport`.

    Raises:
        TypeError: wrong type of `model`, `data`, `candidates` or `layers`.
        ValueError: a number is out of range, a named layer has no removable filters, or the
            loss cannot be resolved.

    Reference: Mitsuno & Kurita, "Filter Pruning using Hierarchical Group Sparse
    Regularization for Deep Convolutional Neural Networks", ICPR 2020 (arXiv 2011.02389).

    Example:
        >>> import numpy as np, keras
        >>> x = np.random.rand(32, 4).astype("float32"); y = np.zeros(32, "int32")
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="h"),
        ...                       keras.layers.Dense(2, name="out")])
        >>> _, r = prune_filters(m, (x, y), tolerance=0.0, verbose=0)
        >>> r.totals["loss_increase"] <= 0.0
        True
    """
    check_keras_model(model, _OWNER)
    samples = check_int("samples", samples, _OWNER, minimum=1)
    tolerance = check_number("tolerance", tolerance, _OWNER)
    batch_size = check_int("batch_size", batch_size, _OWNER, minimum=1)
    random_state = check_int("random_state", random_state, _OWNER, minimum=0)
    if isinstance(max_fraction, dict):
        max_fraction = {name: check_number(f"max_fraction[{name!r}]", value, _OWNER, strict=True, maximum=1.0)
                        for name, value in max_fraction.items()}
    elif max_fraction is not None:
        max_fraction = check_number("max_fraction", max_fraction, _OWNER, strict=True, maximum=1.0)
    if channel_multiple is not None:
        channel_multiple = check_int("channel_multiple", channel_multiple, _OWNER, minimum=1)
    rounding = check_choice("rounding", rounding, ("down", "nearest", "up", "blocks"), _OWNER)
    if callable(candidates):
        score_fn = candidates
    else:
        choices = tuple(CANDIDATE_SCORES) + tuple(GRAPH_CANDIDATE_SCORES)
        score_fn = CANDIDATE_SCORES.get(check_choice("candidates", candidates, choices, _OWNER))
    fine_tune = _check_fine_tune(fine_tune, model)
    if fine_tune is not None and getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"{_OWNER}: Expected a compiled model when `fine_tune` is given (the pruned model is "
            f"fine-tuned with the model's compile settings). Received: model {model.name!r} is not compiled"
        )
    loss_fn, loss_source = _resolve_loss(model, loss)
    rng = np.random.default_rng(random_state)
    x, y = _draw_samples(data, samples, rng)

    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    graph = build_graph(work)
    if score_fn is None:
        score_fn = GRAPH_CANDIDATE_SCORES[candidates](graph)
    allowed = _default_layers(graph)
    if layers is None:
        names = allowed
    else:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise TypeError(f"{_OWNER}: Expected `layers` to be a list of layer names. Received: layers={layers!r}")
        unknown = [n for n in layers if n not in allowed]
        if unknown:
            raise ValueError(
                f"{_OWNER}: Expected `layers` to name layers with removable filters: {allowed}. "
                f"Received: layers={unknown!r}"
            )
        names = list(layers)
    if isinstance(max_fraction, dict):
        unknown = sorted(set(max_fraction) - set(names))
        if unknown:
            raise ValueError(
                f"{_OWNER}: Expected the keys of `max_fraction` to be layers being pruned: {names}. "
                f"Received: {unknown!r} (name them in `layers` too, or drop them from `max_fraction`)"
            )
        caps = max_fraction
    else:  # one number (or None) for every pruned layer
        caps = {n: max_fraction for n in names} if max_fraction is not None else {}

    widths, order = {}, {}
    for name in names:
        node = graph.node(name)
        widths[name] = len(node.out_ids)
        scores = np.asarray(score_fn(node.layer), dtype="float64").reshape(-1)
        if scores.shape[0] != widths[name]:
            raise ValueError(
                f"{_OWNER}: Expected `candidates` to return one score per output channel of layer "
                f"{name!r} ({widths[name]}). Received: {scores.shape[0]} scores"
            )
        order[name] = [int(c) for c in np.argsort(scores, kind="stable")]
    # the queue: (relative rank, layer, [channels]), weakest filters (or blocks) of every layer first
    blocks = rounding == "blocks" and channel_multiple is not None and channel_multiple > 1
    if blocks:
        queue = _block_queue(names, widths, order, channel_multiple)
    else:
        queue = sorted(((rank / widths[n], n, [c]) for n in names for rank, c in enumerate(order[n])),
                       key=lambda item: item[0])

    evaluate = _loss_function(work, loss_fn, x, y, batch_size)
    base = evaluate()
    current = base
    per_layer_delta = {n: 0.0 for n in names}
    state = _PlanState(graph, widths, caps)
    evaluations = 0
    rounded = 0
    progbar = keras.utils.Progbar(len(queue), verbose=verbose, unit_name="block" if blocks else "candidate")
    stopped = set()  # layers whose block was rejected: their later blocks are stronger filters
    for step, (_, name, channels) in enumerate(queue, 1):
        groups = [graph.group(name, c) for c in channels]
        if name in stopped or not state.removable_all(groups):
            progbar.update(step)
            continue
        saved = _zero_groups(groups)
        value = evaluate()
        evaluations += 1
        if value - base <= tolerance:
            for channel, group in zip(channels, groups):
                state.remove(name, channel, group)
            per_layer_delta[name] += value - current
            current = value
        else:
            for variable, original in saved.values():
                variable.assign(original)
            if blocks:
                stopped.add(name)
        progbar.update(step, values=[("loss_increase", current - base)])

    if channel_multiple is not None and channel_multiple > 1 and not blocks:
        for name in names:
            rounded += state.round_width(name, widths[name], order[name], channel_multiple, rounding)
    plan = state.plan()
    pruned = prune_channels(model, plan) if plan else _copy(model)
    before_costs, after_costs = layer_costs(model), layer_costs(pruned)
    before_rows = {r["layer"]: r for r in before_costs.rows}
    after_rows = {r["layer"]: r for r in after_costs.rows}
    rows = []
    for name in names:
        after_width = widths[name] - state.removed_count[name]
        rows.append({
            "layer": name,
            "filters_before": widths[name],
            "filters_after": after_width,
            "loss_increase": per_layer_delta[name],
            "params_removed": before_rows[name]["params"] - after_rows[name]["params"],
            "macs_removed": before_rows[name]["macs"] - after_rows[name]["macs"],
        })
    pruned_loss = _loss_function(pruned, loss_fn, x, y, batch_size)()
    totals = {
        "loss_before": base,
        "loss_zeroed": current,
        "loss_after": pruned_loss,
        "loss_increase": pruned_loss - base,
        "filters_removed": sum(len(v) for v in plan.values()),
        "params_before": before_costs.totals["params"],
        "params_after": after_costs.totals["params"],
        "params_removed": before_costs.totals["params"] - after_costs.totals["params"],
        "macs_before": before_costs.totals["macs"],
        "macs_after": after_costs.totals["macs"],
        "macs_removed": before_costs.totals["macs"] - after_costs.totals["macs"],
        "evaluations": evaluations,
        "filters_rounded": rounded,
    }
    if fine_tune is not None:
        _fine_tune(pruned, model, data, fine_tune, batch_size)
        totals["loss_after_fine_tune"] = _loss_function(pruned, loss_fn, x, y, batch_size)()
    report = PruningReport(
        "Filter pruning by loss increase",
        rows,
        totals=totals,
        meta={
            "plan": plan,
            "tolerance": tolerance,
            "channel_multiple": channel_multiple,
            "rounding": rounding,
            "samples": int(len(x)),
            "loss": loss_source,
            "candidates": candidates if isinstance(candidates, str) else getattr(candidates, "__name__", "callable"),
            "fine_tune": _fine_tune_meta(fine_tune),
            "unit": "MACs are multiply-adds per sample (FLOPs ~ 2 x MACs)",
        },
    )
    return pruned, report


class _PlanState:
    """Which channel groups :func:`prune_filters` removes, and what every layer loses by it.

    A group can hold channels of several layers (residual adds couple them): what every
    channel-creating layer loses is counted, so that none loses all its channels (or more than
    its cap: `caps` maps a layer to the largest fraction of its filters to remove)."""

    def __init__(self, graph, widths, caps):
        self.graph = graph
        owned = {node.name: graph.labels[node.owned] for node in graph.nodes
                 if node.owned is not None and len(node.owned)}
        self.removed_count = {n: 0 for n in owned}
        self.limit = {n: len(labels) - 1 for n, labels in owned.items()}
        for n, fraction in caps.items():
            self.limit[n] = min(self.limit[n], int(math.floor(fraction * widths[n])))
        self.members = {}  # group id -> {layer: how many of its channels the group holds}
        for n, labels in owned.items():
            for gid, count in zip(*np.unique(labels, return_counts=True)):
                self.members.setdefault(int(gid), {})[n] = int(count)
        self.accepted = {}  # removed group id -> (layer, channel) under which it was removed

    def removable(self, group):
        """Whether `group` can go: not frozen, not gone yet, and within every layer's limit."""
        return self.removable_all([group])

    def removable_all(self, groups):
        """Whether all of `groups` (distinct groups) can go together (see :meth:`removable`)."""
        counts = {}
        for group in groups:
            if group.frozen or group.id in self.accepted:
                return False
            for n, c in self.members.get(int(group.id), {}).items():
                counts[n] = counts.get(n, 0) + c
        return all(self.removed_count[n] + c <= self.limit[n] for n, c in counts.items())

    def remove(self, name, channel, group):
        self.accepted[group.id] = (name, channel)
        for n, c in self.members.get(int(group.id), {}).items():
            self.removed_count[n] += c

    def give_back(self, group):
        del self.accepted[group.id]
        for n, c in self.members.get(int(group.id), {}).items():
            self.removed_count[n] -= c

    def plan(self):
        """``{layer: sorted channels}`` for :func:`prune_channels`."""
        plan = {}
        for name, channel in self.accepted.values():
            plan.setdefault(name, []).append(channel)
        return {name: sorted(channels) for name, channels in plan.items()}

    def round_width(self, name, width, order, multiple, rounding):
        """Remove or give back groups of layer `name` (scores ascending in `order`) until it keeps
        a multiple of `multiple` filters (or all); returns the net number of filters removed."""
        kept = width - self.removed_count[name]
        over = kept % multiple
        if over == 0 or kept == width:
            return 0
        down, up = kept - over, min(kept - over + multiple, width)
        if down > 0 and (rounding == "down" or (rounding == "nearest" and over < multiple - over)):
            for channel in order:
                if width - self.removed_count[name] <= down:
                    break
                group = self.graph.group(name, channel)
                if self.removable(group):
                    self.remove(name, channel, group)
        else:
            for channel in reversed(order):
                if width - self.removed_count[name] >= up:
                    break
                group = self.graph.group(name, channel)
                if group.id in self.accepted:
                    self.give_back(group)
        return kept - (width - self.removed_count[name])


def _block_queue(names, widths, order, multiple):
    """Blocks of filters, weakest first within each layer, for ``rounding="blocks"``: a layer's
    first block is its ``width % multiple`` weakest filters (so that the rest fill whole tiles;
    a full `multiple` when the width already is one), then `multiple` at a time, never the last
    `multiple`. Entries ``(relative rank, layer, channels)``, sorted across layers."""
    queue = []
    for name in names:
        width = widths[name]
        start = width % multiple or multiple
        edges = [0] + list(range(start, width - multiple + 1, multiple))
        for lo, hi in zip(edges, edges[1:]):
            queue.append((lo / width, name, order[name][lo:hi]))
    queue.sort(key=lambda item: item[0])
    return queue


def _zero_groups(groups):
    """Zero every weight slice of `groups` in place; returns ``{key: (variable, original)}``."""
    saved = {}
    slices = [s for group in groups for s in group.slices]
    for s in slices:
        key = (id(s.layer), s.weight_index)
        if key not in saved:
            variable = s.layer.weights[s.weight_index]
            saved[key] = (variable, keras.ops.convert_to_numpy(variable).copy())
    zero_slices(slices)
    return saved


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
