"""Filter pruning by loss increase: remove the filters whose removal barely changes the loss.

The project's reading of Mitsuno & Kurita, "Filter Pruning using Hierarchical Group Sparse
Regularization for Deep Convolutional Neural Networks", ICPR 2020 (arXiv 2011.02389), whose
full text is not public (the methods page of the documentation says what is read from it):

1. Candidates are the output channels (filters) of each layer in ascending order of an
   importance (:mod:`tf_groupsparse.pruning.importance`; by default the group norm of the
   filter's kernel column ``||W[..., :, o]||_2``); the model is usually trained with a
   hierarchical group sparse regularizer first, which drives unneeded filters towards zero.
2. On ``n`` randomly drawn training samples, with ``L`` the mean loss, each candidate ``f`` is
   removed on top of the filters already removed, ``R``:

       delta(R + f) = L(model without R + f) - L(model)

   and ``f`` joins ``R`` when ``delta(R + f) <= tolerance``; otherwise it is put back. The total
   increase therefore never exceeds ``tolerance``.
3. The filters in ``R`` are removed physically with
   :func:`tf_groupsparse.prune_channels` (the removal follows the channel dependency
   graph to BatchNormalization, consumers, residual adds, ...), and the smaller model can be
   fine-tuned with the model's own compile settings.

A candidate is "removed" during the search by zeroing every weight slice of its channel group
(kernel columns, bias, BatchNormalization entries and the consumers' input slices) in place on
ONE working copy of the model, evaluating the loss with its compiled predict function on a fixed batch,
and restoring the slices when the candidate is rejected: no model is rebuilt per candidate.
Candidates are visited across layers in order of their rank within their layer relative to the
layer's width (the weakest filters of every layer first), so no layer spends the whole budget.

Examples:
    >>> import numpy as np, keras
    >>> from tf_groupsparse import prune_filters
    >>> keras.utils.set_random_seed(0)
    >>> x = np.random.rand(256, 6).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
    >>> m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="h"),
    ...                       keras.layers.Dense(2, name="out")])
    >>> m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> _ = m.fit(x, y, epochs=60, verbose=0)
    >>> small, report = prune_filters(m, (x, y), tolerance=0.05, verbose=0)
    >>> small.get_layer("h").units < 8, report.totals["loss_increase"] <= 0.05
    (True, True)
"""

from __future__ import annotations

import logging
import warnings

import keras
import numpy as np

from .._validation import (
    check_bool, check_choice, check_graph_model, check_int, check_number, check_seed, check_verbose,
)
from ..graph import build_graph, prune_channels
from ..metrics import layer_costs
from ..report import Report
from . import importance as imp
from .data import (
    LossEvaluator, check_fine_tune, check_inputs, check_trained, draw_samples, fine_tune_meta, fine_tune_model,
    resolve_loss,
)
from .plan import ChannelPlan
from .search import bisect, greedy

logger = logging.getLogger(__name__)

_OWNER = "prune_filters"
ROUNDINGS = ("down", "nearest", "up", "blocks")

#: The deprecated ``candidates=`` names and the importance each now means.
OLD_CANDIDATES = {
    "norm": lambda: imp.Magnitude(2, roles=("produce",), normalize=None),
    "l1": lambda: imp.Magnitude(1, roles=("produce",), normalize=None),
    "consumer_norm": lambda: imp.Magnitude(2, roles=("consume",), normalize=None),
}


class PruningReport(Report):
    """Per pruned layer: filters before/after, loss increase, params and MACs removed.

    A row's ``params_removed`` / ``macs_removed`` count that layer's own weights and work (its
    kernel columns, bias, per-channel parameters); the consumers' input slices removed with them
    are counted in ``totals``, which hold the model-wide differences.

    ``totals`` holds the loss on the evaluation samples before and after (zeroed working copy
    and the physically pruned model), the parameter and MAC counts, the number of loss
    evaluations and, after fine-tuning, the loss after it. ``meta["plan"]`` is the
    ``{layer: removed channel indices}`` given to ``prune_channels``.

    Examples:
        >>> import numpy as np, keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="h"),
        ...                       keras.layers.Dense(1, name="out")])
        >>> k = m.get_layer("h").kernel.numpy(); k[:, [1, 4]] = 0   # two filters compute nothing
        >>> _ = m.get_layer("h").kernel.assign(k)
        >>> x = np.random.rand(32, 4).astype("float32")
        >>> small, report = prune_filters(m, (x, m.predict(x, verbose=0)), loss="mse", tolerance=0.0,
        ...                               allow_untrained=True, verbose=0)
        >>> report.meta["plan"], report.rows[0]["filters_after"], report.totals["filters_removed"]
        ({'h': [1, 4]}, 4, 2)
    """


