"""What a set of removed channel groups saves: exact MACs and parameters without rebuilding.

Every weight of a graph node has, along each axis that a dependency-graph slice touches, a count
of kept channels; its kept entries are the product of those counts and its other dimensions
(block-diagonal kernels sum over their blocks). A layer's multiply-adds are proportional to the
entries of its kernels (each kernel entry is used once per output position: Dense, Conv with or
without groups, depthwise, separable, transposed convs, block-diagonal Dense), so
``MACs(layer) = MACs_full(layer) * kept kernel entries / full kernel entries``, exactly what
:func:`tf_groupsparse.metrics.layer_costs` gives for the rebuilt model. Removing or restoring a
group updates only the weights it touches, so a pruner can try thousands of groups cheaply.

Examples:
    >>> import keras
    >>> from tf_groupsparse.graph import build_graph
    >>> from tf_groupsparse.pruning.cost import CostModel
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
    ...                       keras.layers.Dense(2, name="out")])
    >>> g = build_graph(m)
    >>> cost = CostModel(g)
    >>> cost.macs, cost.params                  # 4*8 + 8*2 multiply-adds; 40 + 18 weights
    (48, 58)
    >>> cost.remove([g.group("h", 0).id])
    >>> cost.macs, cost.params                  # one hidden unit less: 4 + 2 MACs, 4 + 1 + 2 weights
    (42, 51)
"""

from __future__ import annotations

import math
from collections import defaultdict

import keras
import numpy as np

from ..graph.kinds import cost_for, weight_cost_for
from ..metrics import _io_shapes

__all__ = ["CostModel"]


def _is_kernel(variable):
    return "kernel" in variable.name.split("/")[-1]


class _Weight:
    """Kept entries of one variable under the current removals."""

    def __init__(self, shape):
        self.shape = tuple(int(d) for d in shape)
        self.kept = {}          # (index, axis) -> kept channels on that axis of that block
        self.entries = math.prod(self.shape)

    def kept_shape(self):
        """The shape with every sliced axis at its kept count (weights without blocks)."""
        return tuple(self.kept.get(((), a), d) for a, d in enumerate(self.shape))

    def count(self):
        if not self.kept:
            return math.prod(self.shape)
        blocks = defaultdict(dict)
        for (index, axis), n in self.kept.items():
            blocks[index][axis] = n
        if list(blocks) == [()]:
            return math.prod(blocks[()].get(a, d) for a, d in enumerate(self.shape))
        sub = self.shape[1:]
        return sum(math.prod(blocks.get((k,), {}).get(a, d) for a, d in enumerate(sub))
                   for k in range(self.shape[0]))


