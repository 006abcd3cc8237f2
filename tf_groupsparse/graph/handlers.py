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
  argument to ``(first index, count)`` (a list of tensors). Raise :class:`Unsupported` when the layer's settings
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

import keras
import numpy as np

__all__ = [
    "Handler", "Unsupported", "Identity", "Activation", "Softmax", "Permute", "Dense", "Conv",
    "ConvTranspose", "Depthwise", "Separable", "BatchNorm", "LayerNorm", "PReLU", "Normalization",
    "Rescaling", "PerChannel", "Merge", "Concatenate", "Flatten", "Reshape", "Embedding",
    "BlockDiagonalDense", "ChannelGather", "ChannelSlice", "ChannelScale", "ShapeOp", "MultiHeadAttention",
    "GroupQueryAttention", "EinsumDense", "GroupNorm", "DotAttention", "Recurrent", "Bidirectional", "TimeDistributed",
]


class Unsupported(Exception):
    """Raised by a handler when the layer's settings cannot be traced (e.g. channels_first)."""


def _channels_last(layer):
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last"):
        raise Unsupported(f"data_format={fmt!r} (only channels_last is supported)")


def _last_axis(axis, rank):
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


class Handler:
    """Base handler: subclasses implement ``trace``; ``rebuild`` keeps the config by default."""

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


class BlockDiagonalDense(Handler):
    """tf_groupsparse's BlockDiagonalDense: input block k feeds only output block k. Each block's
    kernel rows read its input channels, its columns produce its output channels; removing
    channels can make the blocks unequal, and the rebuilt layer then uses the "split" form."""

    kind = "consumes"

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        out = ctx.own(node, layer.units)
        r = c = 0
        for k, (a, b) in enumerate(zip(layer.input_groups, layer.output_groups)):
            if a and b:
                if layer.equal_blocks:
                    ctx.add_slice(node, layer.kernel, 0, x[r:r + a], "consume", index=(k,))
                    ctx.add_slice(node, layer.kernel, 1, out[c:c + b], "produce", index=(k,))
                else:
                    ctx.add_slice(node, layer.kernels[k], 0, x[r:r + a], "consume")
                    ctx.add_slice(node, layer.kernels[k], 1, out[c:c + b], "produce")
            r, c = r + a, c + b
        if layer.use_bias:
            ctx.add_slice(node, layer.bias, 0, out, "param")
        return [out]

    def _sizes(self, sizes, mask):
        edges = np.cumsum([0] + list(sizes))
        return [int(mask[lo:hi].sum()) for lo, hi in zip(edges, edges[1:])]

    def rebuild(self, layer, config, keep):
        config["input_groups"] = self._sizes(layer.input_groups, keep.inputs[0])
        config["output_groups"] = self._sizes(layer.output_groups, keep.owned)
        config["units"] = int(keep.owned.sum())
        equal = len(set(config["input_groups"])) == 1 and len(set(config["output_groups"])) == 1
        if not equal:
            config["implementation"] = "split"
        return config

    def rebuild_weights(self, layer, keep):
        ins = np.cumsum([0] + list(layer.input_groups))
        outs = np.cumsum([0] + list(layer.output_groups))
        blocks = [block[keep.inputs[0][ins[k]:ins[k + 1]]][:, keep.owned[outs[k]:outs[k + 1]]]
                  for k, block in enumerate(layer.block_kernels())]
        sizes = [b.shape for b in blocks]
        if len({s[0] for s in sizes}) == 1 and len({s[1] for s in sizes}) == 1:
            weights = [np.stack(blocks)]
        else:
            weights = [b for b in blocks if b.shape[0] and b.shape[1]]
        if layer.use_bias:
            weights.append(keras.ops.convert_to_numpy(layer.bias)[keep.owned])
        return weights


class ChannelGather(Handler):
    """tf_groupsparse's ChannelGather: output channel j is input channel ``indices[j]``."""

    kind = "tile"

    def trace(self, node, inputs, ctx):
        return [inputs[0][np.asarray(node.layer.indices, dtype=np.int64)]]

    def rebuild(self, layer, config, keep):
        position = np.cumsum(keep.inputs[0]) - 1
        config["indices"] = [int(position[i]) for i, kept in zip(layer.indices, keep.outputs[0]) if kept]
        return config


