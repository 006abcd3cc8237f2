"""Model size and cost: parameter counts and multiply-accumulates (MACs) per layer.

The cost of a layer is the number of multiply-adds it performs for ONE input sample, read from
the input and output shapes the model records for that layer (its KerasTensors). With ``prod``
the product of the non-batch dimensions of a shape, ``k = prod(kernel_size)``:

=======================================  ======================================================
layer kind                               MACs per sample
=======================================  ======================================================
Dense (any input rank)                   ``prod(out) * C_in``
Conv1D/2D/3D (``groups = G``)            ``prod(out) * k * C_in / G``
DepthwiseConv1D/2D                       ``prod(out) * k``
SeparableConv1D/2D (multiplier ``m``)    ``P * C_in * m * k + P * C_in * m * filters``,
                                         ``P = prod(out) / filters`` output positions
Conv1D/2D/3DTranspose                    ``prod(in) * k * filters``
BlockDiagonalDense (K blocks)            ``prod(out) / units * sum_k in_k * out_k``
SimpleRNN / GRU / LSTM (``T`` steps)     ``T * gates * units * (C_in + units)``, gates 1 / 3 / 4
Bidirectional                            the sum of its two wrapped layers
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

Example:
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

from . import layers as _project_layers
from ._validation import check_keras_model
from .report import Report

logger = logging.getLogger(__name__)

__all__ = [
    "count_params",
    "layer_params",
    "flops",
    "layer_costs",
    "register_layer_cost",
    "LAYER_COSTS",
]

# layer class -> function(layer, input_shape, output_shape) -> MACs for one sample.
# Looked up along the class's MRO, so a subclass of a registered layer is costed like its base.
LAYER_COSTS: dict = {}


def register_layer_cost(*layer_classes):
    """Register a MAC counter for one or more layer classes (usable as a decorator).

    The function receives ``(layer, input_shape, output_shape)`` where the shapes include the
    batch dimension (``None``) and are tuples, or lists of tuples for layers with several
    inputs; it returns the number of multiply-adds for one sample.

    Args:
        *layer_classes: the ``keras.layers.Layer`` subclasses the function costs.

    Returns:
        A decorator that registers its function and returns it unchanged.

    Raises:
        TypeError: an argument is not a Layer subclass.

    Example:
        >>> import keras
        >>> from tf_groupsparse.metrics import register_layer_cost
        >>> class Scale(keras.layers.Layer):
        ...     def call(self, x):
        ...         return 2.0 * x
        >>> @register_layer_cost(Scale)
        ... def _scale_cost(layer, input_shape, output_shape):
        ...     return 0
    """
    for cls in layer_classes:
        if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
            raise TypeError(
                "register_layer_cost: Expected keras.layers.Layer subclasses. "
                f"Received: layer_class={cls!r}"
            )

    def decorator(fn):
        for cls in layer_classes:
            LAYER_COSTS[cls] = fn
        return fn

    return decorator


def _public(*names):
    """The keras.layers classes among `names` that this Keras version has."""
    return tuple(c for c in (getattr(keras.layers, n, None) for n in names) if c is not None)


def _known(shape, layer, what):
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(
            f"layer_costs: Expected layer {layer.name!r} to have a fully known {what} shape apart "
            f"from the batch axis (give the model's Input a fixed shape). Received: {what}_shape="
            f"{tuple(shape)}"
        )
    return dims


def _prod(shape, layer, what):
    return math.prod(_known(shape, layer, what))


def _channels_in(layer, input_shape):
    dims = _known(input_shape, layer, "input")
    first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return int(dims[0] if first else dims[-1])


def _kernel_size(layer):
    return math.prod(int(k) for k in layer.kernel_size)


def _zero(layer, input_shape, output_shape):
    return 0


def _dense(layer, input_shape, output_shape):
    return _prod(output_shape, layer, "output") * int(_known(input_shape, layer, "input")[-1])


def _conv(layer, input_shape, output_shape):
    c_in = _channels_in(layer, input_shape)
    groups = int(getattr(layer, "groups", 1) or 1)
    return _prod(output_shape, layer, "output") * _kernel_size(layer) * (c_in // groups)


def _depthwise(layer, input_shape, output_shape):
    return _prod(output_shape, layer, "output") * _kernel_size(layer)


def _separable(layer, input_shape, output_shape):
    c_mid = _channels_in(layer, input_shape) * int(layer.depth_multiplier)
    positions = _prod(output_shape, layer, "output") // int(layer.filters)
    return positions * c_mid * _kernel_size(layer) + positions * c_mid * int(layer.filters)


def _conv_transpose(layer, input_shape, output_shape):
    return _prod(input_shape, layer, "input") * _kernel_size(layer) * int(layer.filters)


_RNN_GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def _rnn(layer, input_shape, output_shape):
    dims = _known(input_shape, layer, "input")
    steps, c_in = int(dims[0]), int(dims[-1])
    gates = next(g for name, g in _RNN_GATES.items() if isinstance(layer, getattr(keras.layers, name)))
    return steps * gates * int(layer.units) * (c_in + int(layer.units))


def _bidirectional(layer, input_shape, output_shape):
    total = 0
    for inner in (layer.forward_layer, layer.backward_layer):
        fn = _lookup(inner)
        total += fn(inner, input_shape, output_shape) if fn is not None else 0
    return total


register_layer_cost(*_public("Dense"))(_dense)
register_layer_cost(*_public("Conv1D", "Conv2D", "Conv3D"))(_conv)
register_layer_cost(*_public("DepthwiseConv1D", "DepthwiseConv2D"))(_depthwise)
register_layer_cost(*_public("SeparableConv1D", "SeparableConv2D"))(_separable)
register_layer_cost(*_public("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"))(_conv_transpose)
register_layer_cost(*_public(*_RNN_GATES))(_rnn)
register_layer_cost(*_public("Bidirectional"))(_bidirectional)


@register_layer_cost(_project_layers.BlockDiagonalDense)
def _block_diagonal_dense(layer, input_shape, output_shape):
    positions = _prod(output_shape, layer, "output") // int(layer.units)
    return positions * sum(int(a) * int(b) for a, b in zip(layer.input_groups, layer.output_groups))


register_layer_cost(_project_layers.ChannelGather, _project_layers.ChannelSlice)(_zero)
register_layer_cost(
    *_public(
        "InputLayer", "BatchNormalization", "LayerNormalization", "GroupNormalization",
        "UnitNormalization", "Normalization", "Rescaling", "Embedding",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
        "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D",
        "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D",
        "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
        "Flatten", "Reshape", "Permute", "RepeatVector", "Identity",
        "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "AlphaDropout",
        "GaussianDropout", "GaussianNoise", "ActivityRegularization",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
        "UpSampling1D", "UpSampling2D", "UpSampling3D",
    )
)(_zero)


def _lookup(layer):
    for cls in type(layer).__mro__:
        if cls in LAYER_COSTS:
            return LAYER_COSTS[cls]
    return None


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
        fn = _lookup(layer)
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

    Example:
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

    Example:
        >>> import keras
        >>> from tf_groupsparse.metrics import flops
        >>> flops(keras.Sequential([keras.Input((4, 10)), keras.layers.Dense(3)]))
        120
    """
    return int(layer_costs(model).totals["macs"])


def count_params(model) -> int:
    """Number of scalars in all weights of `model` (trainable and non-trainable).

    Example:
        >>> import keras
        >>> from tf_groupsparse.metrics import count_params
        >>> count_params(keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)]))
        33
    """
    check_keras_model(model, owner="count_params")
    return int(sum(math.prod(w.shape) for w in model.weights))


def layer_params(model) -> dict:
    """Parameters of each layer, ``{name: count}``; nested models' layers as ``outer/inner``.

    Example:
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
