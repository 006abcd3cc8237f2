"""One handler per layer kind: how a layer maps, couples and stores channels.

A handler has two methods:

- ``trace(node, inputs, ctx) -> outputs``: `inputs` is one integer array per input tensor (the
  channel variables of its last axis); return one array per output tensor. Use ``ctx`` to create
  variables (``ctx.own(node, n)``), couple them (``ctx.couple(a, b)``), freeze them
  (``ctx.freeze(ids)``: never removed), mark them lossy (``ctx.mark_lossy(ids)``: removing them
  changes a cross-channel normalization) and say where they live in weights
  (``ctx.add_slice(node, variable, axis, ids, role)``). ``ctx.inner(node, name, n)`` creates
  removable units of an inner axis that no tensor carries (attention heads); they reach
  ``rebuild`` as ``keep.internal[name]``. ``ctx.in_shapes`` / ``ctx.out_shapes`` hold the static
  shapes of the call, ``ctx.arguments`` maps argument positions and keywords (``0``,
  ``"value"``, ...) of single tensors to indices of `inputs`, ``ctx.argument_spans`` every
  argument to ``(first index, count)`` (a list of tensors), ``ctx.argument_values`` the
  arguments that hold no tensor (an index, a flag) to their values. Raise :class:`Unsupported` when the layer's settings
  cannot be handled (the build then raises or freezes, as the caller chose).
- ``rebuild(layer, config, keep) -> config``: the layer config after removal; `keep.owned`,
  ``keep.inputs[i]`` and ``keep.outputs[i]`` are boolean masks of the kept channels.

The registry (:mod:`tf_groupsparse.graph.kinds`) says which handler serves which layer class
(the most specific registered class of the layer's MRO); add your own with
:func:`tf_groupsparse.graph.register_handler` or ``kinds.register_layer_kind``. A handler whose
weights cannot be sliced along one axis (a block-diagonal kernel) also defines
``rebuild_weights(layer, keep) -> weights`` for the new layer.

Examples:
    >>> import keras
    >>> from tf_groupsparse.graph import build_graph
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
    ...                       keras.layers.ReLU(name="act"), keras.layers.Dense(2, name="out")])
    >>> print(build_graph(m).group("h", 0))
    prune out channels of h [0] => in channels of act [0], in channels of out [0]
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "Handler", "Unsupported", "Identity", "Activation", "Softmax", "Permute", "Dense", "Conv",
    "ConvTranspose", "Depthwise", "Separable", "BatchNorm", "LayerNorm", "PReLU", "Normalization",
    "Rescaling", "PerChannel", "Merge", "Concatenate", "Flatten", "Reshape", "Embedding",
    "ChannelScale", "ShapeOp", "GetItem", "GroupNorm",
]


class Unsupported(Exception):
    """Raised by a handler when the layer's settings cannot be traced (e.g. channels_first).

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import build_graph
        >>> x = keras.Input((2, 6, 6))
        >>> y = keras.layers.Conv2D(3, 1, data_format="channels_first", name="c")(x)
        >>> build_graph(keras.Model(x, y), unsupported="freeze").node("c").frozen
        True
        >>> build_graph(keras.Model(x, y))   # the Conv handler raised Unsupported
        Traceback (most recent call last):
        ...
        ValueError: build_graph: ... Conv2D: data_format='channels_first' (only channels_last ...
    """


def _channels_last(layer):
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last"):
        raise Unsupported(f"data_format={fmt!r} (only channels_last is supported)")


def _last_axis(axis, rank):
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


class Handler:
    """Base handler: subclasses implement ``trace``; ``rebuild`` keeps the config by default.

    Examples:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.graph import build_graph, kinds, prune_channels
        >>> class Twice(keras.layers.Layer):               # [x, x] along the channels
        ...     def call(self, x):
        ...         return keras.ops.concatenate([x, x], axis=-1)
        >>> class TwiceHandler(Handler):
        ...     kind = "tile"
        ...     def trace(self, node, inputs, ctx):         # outputs c and C + c are input c
        ...         return [np.concatenate([inputs[0], inputs[0]])]
        >>> kinds.register_layer_kind(Twice, handler=TwiceHandler())
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
        ...                       Twice(name="twice"), keras.layers.Dense(2, name="out")])
        >>> print(build_graph(m).group("h", 1))
        prune out channels of h [1] => in channels of twice [1], in channels of out [1, 4]
        >>> tuple(prune_channels(m, {"h": [1]}).get_layer("out").kernel.shape)
        (4, 2)
        >>> _ = kinds.REGISTRY.pop(Twice)                   # leave the global registry as it was
    """

    kind = "identity"

    def trace(self, node, inputs, ctx):  # pragma: no cover - interface
        raise NotImplementedError

    def rebuild(self, layer, config, keep):
        return config


class Identity(Handler):
    """Elementwise and spatial layers: output channel c is input channel c (activations, dropout,
    noise, pooling, global pooling, padding, cropping, upsampling, repeat)."""

    def __init__(self, lossy=False):
        self.lossy = lossy

    def trace(self, node, inputs, ctx):
        _channels_last(node.layer)
        if self.lossy:
            ctx.mark_lossy(inputs[0])
        return [inputs[0]]


class Activation(Identity):
    """Activation layers; softmax-like activations normalize across channels (lossy)."""

    LOSSY = ("softmax", "log_softmax")

    def trace(self, node, inputs, ctx):
        name = getattr(node.layer.activation, "__name__", str(node.layer.activation))
        if name in self.LOSSY:
            ctx.mark_lossy(inputs[0])
        return [inputs[0]]


class Softmax(Identity):
    """Softmax over the channel axis couples all channels' values (lossy); other axes: identity."""

    def trace(self, node, inputs, ctx):
        if _last_axis(node.layer.axis, len(ctx.in_shapes[0])):
            ctx.mark_lossy(inputs[0])
        return [inputs[0]]