class ChannelSlice(Handler):
    """tf_groupsparse's ChannelSlice: output channels are input channels ``start:stop``."""

    kind = "tile"

    def trace(self, node, inputs, ctx):
        return [inputs[0][node.layer.start:node.layer.stop]]

    def rebuild(self, layer, config, keep):
        config["start"] = int(keep.inputs[0][:layer.start].sum())
        config["stop"] = config["start"] + int(keep.outputs[0].sum())
        return config


def _attention_inputs(ctx, inputs):
    """Indices of the query, key and value inputs of an attention call; masks are frozen."""
    where = ctx.arguments
    q = where.get(0, where.get("query"))
    v = where.get(1, where.get("value"))
    k = where.get(2, where.get("key", v))
    if q is None or v is None:
        raise Unsupported("the query and value inputs must be single tensors")
    for i, x in enumerate(inputs):
        if i not in (q, k, v):  # masks: their last axis is a sequence, not channels
            ctx.freeze(x)
    return q, k, v


def _take(variable, *masks):
    """`variable` as NumPy with the entries of each axis kept where its mask (or None: all) says."""
    value = keras.ops.convert_to_numpy(variable)
    for axis, mask in enumerate(masks):
        if mask is not None:
            value = np.compress(mask, value, axis=axis)
    return value


def _extra_outputs(ctx, outputs):
    """Frozen variables for outputs past the first (attention scores: not channels)."""
    for shape in ctx.out_shapes[1:]:
        outputs.append(ctx.new(int(shape[-1]), frozen=True))
    return outputs


class MultiHeadAttention(Handler):
    """keras.layers.MultiHeadAttention: removable heads, key dims and value dims, and the
    channels of the query, key and value inputs and of the output.

    Kernels: query ``(D_q, H, d_k)``, key ``(D_k, H, d_k)``, value ``(D_v, H, d_v)``, output
    ``(H, d_v, D_o)``. A head ``h`` is the slices ``[:, h, :]`` of the three input projections
    (and their biases) and ``[h]`` of the output projection; a key dim ``j`` is ``[:, :, j]`` of
    the query and key projections (removed from every head); a value dim is ``[:, :, j]`` of the
    value projection and ``[:, j, :]`` of the output projection. A key dim counts as read by the
    key projection (a zero key kernel there makes the scores' term constant over the keys, which
    softmax ignores) and as computed by the query projection. Mask inputs are not channels and
    are frozen. The rebuilt layer keeps the attention scale of the original (``1 / sqrt(d_k)``)
    by scaling the query projection by ``sqrt(d_k' / d_k)``, so removing zero key dims leaves the
    outputs unchanged.
    """

    kind = "attention"
    def trace(self, node, inputs, ctx):
        layer = node.layer
        q, k, v = _attention_inputs(ctx, inputs)
        heads = ctx.inner(node, "heads", layer.num_heads)
        kd = ctx.inner(node, "key_dim", layer.key_dim)
        vd = ctx.inner(node, "value_dim", layer.value_dim)
        out = ctx.own(node, int(layer.output_dense.kernel.shape[-1]))
        node.meta["attention_inputs"] = (q, k, v)
        for dense, x, dims in ((layer.query_dense, inputs[q], kd), (layer.key_dense, inputs[k], kd),
                               (layer.value_dense, inputs[v], vd)):
            if len(dense.kernel.shape) != 3:
                raise Unsupported(f"projection kernel of shape {tuple(dense.kernel.shape)}")
            ctx.add_slice(node, dense.kernel, 0, x, "consume")
            ctx.add_slice(node, dense.kernel, 1, heads, "produce")
            # a key dim j adds q_j k_j to the scores: it is unused when the query computes 0 there
            # (kernel and bias zero) or when the key's is constant over positions (kernel zero)
            ctx.add_slice(node, dense.kernel, 2, dims, "consume" if dense is layer.key_dense else "produce")
            if dense.bias is not None:
                ctx.add_slice(node, dense.bias, 0, heads, "param")
                ctx.add_slice(node, dense.bias, 1, dims, "param")
        o = layer.output_dense
        ctx.add_slice(node, o.kernel, 0, heads, "consume")
        ctx.add_slice(node, o.kernel, 1, vd, "consume")
        ctx.add_slice(node, o.kernel, 2, out, "produce")
        if o.bias is not None:
            ctx.add_slice(node, o.bias, 0, out, "param")
        return _extra_outputs(ctx, [out])

    def rebuild(self, layer, config, keep):
        config["num_heads"] = int(keep.internal["heads"].sum())
        config["key_dim"] = int(keep.internal["key_dim"].sum())
        config["value_dim"] = int(keep.internal["value_dim"].sum())
        config["output_shape"] = (int(keep.owned.sum()),)
        return config

    def rebuild_weights(self, layer, keep):
        q, k, v = keep.meta["attention_inputs"]
        heads, kd, vd = (keep.internal[key] for key in ("heads", "key_dim", "value_dim"))
        scale = math.sqrt(kd.sum() / len(kd))  # keeps 1/sqrt(d_k) of the original
        new = {}
        for dense, x, dims, factor in ((layer.query_dense, q, kd, scale), (layer.key_dense, k, kd, 1.0),
                                       (layer.value_dense, v, vd, 1.0)):
            new[id(dense.kernel)] = _take(dense.kernel, keep.inputs[x], heads, dims) * factor
            if dense.bias is not None:
                new[id(dense.bias)] = _take(dense.bias, heads, dims) * factor
        o = layer.output_dense
        new[id(o.kernel)] = _take(o.kernel, heads, vd, keep.owned)
        if o.bias is not None:
            new[id(o.bias)] = _take(o.bias, keep.owned)
        return [new[id(w)] for w in layer.weights]


