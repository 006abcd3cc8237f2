"""Model size and cost: parameter counts and multiply-accumulates (MACs) per layer.

The cost of a layer is the number of multiply-adds it performs for ONE input sample, read from
the input and output shapes the model records for that layer (its KerasTensors). With ``prod``
the product of the non-batch dimensions of a shape, ``k = prod(kernel_size)``:

=======================================  ======================================================
layer kind                               MACs per sample
=======================================  ======================================================
Dense (any input rank), EinsumDense     ``prod(out) * C_in`` (EinsumDense: equations that
                                         contract the input's last axis alone)
Conv1D/2D/3D (``groups = G``)            ``prod(out) * k * C_in / G``
DepthwiseConv1D/2D                       ``prod(out) * k``
SeparableConv1D/2D (multiplier ``m``)    ``P * C_in * m * k + P * C_in * m * filters``,
                                         ``P = prod(out) / filters`` output positions
Conv1D/2D/3DTranspose                    ``prod(in) * k * filters``
BlockDiagonalDense (K blocks)            ``prod(out) / units * sum_k in_k * out_k``
SimpleRNN / GRU / LSTM (``T`` steps)     ``T * gates * units * (C_in + units)``, gates 1 / 3 / 4
Bidirectional                            the sum of its two wrapped layers
TimeDistributed (``T`` steps)            ``T`` times the wrapped layer's cost
Attention / AdditiveAttention            ``T S (C_q + C_v)`` (scores and weighted values)
MultiHeadAttention (``H`` heads, key /   ``T D_q H d_k + S D_k H d_k + S D_v H d_v``
value dims ``d_k, d_v``; ``T`` query,    (projections) ``+ T S H (d_k + d_v)`` (scores and
``S`` key positions)                     weighted values) ``+ T H d_v D_o`` (output)
GroupQueryAttention (``H_q`` query,      ``T D H_q d + 2 S D H_kv d`` (projections; a gate adds
``H_kv`` key/value heads, head dim d)    ``T D H_q d``) ``+ 2 T S H_q d + T H_q d D``
ChannelGather / ChannelSlice             0 (data movement)
BatchNormalization, Layer/Group/Unit     0: a per-element scale and shift, which the TFLite
Normalization                            converter folds into the neighbouring linear layer
Pooling, Add/Concatenate and the other   0: comparisons, additions and data movement are not
merges, Flatten/Reshape, activations,    multiply-adds
Dropout, padding, Embedding (a lookup)
anything else                            0, with a note in the report and a log message
=======================================  ======================================================

Biases are additions and are not counted. FLOPs are often quoted as ``2 * MACs``; this module
reports MACs and says so. Nested models (a Sequential inside a functional model) are walked
recursively and their layers are named ``outer/inner``. A layer called at several places of a
graph (a shared layer) is costed at its first call only.

Users can teach the counter a new layer kind with :func:`register_layer_cost`.

Examples:
    >>> import keras
    >>> from tf_groupsparse.metrics import flops, count_params
    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same")])
    >>> flops(m)                       # 8 * 8 * 4 outputs, each 3 * 3 * 3 multiply-adds
    6912
    >>> count_params(m)                # 3 * 3 * 3 * 4 weights + 4 biases
    112
"""

from __future__ import annotations

import logging
import math

import keras

from ._validation import check_keras_model
from .graph.kinds import cost_for, register_layer_kind
from .report import Report

logger = logging.getLogger(__name__)

__all__ = ["count_params", "layer_params", "flops", "layer_costs", "register_layer_cost"]


def register_layer_cost(*layer_classes):
    """Register a MAC counter for one or more layer classes (usable as a decorator).

    The function receives ``(layer, input_shape, output_shape)`` where the shapes include the
    batch dimension (``None``) and are tuples, or lists of tuples for layers with several
    inputs; it returns the number of multiply-adds for one sample. It is stored as the ``cost``
    of the classes' entries in the layer-kind registry (:mod:`tf_groupsparse.graph.kinds`), which
    the budget pruner ranks by too.

    Args:
        *layer_classes: the ``keras.layers.Layer`` subclasses the function costs.

    Returns:
        A decorator that registers its function and returns it unchanged.

    Raises:
        TypeError: an argument is not a Layer subclass.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import kinds
        >>> from tf_groupsparse.metrics import register_layer_cost
        >>> class Scale(keras.layers.Layer):
        ...     def call(self, x):
        ...         return 2.0 * x
        >>> @register_layer_cost(Scale)
        ... def _scale_cost(layer, input_shape, output_shape):
        ...     return 0
        >>> _ = kinds.REGISTRY.pop(Scale)
    """
    for cls in layer_classes:
        if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
            raise TypeError(
                "register_layer_cost: Expected keras.layers.Layer subclasses. "
                f"Received: layer_class={cls!r}"
            )

    def decorator(fn):
        for cls in layer_classes:
            register_layer_kind(cls, cost=fn)
        return fn

    return decorator