class Permute(Identity):
    """Permute that keeps the channel axis last is channel-preserving."""

    def trace(self, node, inputs, ctx):
        dims = tuple(node.layer.dims)
        if dims[-1] != len(dims):
            raise Unsupported(f"dims={dims} moves the channel axis")
        return [inputs[0]]


class PerChannel(Handler):
    """Layers with per-channel parameters and channel-preserving outputs (BatchNormalization,
    PReLU, Normalization): every weight whose last axis has C entries is sliced there."""

    kind = "identity"

    def _check(self, layer, rank):
        pass

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        self._check(layer, len(ctx.in_shapes[0]))
        for v in layer.weights:
            shape = tuple(v.shape)
            if shape and shape[-1] == len(x) and len(x) > 1:
                ctx.add_slice(node, v, len(shape) - 1, x, "param")
        return [x]


class BatchNorm(PerChannel):
    def _check(self, layer, rank):
        if not _last_axis(layer.axis, rank):
            raise Unsupported(f"axis={layer.axis} is not the channel (last) axis")


class LayerNorm(PerChannel):
    """LayerNormalization over the last axis: per-channel gamma/beta; its statistics mix
    channels, so removing a channel is lossy (allowed in prune_channels, never in shrink)."""

    def _check(self, layer, rank):
        if not _last_axis(layer.axis, rank):
            raise Unsupported(f"axis={layer.axis} is not only the channel (last) axis")

    def trace(self, node, inputs, ctx):
        ctx.mark_lossy(inputs[0])
        return super().trace(node, inputs, ctx)


class PReLU(PerChannel):
    def _check(self, layer, rank):
        shared = layer.shared_axes or ()
        if rank - 1 in shared or -1 in shared:
            raise Unsupported("shared_axes includes the channel axis")


class Normalization(PerChannel):
    """Normalization with per-channel mean/variance (weights, and the config when given)."""

    def _check(self, layer, rank):
        if not _last_axis(layer.axis, rank):
            raise Unsupported(f"axis={layer.axis} is not the channel (last) axis")

    def rebuild(self, layer, config, keep):
        for key in ("mean", "variance"):
            value = config.get(key)
            if value is not None and np.ndim(value) and np.shape(value)[-1] == len(keep.inputs[0]):
                config[key] = np.asarray(value)[..., keep.inputs[0]].tolist()
        return config


class Rescaling(Identity):
    """Rescaling: per-channel scale/offset lists in the config are sliced."""

    def rebuild(self, layer, config, keep):
        for key in ("scale", "offset"):
            value = config.get(key)
            if isinstance(value, (list, tuple)) and np.shape(value)[-1] == len(keep.inputs[0]):
                config[key] = np.asarray(value)[..., keep.inputs[0]].tolist()
        return config


class Dense(Handler):
    """Dense on inputs of any rank: kernel (C_in, units), last axis."""

    kind = "consumes"

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        out = ctx.own(node, layer.units)
        ctx.add_slice(node, layer.kernel, 0, x, "consume")
        ctx.add_slice(node, layer.kernel, 1, out, "produce")
        if layer.use_bias:
            ctx.add_slice(node, layer.bias, 0, out, "param")
        return [out]

    def rebuild(self, layer, config, keep):
        config["units"] = int(keep.owned.sum())
        return config


