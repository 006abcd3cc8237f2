"""Attach a group-sparse penalty (or its proximal constraint) to the kernels of a Keras model.

:func:`regularize` clones a Sequential or functional model (nested models included) with
``keras.models.clone_model(..., clone_function=..., recursive=True)``, rebuilds every selected
layer from its config with the regularizer (or constraint) set, and copies all weights, so the
result computes exactly what the input did and the input is left untouched.

Which constructor argument takes the penalty comes from
the layer-kind registry (:func:`tf_groupsparse.graph.kinds.kernel_slots`):

=============================  ============================================================
layer                          argument(s)
=============================  ============================================================
Dense, Conv1D/2D/3D            ``kernel_regularizer`` / ``kernel_constraint``
DepthwiseConv1D/2D             ``depthwise_regularizer`` / ``depthwise_constraint``
SeparableConv1D/2D             depthwise and pointwise regularizers / constraints
Embedding                      ``embeddings_regularizer`` / ``embeddings_constraint``
=============================  ============================================================

Conv*Transpose kernels are stored ``(*S, C_out, C_in)``, so a penalty's ``axis="input"`` would
group output channels there; they are refused like other unsupported kernels (EinsumDense,
recurrent cells, attention).

Examples:
    >>> import keras
    >>> from tf_groupsparse import regularize
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="c1"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
    >>> new, report = regularize(model, keras.regularizers.L2(1e-4), layers=keras.layers.Conv2D,
    ...                          return_report=True)
    >>> [row["layer"] for row in report.rows], model.get_layer("c1").kernel_regularizer is None
    (['c1'], True)
"""

from __future__ import annotations

import logging
import warnings

import keras
import numpy as np

from .._validation import check_bool, check_graph_model
from ..graph.kinds import iter_layers, kernel_slots
from ..report import Report
from .base import to_constraint

logger = logging.getLogger(__name__)

_OWNER = "regularize"
_KERNEL_WORDS = ("kernel", "embeddings")


# --------------------------------------------------------------------------- helpers


def _supported(layer):
    slots = kernel_slots(layer)
    return bool(slots) and all(slot.regularizable for slot in slots)


def _has_kernel_like_weights(layer):
    return any(any(word in v.name for word in _KERNEL_WORDS) for v in layer.weights)


def _copy_regularizer(regularizer, name):
    """A fresh, equal copy via the config (no object shared between layers or with the caller)."""
    if not isinstance(regularizer, keras.regularizers.Regularizer):
        raise TypeError(
            f"{_OWNER}: Expected `{name}` to be a keras.regularizers.Regularizer (e.g. "
            f"tf_groupsparse.regularizers.GroupLasso(1e-4)). Received: {name} of type "
            f"{type(regularizer).__name__}"
        )
    try:
        return type(regularizer).from_config(regularizer.get_config())
    except NotImplementedError as exc:
        raise TypeError(
            f"{_OWNER}: Expected `{name}` to implement get_config() so it can be copied and saved. "
            f"Received: {name} of type {type(regularizer).__name__}"
        ) from exc


def _describe(value):
    """``ClassName(key=value, ...)`` from the config (Keras' own regularizers have no repr)."""
    try:
        config = value.get_config()
    except (AttributeError, NotImplementedError):
        return repr(value)
    args = ", ".join(f"{k}={v!r}" for k, v in config.items())
    return f"{type(value).__name__}({args})"


def _unsupported_error(path, layer):
    if kernel_slots(layer):
        why = "its kernel is stored (*S, C_out, C_in), so the penalty's `axis` would name the wrong channels"
    elif _has_kernel_like_weights(layer):
        why = "its kernel layout is not in the layer-kind registry (tf_groupsparse.graph.register_layer_kind)"
    elif layer.weights:
        why = "its weights are not a kernel"
    else:
        why = "it has no weights"
    return ValueError(
        f"{_OWNER}: Expected every selected layer to have a kernel that takes a penalty (Dense, "
        f"Conv1D/2D/3D, DepthwiseConv, SeparableConv, Embedding); {why}. Remove it from `layers`. "
        f"Received: layer {path!r} of type {type(layer).__name__}"
    )