def _legacy_scorer(fn):
    """A deprecated ``candidates`` callable ``layer -> scores per output channel`` as channel orders."""

    def orders(graph, names):
        out = {}
        for name in names:
            node = graph.node(name)
            scores = np.asarray(fn(node.layer), dtype="float64").reshape(-1)
            if scores.shape[0] != len(node.out_ids):
                raise ValueError(
                    f"{_OWNER}: Expected `candidates` to return one score per output channel of layer "
                    f"{name!r} ({len(node.out_ids)}). Received: {scores.shape[0]} scores"
                )
            out[name] = scores
        return out

    return orders


def _resolve_order(importance, candidates):
    """A function ``(graph, names, context) -> {layer: score per output channel}``."""
    if candidates is not None:
        if importance is not None:
            raise TypeError(f"{_OWNER}: Expected `importance` only (`candidates` is its old name). "
                            f"Received: importance={importance!r} and candidates={candidates!r}")
        warnings.warn(f"{_OWNER}: `candidates` is deprecated; use `importance` (see the docstring for "
                      "the names that replace 'norm', 'l1' and 'consumer_norm').", DeprecationWarning, stacklevel=3)
        if callable(candidates) and not isinstance(candidates, imp.Importance):
            legacy = _legacy_scorer(candidates)
            return lambda graph, names, context: legacy(graph, names), getattr(candidates, "__name__", "callable")
        importance = OLD_CANDIDATES[check_choice("candidates", candidates, tuple(OLD_CANDIDATES), _OWNER)]()
    if importance is None:
        importance = OLD_CANDIDATES["norm"]()
    criterion = imp.get(importance, _OWNER)

    def orders(graph, names, context):
        scores = imp.scores_for(criterion, graph, context, _OWNER)
        return {name: imp.channel_scores(scores, graph, name) for name in names}

    return orders, getattr(criterion, "name", None) if not isinstance(importance, str) else importance


def _default_layers(graph):
    names = []
    for node in graph.nodes:
        if node.owned is None or not hasattr(node.layer, "kernel"):
            continue
        if any(not graph.frozen_groups[lab] for lab in graph.labels[node.owned]):
            names.append(node.name)
    return names


def _caps(max_fraction, names):
    if isinstance(max_fraction, dict):
        caps = {name: check_number(f"max_fraction[{name!r}]", value, _OWNER, strict=True, maximum=1.0)
                for name, value in max_fraction.items()}
        unknown = sorted(set(caps) - set(names))
        if unknown:
            raise ValueError(
                f"{_OWNER}: Expected the keys of `max_fraction` to be layers being pruned: {names}. "
                f"Received: {unknown!r} (name them in `layers` too, or drop them from `max_fraction`)"
            )
        return caps
    if max_fraction is None:
        return {}
    value = check_number("max_fraction", max_fraction, _OWNER, strict=True, maximum=1.0)
    return {n: value for n in names}


def _selected_layers(graph, layers):
    allowed = _default_layers(graph)
    if layers is None:
        return allowed
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise TypeError(f"{_OWNER}: Expected `layers` to be a list of layer names. Received: layers={layers!r}")
    unknown = [n for n in layers if n not in allowed]
    if unknown:
        raise ValueError(
            f"{_OWNER}: Expected `layers` to name layers with removable filters: {allowed}. "
            f"Received: layers={unknown!r}"
        )
    return list(layers)