class Conv(Handler):
    """Conv1D/2D/3D, kernel (*S, C_in / groups, filters). With ``groups > 1`` the channels of a
    conv group (its inputs and outputs) are coupled, so only whole conv groups are removed."""

    kind = "consumes"

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        _channels_last(layer)
        rank = len(layer.kernel.shape)
        out = ctx.own(node, layer.filters)
        groups = int(getattr(layer, "groups", 1) or 1)
        if groups == 1:
            ctx.add_slice(node, layer.kernel, rank - 2, x, "consume")
        else:
            cin, cout = len(x) // groups, layer.filters // groups
            for j in range(groups):
                members = np.concatenate([x[j * cin:(j + 1) * cin], out[j * cout:(j + 1) * cout]])
                ctx.couple(members[:1].repeat(len(members)), members)
            node.meta["group_size"] = cout
        ctx.add_slice(node, layer.kernel, rank - 1, out, "produce")
        if layer.use_bias:
            ctx.add_slice(node, layer.bias, 0, out, "param")
        return [out]

    def rebuild(self, layer, config, keep):
        config["filters"] = int(keep.owned.sum())
        if "group_size" in keep.meta:
            config["groups"] = config["filters"] // keep.meta["group_size"]
        return config


class ConvTranspose(Conv):
    """Conv1D/2D/3DTranspose, kernel (*S, filters, C_in)."""

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        _channels_last(layer)
        rank = len(layer.kernel.shape)
        out = ctx.own(node, layer.filters)
        ctx.add_slice(node, layer.kernel, rank - 1, x, "consume")
        ctx.add_slice(node, layer.kernel, rank - 2, out, "produce")
        if layer.use_bias:
            ctx.add_slice(node, layer.bias, 0, out, "param")
        return [out]


class Depthwise(Handler):
    """DepthwiseConv1D/2D, kernel (*S, C, m): output channel c*m + j comes from input channel c,
    so both are one group; the kernel slices are per-channel parameters."""

    kind = "depthwise"

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        _channels_last(layer)
        rank = len(layer.kernel.shape)
        out = np.repeat(x, layer.depth_multiplier)
        ctx.add_slice(node, layer.kernel, rank - 2, x, "param")
        if layer.use_bias:
            ctx.add_slice(node, layer.bias, 0, out, "param")
        return [out]


class Separable(Conv):
    """SeparableConv1D/2D: depthwise kernel (*S, C, m), pointwise kernel (1.., C*m, filters)."""

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        _channels_last(layer)
        rank = len(layer.pointwise_kernel.shape)
        out = ctx.own(node, layer.filters)
        ctx.add_slice(node, layer.depthwise_kernel, rank - 2, x, "consume")
        ctx.add_slice(node, layer.pointwise_kernel, rank - 2, np.repeat(x, layer.depth_multiplier), "consume")
        ctx.add_slice(node, layer.pointwise_kernel, rank - 1, out, "produce")
        if layer.use_bias:
            ctx.add_slice(node, layer.bias, 0, out, "param")
        return [out]


class Embedding(Handler):
    """Embedding: output channels are the columns of the (vocab, output_dim) matrix; its integer
    input is not a channel axis and is frozen."""

    kind = "consumes"

    def trace(self, node, inputs, ctx):
        layer = node.layer
        ctx.freeze(inputs[0])
        out = ctx.own(node, layer.output_dim)
        ctx.add_slice(node, layer.embeddings, 1, out, "produce")
        reverse = getattr(layer, "reverse_embeddings", None)  # keras-hub's untied ReversibleEmbedding
        if reverse is not None and not getattr(layer, "tie_weights", True):
            ctx.add_slice(node, reverse, 0, out, "param")
        return [out]

    def rebuild(self, layer, config, keep):
        config["output_dim"] = int(keep.owned.sum())
        return config


class Merge(Handler):
    """Add, Subtract, Multiply, Average, Maximum, Minimum: channel c of every input is coupled
    (inputs with one broadcast channel are left alone)."""

    kind = "coupled"

    def trace(self, node, inputs, ctx):
        width = max(len(x) for x in inputs)
        full = [x for x in inputs if len(x) == width]
        if any(len(x) not in (1, width) for x in inputs):
            raise Unsupported(f"input channel counts {[len(x) for x in inputs]} do not broadcast")
        for x in full[1:]:
            ctx.couple(full[0], x)
        return [full[0]]


class Concatenate(Merge):
    """Concatenate on the channel axis stacks the inputs' channels (index offsets); on another
    axis it couples them like Add."""

    kind = "concat"

    def trace(self, node, inputs, ctx):
        if _last_axis(node.layer.axis, len(ctx.in_shapes[0])):
            return [np.concatenate(inputs)]
        return super().trace(node, inputs, ctx)