def _match_names(names, candidates, all_paths):
    """Paths selected by layer names; a nested model's name selects its supported layers."""
    chosen = []
    for name in names:
        hits = [p for p in all_paths if p == name or (p.startswith(name + "/") and p in candidates)]
        if not hits:
            raise ValueError(
                f"{_OWNER}: Expected `layers` to name layers of the model. Available layers with "
                f"kernels: {candidates}. Received: layers name {name!r}"
            )
        chosen.extend(p for p in hits if p not in chosen)
    return chosen


def _select(model, layers, owner_arg="layers"):
    """Ordered list of (path, layer) that `layers` selects, plus whether selection was explicit."""
    entries = [(p, layer) for p, layer in iter_layers(model) if not isinstance(layer, keras.layers.InputLayer)]
    paths = [p for p, _ in entries]
    by_path = dict(entries)
    candidates = [p for p, layer in entries if _supported(layer)]
    if layers is None:
        return [(p, by_path[p]) for p in candidates], False
    if isinstance(layers, str):
        chosen = _match_names([layers], candidates, paths)
    elif isinstance(layers, (list, tuple)) and layers and all(isinstance(x, str) for x in layers):
        chosen = _match_names(list(layers), candidates, paths)
    elif isinstance(layers, type) or (
        isinstance(layers, tuple) and layers and all(isinstance(x, type) for x in layers)
    ):
        chosen = [p for p, layer in entries if isinstance(layer, layers)]
    elif callable(layers):
        chosen = [p for p, layer in entries if layers(by_path[p])]
    else:
        raise TypeError(
            f"{_OWNER}: Expected `{owner_arg}` to be None, a layer name, a list of names, a layer "
            f"class or tuple of classes, or a callable(layer) -> bool. Received: "
            f"{owner_arg}={layers!r}"
        )
    for p in chosen:
        if not _supported(by_path[p]):
            raise _unsupported_error(p, by_path[p])
    if not chosen:
        raise ValueError(
            f"{_OWNER}: Expected `{owner_arg}` to select at least one layer. Available layers "
            f"with kernels: {candidates}. Received: {owner_arg}={layers!r}"
        )
    return [(p, by_path[p]) for p in chosen], True


def _warn_unsupported(model, selected_paths):
    skipped = [
        f"{p} ({type(layer).__name__})"
        for p, layer in iter_layers(model)
        if p not in selected_paths and _has_kernel_like_weights(layer) and not _supported(layer)
    ]
    if skipped:
        warnings.warn(
            f"regularize: these layers have kernels that cannot take the penalty and are left "
            f"unregularized: {', '.join(skipped)}. Select layers explicitly to silence this.",
            stacklevel=3,
        )
    return skipped


def _bias_penalty(bias, regularizer, layer, path):
    if bias is False or bias is None:
        return None
    source = regularizer if bias is True else bias
    penalty = _copy_regularizer(source, "bias")
    shape = tuple(getattr(layer, "bias").shape)
    try:
        float(keras.ops.convert_to_numpy(penalty(keras.ops.zeros(shape))))
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{_OWNER}: Expected a bias penalty that accepts the 1-D bias of layer {path!r}; "
            f"{type(penalty).__name__} needs a kernel. Pass bias=keras.regularizers.L2(...) or an "
            f"elementwise penalty. Received: bias={bias!r}"
        ) from exc
    return penalty


# --------------------------------------------------------------------------- main entry


