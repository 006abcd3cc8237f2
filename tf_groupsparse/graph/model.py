"""Data objects of the channel dependency graph: Node, Slice, Dependency, Group, DependencyGraph.

Every tensor of a model is seen as a row of *channel variables* (one per position of its last
axis, channels-last). Layers either create new variables (the output channels of Dense, Conv,
Embedding, model inputs) or pass/map their input variables to their outputs (BatchNormalization,
activations, pooling, Concatenate offsets, Flatten tiling). Layers that combine tensors
elementwise (Add, Multiply, ...) *couple* variables. The connected components of the coupling
relation are the :class:`Group` objects: the sets of channel slices that can only be removed
together. This follows the dependency-graph view of structured pruning (Fang et al.,
"DepGraph: Towards Any Structural Pruning", CVPR 2023), used here to remove the zero groups that
group-sparse training (HGSR, Mitsuno et al., IJCNN 2020) leaves behind.

Examples:
    >>> import keras
    >>> from tf_groupsparse.graph import build_graph
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(4, 3, name="conv1")(x)
    >>> y = keras.layers.Conv2D(2, 1, name="conv2")(keras.layers.BatchNormalization(name="bn1")(h))
    >>> g = build_graph(keras.Model(x, y))
    >>> print(g.group("conv1", 0))
    prune out channels of conv1 [0] => in channels of bn1 [0], in channels of conv2 [0]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ROLES = ("produce", "consume", "param")


@dataclass(eq=False)
class Node:
    """One layer of the (flattened) model.

    Attributes:
        name: the layer's path, ``"conv1"`` or ``"inner_model/conv1"`` for nested models.
        layer: the Keras layer object.
        handler: the handler that traced it (see :mod:`tf_groupsparse.graph.handlers`).
        owned: channel variables the layer creates for its output (Dense/Conv/Embedding), or None.
        inputs: per call, the channel-variable arrays of its input tensors.
        outputs: per call, the channel-variable arrays of its output tensors.
        frozen: True when the layer had no handler and ``unsupported="freeze"`` kept its channels.
        internal: channel variables of the layer's own inner axes, by name (MultiHeadAttention's
            ``{"heads": ..., "key_dim": ..., "value_dim": ...}``): removable units that no tensor
            carries.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
        ...                       keras.layers.Dense(2, name="out")], name="mlp")
        >>> node = build_graph(m).node("h")
        >>> str(node), len(node.owned), [len(ids) for ids in node.inputs[0]], node.frozen
        ('h (Dense)', 3, [4], False)
    """

    name: str
    layer: object
    handler: object
    owned: np.ndarray | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    frozen: bool = False
    meta: dict = field(default_factory=dict)
    internal: dict = field(default_factory=dict)

    def unit_sets(self):
        """``[(name, ids)]`` of the removable units the layer creates: its output channels under
        its own name, each inner axis as ``"<name>:<axis>"`` (``"mha:heads"``)."""
        sets = [(self.name, self.owned)] if self.owned is not None and len(self.owned) else []
        return sets + [(f"{self.name}:{key}", ids) for key, ids in self.internal.items() if len(ids)]

    @property
    def out_ids(self):
        """Channel variables of the layer's (first) output tensor."""
        if self.owned is not None:
            return self.owned
        if self.outputs and self.outputs[0]:
            return self.outputs[0][0]
        return np.zeros(0, dtype=np.int64)

    def __str__(self):
        return f"{self.name} ({type(self.layer).__name__})"


@dataclass(eq=False)
class Slice:
    """Where channel variables sit in a layer's weights.

    ``layer.weights[weight_index][index]`` has, along `axis`, one entry per element of `ids`
    (`index` selects a sub-array first, e.g. one block of a block-diagonal kernel; usually ``()``).
    `role` is "produce" (kernel slice that computes the channel from other channels), "consume"
    (kernel slice that reads the channel to compute other channels) or "param" (per-channel
    parameter: bias, BatchNormalization statistics, depthwise kernels).

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
        ...                       keras.layers.Dense(2, name="out")], name="mlp")
        >>> graph = build_graph(m)
        >>> [(s.node.layer.weights[s.weight_index].name, s.axis, s.role)
        ...  for s in graph.slices if s.node.name == "h"]
        [('kernel', 0, 'consume'), ('kernel', 1, 'produce'), ('bias', 0, 'param')]
    """

    node: Node
    weight_index: int
    axis: int
    ids: np.ndarray
    role: str
    index: tuple = ()


