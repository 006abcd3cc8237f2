"""Importance criteria: one score per channel group of the dependency graph (higher = keep).

A group (:class:`~tf_groupsparse.graph.Group`) is the set of weight slices that go together when
a channel is removed: the producing kernel columns, the consumers' input rows, BatchNormalization
entries, residual partners. A criterion scores each slice's channels, normalizes them within the
slice (so that layers of different scale compare), and averages them over the group's slices,
as Torch-Pruning's group importance does (Fang et al., "DepGraph: Towards Any Structural
Pruning", CVPR 2023). Groups are then ranked globally by the pruner.

- :class:`Magnitude` (``"l2"``, ``"l1"``): ``sum |w|^p`` of each slice's channel.
- :class:`BNScale` (``"bn_scale"``): ``|gamma|`` of the BatchNormalization entries (network
  slimming, Liu et al., ICCV 2017).
- :class:`Taylor` (``"taylor"``): ``sum |w * dL/dw|``, first-order Taylor expansion of the loss
  (Molchanov et al., CVPR 2019); needs data.
- :class:`LAMP` (``"lamp"``): magnitudes normalized by the sum of those not smaller (Lee et al.,
  "Layer-adaptive sparsity for the magnitude-based pruning", ICLR 2021).
- :class:`Random` (``"random"``): the sanity baseline.
- :class:`LossIncrease` (``"loss"``): minus the loss increase when the group alone is zeroed (the
  HFP criterion, Mitsuno & Kurita, ICPR 2020); one loss evaluation per group, so expensive.

Any callable ``(graph, context) -> array of one score per group`` works too. A criterion sees a
:class:`Context` with the data and loss when the pruner has them.

Examples:
    >>> import keras
    >>> from tf_groupsparse.graph import build_graph
    >>> from tf_groupsparse.pruning.importance import get
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
    ...                       keras.layers.Dense(2, name="out")])
    >>> scores = get("l2")(build_graph(m))
    >>> scores.shape          # one per group: 4 inputs, 3 hidden, 2 outputs (frozen ones included)
    (9,)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from .._validation import check_choice, check_int

__all__ = ["Importance", "Magnitude", "BNScale", "Taylor", "LAMP", "Random", "LossIncrease", "Context",
           "get", "NAMES"]

ROLES = ("produce", "consume", "param")
_STATE = ("bias", "beta", "moving_mean", "moving_variance", "mean", "variance", "count")


@dataclass
class Context:
    """What a criterion may read besides the weights: the loss on a sample, and its gradients.

    Attributes:
        evaluate: callable returning the mean loss of the graph's model on the sample, or None.
        gradients: callable returning ``{id(variable): dL/dw as NumPy}``, or None.
        cache: scratch space a criterion may fill (cleared between pruning steps).

    Examples:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.graph import build_graph
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
        ...                       keras.layers.Dense(2, name="out")])
        >>> k = m.get_layer("h").kernel.numpy(); k[:, 1] = 0     # h's channel 1 computes nothing
        >>> _ = m.get_layer("h").kernel.assign(k)
        >>> x = np.random.rand(16, 4).astype("float32")
        >>> context = Context(evaluate=lambda: float(np.mean(keras.ops.convert_to_numpy(m(x)) ** 2)))
        >>> graph = build_graph(m)
        >>> scores = LossIncrease()(graph, context)    # minus the loss increase of each group
        >>> [float(scores[group.id]) == 0.0 for group in graph.groups("h")]
        [False, True, False]
    """

    evaluate: object = None
    gradients: object = None
    cache: dict = field(default_factory=dict)


def _weights(graph):
    """``{(id(layer), weight index): NumPy array}`` of every sliced weight, read once."""
    out = {}
    for s in graph.slices:
        key = (id(s.node.layer), s.weight_index)
        if key not in out:
            out[key] = keras.ops.convert_to_numpy(s.node.layer.weights[s.weight_index])
    return out


def _rows(array, s):
    block = np.asarray(array)[s.index]
    return np.moveaxis(block, s.axis, 0).reshape(block.shape[s.axis], -1)


def _counts(s):
    return s.node.layer.weights[s.weight_index].name.split("/")[-1] not in _STATE


def _aggregate(graph, per_slice, normalize):
    """Mean over a group's slice entries of the (normalized) per-channel values.

    `per_slice` is a list of ``(slice, values)`` with one value per entry of ``slice.ids``.
    Groups no slice scores get NaN."""
    total = np.zeros(graph.n_groups)
    count = np.zeros(graph.n_groups)
    for s, values in per_slice:
        values = np.asarray(values, dtype="float64")
        if normalize == "mean":
            scale = values.mean()
            values = values / scale if scale > 0 else values
        elif normalize == "lamp":
            order = np.argsort(values)
            tail = np.cumsum(values[order][::-1])[::-1]  # sum of the values not smaller
            lamp = np.empty_like(values)
            lamp[order] = values[order] / np.where(tail > 0, tail, 1.0)
            values = lamp
        labels = graph.labels[s.ids]
        np.add.at(total, labels, values)
        np.add.at(count, labels, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class Importance:
    """Base class: ``__call__(graph, context=None)`` returns one score per group label.

    Subclasses set ``needs_data`` when they read the loss (:class:`Context`).

    Examples:
        >>> import keras, numpy as np
        >>> import tf_groupsparse as tgs
        >>> class LastFirst(Importance):        # a layer's later channels score higher
        ...     name = "last_first"
        ...     def __call__(self, graph, context=None):
        ...         scores = np.zeros(graph.n_groups)
        ...         for node in graph.nodes:
        ...             scores[graph.labels[node.out_ids]] = np.arange(len(node.out_ids))
        ...         return scores
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2)])
        >>> small, _ = tgs.prune(m, params=0.5, importance=LastFirst(), verbose=0)
        >>> np.array_equal(small.get_layer("h").kernel.numpy(), m.get_layer("h").kernel.numpy()[:, 5:])
        True
    """

    needs_data = False
    name = "importance"

    def __call__(self, graph, context=None):  # pragma: no cover - interface
        raise NotImplementedError

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Magnitude(Importance):
    """``sum |w|^p`` of each channel's entries in each slice, normalized within the slice and
    averaged over the group's slices (the group norm of Torch-Pruning's default importance).

    Args:
        p: 1 or 2 (default 2).
        roles: which slices count: a subset of ("produce", "consume", "param"); default None =
            all (per-channel parameters count for their kernels and BatchNormalization scales,
            not biases or statistics).
        normalize: "mean" (default: divide each slice's values by their mean) or None (the
            group's plain ``(sum |w|^p)^(1/p)`` over the chosen slices).

    Examples:
        >>> Magnitude(p=1, roles=("produce",))
        Magnitude(p=1, roles=('produce',), normalize='mean')
    """

    normalizer = "mean"

    def __init__(self, p=2, roles=None, normalize="mean"):
        if isinstance(p, bool) or p not in (1, 2):
            raise ValueError(f"Magnitude: Expected `p` to be 1 or 2. Received: p={p!r}")
        self.p = int(p)
        roles = ROLES if roles is None else tuple(roles)
        bad = [r for r in roles if r not in ROLES]
        if bad or not roles:
            raise ValueError(f"Magnitude: Expected `roles` among {ROLES}. Received: roles={roles!r}")
        self.roles = roles
        if normalize not in ("mean", "lamp", None):
            raise ValueError(f"Magnitude: Expected `normalize` to be 'mean' or None. Received: normalize={normalize!r}")
        self.normalize = normalize
        self.name = f"l{self.p}"

    def _values(self, graph):
        weights = _weights(graph)
        out = []
        for s in graph.slices:
            if s.role not in self.roles or (s.role == "param" and not _counts(s)):
                continue
            rows = _rows(weights[(id(s.node.layer), s.weight_index)], s)
            out.append((s, np.sum(np.abs(rows) ** self.p, axis=1)))
        return out

    def __call__(self, graph, context=None):
        per_slice = self._values(graph)
        if self.normalize is None:
            total = np.zeros(graph.n_groups)
            for s, values in per_slice:
                np.add.at(total, graph.labels[s.ids], values)
            return total ** (1.0 / self.p)
        return _aggregate(graph, per_slice, self.normalize)

    def get_config(self):
        roles = None if self.roles == ROLES else self.roles
        return {"p": self.p, "roles": roles, "normalize": self.normalize}


class LAMP(Magnitude):
    """Layer-adaptive magnitude: each slice's ``sum w^2`` per channel divided by the sum of the
    values not smaller than it (so every layer's strongest channel scores 1), averaged over the
    group (Lee et al., ICLR 2021; Torch-Pruning's LAMP normalizer).

    Examples:
        >>> LAMP()
        LAMP(p=2)
    """

    def __init__(self, p=2):
        super().__init__(p=p, normalize="lamp")
        self.name = "lamp"

    def get_config(self):
        return {"p": self.p}


class BNScale(Importance):
    """``|gamma|`` of the BatchNormalization entries of each group (network slimming: Liu et al.,
    "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017). Groups with
    no BatchNormalization score NaN (never pruned by this criterion).

    Examples:
        >>> BNScale()
        BNScale()
    """

    name = "bn_scale"

    def __call__(self, graph, context=None):
        weights = _weights(graph)
        per_slice = []
        for s in graph.slices:
            var = s.node.layer.weights[s.weight_index]
            if s.role == "param" and var.name.split("/")[-1] == "gamma" and isinstance(
                    s.node.layer, keras.layers.BatchNormalization):
                per_slice.append((s, np.abs(_rows(weights[(id(s.node.layer), s.weight_index)], s)[:, 0])))
        return _aggregate(graph, per_slice, "mean")


class Taylor(Importance):
    """First-order Taylor importance ``sum |w * dL/dw|`` over each slice's channel entries,
    normalized and averaged like :class:`Magnitude` (Molchanov et al., "Importance Estimation
    for Neural Network Pruning", CVPR 2019). The gradient is of the mean loss on the pruner's
    sample, in inference mode.

    Examples:
        >>> Taylor()
        Taylor()
    """

    needs_data = True
    name = "taylor"

    def __call__(self, graph, context=None):
        if context is None or context.gradients is None:
            raise ValueError("Taylor: Expected data to compute gradients; pass `data` to the pruner.")
        grads = context.gradients()
        weights = _weights(graph)
        per_slice = []
        for s in graph.slices:
            if s.role == "param" and not _counts(s):
                continue
            var = s.node.layer.weights[s.weight_index]
            g = grads.get(id(var))
            if g is None:
                continue
            w = weights[(id(s.node.layer), s.weight_index)]
            per_slice.append((s, np.sum(np.abs(_rows(w * g, s)), axis=1)))
        return _aggregate(graph, per_slice, "mean")


class Random(Importance):
    """Uniform random scores: the sanity baseline every pruning paper reports.

    Args:
        seed: int >= 0 (default 0).

    Examples:
        >>> Random(seed=3)
        Random(seed=3)
    """

    name = "random"

    def __init__(self, seed=0):
        self.seed = check_int("seed", seed, "Random", minimum=0)

    def __call__(self, graph, context=None):
        return np.random.default_rng(self.seed).random(graph.n_groups)

    def get_config(self):
        return {"seed": self.seed}


class LossIncrease(Importance):
    """Minus the loss increase when one group alone is zeroed (``-(L(without g) - L)``), the
    criterion of filter pruning by loss increase (HFP: Mitsuno & Kurita, ICPR 2020). One loss
    evaluation per prunable group: an expensive refinement for small models.

    Args:
        max_groups: evaluate at most this many groups, the weakest by L2 magnitude; the others
            score +inf (kept). Default None: all.

    Examples:
        >>> LossIncrease(max_groups=100)
        LossIncrease(max_groups=100)
    """

    needs_data = True
    name = "loss"

    def __init__(self, max_groups=None):
        self.max_groups = None if max_groups is None else check_int("max_groups", max_groups, "LossIncrease", minimum=1)

    def __call__(self, graph, context=None):
        from ..graph.model import Group
        from ..graph.surgery import zero_slices

        if context is None or context.evaluate is None:
            raise ValueError("LossIncrease: Expected data to evaluate the loss; pass `data` to the pruner.")
        scores = np.full(graph.n_groups, np.inf)
        prunable = np.nonzero(~graph.frozen_groups)[0]
        if self.max_groups is not None and len(prunable) > self.max_groups:
            weak = Magnitude()(graph)[prunable]
            prunable = prunable[np.argsort(weak, kind="stable")[:self.max_groups]]
        base = context.evaluate()
        for label in prunable:
            slices = Group(graph, label).slices
            saved = {}
            for s in slices:
                var = s.layer.weights[s.weight_index]
                saved.setdefault(id(var), (var, keras.ops.convert_to_numpy(var).copy()))
            zero_slices(slices)
            scores[label] = -(context.evaluate() - base)
            for var, value in saved.values():
                var.assign(value)
        return scores

    def get_config(self):
        return {"max_groups": self.max_groups}


NAMES = {
    "l2": lambda: Magnitude(2),
    "l1": lambda: Magnitude(1),
    "bn_scale": BNScale,
    "taylor": Taylor,
    "lamp": LAMP,
    "random": Random,
    "loss": LossIncrease,
}


def get(importance, owner="importance"):
    """An :class:`Importance` from a name in :data:`NAMES`, an instance, or a callable.

    Raises:
        ValueError: an unknown name.
        TypeError: neither a name nor a callable.

    Examples:
        >>> get("l1")
        Magnitude(p=1, roles=None, normalize='mean')
        >>> get("taylor").needs_data, get(Random(seed=1)).seed    # an instance is kept as it is
        (True, 1)
        >>> get("l3")
        Traceback (most recent call last):
        ...
        ValueError: importance: Expected `importance` to be one of 'l2', 'l1', ... Received: importance='l3'
    """
    if isinstance(importance, str):
        return NAMES[check_choice("importance", importance, tuple(NAMES), owner)]()
    if callable(importance):
        return importance
    raise TypeError(
        f"{owner}: Expected `importance` to be one of {tuple(NAMES)}, a tgs.importance object or a "
        f"callable (graph, context) -> scores. Received: importance of type {type(importance).__name__}"
    )


def scores_for(importance, graph, context=None, owner="importance"):
    """The criterion's scores as a float array of length ``graph.n_groups`` (checked)."""
    scores = np.asarray(importance(graph, context), dtype="float64").reshape(-1)
    if scores.shape != (graph.n_groups,):
        raise ValueError(
            f"{owner}: Expected `importance` to return one score per group ({graph.n_groups}). "
            f"Received: {scores.shape[0]} scores"
        )
    return scores


def channel_scores(scores, graph, name):
    """Scores of layer `name`'s output channels (the score of each channel's group)."""
    return scores[graph.labels[graph.node(name).out_ids]]

