"""Shrink: physically remove the channel groups through which nothing flows.

After group-sparse training (HGSR, Mitsuno, Miyao & Kurita, IJCNN 2020; group lasso / exclusive
sparsity, Yoon & Hwang, ICML 2017) whole channel groups are (near) zero. For a group ``G`` (see
:mod:`tf_groupsparse.graph`) with producer slices ``P`` (kernel slices that compute the channel,
``W[..., :, c]``) and terminal consumer slices ``Q`` (kernel slices that read it,
``W[..., c, :]``), with ``n(.)`` the chosen norm and ``t`` the threshold:

- consumer-dead: ``max_{q in Q} n(q) < t``: nothing reads the channel; remove ``G``.
- producer-dead: ``max_{p in P} n(p) < t``: the channel carries an input-independent value
  ``v`` (bias, BatchNormalization shift, activation of a constant). Its effect on a consumer
  with kernel ``W`` is folded into that consumer's bias, ``b'_o = b_o + sum_taps W[tap, c, o] v``,
  which is exact for Dense, 1x1 convolutions and 'valid' convolutions when ``v`` is the same at
  every position. When it is not exact (a k x k 'same' conv whose zero padding would see ``v``,
  or ``v`` varying over positions after padding), the group is kept (``constants="fold"`` or
  ``"keep"``) or an error is raised (``constants="error"``). ``v`` is computed by running the
  model's layers (inference mode) with the dead producer slices set to zero, so BatchNorm,
  activations, pooling and merges are all accounted for (inputs of unknown spatial size are
  probed at two sizes). ``v = 0`` needs no folding.

Groups coupled to model inputs/outputs, frozen layers or cross-channel normalizations
(LayerNormalization, Softmax) are never removed, and every layer keeps ``keep_min`` channels.

Examples:
    >>> import keras, numpy as np
    >>> from tf_groupsparse import shrink
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="h"),
    ...                       keras.layers.Dense(2, name="y")])
    >>> k = m.get_layer("h").kernel.numpy(); k[:, :3] = 0
    >>> _ = m.get_layer("h").kernel.assign(k)
    >>> small = shrink(m)
    >>> small.get_layer("h").units
    3
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from .._validation import check_bool, check_choice, check_graph_model, check_int, check_number, check_verbose, renamed
from ..graph import build_graph, evaluate, remove_groups
from ..graph.kinds import foldable
from ..graph.surgery import _copy
from ..report import Report
from .plan import ChannelPlan
from .sparsity import NORMS, zero_groups

__all__ = ["shrink", "ShrinkReport", "CONSTANT_MODES"]

logger = logging.getLogger(__name__)

CONSTANT_MODES = ("fold", "keep", "error")
_ZERO = 1e-7


class ShrinkReport(Report):
    """Per-layer channels and parameters before/after :func:`shrink` (a :class:`Report`).

    Examples:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2, name="out")])
        >>> k = m.get_layer("h").kernel.numpy(); k[:, :3] = 0
        >>> _ = m.get_layer("h").kernel.assign(k)
        >>> small, report = shrink(m, return_report=True)
        >>> [(row["layer"], row["channels_before"], row["channels_after"]) for row in report.rows]
        [('h', 8, 5), ('out', 2, 2)]
        >>> report.totals["params_before"] - report.totals["params_after"]   # 3 * (4 + 1 + 2)
        21
    """


def _probe_inputs(model, rng, size=16):
    out = []
    for t in model.inputs:
        shape = [2] + [size if d is None else int(d) for d in t.shape[1:]]
        if "int" in str(t.dtype):
            out.append(rng.integers(0, 2, size=shape).astype(str(t.dtype)))
        else:
            out.append(rng.normal(size=shape).astype(str(t.dtype)))
    return out


def _constants(model, graph, weights, wanted, unsupported):
    """Per wanted group: None (cannot fold) or a list of (node_name, bias delta)."""
    copy = _copy(model)
    probe = build_graph(copy, unsupported=unsupported)
    if not np.array_equal(probe.labels, graph.labels):  # pragma: no cover - tracing is deterministic
        raise RuntimeError("shrink: the probe graph differs from the model graph")
    for s in probe.slices:
        if s.role == "produce":
            hit = wanted[probe.labels[s.ids]]
            if hit.any():
                var = s.node.layer.weights[s.weight_index]
                value = keras.ops.convert_to_numpy(var).copy()
                index = [slice(None)] * value.ndim
                index[s.axis] = np.nonzero(hit)[0]
                value[tuple(index)] = 0.0
                var.assign(value)
    # unknown sizes: probe two sizes so a constant must be the same at both; short ones when
    # the model refuses long ones (a position table of 12 positions)
    unknown = any(d is None for t in model.inputs for d in t.shape[1:])
    for attempt, sizes in enumerate(((16, 11), (6, 5)) if unknown else ((16,),)):
        rng = np.random.default_rng(0)
        try:
            envs = [evaluate(probe, _probe_inputs(model, rng, size)) for size in sizes]
            break
        except Exception:
            if not unknown or attempt:
                raise
    result = {int(g): [] for g in np.nonzero(wanted)[0]}
    for s, ps in zip(graph.slices, probe.slices):
        if s.role != "consume":
            continue
        labs = graph.labels[s.ids]
        positions = np.nonzero(wanted[labs])[0]
        if not len(positions):
            continue
        source = next((i for i, ids in enumerate(s.node.inputs[0]) if np.array_equal(ids, s.ids)), None)
        if source is None:
            # what the slice reads is no input tensor (attention heads, a recurrent layer's own
            # state): it is zero only when the unit's own parameters (biases) are zero as well;
            # a constant there is not folded
            own = [ids for _, ids in s.node.unit_sets()]
            readable = bool(own) and np.isin(s.ids, np.concatenate(own)).all()
            for g in {int(labs[p]) for p in positions}:
                params = [(t, idx) for t, idx in graph.slice_index().get(g, ()) if t.node is s.node and t.role == "param"]
                if not readable or any(np.any(np.take(weights[id(s.node)][t.weight_index][t.index], list(idx),
                                                      axis=t.axis)) for t, idx in params):
                    result[g] = None  # (a slice read through a mapping, a separable conv's: kept)
            continue
        key = probe.tracer.canon(ps.node.meta["in_keys"][0][source])
        values = np.concatenate([env[key].reshape(-1, env[key].shape[-1])[:, positions] for env in envs])
        zero = np.abs(values).max(axis=0) <= _ZERO
        const = values.mean(axis=0)
        uniform = (values.max(axis=0) - values.min(axis=0)) <= 1e-5 * (1.0 + np.abs(const))
        can_fold = foldable(s.node.layer) and len(s.node.inputs) == 1  # not a shared layer
        kernel = weights[id(s.node)][s.weight_index]
        for j, pos in enumerate(positions):
            g = int(labs[pos])
            if result[g] is None or zero[j]:
                continue
            if not (can_fold and uniform[j]):
                result[g] = None
                continue
            taps = np.take(kernel, pos, axis=s.axis)  # (*S, C_out)
            delta = taps.reshape(-1, taps.shape[-1]).sum(axis=0) * const[j]
            result[g].append((s.node.name, delta))
    return result


def _restore(graph, removed, tensors, want):
    """Put removed groups back until every channel array in `tensors` keeps at least
    ``want(n_channels)`` channels. Only removals are undone, so the loop ends."""
    changed = True
    while changed:
        changed = False
        for ids in tensors:
            labs = graph.labels[ids]
            need = want(len(ids))
            if int((~removed[labs]).sum()) >= need:
                continue
            for lab in dict.fromkeys(labs[removed[labs]]):
                removed[lab] = False
                changed = True
                if int((~removed[labs]).sum()) >= need:
                    break
    return removed


def _apply_keep_min(graph, removed, keep_min):
    """Every tensor keeps at least `keep_min` channels (or all it has)."""
    tensors = []
    for node in graph.nodes:
        tensors += [ids for _, ids in node.unit_sets()]
        tensors += [x for call in node.outputs for x in call if len(x)]
    return _restore(graph, removed, tensors, lambda n: min(keep_min, n))


def _apply_multiple(graph, removed, multiple, strength):
    """Every Dense/Conv-like layer keeps a multiple of `multiple` channels (or all it had), the
    strongest removed groups put back first (:meth:`ChannelPlan.round_all`)."""
    plan = ChannelPlan(graph, keep_min=0)
    plan.remove(np.nonzero(removed)[0])
    plan.round_all(multiple, {int(g): float(v) for g, v in enumerate(strength)})
    return plan.removed.copy()


def _layer_at(model, path):
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def shrink(model, threshold=1e-3, *, norm="l2", keep_min=1, round_to=None, unsupported="error",
           constants="fold", return_report=False, verbose=0, criterion=None, channel_multiple=None):
    """Remove every channel group through which nothing flows; outputs stay the same.

    "The same" is exact for groups whose weights are exactly zero (``threshold=0``). With
    ``threshold > 0`` a group whose slices are small but nonzero is removed too, and the outputs
    move by about what those small weights contributed: check them on real inputs (``export``
    with ``reference=`` reports the error) or shrink at ``threshold=0`` after a proximal method,
    which leaves exact zeros.

    A group is removed when all its terminal consumer slices have norm below `threshold`, or
    all its producer slices do and the constant it then carries can be folded exactly into the
    consumers' biases (see the module docstring for the formulas).

    Args:
        model: a built keras.Model (Sequential or functional; nested models allowed).
        threshold: float >= 0, default 1e-3; a slice with norm below it (or exactly 0) counts
            as zero, so ``threshold=0`` removes exactly-zero groups only.
        norm: how a slice's size is measured against `threshold`: "l2" (default), "l1", or a
            callable mapping an array (n_channels, size) to n_channels norms. The same test
            serves ``sparsity_report`` and ``SparsityMonitor``.
        keep_min: int >= 1, default 1; channels every layer keeps at least.
        round_to: None (default) or an int >= 1: every Dense/Conv-like layer keeps a
            multiple of this many output channels (or all it had), by keeping the strongest of
            its removable groups. Kept zero groups change nothing in the outputs, but the
            latency can change either way: on this project's x86 CPU, LiteRT's XNNPack runs a
            Dense layer whose width leaves 1-8 over a multiple of 16 much slower (784-100-64-10:
            1.5x the latency of 784-112-64-10), so 16 made a shrunk MLP 1.45x faster, while it
            made a shrunk VGG-style CNN 10% slower (``benchmarks/channel_multiple.py``). Measure
            on the target device before using it. Shrink always rounds up (it gives back zero
            groups; rounding down would remove channels that carry signal: use ``prune``).
        unsupported: "error" (default) or "freeze" for layers without a graph handler.
        constants: "fold" (default: fold exact constants, keep the other groups), "keep"
            (never fold: keep every group that carries a nonzero constant) or "error" (fold
            exact constants, raise ValueError for a constant that cannot be folded).
        return_report: when True return ``(model, ShrinkReport)``.
        verbose: 0 (default: shrinking takes seconds) or 1, a progress bar over its phases.
        criterion, channel_multiple: deprecated spellings of `norm` and `round_to`.

    Returns:
        The new, smaller keras.Model, or ``(model, report)``; `model` is unchanged.

    Raises:
        TypeError / ValueError: invalid arguments, unsupported layers with
            ``unsupported="error"``, or an unfoldable constant with ``constants="error"``.

    Examples:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="h"),
        ...                       keras.layers.Dense(1)])
        >>> small, report = shrink(m, return_report=True)
        >>> report.totals["groups_removed"]
        0

    Reference: removes the zero groups left by hierarchical group sparse regularization (Mitsuno,
    Miyao & Kurita, IJCNN 2020, arXiv 2004.04394) and by combined group/exclusive sparsity (Yoon &
    Hwang, ICML 2017); the physical shrinking step of HFP (Mitsuno & Kurita, ICPR 2020).
    """
    owner = "shrink"
    check_graph_model(model, owner)
    threshold = check_number("threshold", threshold, owner)
    norm = renamed(owner, "norm", None if norm == "l2" else norm, "criterion", criterion) or "l2"
    if not callable(norm):
        norm = NORMS[check_choice("norm", norm, tuple(NORMS), owner)]
    keep_min = check_int("keep_min", keep_min, owner, minimum=1)
    round_to = renamed(owner, "round_to", round_to, "channel_multiple", channel_multiple)
    if round_to is not None:
        round_to = check_int("round_to", round_to, owner, minimum=1)
    check_choice("unsupported", unsupported, ("error", "freeze"), owner)
    check_choice("constants", constants, CONSTANT_MODES, owner)
    check_bool("return_report", return_report, owner)
    progress = keras.utils.Progbar(3, verbose=check_verbose(verbose, owner), unit_name="phase")

    graph = build_graph(model, unsupported=unsupported)
    weights = {id(n): n.layer.get_weights() for n in graph.nodes if isinstance(n.layer, keras.layers.Layer)}
    producer_dead, consumer_dead, strength = zero_groups(graph, threshold, norm, weights)
    progress.add(1)
    removable = ~graph.frozen_groups & ~graph.lossy_groups
    removed = removable & consumer_dead
    needs_constant = removable & producer_dead & ~consumer_dead
    deltas_by_group = {}
    if needs_constant.any():
        found = _constants(model, graph, weights, needs_constant, unsupported)
        for g, deltas in found.items():
            if deltas is None or (deltas and constants == "keep"):
                if constants == "error" and deltas is None:
                    raise ValueError(
                        f"{owner}: Expected every zero group's constant output to fold exactly into "
                        f"its consumers. Received: {_group_str(graph, g)} carries a constant "
                        "that a zero-padded or non-uniform consumer would see. Pass "
                        'constants="fold" or "keep" to keep such groups.'
                    )
                continue
            removed[g] = True
            deltas_by_group[g] = deltas
    removed = _apply_keep_min(graph, removed, keep_min)
    if round_to is not None and round_to > 1:
        removed = _apply_multiple(graph, removed, round_to, strength)
    progress.add(1)
    bias_deltas = {}
    for g, deltas in deltas_by_group.items():
        if removed[g]:
            for name, delta in deltas:
                bias_deltas[name] = bias_deltas.get(name, 0.0) + delta
    groups = np.nonzero(removed)[0]
    logger.info("shrink: removing %d of %d groups, folding constants into %d layers",
                len(groups), graph.n_groups, len(bias_deltas))
    new_model = remove_groups(graph, groups, bias_deltas=bias_deltas, owner=owner)
    progress.add(1)
    if not return_report:
        return new_model
    return new_model, _report(graph, new_model, removed, bias_deltas, threshold)


def _group_str(graph, label):
    from ..graph.model import Group

    return str(Group(graph, label))


def _report(graph, new_model, removed, bias_deltas, threshold):
    rows = []
    for node in graph.nodes:
        if not isinstance(node.layer, keras.layers.Layer):  # a plain keras.ops operation
            continue
        ids = node.out_ids
        new_layer = _layer_at(new_model, node.name)
        before, after = node.layer.count_params(), new_layer.count_params()
        kept = int((~removed[graph.labels[ids]]).sum())
        if node.owned is None and before == after and kept == len(ids):
            continue
        rows.append({
            "layer": node.name, "class": type(node.layer).__name__,
            "channels_before": len(ids), "channels_after": kept,
            "params_before": before, "params_after": after,
            "bias_folded": node.name in bias_deltas,
        })
        for key, inner in node.internal.items():  # attention heads, key and value dims
            rows[-1][f"{key}_before"] = len(inner)
            rows[-1][f"{key}_after"] = int((~removed[graph.labels[inner]]).sum())
    totals = {
        "params_before": int(graph.model.count_params()),
        "params_after": int(new_model.count_params()),
        "groups_removed": int(removed.sum()),
        "layers_with_folded_constants": len(bias_deltas),
    }
    totals["params_removed_fraction"] = 1.0 - totals["params_after"] / max(totals["params_before"], 1)
    return ShrinkReport(f"shrink (threshold={threshold:g})", rows, totals, meta={"model": graph.model.name})