def _shape_of(tensors):
    if isinstance(tensors, (list, tuple)):
        shapes = [tuple(t.shape) for t in tensors]
        return shapes[0] if len(shapes) == 1 else shapes
    if isinstance(tensors, dict):
        return [tuple(t.shape) for t in tensors.values()]
    return tuple(tensors.shape)


def _io_shapes(layer):
    try:
        inputs, outputs = layer.input, layer.output
    except (AttributeError, ValueError) as exc:
        raise ValueError(
            "layer_costs: Expected a functional or Sequential model whose layers were called on "
            f"symbolic inputs (so their shapes are recorded). Received: layer {layer.name!r} with "
            f"no recorded input/output ({exc})"
        ) from None
    return _shape_of(inputs), _shape_of(outputs)


def _is_submodel(layer):
    return isinstance(layer, keras.Model)


def _rows(model, prefix=""):
    rows = []
    for layer in model.layers:
        name = prefix + layer.name
        if _is_submodel(layer):
            rows.extend(_rows(layer, prefix=name + "/"))
            continue
        input_shape, output_shape = _io_shapes(layer)
        row = {
            "layer": name,
            "kind": type(layer).__name__,
            "output_shape": str(output_shape),
            "params": int(layer.count_params()) if layer.built else 0,
            "macs": 0,
        }
        fn = cost_for(layer)
        if fn is None:
            logger.warning(
                "layer_costs: layer %r of kind %s has no registered cost; counted as 0 MACs "
                "(register one with tf_groupsparse.metrics.register_layer_cost)",
                name, type(layer).__name__,
            )
            row["note"] = "unknown kind: 0 MACs"
        else:
            row["macs"] = int(fn(layer, input_shape, output_shape))
        rows.append(row)
    return rows


def layer_costs(model) -> Report:
    """Per-layer parameters and multiply-adds (MACs) of `model` for one input sample.

    MACs follow the table in this module's docstring, e.g. ``prod(out) * k * C_in / G`` for a
    grouped convolution.

    Args:
        model: a built functional or Sequential ``keras.Model`` with fixed input shapes.

    Returns:
        A :class:`~tf_groupsparse.report.Report` titled "Layer costs" with one row per layer
        (``layer``, ``kind``, ``output_shape``, ``params``, ``macs`` and ``note`` for unknown
        kinds) and totals ``params``, ``trainable_params`` and ``macs``.

    Raises:
        TypeError: `model` is not a ``keras.Model``.
        ValueError: the model is unbuilt, subclassed (no recorded shapes) or has a layer whose
            cost depends on a dimension that is unknown (``None``).

    Examples:
        >>> import keras
        >>> from tf_groupsparse.metrics import layer_costs
        >>> m = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)])
        >>> layer_costs(m).totals["macs"]
        30
    """
    check_keras_model(model, owner="layer_costs")
    rows = _rows(model)
    trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
    totals = {
        "params": count_params(model),
        "trainable_params": trainable,
        "macs": sum(r["macs"] for r in rows),
    }
    meta = {"model": model.name, "unit": "multiply-adds per sample (FLOPs ~ 2 x MACs)"}
    return Report("Layer costs", rows, totals=totals, meta=meta)


def flops(model) -> int:
    """Total multiply-adds (MACs) of `model` for one input sample.

    The name follows common usage; the number is multiply-adds, so FLOPs ~ ``2 * flops(model)``.
    See :func:`layer_costs` for the per-layer rule and the errors raised.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.metrics import flops
        >>> flops(keras.Sequential([keras.Input((4, 10)), keras.layers.Dense(3)]))
        120
    """
    return int(layer_costs(model).totals["macs"])


def count_params(model) -> int:
    """Number of scalars in all weights of `model` (trainable and non-trainable).

    Examples:
        >>> import keras
        >>> from tf_groupsparse.metrics import count_params
        >>> count_params(keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)]))
        33
    """
    check_keras_model(model, owner="count_params")
    return int(sum(math.prod(w.shape) for w in model.weights))


def layer_params(model) -> dict:
    """Parameters of each layer, ``{name: count}``; nested models' layers as ``outer/inner``.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.metrics import layer_params
        >>> m = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3, name="d")])
        >>> layer_params(m)
        {'d': 33}
    """
    check_keras_model(model, owner="layer_params")

    def walk(m, prefix):
        out = {}
        for layer in m.layers:
            name = prefix + layer.name
            if _is_submodel(layer):
                out.update(walk(layer, name + "/"))
            else:
                out[name] = int(layer.count_params()) if layer.built else 0
        return out

    return walk(model, "")
