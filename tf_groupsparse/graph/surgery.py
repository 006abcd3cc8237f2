"""Channel surgery: remove channel groups and get a new, smaller model with copied weights.

Removing output channel ``c`` of a layer removes the whole :class:`~tf_groupsparse.graph.Group`
of ``c`` (see :mod:`tf_groupsparse.graph`): the producer's kernel/bias slices, the per-channel
parameters of BatchNormalization and depthwise layers, the input slices of every consumer
(``W[..., c, :]``), merge partners (Add), the offset positions behind a Concatenate, and the
positions ``c + C*p`` behind a Flatten. The new model is cloned from the layer configs with the
new unit/filter counts and receives sliced weights:

    W_new = W[..., keep_in, :][..., keep_out]

Two levels of API:

- :func:`prune_channels` (model, plan) -> new model, where ``plan = {layer: channels}``.
- The group API for methods that test candidates without rebuilding (filter pruning by loss
  increase, HFP, Mitsuno & Kurita, ICPR 2020): :func:`plan_groups` turns a plan into
  :class:`~tf_groupsparse.graph.Group` objects, ``group.slices`` lists
  ``WeightSlice(layer, weight_index, axis, indices, role)``, :func:`zero_slices` zeroes them in
  place (on a model you own), :func:`zero_channels` returns a zeroed copy, and
  :func:`remove_groups` rebuilds from a graph and groups. Zeroing every slice of a group and
  removing the group give the same outputs (without cross-channel normalization layers).

Examples:
    >>> import keras
    >>> from tf_groupsparse.graph import prune_channels
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
    ...                       keras.layers.Dense(2, name="y")])
    >>> small = prune_channels(m, {"h": [0, 5]})
    >>> small.get_layer("h").units, tuple(small.get_layer("y").kernel.shape)
    (6, (6, 2))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
import numbers

import keras
import numpy as np

from .._validation import check_graph_model
from .build import _history_list, build_graph, functional_view
from .kinds import handler_for
from .model import Group

__all__ = ["prune_channels", "plan_groups", "remove_groups", "zero_channels", "zero_slices"]


@dataclass
class Keep:
    """Boolean masks of the channels a layer keeps (passed to handlers' ``rebuild``)."""

    owned: np.ndarray | None
    inputs: list
    outputs: list
    meta: dict = field(default_factory=dict)
    internal: dict = field(default_factory=dict)

    @property
    def changed(self):
        masks = ([self.owned] if self.owned is not None else []) + self.inputs + self.outputs
        return any(not m.all() for m in masks + list(self.internal.values()))


def _check_plan(plan, owner):
    if not isinstance(plan, Mapping):
        raise TypeError(
            f"{owner}: Expected `plan` to be a dict {{layer_name: output channel indices}}. "
            f"Received: plan of type {type(plan).__name__}"
        )


def plan_groups(graph, plan, owner="plan_groups"):
    """The groups a plan ``{layer_name: output channel indices}`` removes, in first-seen order.

    Raises:
        TypeError: `plan` is not a dict or an index is not an integer.
        ValueError: unknown layer name, index out of range, or a channel coupled to a model
            input/output or a frozen layer.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2, name="y")])
        >>> groups = plan_groups(build_graph(m), {"h": [0, 5, 5]})   # each group once
        >>> for group in groups:
        ...     print(group)
        prune out channels of h [0] => in channels of y [0]
        prune out channels of h [5] => in channels of y [5]
    """
    _check_plan(plan, owner)
    labels, seen = [], set()
    for name, channels in plan.items():
        node = graph.node(name, owner)
        ids = node.out_ids
        if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
            raise TypeError(
                f"{owner}: Expected plan[{name!r}] to be an iterable of channel indices. "
                f"Received: plan[{name!r}]={channels!r}"
            )
        for c in channels:
            if isinstance(c, bool) or not isinstance(c, numbers.Integral):
                raise TypeError(
                    f"{owner}: Expected integer channel indices in plan[{name!r}]. Received: {c!r}"
                )
            if not 0 <= int(c) < len(ids):
                raise ValueError(
                    f"{owner}: Expected channel indices of layer {name!r} in [0, {len(ids)}). "
                    f"Received: channel={int(c)}"
                )
            lab = int(graph.labels[ids[int(c)]])
            if graph.frozen_groups[lab]:
                raise ValueError(
                    f"{owner}: Expected removable channels. Received: channel {int(c)} of layer "
                    f"{name!r}, which is coupled to a model input/output or a frozen layer"
                )
            if lab not in seen:
                seen.add(lab)
                labels.append(lab)
    return [Group(graph, lab) for lab in labels]


def _node_keep(node, removed):
    def mask(ids):
        return ~removed[ids]

    first_in = node.inputs[0] if node.inputs else []
    first_out = node.outputs[0] if node.outputs else []
    return Keep(
        owned=None if node.owned is None else mask(node.owned),
        inputs=[mask(x) for x in first_in],
        outputs=[mask(x) for x in first_out],
        meta=node.meta,
        internal={key: mask(ids) for key, ids in node.internal.items()},
    )


def remove_groups(graph, groups, *, bias_deltas=None, owner="remove_groups"):
    """Build a new model from `graph.model` without the channels of `groups`.

    Args:
        graph: a DependencyGraph of the model.
        groups: iterable of Group objects (or integer group labels) of that graph.
        bias_deltas: optional ``{node_name: vector over the layer's original output channels}``
            added to the bias of Dense/Conv consumers (used by ``shrink`` to fold constants);
            a layer without a bias gets one.

    Returns:
        A new keras.Model; the original is unchanged.

    Raises:
        ValueError: the removal leaves a layer with no channels.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2, name="y")])
        >>> graph = build_graph(m)
        >>> small = remove_groups(graph, graph.groups("h")[:3])   # h's first three channels
        >>> small.get_layer("h").units, tuple(small.get_layer("y").kernel.shape), m.get_layer("h").units
        (5, (5, 2), 8)
    """
    removed_groups = np.zeros(graph.n_groups, dtype=bool)
    for g in groups:
        removed_groups[int(getattr(g, "id", g))] = True
    removed = removed_groups[graph.labels]
    bias_deltas = dict(bias_deltas or {})
    for node in graph.nodes:
        tensors = [node.owned] if node.owned is not None else []
        tensors += [x for call in node.outputs for x in call] + list(node.internal.values())
        for ids in tensors:
            if len(ids) and removed[ids].all():
                raise ValueError(
                    f"{owner}: Expected at least one channel to remain in every layer. Received: "
                    f"a plan that removes all {len(ids)} channels of layer {node.name!r}"
                )
    by_layer = {id(n.layer): n for n in graph.nodes}
    keeps = {id(n.layer): _node_keep(n, removed) for n in graph.nodes}
    new_layers = {}

    def clone(layer):
        if isinstance(layer, keras.Model):  # nested model: new input shapes, same recursion
            shapes = [
                tuple(shape[:-1]) + (int((~removed[ids]).sum()),)
                for ids, shape in graph.tracer.submodel_inputs[id(layer)]
            ]
            return _clone(layer, clone, shapes)
        config = layer_config(layer)
        node = by_layer.get(id(layer))
        cls = layer_class(layer)
        if node is not None and not node.frozen:
            keep = keeps[id(layer)]
            if keep.changed and node.handler is not None:
                config = node.handler.rebuild(layer, config, keep)
                # a handler whose result the layer's own class cannot express names another
                cls = getattr(node.handler, "rebuild_class", lambda layer, keep: cls)(layer, keep)
            if node.name in bias_deltas and not config.get("use_bias", True):
                config["use_bias"] = True
        new = cls.from_config(config)
        new_layers[id(layer)] = new
        return new

    new_model = _clone(graph.model, clone)
    slices_of = {}
    for s in graph.slices:
        slices_of.setdefault(id(s.node), []).append(s)
    for node in graph.nodes:
        new = new_layers.get(id(node.layer))
        if new is None or not isinstance(node.layer, keras.layers.Layer):
            continue
        rebuild_weights = getattr(node.handler, "rebuild_weights", None)
        changed = keeps[id(node.layer)].changed
        if rebuild_weights is not None and not node.frozen and changed:
            weights = rebuild_weights(node.layer, keeps[id(node.layer)])
        else:
            weights = node.layer.get_weights()
            for s in slices_of.get(id(node), []) if changed else ():
                kept = np.nonzero(~removed[s.ids])[0]
                weights[s.weight_index] = np.take(weights[s.weight_index], kept, axis=s.axis)
        if node.name in bias_deltas:
            delta = np.asarray(bias_deltas[node.name], dtype="float32")[~removed[node.owned]]
            if getattr(node.layer, "use_bias", True):
                index = next(i for i, w in enumerate(node.layer.weights) if w is node.layer.bias)
                weights[index] = weights[index] + delta
            else:
                weights.append(delta)
        new.set_weights(weights)
        _finalize(new)
    return new_model


def _finalize(layer):
    """Refresh state derived from weights (Normalization's mean/variance) after set_weights."""
    if isinstance(layer, keras.Model):
        for inner in layer.layers:
            _finalize(inner)
    elif callable(getattr(layer, "finalize_state", None)):
        layer.finalize_state()


def _copy(model):
    """An independent copy of `model`: same architecture and names, copied weights."""
    copy = _clone(model)
    copy.set_weights(model.get_weights())
    _finalize(copy)
    return copy


def _fixed_config(layer):
    fix = getattr(handler_for(layer), "config", None) if isinstance(layer, keras.layers.Layer) else None
    return None if fix is None else fix(layer)


def layer_config(layer):
    """``layer.get_config()``, or its handler's ``config(layer)`` for layers whose own config
    does not load back (a handler may define it, with ``replacement``: the class to rebuild
    the layer as)."""
    fixed = _fixed_config(layer)
    return layer.get_config() if fixed is None else fixed


def layer_class(layer):
    """The class copies of `layer` are made of: its handler's ``replacement``, else its own."""
    return getattr(handler_for(layer), "replacement", None) or type(layer)


def _clone(model, clone_function=None, input_shapes=None):
    """clone_model that keeps input layer names; nested models go through `clone_function`
    (with their new `input_shapes`) when it is given, else they are cloned as they are."""
    model = functional_view(model)
    if clone_function is None and any(_fixed_config(layer) is not None for layer in model._flatten_layers()):
        def clone_function(layer):  # a layer whose get_config does not round-trip (see layer_config)
            return _clone(layer) if isinstance(layer, keras.Model) else layer_class(layer).from_config(layer_config(layer))
    kwargs = {"recursive": clone_function is None}
    if clone_function is not None:
        kwargs["clone_function"] = clone_function
    shapes = input_shapes or [tuple(t.shape) for t in model.inputs]
    if isinstance(model, keras.Sequential):
        if input_shapes is not None:
            kwargs["input_tensors"] = keras.Input(batch_shape=shapes[0], dtype=model.inputs[0].dtype)
    else:
        names = [t[0] for t in _history_list(model.get_config()["input_layers"])]
        fresh = [
            keras.Input(batch_shape=shape, dtype=t.dtype, name=name)
            for t, shape, name in zip(model.inputs, shapes, names)
        ]
        kwargs["input_tensors"] = keras.tree.pack_sequence_as(model.input, fresh)
    return keras.models.clone_model(model, **kwargs)


def prune_channels(model, plan, *, unsupported="error"):
    """Remove output channels of layers, and every channel coupled to them, from a model.

    For each ``layer_name: channels`` of `plan`, the group of each output channel is removed
    from every coupled layer (see the module docstring); all other weights are copied.

    Args:
        model: a built keras.Model (Sequential or functional, nested models allowed).
        plan: ``{layer_name: iterable of OUTPUT-channel indices of that layer to remove}``;
            nested layers may be named ``"outer/inner"`` or by a unique plain name.
        unsupported: "error" (default) or "freeze" (keep the channels of layers without a
            handler), as in :func:`tf_groupsparse.graph.build_graph`.

    Returns:
        A new keras.Model with fewer channels; `model` is unchanged.

    Raises:
        TypeError: `model` is not a keras.Model, or `plan` is not a dict of integer lists.
        ValueError: unknown layer, index out of range, frozen channel (model input/output),
            a layer left with no channels, or an unsupported layer with ``unsupported="error"``.

    Examples:
        >>> import keras
        >>> x = keras.Input((8, 8, 3))
        >>> h = keras.layers.Conv2D(6, 3, name="c1")(x)
        >>> h = keras.layers.BatchNormalization(name="bn")(h)
        >>> y = keras.layers.Dense(2)(keras.layers.Flatten()(h))
        >>> small = prune_channels(keras.Model(x, y), {"c1": [1, 2]})
        >>> small.get_layer("c1").filters, tuple(small.get_layer("bn").gamma.shape)
        (4, (4,))

    Reference: group structure of channels as in HGSR (Mitsuno, Miyao, Kurita, IJCNN 2020);
    dependency-graph surgery after Fang et al., "DepGraph", CVPR 2023.
    """
    check_graph_model(model, "prune_channels")
    _check_plan(plan, "prune_channels")
    graph = build_graph(model, unsupported=unsupported)
    groups = plan_groups(graph, plan, owner="prune_channels")
    return remove_groups(graph, groups, owner="prune_channels")


def zero_slices(slices):
    """Set every ``WeightSlice`` to zero IN PLACE on the layers it names.

    Use it on a copy you own (e.g. a candidate model in filter pruning), never on a user's model.
    Each weight is read and assigned once, however many of its slices are given.

    Args:
        slices: iterable of :class:`~tf_groupsparse.graph.WeightSlice` (from ``group.slices``).

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2, name="y")])
        >>> group = build_graph(m).group("h", 2)
        >>> zero_slices(group.slices)               # in place: m was made here, not a user's
        >>> [float(abs(s.values()).max()) for s in group.slices]   # h's column, bias, y's row
        [0.0, 0.0, 0.0]
    """
    by_weight = {}
    for s in slices:
        by_weight.setdefault((id(s.layer), s.weight_index), (s.layer, []))[1].append(s)
    for layer, group in by_weight.values():
        var = layer.weights[group[0].weight_index]
        value = keras.ops.convert_to_numpy(var).copy()
        for s in group:
            index = [slice(None)] * (value.ndim - len(s.index))
            index[s.axis] = list(s.indices)
            value[tuple(s.index) + tuple(index)] = 0.0
        var.assign(value)


def zero_channels(model, plan, *, unsupported="error"):
    """A copy of `model` (same architecture) with every slice of the plan's groups set to zero.

    The outputs equal those of ``prune_channels(model, plan)`` when no cross-channel
    normalization (LayerNormalization, Softmax over channels) sees the removed channels.

    Returns:
        A new keras.Model; `model` is unchanged.

    Examples:
        >>> import keras, numpy as np
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2, name="y")])
        >>> zeroed, pruned = zero_channels(m, {"h": [0, 5]}), prune_channels(m, {"h": [0, 5]})
        >>> x = np.random.rand(3, 4).astype("float32")
        >>> zeroed.get_layer("h").units, np.allclose(zeroed(x), pruned(x), atol=1e-6)
        (8, True)
    """
    check_graph_model(model, "zero_channels")
    copy = _copy(model)
    graph = build_graph(copy, unsupported=unsupported)
    for g in plan_groups(graph, plan, owner="zero_channels"):
        zero_slices(g.slices)
    return copy