def regularize(model, regularizer, *, layers=None, proximal=False, bias=False, coupled=False, return_report=False):
    """Return a new model whose selected kernels carry `regularizer` (or its proximal step).

    For every selected layer the clone gets ``<slot>_regularizer = R`` so the training loss
    becomes ``loss + sum_layers R(W_layer)`` (Keras adds it to ``model.losses``), or, with
    ``proximal=True``, ``<slot>_constraint = R.to_constraint()`` so that after each
    optimizer step ``W <- prox_{lr * strength * penalty}(W)``. Every layer gets its own copy of
    the regularizer / constraint. Weights are copied, so the new model's outputs equal the
    input model's; the input model and `regularizer` are not modified. The clone is not
    compiled: call ``compile``/``fit`` as usual (with ``proximal=True`` add
    ``tgs.callbacks.ProximalStep()`` to ``fit`` or call ``tgs.penalties.bind``).

    Args:
        model: a built Sequential or functional ``keras.Model``; nested models are handled.
        regularizer: a ``keras.regularizers.Regularizer`` (e.g.
            ``tf_groupsparse.regularizers.HierarchicalGroupSparse(1e-4)``), or a dict mapping
            layer names to regularizers (per-layer strengths, e.g. CGES with
            ``regularizers.cges_mu_schedule``); with a dict, `layers` must be None.
        layers: which layers (default None: every layer with a supported kernel; layers whose
            kernels cannot take the penalty are named in a warning). A name (str; a nested
            model's name selects the supported layers inside it; nested layers are addressed
            as ``"inner/conv"``), a list of names, a layer class or tuple of classes, or a
            callable ``layer -> bool``. Explicitly selected layers must support the penalty.
        proximal: attach ``regularizer.to_constraint()`` as the kernel constraint
            instead of the regularizer (default False).
        bias: False (default), True to put a copy of `regularizer` on biases too (it must
            accept a 1-D tensor, e.g. L1/L2), or a separate regularizer for the biases.
            Not allowed with ``proximal=True``.
        coupled: False (default) or True: one penalty per group of the dependency graph, over
            every trainable slice that removing the group removes together (producer kernels and
            biases, BatchNormalization entries, consumers' input rows, through residual adds),
            so that training zeroes whole removable groups (:mod:`.coupled`). GroupLasso (also
            with ``proximal=True``), SparseGroupLasso, GroupL12 and HierarchicalGroupSparse;
            `layers` and `bias` must be left at their defaults.

            A group penalty with ``axis="head"`` (GroupLasso, SparseGroupLasso, GroupL12,
            HierarchicalGroupSparse) works the same way over attention heads: one group per head
            of every MultiHeadAttention (its query, key and value kernel and bias slices and its
            output projection rows) and per key/value head of every GroupQueryAttention (with
            the query heads that share it), whatever `coupled` says; `layers` may then name the
            attention layers to penalize. ``shrink(threshold=0)`` removes the heads that
            training zeroed.
        return_report: also return a :class:`~tf_groupsparse.report.Report` with one row per
            attached penalty (default False).

    Returns:
        The new model, or ``(model, report)`` when `return_report` is True.

    Raises:
        TypeError: `model` is not a Keras model or is subclassed; `regularizer`, `layers` or
            `bias` has the wrong type.
        ValueError: a name is not in the model (the message lists the available ones), a
            selected layer cannot take the penalty, the selection is empty, the penalty has no
            proximal operator (``proximal=True`` with HGSR), or `bias` does not fit.

    References: the penalties are those of Mitsuno, Miyao & Kurita (HGSR, IJCNN 2020),
    Ma & Niu (l1,1 + l1,2, ICDMW 2018) and Yoon & Hwang (CGES, ICML 2017); see the penalties guide of the documentation.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.penalties import GroupLasso
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
        >>> r = regularize(m, GroupLasso(1e-2), layers="fc")
        >>> len(r.losses), len(m.losses)
        (1, 0)
    """
    check_graph_model(model, _OWNER)
    if not isinstance(proximal, bool):
        raise TypeError(f"{_OWNER}: Expected `proximal` to be True or False. Received: proximal={proximal!r}")
    if not isinstance(return_report, bool):
        raise TypeError(
            f"{_OWNER}: Expected `return_report` to be True or False. Received: return_report={return_report!r}"
        )
    if not (isinstance(bias, bool) or isinstance(bias, keras.regularizers.Regularizer)):
        raise TypeError(
            f"{_OWNER}: Expected `bias` to be True, False or a keras.regularizers.Regularizer. "
            f"Received: bias={bias!r}"
        )
    if proximal and bias is not False:
        raise ValueError(
            f"{_OWNER}: Expected bias=False with proximal=True (biases have no group structure; "
            f"use proximal=False to penalize them). Received: bias={bias!r}"
        )

    check_bool("coupled", coupled, _OWNER)
    if getattr(regularizer, "axis", None) == "head":
        return _regularize_coupled(model, regularizer, layers, proximal, bias, return_report, heads=True)
    if coupled:
        return _regularize_coupled(model, regularizer, layers, proximal, bias, return_report)
    if isinstance(regularizer, dict):
        if layers is not None:
            raise ValueError(
                f"{_OWNER}: Expected layers=None when `regularizer` is a dict (its keys select the "
                f"layers). Received: layers={layers!r}"
            )
        if not regularizer or not all(isinstance(k, str) for k in regularizer):
            raise TypeError(
                f"{_OWNER}: Expected a non-empty dict of layer name -> regularizer. "
                f"Received: regularizer={regularizer!r}"
            )
        selected, explicit = _select(model, list(regularizer), "regularizer")
        plan_source = {}
        for path, _ in selected:
            key = path if path in regularizer else next(k for k in regularizer if path.startswith(k + "/"))
            plan_source[path] = regularizer[key]
    else:
        selected, explicit = _select(model, layers)
        plan_source = {path: regularizer for path, _ in selected}

    plan, rows = {}, []
    for path, layer in selected:
        source = plan_source[path]
        name = "regularizer" if not isinstance(regularizer, dict) else f"regularizer[{path!r}]"
        overrides = {}
        for slot in kernel_slots(layer):
            penalty = _copy_regularizer(source, name)
            if proximal:
                value, arg = to_constraint(penalty), slot.constraint_arg
            else:
                value, arg = penalty, slot.regularizer_arg
            previous = getattr(layer, arg, None)
            if previous is not None:
                warnings.warn(
                    f"regularize: layer {path!r} already has {arg}={_describe(previous)}; the new "
                    f"model replaces it with {_describe(value)}.",
                    stacklevel=2,
                )
            overrides[arg] = value
            rows.append({"layer": path, "type": type(layer).__name__, "argument": arg,
                         "attached": _describe(value), "replaced": "" if previous is None else _describe(previous)})
        bias_penalty = _bias_penalty(bias, source, layer, path) if getattr(layer, "bias", None) is not None else None
        if bias_penalty is not None:
            overrides["bias_regularizer"] = bias_penalty
            rows.append({"layer": path, "type": type(layer).__name__, "argument": "bias_regularizer",
                         "attached": _describe(bias_penalty), "replaced": ""})
        plan[id(layer)] = overrides

    unsupported = [] if explicit else _warn_unsupported(model, {p for p, _ in selected})
    new_model = _clone_with(model, plan)
    report = Report(
        f"Penalties attached to {model.name} ({'proximal constraints' if proximal else 'regularizers'})",
        rows,
        {"layers": len(selected), "attached": len(rows)},
        {"proximal": proximal, "unsupported": unsupported},
    )
    logger.info("regularize: attached %d penalties to %d layers", len(rows), len(selected))
    return (new_model, report) if return_report else new_model


