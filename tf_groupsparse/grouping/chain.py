"""The layer chain the grouping passes walk: which layers pass channels through unchanged.

A *linear chain* is a model whose layers each read the previous layer's output (a Sequential
model, or a functional model without branches). Its layers play one of four roles:

- ``"weight"``: Dense, Conv1D, Conv2D (a kernel ``(*S, C_in, C_out)``);
- ``"channelwise"``: BatchNormalization on the last axis (per-channel parameters to permute);
- ``"pass"``: layers that act on each channel alike or are permutation-equivariant over the
  channel axis (activations, dropout, noise, pooling, global pooling, Identity);
- ``"flatten"``: Flatten, which tiles the channel axis over the spatial positions
  (flattened index ``p * C + c`` holds channel ``c``).

Every other layer kind raises ValueError naming the layer.
"""

from __future__ import annotations

import keras

from ..graph.kinds import channel_role

L = keras.layers
ROLES = ("weight", "channelwise", "pass", "flatten")


def role(layer, owner):
    """Role of `layer` in a chain (see the module docstring); raise ValueError for other kinds.

    The role comes from the layer-kind registry (:func:`tf_groupsparse.graph.kinds.channel_role`).
    """
    found = channel_role(layer)
    if found == "channelwise":
        rank = len(layer.input.shape)
        if layer.axis not in (-1, rank - 1):
            raise ValueError(
                f"{owner}: Expected BatchNormalization over the last (channel) axis. "
                f"Received: layer {layer.name!r} with axis={layer.axis}"
            )
    if found == "pass" and getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(
            f"{owner}: Expected data_format='channels_last'. Received: layer {layer.name!r} "
            f"with data_format={layer.data_format!r}"
        )
    if found is None:
        raise ValueError(
            f"{owner}: Expected a chain of layers that EM grouping understands (Dense, Conv1D, Conv2D, "
            "BatchNormalization, Flatten, activations, dropout, pooling); register the layer kind "
            f"or group a model without it. Received: layer {layer.name!r} of type {type(layer).__name__}"
        )
    return found


def linear_chain(model, owner):
    """Layers of `model` in order, after checking that each reads the previous one's output.

    Raises:
        ValueError: the model has several inputs/outputs or a branch (not a linear chain).
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"{owner}: Expected a model with one input and one output (a linear chain). "
            f"Received: {len(model.inputs)} inputs and {len(model.outputs)} outputs in {model.name!r}"
        )
    layers = [layer for layer in model.layers if not isinstance(layer, L.InputLayer)]
    previous = model.inputs[0]
    for layer in layers:
        try:
            inbound = layer.input
        except (AttributeError, ValueError) as exc:  # shared layer / several calls
            raise ValueError(
                f"{owner}: Expected every layer to be called once. Received: layer {layer.name!r} ({exc})"
            ) from None
        if inbound is not previous:
            raise ValueError(
                f"{owner}: Expected a linear chain (each layer reads the previous layer's output); "
                f"use a Sequential model or a functional model without branches. Received: layer "
                f"{layer.name!r} does not read the output of the layer before it"
            )
        previous = layer.output
    if previous is not model.outputs[0]:
        raise ValueError(f"{owner}: Expected the last layer's output to be the model output. Received: model {model.name!r}")
    return layers


def channel_positions(layer):
    """Number of spatial positions a Flatten tiles the channel axis over (``prod`` of its input's spatial dims)."""
    shape = layer.input.shape[1:]
    n = 1
    for d in shape[:-1]:
        n *= int(d)
    return n
