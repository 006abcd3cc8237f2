"""Build the channel dependency graph of a Keras 3 Sequential or functional model.

Only public Keras API is used: the connectivity of a functional model is read from
``model.get_config()`` (its ``inbound_nodes`` / ``keras_history`` entries, the documented
serialization format), a Sequential model is the chain ``model.layers``, nested models are
traced recursively (their layers get path names ``"outer/inner"``), and tensor shapes come from
``layer.compute_output_spec``. Private attributes such as ``layer._inbound_nodes`` are not used.

Examples:
    >>> import keras
    >>> from tf_groupsparse.graph import build_graph
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1"),
    ...                       keras.layers.Dense(2, name="d2")])
    >>> print(build_graph(m).group("d1", 1))
    prune out channels of d1 [1] => in channels of d2 [1]
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .._validation import check_choice, check_keras_model
from .handlers import Unsupported
from .kinds import handler_for
from .model import Dependency, DependencyGraph, Node, Slice

UNSUPPORTED_MODES = ("error", "freeze")


class _Ref:
    """Placeholder for a tensor inside a call's argument structure."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


def _is_tensor_cfg(obj):
    return isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__"


def _to_refs(obj, scope):
    """Tensor references of a node's serialized arguments, with slices and ellipses revived (an
    index ``x[:, 0]`` is stored as a list of them: it becomes the tuple again)."""
    if _is_tensor_cfg(obj):
        return _Ref(scope + tuple(obj["config"]["keras_history"]))
    if isinstance(obj, dict):
        if obj.get("class_name") == "__slice__":
            c = obj["config"]
            return slice(c.get("start"), c.get("stop"), c.get("step"))
        if obj.get("class_name") == "__ellipsis__":
            return Ellipsis
        return {k: _to_refs(v, scope) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_to_refs(v, scope) for v in obj]
        return tuple(items) if any(isinstance(v, slice) or v is Ellipsis for v in items) else items
    return obj


def _refs(obj):
    if isinstance(obj, _Ref):
        return [obj]
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _refs(v)]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _refs(v)]
    return []