def _regularize_coupled(model, regularizer, layers, proximal, bias, return_report, heads=False):
    from ..graph import build_graph
    from .coupled import coupled_slices

    if heads:
        if bias is not False:
            raise ValueError(f"{_OWNER}: Expected bias=False with axis='head' (a head's group holds its "
                             f"biases already). Received: bias={bias!r}")
        return _regularize_heads(model, regularizer, layers, proximal, return_report)
    if layers is not None or bias is not False or isinstance(regularizer, dict):
        raise ValueError(
            f"{_OWNER}: Expected layers=None, bias=False and one regularizer with coupled=True (the groups "
            f"span the whole dependency graph). Received: layers={layers!r}, bias={bias!r}, "
            f"regularizer of type {type(regularizer).__name__}"
        )
    new_model = _clone_with(model, {})
    slices, n_groups = coupled_slices(build_graph(new_model))
    if not n_groups:
        raise ValueError(f"{_OWNER}: Expected removable channel groups for coupled=True. Received: model "
                         f"{model.name!r} has none (every channel is tied to an input or output)")
    return _attach_coupled(model, new_model, regularizer, slices, n_groups, proximal, return_report)


def _regularize_heads(model, regularizer, layers, proximal, return_report):
    """``axis="head"``: one group per attention head over its slices in the four projections."""
    from ..graph import build_graph
    from .coupled import coupled_slices, head_groups, is_head_units

    new_model = _clone_with(model, {})
    graph = build_graph(new_model)
    attention = [n.name for n in graph.nodes if any(is_head_units(k) for k in n.internal)]
    names = [layers] if isinstance(layers, str) else layers
    if names is not None and (not isinstance(names, (list, tuple)) or not set(names) <= set(attention)):
        raise ValueError(f"{_OWNER}: Expected `layers` to name attention layers for axis='head' (available: "
                         f"{attention}). Received: layers={layers!r}")
    slices, n_groups = coupled_slices(graph, only=head_groups(graph, names))
    if not n_groups:
        raise ValueError(f"{_OWNER}: Expected attention layers (MultiHeadAttention, GroupQueryAttention) with "
                         f"removable heads for axis='head'. Received: model {model.name!r} has none")
    return _attach_coupled(model, new_model, regularizer, slices, n_groups, proximal, return_report)