class Flatten(Handler):
    """Flatten (channels_last): output feature c + C*p is input channel c at position p."""

    kind = "tile"

    def trace(self, node, inputs, ctx):
        _channels_last(node.layer)
        spatial = ctx.in_shapes[0][1:-1]
        if any(d is None for d in spatial):
            raise Unsupported(f"input shape {ctx.in_shapes[0]} has unknown spatial size")
        return [np.tile(inputs[0], math.prod(spatial))]


class Reshape(Handler):
    """Reshape: in channels-last flat order, input channel i and output channel k share flat
    positions only when i = k (mod gcd(C_in, C_out)), so those are coupled. After removal the
    last target dimension shrinks; the others stay."""

    kind = "tile"

    def trace(self, node, inputs, ctx):
        x = inputs[0]
        in_shape = ctx.in_shapes[0]
        target = list(node.layer.target_shape)
        if any(d is None for d in in_shape[1:]):
            raise Unsupported(f"input shape {in_shape} is not fully known")
        total = math.prod(in_shape[1:])
        if -1 in target:
            known = math.prod(d for d in target if d != -1)
            target[target.index(-1)] = total // known
        node.meta["target_shape"] = tuple(target)
        g = math.gcd(len(x), target[-1])
        ctx.couple(np.tile(x[:g], len(x) // g), x)
        return [np.tile(x[:g], target[-1] // g)]

    def rebuild(self, layer, config, keep):
        config["target_shape"] = tuple(keep.meta["target_shape"][:-1]) + (int(keep.outputs[0].sum()),)
        return config


class ChannelScale(PerChannel):
    """A layer that scales each channel by its own weight (ConvNeXt's LayerScale): per-channel
    slices, and a config entry that holds the channel count (``projection_dim``) follows."""

    KEYS = ("projection_dim", "dim", "channels")

    def rebuild(self, layer, config, keep):
        width = len(keep.inputs[0])
        for key in self.KEYS:
            if config.get(key) == width:
                config[key] = int(keep.inputs[0].sum())
        return config


class ShapeOp(Handler):
    """keras.ops.reshape / transpose called in a functional graph: channel-preserving when the
    last axis stays last and keeps its size; anything else is unsupported."""

    kind = "identity"

    def trace(self, node, inputs, ctx):
        axes = getattr(node.layer, "axes", None)
        if axes is not None and list(axes)[-1] not in (-1, len(ctx.in_shapes[0]) - 1):
            raise Unsupported(f"axes={tuple(axes)} moves the channel axis")
        if ctx.out_shapes[0][-1] != ctx.in_shapes[0][-1]:
            raise Unsupported(f"the last axis changes from {ctx.in_shapes[0][-1]} to {ctx.out_shapes[0][-1]}")
        return [inputs[0]]


class GetItem(Handler):
    """``x[...]`` in a functional graph: channel-preserving when the index leaves the last axis
    whole (``x[:, 0]``, ``x[:, 0, :]``, ``x[..., 1:, :]``); any other index is unsupported."""

    kind = "identity"

    def trace(self, node, inputs, ctx):
        key = ctx.argument_values.get(1, ctx.argument_values.get("key", ()))
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            after = [k for k in key[key.index(Ellipsis) + 1:] if k is not None]
            whole = not after or after[-1] == slice(None)
        else:
            consumed = [k for k in key if k is not None]
            whole = len(consumed) < len(ctx.in_shapes[0]) or consumed[-1] == slice(None)
        if not whole or key[-1:] == (None,) or ctx.out_shapes[0][-1] != ctx.in_shapes[0][-1]:
            raise Unsupported(f"index {key!r} does not keep the channel (last) axis whole")
        return [inputs[0]]


class GroupNorm(PerChannel):
    """GroupNormalization on the channel axis: the channels of one normalization group are
    coupled (only whole groups go, which leaves the other groups' statistics as they were);
    gamma and beta are per-channel slices."""

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        if not _last_axis(layer.axis, len(ctx.in_shapes[0])):
            raise Unsupported(f"axis={layer.axis} is not the channel (last) axis")
        size = len(x) // int(layer.groups)
        for j in range(int(layer.groups)):
            members = x[j * size:(j + 1) * size]
            ctx.couple(np.repeat(members[:1], size), members)
        node.meta["group_size"] = size
        return super().trace(node, inputs, ctx)

    def rebuild(self, layer, config, keep):
        config["groups"] = int(keep.inputs[0].sum()) // keep.meta["group_size"]
        return config