@dataclass(frozen=True)
class WeightSlice:
    """A concrete slice of one weight: ``layer.weights[weight_index][index]`` at `indices` along `axis`.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
        ...                       keras.layers.Dense(2, name="out")], name="mlp")
        >>> slices = build_graph(m).group("h", 1).slices
        >>> for s in slices:
        ...     print(s)
        h.kernel[axis=1][1] (produce)
        h.bias[axis=0][1] (param)
        out.kernel[axis=0][1] (consume)
        >>> [s.values().shape for s in slices]
        [(4, 1), (1,), (1, 2)]
    """

    layer: object
    weight_index: int
    axis: int
    indices: tuple
    role: str
    index: tuple = ()

    def values(self, weight=None):
        """The sliced values as a NumPy array (channels along `axis`); `weight` overrides the
        variable's current value (a NumPy copy of the whole weight)."""
        if weight is None:
            import keras

            weight = keras.ops.convert_to_numpy(self.layer.weights[self.weight_index])
        return np.take(weight[self.index], list(self.indices), axis=self.axis)

    def __str__(self):
        w = self.layer.weights[self.weight_index]
        where = "".join(f"[{i}]" for i in self.index)
        return f"{self.layer.name}.{w.name}{where}[axis={self.axis}]{list(self.indices)} ({self.role})"


def channel_rows(weight, s):
    """``weight[s.index]`` with the channel axis of slice `s` first, flattened to (n_channels, size)."""
    block = np.asarray(weight)[s.index]
    return np.moveaxis(block, s.axis, 0).reshape(block.shape[s.axis], -1)


@dataclass(frozen=True)
class Dependency:
    """Removing channels of `source`'s output forces removing the matching channels of `target`.

    `kind` is the target's handler kind, which says how indices map: "consumes" (a layer that
    reads the channels as inputs: Dense, Conv), "identity" (BatchNormalization, activations,
    pooling), "depthwise" (one filter per channel), "coupled" (elementwise merge partners such as
    Add), "concat" (the channels at the input's offset), "tile" (Flatten/Reshape: each channel
    repeated per position) or "frozen" (an unsupported layer, whose channels stay).

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> x = keras.Input((6, 6, 2))
        >>> a = keras.layers.Conv2D(3, 1, name="a")(x)
        >>> b = keras.layers.Conv2D(3, 1, name="b")(x)
        >>> y = keras.layers.Conv2D(2, 1, name="c")(keras.layers.Add(name="add")([a, b]))
        >>> [(d.source, d.target, d.kind) for d in build_graph(keras.Model(x, y)).dependencies
        ...  if d.target == "add"]
        [('a', 'add', 'coupled'), ('b', 'add', 'coupled')]
    """

    source: str
    target: str
    kind: str
    target_role: str = "in"

    def __str__(self):
        return f"out channels of {self.source} => {self.target_role} channels of {self.target} ({self.kind})"


class Group:
    """The channel slices coupled to one channel variable: they can only be removed together.

    Attributes:
        id: the component label.
        frozen: the group touches a model input/output or a frozen layer and can never be removed.
        lossy: removing it changes the outputs of a layer that normalizes across channels
            (LayerNormalization, Softmax): allowed by :func:`prune_channels`, never by ``shrink``.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
        ...                       keras.layers.Dense(2, name="out")], name="mlp")
        >>> graph = build_graph(m)
        >>> group = graph.group("h", 1)
        >>> group.members(), group.frozen
        ([('h', 'out', (1,)), ('out', 'in', (1,))], False)
        >>> graph.group("out", 0).frozen           # a model output: never removed
        True
    """

    def __init__(self, graph, label):
        self.graph = graph
        self.id = int(label)
        self.frozen = bool(graph.frozen_groups[label])
        self.lossy = bool(graph.lossy_groups[label])

    def _positions(self, ids):
        return tuple(int(i) for i in np.nonzero(self.graph.labels[ids] == self.id)[0])

    @property
    def slices(self):
        """List of :class:`WeightSlice` ``(layer, weight_index, axis, indices, role)`` of this group.

        Zeroing every slice (see :func:`tf_groupsparse.graph.surgery.zero_slices`) makes the group's
        channels contribute nothing, which is what removing them does.
        """
        return [WeightSlice(s.node.layer, s.weight_index, s.axis, idx, s.role, s.index)
                for s, idx in self.graph.slice_index().get(self.id, ())]

    def members(self):
        """List of ``(node_name, "out"|"in", indices)`` in graph order."""
        out = []
        for node in self.graph.nodes:
            seen_in = set()
            for call in node.inputs:
                for ids in call:
                    seen_in.update(self._positions(ids))
            if seen_in:
                out.append((node.name, "in", tuple(sorted(seen_in))))
            if node.owned is not None:
                idx = self._positions(node.owned)
                if idx:
                    out.append((node.name, "out", idx))
            for key, ids in node.internal.items():
                idx = self._positions(ids)
                if idx:
                    out.append((node.name, key, idx))
        return out

    def __eq__(self, other):
        return isinstance(other, Group) and other.graph is self.graph and other.id == self.id

    def __hash__(self):
        return hash((id(self.graph), self.id))

    def __str__(self):
        def fmt(m):
            idx = list(m[2]) if len(m[2]) <= 8 else f"[{', '.join(map(str, m[2][:8]))}, ... ({len(m[2])})]"
            what = f"{m[1]} channels" if m[1] in ("in", "out") else m[1]
            return f"{what} of {m[0]} {idx}"

        members = self.members()
        heads = [m for m in members if m[1] not in ("in",)]
        rest = [m for m in members if m not in heads[:1]]
        if not heads:
            text = "channels " + ", ".join(fmt(m) for m in members)
        else:
            text = f"prune {fmt(heads[0])}" + (" => " + ", ".join(fmt(m) for m in rest) if rest else "")
        flags = [f for f, on in (("frozen", self.frozen), ("lossy", self.lossy)) if on]
        return text + (f" [{', '.join(flags)}]" if flags else "")

    __repr__ = __str__