class CostModel:
    """MACs and parameters of a graph's model with some groups removed (updated incrementally).

    Attributes:
        macs, params: the current totals (ints).
        macs_full, params_full: those of the model as it is.
    """

    def __init__(self, graph):
        self.graph = graph
        self.weights = {}                       # (id(layer), weight index) -> _Weight
        self.per_group = defaultdict(list)      # group id -> [(weight key, (index, axis), count)]
        self.mac_factor = {}                    # weight key -> multiply-adds per kernel entry
        self.layer_of = {}                      # weight key -> the layer's node name
        self.shaped = {}                        # node name -> (layer, MAC function of weight shapes, keys, io)
        self._shaped_macs = {}
        self._outputs = {}                      # node name -> (weight key, where, role) of its output channels
        sliced_full = 0
        for s in graph.slices:
            key = (id(s.node.layer), s.weight_index)
            variable = s.node.layer.weights[s.weight_index]
            if key not in self.weights:
                self.weights[key] = _Weight(variable.shape)
                sliced_full += self.weights[key].entries
            w = self.weights[key]
            where = (tuple(s.index), int(s.axis))
            w.kept[where] = len(s.ids) if len(s.index) == 0 else int(w.shape[len(s.index) + s.axis])
            if not s.index and _is_kernel(variable) and s.role in ("produce", "param"):
                # the first kernel slice that makes the layer's output channels (a depthwise
                # kernel's channels only until a pointwise kernel's output is seen)
                seen = self._outputs.get(s.node.name)
                if seen is None or (seen[2] == "param" and s.role == "produce"):
                    self._outputs[s.node.name] = (key, where, s.role)
            labels, counts = np.unique(graph.labels[s.ids], return_counts=True)
            for label, n in zip(labels.tolist(), counts.tolist()):
                self.per_group[label].append((key, where, n))
        self.params_full = int(sum(math.prod(v.shape) for v in graph.model.weights))
        self._fixed_params = self.params_full - sliced_full
        self._fixed_macs = 0
        for node in graph.nodes:
            self._node_macs(node)
        self._counts = {key: w.count() for key, w in self.weights.items()}
        self.params = self._fixed_params + sum(self._counts.values())
        self.macs = int(round(self._fixed_macs + sum(self.mac_factor.get(k, 0.0) * c for k, c in self._counts.items())
                              + sum(self._shaped_macs.values())))
        self.macs_full, self.removed = self.macs, set()

    def _node_macs(self, node):
        layer = node.layer
        fn = cost_for(layer) if isinstance(layer, keras.layers.Layer) else None
        if fn is None:
            return
        if node.inputs and len(node.inputs) > 1:  # a shared layer: cost its first call (as layer_costs)
            pass
        try:
            io = _io_shapes(layer)
            macs = int(fn(layer, *io))
        except ValueError:
            return
        shaped = weight_cost_for(layer)
        if shaped is not None:  # MACs not proportional to kernel entries (attention): from the kept shapes
            keys = [(id(layer), i) for i in range(len(layer.weights))]
            self.shaped[node.name] = (layer, shaped, keys, io)
            self._shaped_macs[node.name] = macs
            return
        kernels = [(id(layer), i) for i, v in enumerate(layer.weights) if _is_kernel(v)]
        sliced = [k for k in kernels if k in self.weights]
        full = sum(self.weights[k].entries for k in sliced)
        if not sliced or full == 0:
            self._fixed_macs += macs
            return
        for k in sliced:
            self.mac_factor[k] = macs / full
            self.layer_of[k] = node.name

    def _update(self, groups, sign):
        touched = set()
        for gid in groups:
            gid = int(getattr(gid, "id", gid))
            if (gid in self.removed) == (sign < 0):
                continue
            if sign < 0:
                self.removed.add(gid)
            else:
                self.removed.discard(gid)
            for key, where, n in self.per_group.get(gid, ()):
                self.weights[key].kept[where] += sign * n
                touched.add(key)
        for key in touched:
            new = self.weights[key].count()
            delta = new - self._counts[key]
            self._counts[key] = new
            self.params += delta
            self.macs += int(round(self.mac_factor.get(key, 0.0) * delta))
        for name, (layer, fn, keys, io) in self.shaped.items():
            if touched.intersection(keys):
                shapes = [self.weights[k].kept_shape() if k in self.weights else tuple(layer.weights[k[1]].shape)
                          for k in keys]
                new = int(fn(layer, shapes, *io))
                self.macs += new - self._shaped_macs[name]
                self._shaped_macs[name] = new

    def remove(self, groups):
        """Count `groups` (Group objects or ids) as removed."""
        self._update(groups, -1)

    def restore(self, groups):
        """Count removed `groups` as kept again."""
        self._update(groups, +1)

    def layer_macs(self):
        """``{layer name: current MACs}`` of the layers whose MACs follow their channels."""
        out = {}
        for key, name in self.layer_of.items():
            out[name] = out.get(name, 0.0) + self.mac_factor[key] * self._counts[key]
        out.update(self._shaped_macs)
        return out

    def output_channels(self):
        """``{layer name: output channels kept}`` of the layers whose kernels have sliced output
        channels (Dense, convolutions; a depthwise kernel's channels), for costs that depend on
        channel counts, not only on MACs (processors compute channels in vector-wide tiles)."""
        return {name: self.weights[key].kept[where] for name, (key, where, _) in self._outputs.items()}

    def fraction(self, what):
        """The current ``"macs"`` or ``"params"`` as a fraction of the full model's."""
        full = self.macs_full if what == "macs" else self.params_full
        return (self.macs if what == "macs" else self.params) / max(full, 1)
