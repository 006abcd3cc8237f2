"""The two-path model of one planting step, and merging it back into plain layers.

While a step trains, the planted layer is two standard layers: the old one (``trainable=False``)
and a new one with ``k`` channels; every layer between it and its consumer runs on two paths
(old channels / new channels); the consumer becomes its old copy (frozen, linear) plus a new
bias-free layer that reads the new channels (zero-initialised), summed before the consumer's
activation. The optimizer only sees the new layers, so an update cannot touch an old weight.
After the step :func:`merge` concatenates the parts into standard layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from .data import is_dataset


def _clone(layer, trainable, name, **overrides):
    config = layer.get_config()
    config.update(overrides)
    config["name"] = name
    clone = layer.__class__.from_config(config)
    clone.trainable = trainable
    return clone


def _frozen_copy(layer, x):
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    y = clone(x)
    clone.set_weights(layer.get_weights())
    clone.trainable = False
    return clone, y


def width(layer):
    return layer.units if isinstance(layer, keras.layers.Dense) else layer.filters


def _grown_config(layer, k):
    config = layer.get_config()
    config.pop("name", None)
    config["units" if isinstance(layer, keras.layers.Dense) else "filters"] = k
    return config


@dataclass
class Planted:
    """A student with `k` new channels in one layer, as a trainable two-path model."""

    model: keras.Model
    index: int
    consumer: int
    new_layer: keras.layers.Layer
    new_bn: dict  # index -> new BN layer for the new channels
    new_rows: keras.layers.Layer
    spatial: int  # positions per channel in the consumer's input (Flatten), 1 otherwise


def build_planted(layers, input_shape, index, consumer, k):
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for layer in layers[:index]:
        _, x = _frozen_copy(layer, x)
    grown = layers[index]
    _, old = _frozen_copy(grown, x)
    config = _grown_config(grown, k)
    config["name"] = f"{grown.name}__planted"
    new_layer = grown.__class__.from_config(config)
    new = new_layer(x)
    new_bn = {}
    for m in range(index + 1, consumer):
        layer = layers[m]
        _, old = _frozen_copy(layer, old)
        if isinstance(layer, keras.layers.BatchNormalization):
            bn = _clone(layer, True, f"{layer.name}__planted")
            new = bn(new)
            new_bn[m] = bn
        else:
            new = _clone(layer, True, f"{layer.name}__planted")(new)
    target = layers[consumer]
    in_dim = int(target.input.shape[-1])
    spatial = in_dim // width(grown)
    old_part = _clone(target, False, f"{target.name}__old", activation="linear")
    y_old = old_part(old)
    old_part.set_weights(target.get_weights())
    if isinstance(target, keras.layers.Dense):
        new_rows = keras.layers.Dense(
            target.units, use_bias=False, kernel_initializer="zeros", name=f"{target.name}__planted"
        )
    else:
        new_rows = keras.layers.Conv2D(
            target.filters, target.kernel_size, strides=target.strides, padding=target.padding,
            dilation_rate=target.dilation_rate, use_bias=False, kernel_initializer="zeros",
            name=f"{target.name}__planted",
        )
    y = keras.layers.Add(name=f"{target.name}__sum")([y_old, new_rows(new)])
    y = keras.layers.Activation(target.activation, name=f"{target.name}__activation")(y)
    for layer in layers[consumer + 1:]:
        _, y = _frozen_copy(layer, y)
    model = keras.Model(inputs, y)
    return Planted(model, index, consumer, new_layer, new_bn, new_rows, spatial)


def recalibrate(planted, data, batch_size):
    """Set the new channels' BatchNormalization moving statistics to their exact data statistics.

    Training normalizes the new channels with batch statistics; a few epochs leave the moving
    averages near their initial values, so they are re-estimated on the training data.
    """
    for bn in planted.new_bn.values():
        probe = keras.Model(planted.model.inputs[0], bn.input)
        total, total_sq, count = 0.0, 0.0, 0
        batches = data if is_dataset(data) else (
            (data[0][i:i + batch_size],) for i in range(0, len(data[0]), batch_size)
        )
        for batch in batches:
            h = keras.ops.convert_to_numpy(probe(batch[0], training=False)).astype("float64")
            h = h.reshape(-1, h.shape[-1])
            total = total + h.sum(axis=0)
            total_sq = total_sq + (h**2).sum(axis=0)
            count += h.shape[0]
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0)
        bn.moving_mean.assign(mean.astype("float32"))
        bn.moving_variance.assign(var.astype("float32"))


def merge(layers, input_shape, planted, k, name):
    """A plain chain model with the planted channels merged into standard layers."""
    index, consumer = planted.index, planted.consumer
    weights = [layer.get_weights() for layer in layers]
    grown = layers[index]
    weights[index] = [
        np.concatenate([w_old, w_new], axis=-1)
        for w_old, w_new in zip(weights[index], planted.new_layer.get_weights())
    ]
    for m, bn in planted.new_bn.items():
        weights[m] = [np.concatenate([a, b], axis=-1) for a, b in zip(weights[m], bn.get_weights())]
    old_kernel, *rest = weights[consumer]
    new_kernel = planted.new_rows.get_weights()[0]
    old_width = width(grown)
    if isinstance(layers[consumer], keras.layers.Dense):
        units = old_kernel.shape[-1]
        s = planted.spatial
        old_k = old_kernel.reshape(s, old_width, units)
        new_k = new_kernel.reshape(s, k, units)
        kernel = np.concatenate([old_k, new_k], axis=1).reshape(s * (old_width + k), units)
    else:
        kernel = np.concatenate([old_kernel, new_kernel], axis=-2)
    weights[consumer] = [kernel] + rest

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for m, layer in enumerate(layers):
        config = layer.get_config()
        if m == index:
            config = _grown_config(layer, old_width + k)
            config["name"] = layer.name
        clone = layer.__class__.from_config(config)
        x = clone(x)
        clone.set_weights(weights[m])
        clone.trainable = layer.trainable
    return keras.Model(inputs, x, name=name)


def merge_identity(layers, input_shape, name):
    """A plain copy of the chain (so the user's model is never touched)."""
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for layer in layers:
        clone = layer.__class__.from_config(layer.get_config())
        x = clone(x)
        clone.set_weights(layer.get_weights())
        clone.trainable = layer.trainable
    return keras.Model(inputs, x, name=name)