def _map_refs(obj, fn):
    if isinstance(obj, _Ref):
        return fn(obj.key)
    if isinstance(obj, dict):
        return {k: _map_refs(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_map_refs(v, fn) for v in obj]
    return obj


def _argument_positions(args, kwargs):
    """``{position or keyword: index into the call's flat input list}`` for the arguments that
    are single tensors, and ``{position or keyword: (first index, count)}`` for all of them
    (handlers of multi-input layers read which input is which)."""
    out, spans, i = {}, {}, 0
    for key, value in list(enumerate(args)) + list(kwargs.items()):
        refs = _refs(value)
        if isinstance(value, _Ref):
            out[key] = i
        spans[key] = (i, len(refs))
        i += len(refs)
    return out, spans


def _history_list(value):
    """``input_layers``/``output_layers`` of a functional config as a list of triples (a dict of
    named inputs or outputs in key order, the order of ``model.inputs``)."""
    if isinstance(value, dict):
        return [tuple(value[k]) for k in sorted(value)]
    if value and isinstance(value[0], str):
        return [tuple(value)]
    return [tuple(v) for v in value]


def functional_view(model):
    """`model` itself, or, for a subclass of the functional Model whose config is its own
    constructor's (a keras-hub backbone), a plain functional Model over the same layers and
    tensors: tracing and surgery read the functional config, and the layers (and weights)
    stay the model's own."""
    if isinstance(model, keras.Sequential) or not isinstance(model, _functional_class()):
        return model
    if "input_layers" in model.get_config():
        return model
    return keras.Model(model.input, model.output, name=model.name)


def _functional_class():
    """Keras' functional Model class, read from a functional model (public API only)."""
    x = keras.Input((1,))
    return type(keras.Model(x, keras.layers.Identity()(x)))


def _channels(shape):
    """Channel variables of a tensor of `shape`: its static last axis; a tensor without one
    (token ids of shape (batch, None), a scalar) gets one frozen variable, never removed."""
    shape = tuple(shape)
    return int(shape[-1]) if shape and shape[-1] is not None else 1


class _Tracer:
    def __init__(self, unsupported):
        self.unsupported = unsupported
        self.count = 0
        self.edges = []
        self.frozen, self.lossy = [], []
        self.slices, self._slice_at = [], {}
        self.nodes, self.order = {}, []
        self.calls = []
        self.tensors, self.shapes, self.alias, self.producer = {}, {}, {}, {}
        self.deps = {}
        self.submodel_inputs = {}
        self.in_shapes = self.out_shapes = None
        self.arguments, self.argument_spans, self.argument_values = {}, {}, {}

    # --- context API used by handlers -------------------------------------------------------
    def new(self, n, frozen=False):
        ids = np.arange(self.count, self.count + int(n), dtype=np.int64)
        self.count += int(n)
        if frozen:
            self.freeze(ids)
        return ids

    def own(self, node, n):
        if node.owned is None:
            node.owned = self.new(n)
        return node.owned

    def inner(self, node, key, n):
        """The layer's own removable units along an inner axis (attention heads), created once."""
        if key not in node.internal:
            node.internal[key] = self.new(n)
        return node.internal[key]

    def couple(self, a, b):
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        if a.shape != b.shape:
            raise ValueError(f"couple: Expected arrays of equal length. Received: {a.shape} and {b.shape}")
        self.edges.append((a, b))

    def freeze(self, ids):
        self.frozen.append(np.asarray(ids, dtype=np.int64))

    def mark_lossy(self, ids):
        self.lossy.append(np.asarray(ids, dtype=np.int64))

    def add_slice(self, node, variable, axis, ids, role, index=()):
        weight_index = next(i for i, w in enumerate(node.layer.weights) if w is variable)
        ids = np.asarray(ids, dtype=np.int64)
        index = tuple(int(i) for i in index)
        at = (id(node), weight_index, index, axis)
        if at in self._slice_at:  # a shared layer: every call uses the same weights
            self.couple(self._slice_at[at].ids, ids)
            return
        size = variable.shape[len(index) + axis]
        if int(size) != len(ids):
            raise Unsupported(
                f"weight {variable.name!r} has {size} entries on axis {axis}, "
                f"the tensor has {len(ids)} channels"
            )
        s = Slice(node, weight_index, axis, ids, role, index)
        self._slice_at[at] = s
        self.slices.append(s)

    # --- tensors --------------------------------------------------------------------------
    def canon(self, key):
        while key in self.alias:
            key = self.alias[key]
        return key

    def has(self, key):
        return self.canon(key) in self.tensors

    def ids(self, key):
        return self.tensors[self.canon(key)]

    def shape(self, key):
        return self.shapes[self.canon(key)]

    def set_tensor(self, key, ids, shape, producer):
        self.tensors[key] = np.asarray(ids, dtype=np.int64)
        self.shapes[key] = tuple(shape)
        self.producer[key] = producer

    # --- layers ---------------------------------------------------------------------------
    def node_for(self, layer, name):
        node = self.nodes.get(id(layer))
        if node is None:
            node = Node(name=name, layer=layer, handler=handler_for(layer))
            self.nodes[id(layer)] = node
            self.order.append(node)
        return node

    def _output_shapes(self, layer, args, kwargs):
        def spec(key):
            return keras.KerasTensor(self.shape(key), dtype=getattr(layer, "compute_dtype", "float32"))

        try:
            out = layer.compute_output_spec(*_map_refs(args, spec), **_map_refs(kwargs, spec))
            return [tuple(t.shape) for t in keras.tree.flatten(out)]
        except Exception as exc:  # noqa: BLE001 - reported with the layer's name
            raise ValueError(
                f"build_graph: Expected layer {layer.name!r} ({type(layer).__name__}) to compute its "
                f"output shape from its inputs. Received: {type(exc).__name__}: {exc}"
            ) from exc

    def trace_call(self, layer, name, args, kwargs, out_prefix):
        node = self.node_for(layer, name)
        in_keys = [r.key for r in _refs(args) + _refs(kwargs)]
        inputs = [self.ids(k) for k in in_keys]
        self.arguments, self.argument_spans = _argument_positions(args, kwargs)
        self.argument_values = {k: v for k, v in list(enumerate(args)) + list(kwargs.items()) if not _refs(v)}
        self.in_shapes = [self.shape(k) for k in in_keys]
        self.out_shapes = self._output_shapes(layer, args, kwargs)
        outputs = None
        if node.handler is not None and not node.frozen:
            try:
                outputs = node.handler.trace(node, inputs, self)
            except Unsupported as exc:
                self._unsupported(node, f": {exc}")
        elif node.handler is None and not node.frozen:
            self._unsupported(node, "")
        if outputs is None:  # frozen: its channels are kept
            node.frozen = True
            for x in inputs:
                self.freeze(x)
            outputs = [self.new(_channels(s), frozen=True) for s in self.out_shapes]
        kind = getattr(node.handler, "kind", "frozen") if not node.frozen else "frozen"
        for k in in_keys:
            src = self.producer.get(self.canon(k), "input")
            self.deps.setdefault((src, node.name), Dependency(src, node.name, kind))
        node.inputs.append(inputs)
        node.meta.setdefault("in_keys", []).append(in_keys)
        node.outputs.append(list(outputs))
        out_keys = []
        for t, (ids, shape) in enumerate(zip(outputs, self.out_shapes)):
            key = out_prefix + (t,)
            self.set_tensor(key, ids, shape, node.name)
            out_keys.append(key)
        self.calls.append((node, args, kwargs, out_keys))
        return out_keys

    def _note_submodel(self, model, keys):
        """Remember the channel variables and shapes entering a nested model (first call)."""
        self.submodel_inputs.setdefault(id(model), [(self.ids(k), self.shape(k)) for k in keys])

    def _unsupported(self, node, reason):
        cls = type(node.layer).__name__
        if self.unsupported == "error" and not isinstance(node.layer, keras.layers.Layer):
            raise ValueError(
                f"build_graph: Expected every operation to be a layer with a channel handler. "
                f"Received: operation {node.name!r} of class {cls}, a keras.ops call{reason}. Wrap it in a "
                f'Layer subclass and register a handler for it, or pass unsupported="freeze" to '
                f"keep its channels."
            )
        if self.unsupported == "error":
            raise ValueError(
                f"build_graph: Expected every layer to have a channel handler. Received: layer "
                f"{node.name!r} of class {cls}{reason or ' has no registered handler'}. Register a "
                f"handler with tf_groupsparse.graph.register_handler({cls}, handler) or pass "
                f'unsupported="freeze" to keep its channels.'
            )
        node.frozen = True

    # --- models ---------------------------------------------------------------------------
    def trace_model(self, model, path, scope, in_keys):
        if isinstance(model, keras.Sequential):
            key = in_keys[0]
            for layer in model.layers:
                if isinstance(layer, keras.Model):
                    self._note_submodel(layer, [key])
                    key = self.trace_model(layer, f"{path}{layer.name}/", scope + (layer.name,), [key])[0]
                else:
                    key = self.trace_call(layer, path + layer.name, [_Ref(key)], {}, scope + (layer.name, 0))[0]
            return [key]
        cfg = model.get_config()
        if "input_layers" not in cfg:
            raise ValueError(
                f"build_graph: Expected every nested model to be Sequential or functional. Received: nested "
                f"model {model.name!r} of class {type(model).__name__}, whose config is its constructor's (a "
                f"keras-hub backbone, say). Pass that model itself (its functional graph is traced at the top "
                f"level), or build the outer model from its layers.")
        for triple, outer in zip(_history_list(cfg["input_layers"]), in_keys):
            self.alias[scope + triple] = outer
        operations = {op.name: op for op in model.operations}  # layers and plain keras.ops
        pending = [
            (lc, i, node_cfg) for lc in cfg["layers"] for i, node_cfg in enumerate(lc["inbound_nodes"])
        ]
        while pending:
            rest = []
            for lc, i, node_cfg in pending:
                args = _to_refs(node_cfg.get("args", []), scope)
                kwargs = _to_refs(node_cfg.get("kwargs", {}), scope)
                if not all(self.has(r.key) for r in _refs(args) + _refs(kwargs)):
                    rest.append((lc, i, node_cfg))
                    continue
                layer = operations[lc["name"]]
                prefix = scope + (lc["name"], i)
                if isinstance(layer, keras.Model):
                    keys = [r.key for r in _refs(args) + _refs(kwargs)]
                    self._note_submodel(layer, keys)
                    outs = self.trace_model(layer, f"{path}{layer.name}/", prefix, keys)
                    for t, k in enumerate(outs):
                        self.alias[prefix + (t,)] = k
                else:
                    self.trace_call(layer, path + layer.name, args, kwargs, prefix)
            if len(rest) == len(pending):
                names = ", ".join(lc["name"] for lc, _, _ in rest[:5])
                raise ValueError(
                    f"build_graph: Expected the layers of {model.name!r} to form a graph reachable "
                    f"from its inputs. Received: unreachable layers {names}"
                )
            pending = rest
        return [scope + triple for triple in _history_list(cfg["output_layers"])]


def build_graph(model, *, unsupported="error"):
    """Trace `model` into a :class:`~tf_groupsparse.graph.model.DependencyGraph`.

    Each tensor's last axis becomes an array of channel variables; handlers (one per layer
    kind, see :mod:`tf_groupsparse.graph.handlers`) create, map and couple them. Groups are
    the connected components of the coupling relation:
    ``group(v) = {w : v ~ w}``, where ``~`` is the transitive closure of "same variable",
    "elementwise merge partner" and "same weights" (shared layers, conv groups, Reshape).
    Model inputs and outputs are frozen.

    Args:
        model: a built ``keras.Model`` (Sequential or functional; nested models allowed).
        unsupported: "error" (default) raises on a layer without a handler; "freeze" keeps
            all channels that touch such a layer.

    Returns:
        The DependencyGraph (the model is not modified).

    Raises:
        TypeError: `model` is not a keras.Model.
        ValueError: `unsupported` is invalid, or a layer has no handler and
            ``unsupported="error"``.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> x = keras.Input((6, 6, 2))
        >>> a = keras.layers.Conv2D(3, 1, name="a")(x)
        >>> b = keras.layers.Conv2D(3, 1, name="b")(x)
        >>> y = keras.layers.Conv2D(2, 1, name="c")(keras.layers.Add(name="add")([a, b]))
        >>> print(build_graph(keras.Model(x, y)).group("a", 2))
        prune out channels of a [2] => out channels of b [2], in channels of add [2], in channels of c [2]

    Reference: the graph view of structured pruning follows Fang et al., "DepGraph: Towards Any
    Structural Pruning", CVPR 2023.
    """
    check_keras_model(model, "build_graph")
    check_choice("unsupported", unsupported, UNSUPPORTED_MODES, "build_graph")
    tr = _Tracer(unsupported)
    model = functional_view(model)
    in_keys = []
    for i, t in enumerate(model.inputs):
        key = ("<input>", i)
        tr.set_tensor(key, tr.new(_channels(t.shape), frozen=True), t.shape, "input")
        in_keys.append(key)
    out_keys = tr.trace_model(model, "", (), in_keys)
    for k in out_keys:
        tr.freeze(tr.ids(k))
    n = tr.count
    if tr.edges:
        a = np.concatenate([e[0] for e in tr.edges])
        b = np.concatenate([e[1] for e in tr.edges])
    else:
        a = b = np.zeros(0, dtype=np.int64)
    adjacency = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    n_comp, labels = connected_components(adjacency, directed=False)
    frozen = np.zeros(n_comp, dtype=bool)
    lossy = np.zeros(n_comp, dtype=bool)
    for ids in tr.frozen:
        frozen[labels[ids]] = True
    for ids in tr.lossy:
        lossy[labels[ids]] = True
    return DependencyGraph(
        model, tr.order, list(tr.deps.values()), tr.slices, labels, frozen, lossy,
        calls=tr.calls, outputs=[tr.canon(k) for k in out_keys], inputs=in_keys, tracer=tr,
    )


def evaluate(graph, inputs):
    """Run the graph's layers one by one in inference mode and return every tensor.

    Args:
        graph: a DependencyGraph.
        inputs: list of arrays, one per model input.

    Returns:
        dict mapping tensor keys (as stored in the graph's calls) to NumPy arrays.

    Examples:
        >>> import keras, numpy as np
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
        ...                       keras.layers.Dense(2, name="out")])
        >>> graph = build_graph(m)
        >>> x = np.random.rand(5, 4).astype("float32")
        >>> tensors = evaluate(graph, [x])
        >>> tensors[("h", 0, 0)].shape                 # h's output: layer, call, output index
        (5, 3)
        >>> np.allclose(tensors[graph.output_keys[0]], m(x), atol=1e-6)
        True
    """
    tr = graph.tracer
    env = {}
    for key, x in zip(graph.input_keys, inputs):
        env[key] = keras.ops.convert_to_tensor(x)

    def get(key):
        return env[tr.canon(key)]

    for node, args, kwargs, out_keys in graph.calls:
        call_kwargs = dict(_map_refs(kwargs, get))
        if isinstance(node.layer, keras.layers.Layer):
            call_kwargs["training"] = False
        out = node.layer(*_map_refs(args, get), **call_kwargs)
        for key, value in zip(out_keys, keras.tree.flatten(out)):
            env[key] = value
    return {k: keras.ops.convert_to_numpy(v) for k, v in env.items()}
