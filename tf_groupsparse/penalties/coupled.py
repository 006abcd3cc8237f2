"""Group penalties over the coupled channel groups of the dependency graph (``regularize(coupled=True)``).

A per-layer penalty sees one kernel: on a residual network it zeroes slices that shrink cannot
remove, because another layer of the same residual group keeps the channel alive. Here a group
is a group of the dependency graph, and its weights are every trainable slice that removing the
channel removes together: the producing kernels' columns and their biases, BatchNormalization
scales and shifts, depthwise kernels, the consumers' input rows, across every layer tied by
residual adds or concatenations. With ``g`` such a group and ``w_g`` the concatenation of its
slices:

- GroupLasso: ``strength * sum_g c_g ||w_g||_2`` (``c_g = sqrt(|g|)`` with ``scale_by_size``);
- SparseGroupLasso: ``strength * (alpha * sum_g ||w_g||_1 + (1 - alpha) * sum_g c_g ||w_g||_2)``;
- GroupL12: ``strength * sum_g sqrt(||w_g||_1)``;
- HierarchicalGroupSparse: ``strength * sum_g outer(sum_{kernels K in g} inner(K))`` (a kernel is
  the spatial block of one input/output channel pair; biases and scales are kernels of one entry).

Keras regularizers and constraints are per variable, so the penalty is carried by one *anchor*
variable (the first kernel of the model's first regularizable layer): its regularizer computes
the whole coupled penalty, and with ``proximal=True`` its constraint applies the exact group
soft-thresholding ``w_g <- max(0, 1 - t c_g / ||w_g||_2) w_g`` (``t = lr * strength``) to every
group after the optimizer step (Keras applies constraints once all variables are updated). A
weight that lies in two groups (a kernel entry reads one channel and writes another) is scaled
by both groups' factors: exact for the groups themselves (a group under the threshold becomes
exactly zero in every slice) and the usual parallel splitting for the overlaps. Both stay inside
``model.fit``; the objects serialize with the model and are bound to its variables again by
``tgs.penalties.bind(model)`` (the ``ProximalStep`` callback calls it).

Examples:
    >>> import keras
    >>> import tf_groupsparse as tgs
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    >>> y = keras.layers.Add()([h, keras.layers.Conv2D(8, 3, padding="same", name="c2")(h)])
    >>> m = keras.Model(x, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(y)))
    >>> r = tgs.regularize(m, tgs.regularizers.GroupLasso(1e-3), coupled=True)
    >>> coupled = r.get_layer("c1").kernel.regularizer
    >>> coupled.n_groups                        # c1's channels, tied to c2's by the Add
    8
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from . import groups as G
from .constraints import ProximalConstraint

__all__ = ["CoupledPenalty", "CoupledProx", "coupled_slices", "head_groups", "is_head_units", "COUPLED_PENALTIES"]

#: penalty class name -> whether it has an exact coupled proximal step here
COUPLED_PENALTIES = {"GroupLasso": True, "SparseGroupLasso": False, "GroupL12": False,
                     "HierarchicalGroupSparse": False}
_register = keras.saving.register_keras_serializable(package="tf_groupsparse")


def is_head_units(name):
    """Whether inner units of this name are attention heads ("heads", "kv_heads", and a
    stack's per-block "heads/<i>")."""
    return name.split("/")[0] in ("heads", "kv_heads")


def head_groups(graph, nodes=None):
    """Group labels of the attention heads (MultiHeadAttention's heads, GroupQueryAttention's
    key/value heads with their query heads) of the graph's nodes (all, or those named)."""
    out = set()
    for node in graph.nodes:
        if nodes is None or node.name in nodes:
            for name, ids in node.internal.items():
                if is_head_units(name):
                    out.update(int(g) for g in graph.labels[ids])
    return out


def coupled_slices(graph, only=None):
    """``(slices, n_groups)``: every trainable slice of the removable groups (or of those among
    the group labels `only`) as a plain list ``[layer path, weight index, index, axis,
    positions, group ids]`` (group ids compact)."""
    removable = np.nonzero(~graph.frozen_groups)[0]
    if only is not None:
        removable = np.asarray([g for g in removable if int(g) in only], dtype=np.int64)
    compact = {int(g): i for i, g in enumerate(removable)}
    out = []
    for s in graph.slices:
        variable = s.node.layer.weights[s.weight_index]
        if not variable.trainable:
            continue
        labels = graph.labels[s.ids]
        keep = [j for j, label in enumerate(labels.tolist()) if label in compact]
        if keep:
            out.append([s.node.name, int(s.weight_index), [int(i) for i in s.index], int(s.axis),
                        keep, [compact[int(labels[j])] for j in keep]])
    return out, len(removable)


class _Coupled:
    """Shared part: the slice table, binding to a model's variables, per-slice values."""

    def _setup(self, penalty, slices, n_groups):
        from .. import penalties as P

        if isinstance(penalty, dict):
            penalty = keras.saving.deserialize_keras_object(penalty, custom_objects=vars(P))
        name = type(penalty).__name__
        if name not in COUPLED_PENALTIES:
            raise ValueError(
                f"regularize: Expected a penalty with a group form for coupled=True "
                f"({', '.join(COUPLED_PENALTIES)}). Received: {name}; use coupled=False (per-layer groups)"
            )
        self.penalty = penalty
        self.slices = [list(s) for s in slices]
        self.n_groups = int(n_groups)
        self._variables = None

    def bind_model(self, model):
        """Resolve the slice table to `model`'s variables (by layer path and weight index)."""
        from ..graph.kinds import iter_layers

        layers = dict(iter_layers(model))
        try:
            self._variables = [layers[path].weights[index] for path, index, *_ in self.slices]
        except (KeyError, IndexError) as exc:
            raise ValueError(
                f"{type(self).__name__}: Expected the model it was built for (layer {exc} is missing). "
                "Received: another model; build the coupled penalty with tgs.regularize(model, ..., coupled=True)"
            ) from None
        return self

    def _check_bound(self):
        if self._variables is None:
            raise ValueError(
                f"{type(self).__name__}: Expected to be bound to the model's variables before training; "
                "call tgs.penalties.bind(model) (or pass tgs.callbacks.ProximalStep() to fit) after "
                "loading the model. Received: an unbound coupled penalty"
            )

    def _values(self, anchor=None, anchor_value=None):
        """Per slice: the channel entries as an array ``(n_positions, n_kernels, kernel_size)``."""
        out = []
        for (path, index, block, axis, positions, _), variable in zip(self.slices, self._variables):
            value = anchor_value if variable is anchor else variable
            for i in block:
                value = value[i]
            value = ops.moveaxis(value, axis, 0)
            value = ops.take(value, np.asarray(positions, "int32"), axis=0)
            rank = len(value.shape)
            if rank == 1:
                value = ops.reshape(value, (-1, 1, 1))
            else:  # the other channel axis (now last) indexes kernels, the spatial axes form them
                value = ops.moveaxis(value, rank - 1, 1)
                value = ops.reshape(value, (value.shape[0], value.shape[1], -1))
            out.append(value)
        return out

    def _sum(self, per_entry):
        """Sum per group of a list of per-position vectors (one per slice)."""
        total = None
        for (_, _, _, _, _, ids), values in zip(self.slices, per_entry):
            part = ops.segment_sum(values, np.asarray(ids, "int32"), num_segments=self.n_groups)
            total = part if total is None else total + part
        return total

    @property
    def scale(self):
        """The strength multiplier of ``SparsityTarget`` (that of the wrapped penalty)."""
        return self.penalty.scale

    @scale.setter
    def scale(self, value):
        self.penalty.scale = value

    def group_sizes(self):
        sizes = np.zeros(self.n_groups)
        for (path, index, block, axis, positions, ids), variable in zip(self.slices, self._variables or []):
            shape = list(variable.shape)[len(block):]
            per = math.prod(shape) // max(shape[axis], 1)
            np.add.at(sizes, ids, per)
        return sizes

    def base_config(self):
        return {"penalty": keras.saving.serialize_keras_object(self.penalty), "slices": self.slices,
                "n_groups": self.n_groups}


@_register
class CoupledPenalty(keras.regularizers.Regularizer, _Coupled):
    """The coupled group penalty of a model, carried by one anchor variable's regularizer.

    Args:
        penalty: the per-group penalty (GroupLasso, SparseGroupLasso, GroupL12 or
            HierarchicalGroupSparse; its `axis` is ignored) or its serialized config.
        slices: the slice table of :func:`coupled_slices`.
        n_groups: number of groups.

    Examples:
        >>> import keras, numpy as np
        >>> import tf_groupsparse as tgs
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="h"),
        ...                       keras.layers.Dense(2, name="o")])
        >>> r = tgs.regularize(m, tgs.regularizers.GroupLasso(0.1), coupled=True)
        >>> penalty = r.get_layer("h").kernel.regularizer   # the anchor carries all 4 groups
        >>> h, o = (r.get_layer(name).kernel.numpy() for name in ("h", "o"))
        >>> norms = np.sqrt((h ** 2).sum(axis=0) + (o ** 2).sum(axis=1))  # h's columns, o's rows
        >>> bool(np.isclose(float(penalty(r.get_layer("h").kernel)), 0.1 * norms.sum()))
        True
    """

    def __init__(self, penalty, slices, n_groups):
        self._setup(penalty, slices, n_groups)

    def __call__(self, x):
        self._check_bound()
        p = self.penalty
        values = self._values()
        name = type(p).__name__
        flat = [ops.reshape(v, (v.shape[0], -1)) for v in values]
        scale = ops.cast(p.scale, "float32") if p.scale is not None else 1.0
        if name in ("GroupLasso", "SparseGroupLasso"):
            norms = G.safe_sqrt(self._sum([ops.sum(ops.square(v), axis=1) for v in flat]))
            c = np.sqrt(self.group_sizes()) if p.scale_by_size else 1.0
            value = ops.sum(norms * c)
            if name == "SparseGroupLasso":
                l1 = ops.sum(self._sum([ops.sum(G.safe_abs(v), axis=1) for v in flat]))
                value = p.alpha * l1 + (1.0 - p.alpha) * value
        elif name == "GroupL12":
            value = ops.sum(G.safe_sqrt(self._sum([ops.sum(G.safe_abs(v), axis=1) for v in flat])))
        else:  # HierarchicalGroupSparse: inner per kernel, summed per group, outer
            from .hierarchical import _INNER, _OUTER

            inner = _INNER[p.inner]
            per_group = self._sum([ops.sum(inner(v), axis=1) for v in values])
            value = ops.sum(_OUTER[p.outer](per_group))
            if p.l1_mix:
                l1 = ops.sum(self._sum([ops.sum(G.safe_abs(v), axis=1) for v in flat]))
                value = (1.0 - p.l1_mix) * value + p.l1_mix * l1
        return p.strength * value * scale

    def get_config(self):
        return self.base_config()


@_register
class CoupledProx(ProximalConstraint, _Coupled):
    """The exact group soft-thresholding of every coupled group, carried by one anchor
    variable's constraint (see the module docstring); GroupLasso only.

    Args:
        penalty: a GroupLasso (or its serialized config).
        slices, n_groups: as :class:`CoupledPenalty`.

    Examples:
        >>> import keras, numpy as np
        >>> import tf_groupsparse as tgs
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="h"),
        ...                       keras.layers.Dense(2, name="o")])
        >>> r = tgs.regularize(m, tgs.regularizers.GroupLasso(1.0), coupled=True, proximal=True)
        >>> r.compile(keras.optimizers.SGD(learning_rate=0.5), "mse")
        >>> tgs.penalties.bind(r)
        1
        >>> h, o = r.get_layer("h"), r.get_layer("o")
        >>> _ = h.kernel.assign(np.full((3, 4), 0.1, "float32"))
        >>> _ = o.kernel.assign(np.array([[0.1, 0.1], [1, 1], [1, 1], [1, 1]], "float32"))
        >>> _ = h.kernel.assign(h.kernel.constraint(h.kernel))  # as after an optimizer step
        >>> (h.kernel.numpy() == 0).all(axis=0).tolist()   # group 0's norm 0.22 < lr * strength
        [True, False, False, False]
        >>> (o.kernel.numpy() == 0).all(axis=1).tolist()   # zeroed in o's rows as well
        [True, False, False, False]
    """

    def __init__(self, penalty, slices, n_groups):
        ProximalConstraint.__init__(self)
        self._setup(penalty, slices, n_groups)
        if not COUPLED_PENALTIES[type(self.penalty).__name__]:
            raise ValueError(
                f"regularize: Expected GroupLasso for coupled=True with proximal=True (the coupled "
                f"proximal step is exact for it). Received: {type(self.penalty).__name__}; use "
                "proximal=False to train it through the loss"
            )
        self.anchor = None

    def __call__(self, w):
        self._check_bound()
        w = ops.convert_to_tensor(w)
        lr = self.learning_rate(w.dtype)
        p = self.penalty
        values = self._values(anchor=self.anchor, anchor_value=w)
        flat = [ops.reshape(v, (v.shape[0], -1)) for v in values]
        norms = ops.sqrt(self._sum([ops.sum(ops.square(v), axis=1) for v in flat]))
        c = np.sqrt(self.group_sizes()).astype("float32") if p.scale_by_size else np.float32(1.0)
        threshold = lr * p.strength * ops.cast(c, w.dtype)
        safe = ops.where(norms > 0, norms, ops.ones_like(norms))
        factor = ops.where(norms > threshold, 1.0 - threshold / safe, ops.zeros_like(norms))
        result = w
        for variable, scale in self._scales(factor):
            if variable is self.anchor:
                result = w * scale
            else:
                variable.assign(variable * ops.cast(scale, variable.dtype))
        return result

    def _scales(self, factor):
        """Per variable: the array of per-entry factors (products where groups overlap)."""
        per_variable = {}
        for (path, index, block, axis, positions, ids), variable in zip(self.slices, self._variables):
            shape = list(variable.shape)
            sub = shape[len(block):]
            onehot = np.zeros((sub[axis], len(positions)), "float32")
            onehot[positions, np.arange(len(positions))] = 1.0
            vector = 1.0 + ops.matmul(onehot, ops.take(factor, np.asarray(ids, "int32")) - 1.0)
            view = [1] * len(sub)
            view[axis] = sub[axis]
            part = ops.reshape(vector, view)
            for depth, i in enumerate(reversed(block)):  # place it in its block, ones elsewhere
                n = shape[len(block) - 1 - depth]
                mask = np.zeros((n,) + (1,) * len(view), "float32")
                mask[i] = 1.0
                part = 1.0 + mask * (ops.expand_dims(part, 0) - 1.0)
                view = [n] + view
            key = id(variable)
            previous = per_variable.get(key, (variable, None))[1]
            per_variable[key] = (variable, part if previous is None else previous * part)
        return per_variable.values()

    def prox(self, w, learning_rate):  # pragma: no cover - __call__ does the work
        raise NotImplementedError("CoupledProx applies its step in __call__")

    def get_config(self):
        return self.base_config()

    def __repr__(self):
        return f"CoupledProx({type(self.penalty).__name__}, {self.n_groups} groups)"