class DependencyGraph:
    """The channel dependency graph of a model; build it with :func:`build_graph`.

    Attributes:
        model: the model it was built from (never modified by the graph).
        nodes: list of :class:`Node` in execution order.
        dependencies: list of :class:`Dependency`.
        slices: list of :class:`Slice` (weight positions of every channel variable).
        labels: component (group) label of every channel variable.
        frozen_groups, lossy_groups: boolean arrays indexed by label.
        calls: execution records used to evaluate intermediate tensors (see ``evaluate``).

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
        ...                       keras.layers.Dense(2, name="out")], name="mlp")
        >>> graph = build_graph(m)
        >>> print(graph)
        DependencyGraph of 'mlp': 2 layers, 3 prunable groups
          out channels of input => in channels of h (consumes)
          out channels of h => in channels of out (consumes)
        >>> graph.n_groups, len(graph.groups("h")), len(graph.groups(include_frozen=True))
        (9, 3, 5)
    """

    def __init__(self, model, nodes, dependencies, slices, labels, frozen_groups, lossy_groups,
                 calls, outputs, inputs, tracer=None):
        self.model = model
        self.nodes = nodes
        self.dependencies = dependencies
        self.slices = slices
        self.labels = labels
        self.frozen_groups = frozen_groups
        self.lossy_groups = lossy_groups
        self.calls = calls
        self.output_keys = outputs
        self.input_keys = inputs
        self.tracer = tracer
        self._by_name = {n.name: n for n in nodes}
        for n in nodes:  # a plain layer name also works when it is unique
            short = n.layer.name
            if short not in self._by_name:
                self._by_name[short] = n

    @property
    def n_groups(self):
        return int(self.frozen_groups.shape[0])

    def slice_index(self):
        """``{group label: [(Slice, positions in it)]}``, built once (graph order)."""
        if getattr(self, "_slice_index", None) is None:
            index = {}
            for s in self.slices:
                labels = self.labels[s.ids]
                order = np.argsort(labels, kind="stable")
                uniq, starts = np.unique(labels[order], return_index=True)
                ends = list(starts[1:]) + [len(order)]
                for label, lo, hi in zip(uniq.tolist(), starts.tolist(), ends):
                    index.setdefault(label, []).append((s, tuple(int(i) for i in np.sort(order[lo:hi]))))
            self._slice_index = index
        return self._slice_index

    def node(self, name, owner="DependencyGraph.node"):
        """The :class:`Node` named `name` (path or unique layer name); ValueError if unknown."""
        if name not in self._by_name:
            known = ", ".join(repr(n.name) for n in self.nodes[:20])
            raise ValueError(
                f"{owner}: Expected the name of a layer of model {self.model.name!r} "
                f"(one of {known}{', ...' if len(self.nodes) > 20 else ''}). Received: layer={name!r}"
            )
        return self._by_name[name]

    def group(self, layer_name, channel):
        """The :class:`Group` of output channel `channel` of layer `layer_name`."""
        ids = self.node(layer_name, "DependencyGraph.group").out_ids
        if not 0 <= int(channel) < len(ids):
            raise ValueError(
                f"DependencyGraph.group: Expected `channel` in [0, {len(ids)}) for layer "
                f"{layer_name!r}. Received: channel={channel!r}"
            )
        return Group(self, self.labels[ids[int(channel)]])

    def groups(self, layer_name=None, *, include_frozen=False):
        """Distinct groups of the output channels and inner units (attention heads, ...) of
        `layer_name` (or of all layers), in order; ``"mha:heads"`` names one inner axis."""
        inner = None
        if layer_name and layer_name not in self._by_name and ":" in layer_name:  # "mha:heads"
            layer_name, inner = layer_name.rsplit(":", 1)
        nodes = [self.node(layer_name, "DependencyGraph.groups")] if layer_name else self.nodes
        if inner is not None and inner not in nodes[0].internal:
            raise ValueError(
                f"DependencyGraph.groups: Expected an inner axis of layer {layer_name!r} (one of "
                f"{sorted(nodes[0].internal)}). Received: {inner!r}"
            )
        seen, out = set(), []
        for node in nodes:
            ids = [node.internal[inner]] if inner is not None else [node.out_ids, *node.internal.values()]
            for lab in self.labels[np.concatenate(ids)]:
                if lab in seen:
                    continue
                seen.add(lab)
                if include_frozen or not self.frozen_groups[lab]:
                    out.append(Group(self, lab))
        return out

    def __str__(self):
        lines = [f"DependencyGraph of {self.model.name!r}: {len(self.nodes)} layers, "
                 f"{int((~self.frozen_groups).sum())} prunable groups"]
        lines += [f"  {d}" for d in self.dependencies]
        return "\n".join(lines)
