"""Multiply-add (MAC) formulas per layer kind, for one input sample.

Each function takes ``(layer, input_shape, output_shape)`` (shapes with the batch axis, tuples,
or lists of tuples for several inputs) and returns the multiply-adds of one sample. The
registry (:mod:`tf_groupsparse.graph.kinds`) attaches them to layer classes; the table of
formulas is in :mod:`tf_groupsparse.metrics`.

Examples:
    >>> import keras
    >>> from tf_groupsparse.graph.costs import dense
    >>> dense(keras.layers.Dense(3), (None, 4), (None, 3))
    12
"""

from __future__ import annotations

import math

import keras


def known(shape, layer, what):
    """The non-batch dims of `shape`; ValueError naming `layer` when one is unknown."""
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(
            f"layer_costs: Expected layer {layer.name!r} to have a fully known {what} shape apart "
            f"from the batch axis (give the model's Input a fixed shape). Received: {what}_shape="
            f"{tuple(shape)}"
        )
    return dims


def _prod(shape, layer, what):
    return math.prod(known(shape, layer, what))


def _channels_in(layer, input_shape):
    dims = known(input_shape, layer, "input")
    first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return int(dims[0] if first else dims[-1])


def _kernel_size(layer):
    return math.prod(int(k) for k in layer.kernel_size)


def zero(layer, input_shape, output_shape):
    """No multiply-adds (data movement, comparisons, additions, folded scales)."""
    return 0


def dense(layer, input_shape, output_shape):
    """``prod(out) * C_in``."""
    return _prod(output_shape, layer, "output") * int(known(input_shape, layer, "input")[-1])


def einsum_dense(layer, input_shape, output_shape):
    """``prod(out) * C_in``: the equations the graph supports contract only the input's last axis."""
    return dense(layer, input_shape, output_shape)