def prune_filters(
    model,
    data,
    *,
    loss=None,
    samples=512,
    tolerance=0.01,
    importance=None,
    layers=None,
    max_fraction=None,
    fine_tune=None,
    round_to=None,
    rounding="down",
    batch_size=256,
    seed=None,
    verbose=1,
    allow_untrained=False,
    search="bisect",
    candidates=None,
    channel_multiple=None,
    random_state=None,
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
        importance: the order in which a layer's filters are tried (lowest score first): a
            :mod:`tf_groupsparse.importance` name or object, or a callable ``(graph, context) ->
            one score per group``. Default None: the L2 norm of each filter's kernel column
            ``W[..., :, o]`` (``Magnitude(2, roles=("produce",), normalize=None)``). Use
            ``Magnitude(2, roles=("consume",), normalize=None)`` (formerly "consumer_norm")
            when BatchNormalization follows the convs: the L2 norm of the input slices of channel
            o in every layer that reads it, the group that feature-wise HGSR or input-axis group
            lasso drives to zero.
        candidates: deprecated spelling of `importance` ("norm", "l1", "consumer_norm" or a
            callable ``layer -> one score per output channel``).
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
        round_to: None (default) or an int >= 1: after the loss-based pass every pruned
            layer keeps a multiple of this many filters (or all it had), so that its width fills
            whole tiles of the target's kernels (LiteRT's XNNPack on an AVX2 x86 CPU runs a conv
            whose width is a multiple of 16 much faster per MAC: ``benchmarks/results/tile_widths.md``).
            Filters are removed further (lowest score first) or given back (highest score
            first) as `rounding` says; the tolerance then no longer bounds the loss: the
            report's ``loss_after`` is the pruned model's and ``filters_rounded`` the net number
            of filters the rounding removed (negative: given back).
        rounding: how widths become multiples of `round_to` (unused without it):
            "down" (default: remove filters down to the multiple below, but never below one
            multiple), "nearest" (ties go up) or "up" (give back filters) after the filter-by-filter
            pass; or "blocks": search in whole blocks instead, so that the tolerance bounds the
            loss again. A layer's first block is its ``width % round_to`` weakest filters
            (a whole multiple if the width is one), then ``round_to`` at a time, never the
            last multiple; blocks of all layers are visited weakest first (by relative rank, as
            single filters are), and a layer's first rejected block ends its search. One loss
            evaluation per block instead of per filter: far faster, but at the same tolerance it
            removes fewer filters than "down" (a block costs more loss than its weakest filter).
        batch_size: batch size of the loss evaluation and fine-tuning (default 256).
        seed: seed of the sample draw (default 0; `random_state` is its deprecated name).
        channel_multiple: deprecated spelling of `round_to`.
        verbose: 1 shows a progress bar over the candidates, 0 is silent (default 1).
        search: "bisect" (default) or "greedy", how candidates are accepted
            (:mod:`tf_groupsparse.pruning.search`): "greedy" tries them one at a time in the
            queue's order (one loss evaluation per filter); "bisect" finds the longest prefix of
            that queue that fits the tolerance, then the largest number of each layer's next
            weakest filters that still fits (``O((layers + 1) log(filters))`` evaluations; both
            keep the total increase within the tolerance). A row's ``loss_increase`` is then
            what that layer's refinement added, and ``totals["loss_increase_joint"]`` what the
            joint prefix cost. ``rounding="blocks"`` always searches greedily by block.
        allow_untrained: skip the guard that refuses a model whose loss on the samples is
            within 5% of chance (``log C`` for C classes) or whose accuracy is below ``1.5 / C``
            (default False): losses of an untrained model are noise.

    Returns:
        ``(pruned_model, report)``: a new, smaller keras.Model and a :class:`PruningReport`.

    Raises:
        TypeError: wrong type of `model`, `data`, `importance` or `layers`.
        ValueError: a number is out of range, a named layer has no removable filters, the
            samples do not fit the model's input, or the loss cannot be resolved.

    Reference: Mitsuno & Kurita, "Filter Pruning using Hierarchical Group Sparse
    Regularization for Deep Convolutional Neural Networks", ICPR 2020 (arXiv 2011.02389).

    Examples:
        >>> import numpy as np, keras
        >>> x = np.random.rand(32, 4).astype("float32"); y = np.zeros(32, "int32")
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="h"),
        ...                       keras.layers.Dense(2, name="out")])
        >>> _, r = prune_filters(m, (x, y), tolerance=0.0, allow_untrained=True, verbose=0)
        >>> r.totals["loss_increase"] <= 0.0       # an untrained model: a structure-only example
        True
    """
    check_graph_model(model, _OWNER)
    samples = check_int("samples", samples, _OWNER, minimum=1)
    tolerance = check_number("tolerance", tolerance, _OWNER)
    batch_size = check_int("batch_size", batch_size, _OWNER, minimum=1)
    seed = check_seed(seed, _OWNER, random_state=random_state)
    verbose = check_verbose(verbose, _OWNER)
    round_to = _round_to(round_to, channel_multiple)
    rounding = check_choice("rounding", rounding, ROUNDINGS, _OWNER)
    search = check_choice("search", search, ("bisect", "greedy"), _OWNER)
    orders_of, importance_name = _resolve_order(importance, candidates)
    fine_tune = check_fine_tune(fine_tune, model, _OWNER)
    loss_fn, loss_source = resolve_loss(model, loss, _OWNER)
    x, y = draw_samples(data, samples, seed, _OWNER)
    check_inputs(model, x, _OWNER)

    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    graph = build_graph(work)
    names = _selected_layers(graph, layers)
    plan = ChannelPlan(graph, caps=_caps(max_fraction, names))
    evaluate = LossEvaluator(work, loss_fn, x, y, batch_size)
    context = imp.Context(evaluate=evaluate)
    channel_scores = orders_of(graph, names, context)
    order = {n: [int(c) for c in np.argsort(channel_scores[n], kind="stable")] for n in names}
    widths = {n: plan.width(n) for n in names}
    blocks = rounding == "blocks" and round_to is not None and round_to > 1
    if blocks:
        queue = _block_queue(names, widths, order, round_to)
    else:
        queue = sorted(((rank / widths[n], n, [c]) for n in names for rank, c in enumerate(order[n])),
                       key=lambda item: item[0])

    check_trained(evaluate, work, _OWNER, check_bool("allow_untrained", allow_untrained, _OWNER))
    evaluations_before = evaluate.calls
    base = evaluate()
    joint = None
    if search == "bisect" and not blocks:
        progbar = keras.utils.Progbar(len(names), verbose=verbose, unit_name="layer")
        delta, current, joint = bisect(queue, names, order, graph, plan, evaluate, base, tolerance, progbar)
    else:
        progbar = keras.utils.Progbar(len(queue), verbose=verbose, unit_name="block" if blocks else "candidate")
        delta, current = greedy(queue, graph, plan, evaluate, base, tolerance, blocks, progbar)
    per_layer_delta = {n: delta.get(n, 0.0) for n in names}
    evaluations = evaluate.calls - evaluations_before - 1

    rounded = 0
    if round_to is not None and round_to > 1 and not blocks:
        for name in names:
            scores = {int(graph.labels[graph.node(name).out_ids[c]]): float(v)
                      for c, v in enumerate(channel_scores[name])}
            rounded += plan.round(name, round_to, rounding, scores)
    removed_plan = {name: [c for c in range(widths[name]) if plan.removed[graph.labels[graph.node(name).out_ids[c]]]]
                    for name in names}
    removed_plan = {name: channels for name, channels in removed_plan.items() if channels}
    pruned = prune_channels(model, removed_plan) if removed_plan else _copy(model)
    report = _report(model, pruned, names, widths, plan, per_layer_delta, loss_fn, x, y, batch_size,
                     base, current, evaluations, rounded)
    if joint is not None:
        report.totals["loss_increase_joint"] = joint
    report.meta.update({
        "plan": removed_plan, "tolerance": tolerance, "round_to": round_to, "rounding": rounding,
        "samples": int(len(x)), "loss": loss_source, "importance": importance_name, "search": search,
        "fine_tune": fine_tune_meta(fine_tune),
        "unit": "MACs are multiply-adds per sample (FLOPs ~ 2 x MACs)",
    })
    if fine_tune is not None:
        fine_tune_model(pruned, model, data, fine_tune, batch_size, _OWNER)
        report.totals["loss_after_fine_tune"] = LossEvaluator(pruned, loss_fn, x, y, batch_size)()
    return pruned, report


def _round_to(round_to, channel_multiple):
    if channel_multiple is not None:
        if round_to is not None:
            raise TypeError(f"{_OWNER}: Expected `round_to` only (`channel_multiple` is its old name). "
                            f"Received: round_to={round_to!r} and channel_multiple={channel_multiple!r}")
        warnings.warn(f"{_OWNER}: `channel_multiple` is deprecated; use `round_to` (same meaning).",
                      DeprecationWarning, stacklevel=3)
        round_to = channel_multiple
    return None if round_to is None else check_int("round_to", round_to, _OWNER, minimum=1)


def _report(model, pruned, names, widths, plan, per_layer_delta, loss_fn, x, y, batch_size, base, current,
            evaluations, rounded):
    before_costs, after_costs = layer_costs(model), layer_costs(pruned)
    before_rows = {r["layer"]: r for r in before_costs.rows}
    after_rows = {r["layer"]: r for r in after_costs.rows}
    rows = [{
        "layer": name,
        "filters_before": widths[name],
        "filters_after": plan.kept(name),
        "loss_increase": per_layer_delta[name],
        "params_removed": before_rows[name]["params"] - after_rows[name]["params"],
        "macs_removed": before_rows[name]["macs"] - after_rows[name]["macs"],
    } for name in names]
    pruned_loss = LossEvaluator(pruned, loss_fn, x, y, batch_size)()
    totals = {
        "loss_before": base,
        "loss_zeroed": current,
        "loss_after": pruned_loss,
        "loss_increase": pruned_loss - base,
        "filters_removed": int(sum(widths[n] - plan.kept(n) for n in names)),
        "params_before": before_costs.totals["params"],
        "params_after": after_costs.totals["params"],
        "params_removed": before_costs.totals["params"] - after_costs.totals["params"],
        "macs_before": before_costs.totals["macs"],
        "macs_after": after_costs.totals["macs"],
        "macs_removed": before_costs.totals["macs"] - after_costs.totals["macs"],
        "evaluations": evaluations,
        "filters_rounded": rounded,
    }
    return PruningReport("Filter pruning by loss increase", rows, totals=totals, meta={})


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


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
