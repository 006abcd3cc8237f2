"""Structured sparsity of a Keras model, and the one test of "zero" that shrink uses too.

A channel slice (the kernel column that computes a channel, the kernel row that reads it, ...)
counts as zero when its norm (:data:`NORMS`, L2 by default) is below the threshold or exactly
0. :func:`zero_groups` applies that test to the groups of the dependency graph; ``shrink``,
:func:`sparsity_report`, ``SparsityMonitor`` and the ``report`` command all use it, so the
parameters the report calls removable are exactly those ``shrink`` removes at the same
threshold: ``totals["removable"] == count_params(model) - count_params(shrink(model, t))``.

Which weights of which layer kinds are kernels comes from the layer-kind registry
(:func:`tf_groupsparse.graph.kinds.kernel_slots`). A kernel is read in the layout
``(*S, C_in, C_out)`` of :mod:`tf_groupsparse.penalties.groups`; Conv*Transpose kernels, stored
``(*S, C_out, C_in)``, are swapped before counting.

Examples:
    >>> import keras
    >>> from tf_groupsparse import sparsity_report
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
    ...                           keras.layers.Dense(2, name="out")])
    >>> w = model.get_layer("h").kernel
    >>> _ = w.assign(keras.ops.zeros_like(w))          # nothing reaches h's 3 channels
    >>> report = sparsity_report(model)
    >>> report.row("h")["zero_out"], report.totals["removable"]   # 2 of h's channels (keep_min=1)
    (3, 14)
"""

from __future__ import annotations

import keras
import numpy as np

from .._validation import check_choice, check_keras_model, check_number
from ..graph.kinds import iter_layers, kernel_slots
from ..graph.model import channel_rows
from ..report import Report

__all__ = ["NORMS", "zero_groups", "kernel_stats", "sparsity_report", "SparsityReport"]

#: Norms of a slice's channels: array (n_channels, size) -> n_channels values.
NORMS = {
    "l2": lambda rows: np.sqrt(np.sum(np.square(rows), axis=1)),
    "l1": lambda rows: np.sum(np.abs(rows), axis=1),
}


def _is_zero(norms, threshold):
    return (norms < threshold) | (norms == 0)


def _slice_norms(array, s, norm):
    rows = channel_rows(array, s)
    norms = np.asarray(norm(rows), dtype="float64").reshape(-1)
    if norms.shape != (len(s.ids),):
        raise ValueError(
            "shrink: Expected `norm` to map an array (n_channels, size) to n_channels norms. "
            f"Received: output shape {norms.shape} for input shape {rows.shape}"
        )
    return norms


def zero_groups(graph, threshold, norm=None, weights=None):
    """Which groups of `graph` carry nothing: ``(producer_dead, consumer_dead, strength)``.

    A group is consumer-dead when every layer that reads it ignores it (any of one layer's
    reading slices below the threshold, for a layer that reads it serially, a separable conv's
    depthwise then pointwise kernel; all of them for a layer whose handler reads in parallel,
    ``reads = "parallel"``: attention's query, key and value projections): nothing downstream
    sees the channel. It is producer-dead when every slice that
    computes it is zero: it carries a constant. ``strength`` is the largest slice norm of each
    group.

    Args:
        graph: a :class:`~tf_groupsparse.graph.DependencyGraph`.
        threshold: a slice whose norm is below it (or exactly 0) counts as zero.
        norm: a :data:`NORMS` function (default L2).
        weights: ``{id(node): layer.get_weights()}`` to read instead of the variables.
    """
    norm = NORMS["l2"] if norm is None else norm
    n = graph.n_groups
    labels = graph.labels
    has_prod, prod_alive, cons_alive = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    strength = np.zeros(n)
    consumers = {}
    for s in graph.slices:
        if s.role == "param":
            continue
        array = (weights[id(s.node)][s.weight_index] if weights is not None
                 else keras.ops.convert_to_numpy(s.node.layer.weights[s.weight_index]))
        norms = _slice_norms(array, s, norm)
        np.maximum.at(strength, labels[s.ids], norms)
        alive = ~_is_zero(norms, threshold)
        if s.role == "produce":
            has_prod[labels[s.ids]] = True
            prod_alive[labels[s.ids[alive]]] = True
        else:  # a layer ignores a channel when any of its (serial) reading slices is dead
            uniq, inverse = np.unique(s.ids, return_inverse=True)
            per_id = np.zeros(len(uniq), bool)
            np.logical_or.at(per_id, inverse, alive)
            seen = consumers.setdefault(id(s.node), {})
            if getattr(s.node.handler, "reads", "serial") == "parallel":  # ignored only if every slice is dead
                for channel, ok in zip(uniq.tolist(), per_id.tolist()):
                    seen[channel] = seen.get(channel, False) or ok
            else:
                for channel, ok in zip(uniq.tolist(), per_id.tolist()):
                    seen[channel] = seen.get(channel, True) and ok
    for seen in consumers.values():
        alive_ids = [channel for channel, ok in seen.items() if ok]
        cons_alive[labels[np.asarray(alive_ids, dtype=np.int64)]] = True
    return has_prod & ~prod_alive, ~cons_alive, strength