def conv(layer, input_shape, output_shape):
    """``prod(out) * k * C_in / groups``."""
    c_in = _channels_in(layer, input_shape)
    groups = int(getattr(layer, "groups", 1) or 1)
    return _prod(output_shape, layer, "output") * _kernel_size(layer) * (c_in // groups)


def depthwise(layer, input_shape, output_shape):
    """``prod(out) * k``."""
    return _prod(output_shape, layer, "output") * _kernel_size(layer)


def separable(layer, input_shape, output_shape):
    """Depthwise ``P * C_in * m * k`` plus pointwise ``P * C_in * m * filters``."""
    c_mid = _channels_in(layer, input_shape) * int(layer.depth_multiplier)
    positions = _prod(output_shape, layer, "output") // int(layer.filters)
    return positions * c_mid * _kernel_size(layer) + positions * c_mid * int(layer.filters)


def conv_transpose(layer, input_shape, output_shape):
    """``prod(in) * k * filters``."""
    return _prod(input_shape, layer, "input") * _kernel_size(layer) * int(layer.filters)


_RNN_GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def rnn(layer, input_shape, output_shape):
    """``T * gates * units * (C_in + units)`` with 1 / 3 / 4 gates (SimpleRNN / GRU / LSTM)."""
    dims = known(input_shape, layer, "input")
    steps, c_in = int(dims[0]), int(dims[-1])
    gates = next(g for name, g in _RNN_GATES.items() if isinstance(layer, getattr(keras.layers, name)))
    return steps * gates * int(layer.units) * (c_in + int(layer.units))


def bidirectional(layer, input_shape, output_shape):
    """The sum of the two wrapped layers' costs."""
    from .kinds import cost_for

    total = 0
    for inner in (layer.forward_layer, layer.backward_layer):
        fn = cost_for(inner)
        total += fn(inner, input_shape, output_shape) if fn is not None else 0
    return total


def time_distributed(layer, input_shape, output_shape):
    """``T`` times the wrapped layer's cost on one time step."""
    from .kinds import cost_for

    fn = cost_for(layer.layer)
    if fn is None:
        return 0
    steps = int(known(input_shape, layer, "input")[0])
    return steps * fn(layer.layer, (input_shape[0],) + tuple(input_shape[2:]), (output_shape[0],) + tuple(output_shape[2:]))


def dot_attention(layer, input_shape, output_shape):
    """Attention / AdditiveAttention on ``[query (T, C), value (S, C')]``: ``T S (C + C')`` for the
    scores and the weighted values."""
    shapes = input_shape if isinstance(input_shape, list) else [input_shape]
    t = _prod(shapes[0], layer, "query") // int(shapes[0][-1])
    s = _prod(shapes[1], layer, "value") // int(shapes[1][-1])
    return t * s * (int(shapes[0][-1]) + int(shapes[1][-1]))


def block_diagonal_dense(layer, input_shape, output_shape):
    """``prod(out) / units * sum_k in_k * out_k`` (only the blocks multiply)."""
    positions = _prod(output_shape, layer, "output") // int(layer.units)
    return positions * sum(int(a) * int(b) for a, b in zip(layer.input_groups, layer.output_groups))


def attention_from_shapes(layer, shapes, input_shape, output_shape, positions=None):
    """MultiHeadAttention from its weight shapes ``[q (D_q, H, d_k), (b), k (D_k, H, d_k), (b),
    v (D_v, H, d_v), (b), o (H, d_v, D_o), (b)]`` (biases optional) and ``T`` query / ``S`` key
    positions: ``T D_q H d_k + S D_k H d_k + S D_v H d_v`` (projections) ``+ T S H (d_k + d_v)``
    (scores and weighted values) ``+ T H d_v D_o`` (output projection). ``positions=(T, S)``
    when the caller knows them (a block's own attention); otherwise they come from the layer's
    query and value inputs in `input_shape`."""
    kernels = [tuple(s) for s in shapes if len(s) == 3]
    (dq, h, dk), (dkk, _, _), (dv, _, dvv), (_, _, do) = kernels
    if positions is None:
        shapes_in = input_shape if isinstance(input_shape, list) else [input_shape]
        # the layer's recorded inputs are query, value (when given apart) and any masks
        value = shapes_in[1] if len(shapes_in) > 1 and shapes_in[1][-1] == layer.value_dense.kernel.shape[0] \
            else shapes_in[0]
        positions = (_positions(layer, shapes_in[0], "query"), _positions(layer, value, "value"))
    t, s = positions
    return t * dq * h * dk + s * dkk * h * dk + s * dv * h * dvv + t * s * h * (dk + dvv) + t * h * dvv * do


def multi_head_attention(layer, input_shape, output_shape):
    """See :func:`attention_from_shapes`, with the layer's own weight shapes."""
    return attention_from_shapes(layer, [tuple(w.shape) for w in layer.weights], input_shape, output_shape)


def _positions(layer, shape, what):
    return _prod(shape, layer, what) // int(shape[-1])


def grouped_attention_from_shapes(layer, shapes, input_shape, output_shape):
    """GroupQueryAttention from its weight shapes (query/gate ``(D_q, H_q, d)``, key/value
    ``(D, H_kv, d)``, output ``(H_q, d, D_q)``): the four projections (the gate's if any), scores
    and weighted values ``2 T S H_q d``, and the output projection ``T H_q d D_q``."""
    by_name = {"/".join(w.path.split("/")[-2:]): tuple(sh) for w, sh in zip(layer.weights, shapes)}
    shapes_in = input_shape if isinstance(input_shape, list) else [input_shape]
    t = _positions(layer, shapes_in[0], "query")
    s = _positions(layer, shapes_in[1] if len(shapes_in) > 1 else shapes_in[0], "value")
    dq, hq, d = by_name["query/kernel"]
    total = t * dq * hq * d + 2 * t * s * hq * d
    for name in ("key", "value"):
        dk, hkv, dd = by_name[f"{name}/kernel"]
        total += s * dk * hkv * dd
    if "gate/kernel" in by_name:
        total += t * math.prod(by_name["gate/kernel"])
    return total + t * math.prod(by_name["attention_output/kernel"])


def grouped_query_attention(layer, input_shape, output_shape):
    """See :func:`grouped_attention_from_shapes`, with the layer's own weight shapes."""
    return grouped_attention_from_shapes(layer, [tuple(w.shape) for w in layer.weights], input_shape, output_shape)