class GroupQueryAttention(Handler):
    """keras.layers.GroupQueryAttention: removable key/value heads (each with the
    ``num_query_heads / num_key_value_heads`` query heads that share it, so the ratio stays) and
    head dims, and the channels of the query, key and value inputs.

    Kernels (EinsumDense): query and gate ``(D_q, H_q, d)``, key and value ``(D, H_kv, d)``,
    output ``(H_q, d, D_q)``; query head ``j r + i`` reads key/value head ``j``. A head dim ``j``
    is read by the key (scores) and the output projection (values): it is unused when both are
    zero there, or when the query, value and gate projections compute zero. The output has the
    query's width (the layer has no ``output_shape``), so its channels are the query's. The rebuilt
    layer keeps the attention scale ``1 / sqrt(d)`` by scaling the query projection.
    """

    kind = "attention"
    reads = "parallel"

    @staticmethod
    def _weights(layer):
        """``{(sublayer, "kernel"|"bias"): variable}`` read from the variables' paths."""
        return {tuple(w.path.split("/")[-2:]): w for w in layer.weights}

    def trace(self, node, inputs, ctx):
        layer = node.layer
        q, k, v = _attention_inputs(ctx, inputs)
        w = self._weights(layer)
        r = layer.num_repeats
        kv = ctx.inner(node, "kv_heads", layer.num_key_value_heads)
        dims = ctx.inner(node, "head_dim", layer.head_dim)
        out = ctx.own(node, int(w[("attention_output", "kernel")].shape[-1]))
        ctx.couple(out, inputs[q])  # output width = query width
        node.meta["attention_inputs"] = (q, k, v)
        query_heads = np.repeat(kv, r)
        projections = [("query", inputs[q], query_heads, "produce"), ("key", inputs[k], kv, "consume"),
                       ("value", inputs[v], kv, "produce")]
        if layer.use_gate:
            projections.append(("gate", inputs[q], query_heads, "produce"))
        for name, x, heads, dim_role in projections:
            kernel, bias = w[(name, "kernel")], w.get((name, "bias"))
            ctx.add_slice(node, kernel, 0, x, "consume")
            ctx.add_slice(node, kernel, 1, heads, "produce")
            ctx.add_slice(node, kernel, 2, dims, dim_role)
            if bias is not None:
                ctx.add_slice(node, bias, 0, heads, "param")
                ctx.add_slice(node, bias, 1, dims, "param")
        o, ob = w[("attention_output", "kernel")], w.get(("attention_output", "bias"))
        ctx.add_slice(node, o, 0, query_heads, "consume")
        ctx.add_slice(node, o, 1, dims, "consume")
        ctx.add_slice(node, o, 2, out, "produce")
        if ob is not None:
            ctx.add_slice(node, ob, 0, out, "param")
        return _extra_outputs(ctx, [out])

    def rebuild(self, layer, config, keep):
        kv = int(keep.internal["kv_heads"].sum())
        config["num_key_value_heads"] = kv
        config["num_query_heads"] = kv * layer.num_repeats
        config["head_dim"] = int(keep.internal["head_dim"].sum())
        return config

    def rebuild_weights(self, layer, keep):
        q, k, v = keep.meta["attention_inputs"]
        kv, dims = keep.internal["kv_heads"], keep.internal["head_dim"]
        query_heads = np.repeat(kv, layer.num_repeats)
        scale = math.sqrt(dims.sum() / len(dims))
        rows = {"query": (keep.inputs[q], query_heads, scale), "gate": (keep.inputs[q], query_heads, 1.0),
                "key": (keep.inputs[k], kv, 1.0), "value": (keep.inputs[v], kv, 1.0)}
        new = {}
        for (name, part), variable in self._weights(layer).items():
            if name == "attention_output":
                new[id(variable)] = (_take(variable, query_heads, dims, keep.owned) if part == "kernel"
                                     else _take(variable, keep.owned))
            else:
                x, heads, factor = rows[name]
                masks = (x, heads, dims) if part == "kernel" else (heads, dims)
                new[id(variable)] = _take(variable, *masks) * factor
        return [new[id(w)] for w in layer.weights]