def _standard(kernel, layout):
    kernel = np.asarray(kernel)
    if layout == "transposed":
        return np.swapaxes(kernel, -1, -2)
    return kernel


def kernel_stats(kernel, threshold=1e-3, layout="standard", norm="l2"):
    """Count zero weights, zero input/output groups and zero kernels of one kernel.

    On the standard layout ``(*S, C_in, C_out)``, with ``n`` the chosen norm and "zero" meaning
    ``n < threshold`` or exactly 0: ``zero_kernel[i, o] = zero(n(K_io))``,
    ``zero_in[i] = zero(n(W[..., i, :]))``, ``zero_out[o] = zero(n(W[..., :, o]))``;
    ``zero_weights`` counts single weights with ``|w| < threshold`` (or 0). For
    ``layout="depthwise"`` ``(*S, C, m)`` the ``C * m`` output channels are the single kernels.

    Args:
        kernel: array in the `layout` given.
        threshold: zero threshold (default 1e-3; 0 counts exact zeros only).
        layout: ``"standard"``, ``"transposed"`` or ``"depthwise"``.
        norm: "l2" (default) or "l1".

    Returns:
        dict with ``weights, zero_weights, in_channels, zero_in, out_channels, zero_out,
        kernels, zero_kernels``.

    Examples:
        >>> import numpy as np
        >>> w = np.ones((2, 3)); w[0] = 0            # Dense kernel, input row 0 is zero
        >>> s = kernel_stats(w)
        >>> s["zero_in"], s["zero_out"], s["zero_kernels"]
        (1, 0, 3)
    """
    fn = NORMS[check_choice("norm", norm, tuple(NORMS), "kernel_stats")]
    w = _standard(kernel, layout)
    c_in, c_out = w.shape[-2], w.shape[-1]
    k = int(np.prod(w.shape[:-2])) if w.ndim > 2 else 1
    blocks = np.moveaxis(w, (-2, -1), (0, 1)).reshape(c_in, c_out, k)
    zero_kernel = _is_zero(fn(blocks.reshape(-1, k)).reshape(c_in, c_out), threshold)
    zero_in = _is_zero(fn(blocks.reshape(c_in, -1)), threshold)
    if layout == "depthwise":
        zero_out = zero_kernel.reshape(-1)
    else:
        zero_out = _is_zero(fn(np.moveaxis(blocks, 1, 0).reshape(c_out, -1)), threshold)
    return {
        "weights": int(w.size),
        "zero_weights": int(((np.abs(w) < threshold) | (w == 0)).sum()),
        "in_channels": int(c_in),
        "zero_in": int(zero_in.sum()),
        "out_channels": int(zero_out.size),
        "zero_out": int(zero_out.sum()),
        "kernels": int(zero_kernel.size),
        "zero_kernels": int(zero_kernel.sum()),
    }