def _attach_coupled(model, new_model, regularizer, slices, n_groups, proximal, return_report):
    """Attach the coupled penalty (or its proximal step) for `slices` to the anchor variable."""
    from .coupled import CoupledPenalty, CoupledProx

    penalty = _copy_regularizer(regularizer, "regularizer")
    anchor = next(((path, layer, slot) for path, layer in iter_layers(new_model) for slot in kernel_slots(layer)
                   if getattr(layer, slot.weight, None) is not None), None)
    if anchor is None:
        raise ValueError(f"{_OWNER}: Expected a layer with a kernel (Dense, Conv) to carry the coupled penalty. "
                         f"Received: model {model.name!r} has none")
    path, layer, slot = anchor
    variable = getattr(layer, slot.weight)
    if proximal:
        value = CoupledProx(penalty, slices, n_groups).bind_model(new_model)
        value.anchor = variable
        setattr(layer, slot.constraint_arg, value)
        variable.constraint = value
    else:
        value = CoupledPenalty(penalty, slices, n_groups).bind_model(new_model)
        setattr(layer, slot.regularizer_arg, value)
        variable.regularizer = value
    report = Report(f"Coupled penalty attached to {model.name}", [{
        "anchor": f"{path}.{slot.weight}", "attached": repr(value) if proximal else _describe(penalty),
        "groups": n_groups, "slices": len(slices)}], {"groups": n_groups}, {"proximal": proximal, "coupled": True})
    return (new_model, report) if return_report else new_model


def _clone_with(model, plan):
    """Clone `model` applying the config overrides in `plan` (id(layer) -> dict) and copy weights."""

    from ..graph.surgery import layer_class, layer_config

    def clone_layer(layer):
        config = layer_config(layer)
        config.update(plan.get(id(layer), {}))
        return layer_class(layer).from_config(config)

    try:
        new_model = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except ValueError as exc:
        if "only supported for Sequential models or Functional models" in str(exc):
            raise TypeError(
                f"{_OWNER}: Expected a Sequential or functional keras.Model (subclassed models "
                f"cannot be cloned layer by layer; build the model with the functional API). "
                f"Received: model of type {type(model).__name__}"
            ) from exc
        raise
    old = [(p, layer) for p, layer in iter_layers(model) if not isinstance(layer, keras.layers.InputLayer)]
    new = [(p, layer) for p, layer in iter_layers(new_model) if not isinstance(layer, keras.layers.InputLayer)]
    if [(p, layer_class(a)) for p, a in old] != [(p, type(b)) for p, b in new]:  # pragma: no cover - keras change
        raise RuntimeError(
            f"{_OWNER}: the cloned model's layers do not line up with the original's "
            f"({[p for p, _ in old]} vs {[p for p, _ in new]}); please report this."
        )
    for (_, src), (_, dst) in zip(old, new):
        if src.weights:
            dst.set_weights([np.array(w) for w in src.get_weights()])
    return new_model