class EinsumDense(Handler):
    """keras.layers.EinsumDense whose equation contracts the input's last axis with the kernel
    and takes the output's last axis from the kernel, the forms Keras' own layers use
    (``"ab,bc->ac"``, ``"abc,cd->abd"``, ``"abc,cde->abde"``, ``"...b,bc->...c"``): input
    channels are a kernel axis read, output channels a kernel axis written; other kernel axes
    (heads) stay. Any other equation is unsupported, with the equation in the message."""

    kind = "consumes"

    @staticmethod
    def _spec(layer):
        equation = layer.equation.replace(" ", "")
        lhs, out = equation.split("->")
        inp, ker = lhs.split(",")
        if inp.endswith("...") or out.endswith("..."):
            raise Unsupported(f"equation {equation!r} elides the channel (last) axis")
        inp, out = inp.replace("...", ""), out.replace("...", "")
        c_in, c_out = inp[-1], out[-1]
        fits = (c_in in ker and c_in not in out and c_out in ker and c_out not in inp
                and all(ch in out for ch in inp if ch != c_in)
                and all(ch in out and ch not in inp for ch in ker if ch not in (c_in, c_out)))
        if not fits:
            raise Unsupported(
                f"equation {equation!r}: supported are equations that contract only the input's last "
                "axis with the kernel and take the output's last axis from the kernel"
            )
        return ker.index(c_in), ker.index(c_out), out, c_out

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        a_in, a_out, out_spec, c_out = self._spec(layer)
        out = ctx.own(node, int(layer.kernel.shape[a_out]))
        ctx.add_slice(node, layer.kernel, a_in, x, "consume")
        ctx.add_slice(node, layer.kernel, a_out, out, "produce")
        bias_axes = getattr(layer, "bias_axes", None) or ""
        if layer.bias is not None and c_out in bias_axes:
            first = min(out_spec.index(ch) for ch in bias_axes)
            ctx.add_slice(node, layer.bias, out_spec.index(c_out) - first, out, "param")
        return [out]

    def rebuild(self, layer, config, keep):
        shape = config["output_shape"]
        if isinstance(shape, int):
            config["output_shape"] = int(keep.owned.sum())
        else:
            config["output_shape"] = list(shape)[:-1] + [int(keep.owned.sum())]
        return config


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


class DotAttention(Handler):
    """keras.layers.Attention / AdditiveAttention called on ``[query, value(, key)]``: the output
    channels are the value's; query and key channels are coupled (their products or sums make
    the scores), and removing them changes the scores unless they are zero, so they are marked
    lossy. AdditiveAttention's per-channel ``scale`` is sliced with them."""

    kind = "identity"

    def trace(self, node, inputs, ctx):
        layer = node.layer
        start, count = ctx.argument_spans.get(0, ctx.argument_spans.get("inputs", (0, 0)))
        if count < 2:
            raise Unsupported("expected inputs=[query, value] or [query, value, key]")
        q, v = inputs[start], inputs[start + 1]
        k = inputs[start + 2] if count > 2 else v
        if len(q) != len(k):
            raise Unsupported(f"query and key have {len(q)} and {len(k)} channels")
        ctx.couple(q, k)
        ctx.mark_lossy(q)
        for i, x in enumerate(inputs):
            if not start <= i < start + count:  # masks
                ctx.freeze(x)
        scale = getattr(layer, "scale", None)
        if scale is not None and len(scale.shape) == 1:
            ctx.add_slice(node, scale, 0, q, "param")
        return _extra_outputs(ctx, [v])