class SparsityReport(Report):
    """A :class:`~tf_groupsparse.report.Report` with one row per kernel and model totals.

    Row columns: ``layer, type, params, zero_weights, zero_frac, in_channels, zero_in,
    out_channels, zero_out, kernels, zero_kernels, removable``; layers without a kernel that
    shrink would shorten (BatchNormalization, ...) get a row with ``params`` and ``removable``;
    attention layers get one with ``params, heads, zero_heads, removable``.
    Totals sum them and add ``model_params``, ``group_sparsity_input`` (zero input groups /
    input groups), ``group_sparsity_output``, ``zero_weight_fraction`` and
    ``removable_fraction`` (removable / model params).

    Examples:
        >>> import keras
        >>> from tf_groupsparse import shrink
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2, name="out")])
        >>> k = m.get_layer("h").kernel.numpy(); k[:, :3] = 0
        >>> _ = m.get_layer("h").kernel.assign(k)
        >>> report = sparsity_report(m)
        >>> report.row("h")["zero_out"], report.row("h")["out_channels"]
        (3, 8)
        >>> report.totals["removable"] == m.count_params() - shrink(m).count_params()
        True
    """

    def row(self, layer):
        """The first row whose ``layer`` column equals `layer` (raises KeyError if none)."""
        for row in self.rows:
            if row["layer"] == layer:
                return row
        raise KeyError(f"No row for layer {layer!r}; rows: {[r['layer'] for r in self.rows]}")


def _heads(layer):
    """The number of (query) heads of an attention layer or of the attention layers inside a
    layer (an encoder block), else None."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return int(layer.num_heads)
    if isinstance(layer, keras.layers.GroupQueryAttention):
        return int(layer.num_query_heads)
    if isinstance(layer, keras.Model):
        return None
    inner = [_heads(sub) for sub in layer._flatten_layers(include_self=False)
             if isinstance(sub, (keras.layers.MultiHeadAttention, keras.layers.GroupQueryAttention))]
    return sum(inner) if inner else None


def _removable(model, threshold, norm):
    """``({layer path: params shrink removes}, {attention layer path: heads shrink removes}, None)``
    or ``(None, None, why not)``."""
    from .shrink import shrink

    try:
        small = shrink(model, threshold, norm=norm, unsupported="freeze")
    except (TypeError, ValueError) as exc:
        return None, None, f"shrink could not run ({exc})"
    after = {path: layer for path, layer in iter_layers(small)}
    params = {path: layer.count_params() - (after[path].count_params() if path in after else 0)
              for path, layer in iter_layers(model)}
    heads = {}
    for path, layer in iter_layers(model):
        before = _heads(layer)
        if before is not None and path in after:
            heads[path] = before - _heads(after[path])
    return params, heads, None


def sparsity_report(model, threshold=1e-3, *, norm="l2"):
    """Measure the structured sparsity of every kernel in `model` (nested models included).

    Per kernel of the layout ``(*S, C_in, C_out)`` with ``K_io = W[..., i, o]``, a group is
    zero when its `norm` is below `threshold` (or exactly 0), the test ``shrink`` uses:

    - ``zero_in``: input channels i whose ``W[..., i, :]`` is zero (an ``axis="input"`` group);
    - ``zero_out``: output channels o whose ``W[..., :, o]`` is zero (an ``axis="output"`` group);
    - ``zero_kernels``: pairs (i, o) whose ``K_io`` is zero;
    - ``zero_weights``: single weights with ``|w| < threshold``;
    - ``removable``: the parameters of this layer that ``shrink(model, threshold, norm=norm)``
      removes (through the dependency graph: channels coupled to the model's inputs or
      outputs, or through residual adds to channels that carry signal, are not removable);
    - ``heads`` / ``zero_heads`` (attention layers, MultiHeadAttention and GroupQueryAttention,
      and layers that hold them, such as keras-hub encoders):
      the query heads, and those whose every slice is zero so that shrink removes them (train
      them to zero with ``tgs.regularize(model, GroupLasso(..., axis="head"), proximal=True)``).

    Depthwise kernels ``(*S, C, m)`` have ``C * m`` output channels, one kernel each, so their
    ``zero_out`` equals ``zero_kernels``. Layers without kernel slots in the layer-kind registry
    are listed in ``report.meta["skipped"]`` when they hold weights. For a subclassed model (no
    graph to shrink) ``removable`` is None and ``meta["removable_note"]`` says why.

    Args:
        model: a built ``keras.Model``.
        threshold: zero threshold, >= 0 (default 1e-3, the HGSR setting; 0 counts exact zeros).
        norm: "l2" (default) or "l1", as in ``shrink``.

    Returns:
        :class:`SparsityReport`; ``str()`` is a table, ``to_dict()`` / ``to_markdown()`` convert it.

    Raises:
        TypeError: `model` is not a keras.Model or `threshold` not a number.
        ValueError: the model is not built, `threshold` < 0, or `norm` is unknown.

    Reference: the zero threshold 1e-3 and group definitions follow Mitsuno, Miyao & Kurita,
    "Hierarchical Group Sparse Regularization for Deep Convolutional Neural Networks", IJCNN 2020.

    Examples:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="c")])
        >>> sparsity_report(m).row("c")["params"]
        40
    """
    owner = "sparsity_report"
    check_keras_model(model, owner)
    threshold = check_number("threshold", threshold, owner, minimum=0.0)
    check_choice("norm", norm, tuple(NORMS), owner)
    removable, zero_heads, why = _removable(model, threshold, norm)
    rows, skipped = [], []
    for path, layer in iter_layers(model):
        slots = kernel_slots(layer)
        heads = _heads(layer)
        if heads is not None:
            rows.append({"layer": path, "type": type(layer).__name__, "params": layer.count_params(),
                         "heads": heads, "zero_heads": zero_heads.get(path) if zero_heads else None,
                         "removable": removable.get(path, 0) if removable is not None else None})
            continue
        if not slots:
            if layer.weights and removable and removable.get(path):
                rows.append({"layer": path, "type": type(layer).__name__, "params": layer.count_params(),
                             "removable": removable[path]})
            elif layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
                skipped.append(path)
            continue
        for j, slot in enumerate(slots):
            variable = getattr(layer, slot.weight, None)
            if variable is None:  # unbuilt layer inside a built model: nothing to count
                skipped.append(f"{path}/{slot.weight}")
                continue
            stats = kernel_stats(keras.ops.convert_to_numpy(variable), threshold, slot.layout, norm)
            params = stats["weights"]
            bias = getattr(layer, "bias", None) if slot.output else None
            if bias is not None:
                params += int(np.prod(bias.shape))
            last = j == len(slots) - 1
            rows.append({
                "layer": path if len(slots) == 1 else f"{path}/{slot.weight}",
                "type": type(layer).__name__,
                "params": params,
                "zero_weights": stats["zero_weights"],
                "zero_frac": stats["zero_weights"] / max(stats["weights"], 1),
                "in_channels": stats["in_channels"],
                "zero_in": stats["zero_in"],
                "out_channels": stats["out_channels"],
                "zero_out": stats["zero_out"],
                "kernels": stats["kernels"],
                "zero_kernels": stats["zero_kernels"],
                "removable": (removable.get(path, 0) if last else 0) if removable is not None else None,
                "_weights": stats["weights"],
            })
    totals = _totals(rows, model.count_params(), removable)
    if any("heads" in row for row in rows):
        totals["heads"] = sum(row["heads"] for row in rows if "heads" in row)
        totals["zero_heads"] = None if zero_heads is None else int(sum(zero_heads.values()))
    for row in rows:
        row.pop("_weights", None)
    meta = {"threshold": threshold, "norm": norm, "skipped": skipped}
    if why:
        meta["removable_note"] = why
    return SparsityReport(
        f"Sparsity of {model.name} ({norm} norm of a group < {threshold:g} counts as zero)",
        rows, totals, meta,
    )


def _totals(rows, model_params, removable):
    kernel_rows = [r for r in rows if "_weights" in r]
    keys = ("params", "zero_weights", "in_channels", "zero_in", "out_channels", "zero_out",
            "kernels", "zero_kernels", "_weights")
    s = {k: sum(r[k] for r in kernel_rows) for k in keys}
    total_removable = None if removable is None else int(sum(removable.values()))
    return {
        "params": s["params"],
        "model_params": int(model_params),
        "zero_weights": s["zero_weights"],
        "zero_weight_fraction": s["zero_weights"] / max(s["_weights"], 1),
        "zero_in": s["zero_in"],
        "group_sparsity_input": s["zero_in"] / max(s["in_channels"], 1),
        "zero_out": s["zero_out"],
        "group_sparsity_output": s["zero_out"] / max(s["out_channels"], 1),
        "zero_kernels": s["zero_kernels"],
        "removable": total_removable,
        "removable_fraction": None if removable is None else total_removable / max(int(model_params), 1),
    }