class Recurrent(Handler):
    """SimpleRNN / GRU / LSTM: unit ``u`` is column ``g * units + u`` of the kernel, the recurrent
    kernel and the bias for every gate ``g`` (1, 3 or 4 gates), and row ``u`` of the recurrent
    kernel, which reads the unit's own state; the output and state channels are the units.
    Initial states are the units' channels; masks are frozen."""

    kind = "consumes"
    GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}

    def _gates(self, layer):
        return next(g for name, g in self.GATES.items() if isinstance(layer, getattr(keras.layers, name)))

    def trace(self, node, inputs, ctx):
        layer = node.layer
        cell = layer.cell
        where = ctx.arguments
        seq = where.get(0, where.get("sequences", 0))
        out = ctx.own(node, int(layer.units))
        tiled = np.tile(out, self._gates(layer))
        ctx.add_slice(node, cell.kernel, 0, inputs[seq], "consume")
        ctx.add_slice(node, cell.kernel, 1, tiled, "produce")
        ctx.add_slice(node, cell.recurrent_kernel, 0, out, "consume")
        ctx.add_slice(node, cell.recurrent_kernel, 1, tiled, "produce")
        if cell.bias is not None:
            ctx.add_slice(node, cell.bias, len(cell.bias.shape) - 1, tiled, "param")
        for i, x in enumerate(inputs):
            if i == seq:
                continue
            if len(x) == len(out) and ctx.in_shapes[i][-1] == layer.units:  # an initial state
                ctx.couple(x, out)
            else:
                ctx.freeze(x)
        return [out for _ in ctx.out_shapes]

    def rebuild(self, layer, config, keep):
        config["units"] = int(keep.owned.sum())
        return config


class Bidirectional(Handler):
    """Bidirectional around SimpleRNN / GRU / LSTM: unit ``u`` of the forward and of the backward
    layer are one group (both directions are rebuilt from one config, so they keep the same
    units); the output is their concatenation, or with ``merge_mode`` sum/mul/ave the units
    themselves."""

    kind = "consumes"

    def trace(self, node, inputs, ctx):
        layer = node.layer
        if getattr(layer, "return_state", False):
            raise Unsupported("return_state=True")
        recurrent = Recurrent()
        out = ctx.own(node, 2 * int(layer.forward_layer.units))
        units = int(layer.forward_layer.units)
        fwd, bwd = out[:units], out[units:]
        ctx.couple(fwd, bwd)
        for part, ids in ((layer.forward_layer, fwd), (layer.backward_layer, bwd)):
            cell, tiled = part.cell, np.tile(ids, recurrent._gates(part))
            ctx.add_slice(node, cell.kernel, 0, inputs[0], "consume")
            ctx.add_slice(node, cell.kernel, 1, tiled, "produce")
            ctx.add_slice(node, cell.recurrent_kernel, 0, ids, "consume")
            ctx.add_slice(node, cell.recurrent_kernel, 1, tiled, "produce")
            if cell.bias is not None:
                ctx.add_slice(node, cell.bias, len(cell.bias.shape) - 1, tiled, "param")
        for x in inputs[1:]:
            ctx.freeze(x)
        if layer.merge_mode == "concat":
            return [out]
        if layer.merge_mode in ("sum", "mul", "ave"):
            return [fwd]
        raise Unsupported(f"merge_mode={layer.merge_mode!r}")

    def rebuild(self, layer, config, keep):
        units = int(keep.owned[:len(keep.owned) // 2].sum())
        for key in ("layer", "backward_layer"):
            if config.get(key):
                config[key]["config"]["units"] = units
                config[key].pop("build_config", None)  # built again at the new input width
        return config


class TimeDistributed(Handler):
    """TimeDistributed around a layer with a handler: the inner layer's channels, traced by its
    own handler (the wrapper holds exactly the inner layer's weights, in the same order)."""

    def _inner(self, layer):
        from .kinds import handler_for

        handler = handler_for(layer.layer)
        if handler is None or isinstance(handler, TimeDistributed):
            raise Unsupported(f"the wrapped layer {type(layer.layer).__name__} has no handler")
        return handler

    @property
    def kind(self):
        return "consumes"

    def trace(self, node, inputs, ctx):
        wrapper = node.layer
        handler = self._inner(wrapper)
        node.layer = wrapper.layer  # slices index the inner layer's weights: the wrapper's, in order
        try:
            return handler.trace(node, inputs, ctx)
        finally:
            node.layer = wrapper

    def rebuild(self, layer, config, keep):
        inner = config["layer"]
        inner["config"] = self._inner(layer).rebuild(layer.layer, dict(inner["config"]), keep)
        inner.pop("build_config", None)  # built again at the new input width
        return config
