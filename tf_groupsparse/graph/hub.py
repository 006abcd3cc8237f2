"""keras-hub encoders and decoders in the dependency graph: ``TransformerEncoder`` (BERT-style),
``TransformerDecoder`` (GPT-style, or with cross-attention), ``ViTEncoder`` and
``ViTPatchingAndEmbedding`` (ViT), ``PositionEmbedding``.

In every encoder block the removable inner units are the attention heads (a head's query, key
and value slices and biases and its rows of the output projection), the key dims and value dims
inside the heads (one dim from every head, as in the MultiHeadAttention handler) and the
feed-forward hidden units (a column of the first Dense and its bias, a row of the second); the
hidden channels pass through both residual adds, coupled to every projection and
LayerNormalization (lossy).

keras-hub's encoders derive their key size from their width (``hidden_dim // num_heads``), and
``ViTEncoder`` holds every block with one head count, so their configs cannot say what pruning
leaves. A ``TransformerEncoder`` that loses attention units or hidden channels becomes a
:class:`~tf_groupsparse.graph.TransformerBlock` (same computation and weight order, explicit
key size); one that loses only feed-forward units stays what it is. A ``ViTEncoder`` that loses
anything becomes a :class:`~tf_groupsparse.graph.TransformerStack` with per-block sizes. The
handlers are registered by class name, so the toolkit never imports keras-hub itself.

A ``TransformerDecoder`` prunes its self-attention units, its cross-attention units (whose keys
and values read the encoder sequence's channels) and its feed-forward units apart; when it
loses attention units or hidden channels it becomes a
:class:`~tf_groupsparse.graph.TransformerDecoderBlock`, which runs whole sequences (training,
scoring, export) but has no key/value cache for step-by-step generation.

Not supported: the other keras-hub model families' own block layers; the graph names them in
its "no registered handler" error, and ``unsupported="freeze"`` keeps their channels.

Examples:
    >>> import keras, numpy as np
    >>> from tf_groupsparse.graph import TransformerBlock, build_graph
    >>> x = keras.Input((5, 16))
    >>> m = keras.Model(x, keras.layers.Dense(2)(TransformerBlock(32, 2, key_dim=8, name="enc")(x)))
    >>> sorted(next(n for n in build_graph(m).nodes if n.name == "enc").internal)
    ['heads', 'intermediate', 'key_dim', 'value_dim']
"""

from __future__ import annotations

import math

import keras
import numpy as np

from . import costs
from .handlers import Handler, Unsupported
from .handlers_attention import extra_outputs, take
from .transformer import PatchEmbedding, TransformerBlock, TransformerDecoderBlock, TransformerStack

__all__ = ["TransformerEncoder", "TransformerDecoder", "ViTEncoder", "ViTPatchingAndEmbedding", "PositionEmbedding", "patching_cost",
           "composite_cost", "composite_cost_from_shapes"]

# (attention, attention norm, feed-forward norm, first dense, second dense) per block kind (keras-hub's
# encoder and decoder name them alike)
_ENCODER_PARTS = ("_self_attention_layer", "_self_attention_layer_norm", "_feedforward_layer_norm",
                  "_feedforward_intermediate_dense", "_feedforward_output_dense")
_VIT_PARTS = ("mha", "layer_norm_1", "layer_norm_2", "mlp.dense_1", "mlp.dense_2")


def _get(layer, path):
    for part in path.split("."):
        layer = getattr(layer, part, None)
    return layer


def _parts(block, names=_ENCODER_PARTS):
    parts = [_get(block, name) for name in names]
    if any(p is None for p in parts) or not isinstance(parts[0], keras.layers.MultiHeadAttention):
        raise Unsupported(f"block {block.name!r} without the sublayers of a keras-hub encoder block (unbuilt?)")
    if float(keras.ops.convert_to_numpy(parts[3].activation(keras.ops.zeros((1,))))[0]) != 0.0:
        raise Unsupported("a feed-forward activation with f(0) != 0 (a zero unit would not be silent)")
    return parts


def _block_inputs(node, inputs, ctx, first_name, second_name=None):
    """``(x, source)``: the hidden-channel input of a block call (argument 0 or `first_name`) and
    the encoder sequence a decoder's cross-attention reads (argument 1 or `second_name`, else
    None); the other inputs (masks) are frozen."""
    first = ctx.arguments.get(0, ctx.arguments.get(first_name))
    second = None if second_name is None else ctx.arguments.get(1, ctx.arguments.get(second_name))
    if first is None:
        raise Unsupported(f"the {first_name} must be one tensor")
    for i, ids in enumerate(inputs):
        if i not in (first, second):
            ctx.freeze(ids)
    node.meta["encoder_input"], node.meta["cross_input"] = first, second
    ctx.mark_lossy(inputs[first])
    return inputs[first], (None if second is None else inputs[second])


def _encoder_input(node, inputs, ctx):
    """The hidden-channel input of an encoder call; the other inputs (masks) are frozen."""
    return _block_inputs(node, inputs, ctx, "inputs")[0]


#: config keys a keras-hub encoder or decoder hands on to the toolkit's block that replaces it
_BLOCK_KEYS = ("name", "trainable", "dtype", "dropout", "activation", "layer_norm_epsilon", "kernel_initializer",
               "bias_initializer", "normalize_first")


def _names(prefix="", suffix=""):
    """Inner-unit names of one attention: heads, key dims, value dims."""
    return tuple(f"{prefix}{kind}{suffix}" for kind in ("heads", "key_dim", "value_dim"))


def _trace_attention(node, ctx, mha, x, names, source=None):
    """Slices of one attention: its query reads `x`, its key and value `source` (default `x`),
    its output writes `x`. Inner units (`names`): whole heads; key dims (``[:, :, j]`` of the
    query and key projections in every head, read by the key as in the MultiHeadAttention
    handler); value dims (``[:, :, j]`` of the value projection, ``[:, j, :]`` of the output)."""
    source = x if source is None else source
    heads, kd, vd = (ctx.inner(node, name, size) for name, size in zip(names, (mha.num_heads, mha.key_dim,
                                                                               mha.value_dim)))
    for dense, read, dims in ((mha.query_dense, x, kd), (mha.key_dense, source, kd), (mha.value_dense, source, vd)):
        ctx.add_slice(node, dense.kernel, 0, read, "consume")
        ctx.add_slice(node, dense.kernel, 1, heads, "produce")
        ctx.add_slice(node, dense.kernel, 2, dims, "consume" if dense is mha.key_dense else "produce")
        if dense.bias is not None:
            ctx.add_slice(node, dense.bias, 0, heads, "param")
            ctx.add_slice(node, dense.bias, 1, dims, "param")
    o = mha.output_dense
    ctx.add_slice(node, o.kernel, 0, heads, "consume")
    ctx.add_slice(node, o.kernel, 1, vd, "consume")
    ctx.add_slice(node, o.kernel, 2, x, "produce")
    if o.bias is not None:
        ctx.add_slice(node, o.bias, 0, x, "param")


def _trace_feed_forward(node, ctx, x, norms, ff1, ff2, units):
    for norm in norms:
        for v in norm.weights:
            ctx.add_slice(node, v, 0, x, "param")
    ctx.add_slice(node, ff1.kernel, 0, x, "consume")
    ctx.add_slice(node, ff1.kernel, 1, units, "produce")
    if ff1.bias is not None:
        ctx.add_slice(node, ff1.bias, 0, units, "param")
    ctx.add_slice(node, ff2.kernel, 0, units, "consume")
    ctx.add_slice(node, ff2.kernel, 1, x, "produce")
    if ff2.bias is not None:
        ctx.add_slice(node, ff2.bias, 0, x, "param")


def _trace_block(node, ctx, x, parts, suffix=""):
    """Slices of one block: inner units ``heads``, ``key_dim``, ``value_dim`` and
    ``intermediate`` (each with `suffix`)."""
    mha, ln1, ln2, ff1, ff2 = parts
    _trace_attention(node, ctx, mha, x, _names(suffix=suffix))
    _trace_feed_forward(node, ctx, x, (ln1, ln2), ff1, ff2, ctx.inner(node, "intermediate" + suffix, ff1.units))


def _attention_sizes(mha, keep, names):
    """``(num_heads, key_dim, value_dim)`` an attention keeps."""
    return tuple(int(keep.internal[name].sum()) for name in names)


def _whole(mha, keep, names):
    return _attention_sizes(mha, keep, names) == (mha.num_heads, mha.key_dim, mha.value_dim)


def _attention_weights(new, mha, keep, names, x, source=None):
    """Fill `new` (variable id -> kept array) for one attention. The query projection is scaled
    by ``sqrt(d_k' / d_k)`` so that the rebuilt layer's ``1 / sqrt(d_k')`` scores equal the
    original's (removing zero key dims leaves the outputs unchanged)."""
    source = x if source is None else source
    heads, kd, vd = (keep.internal[name] for name in names)
    scale = math.sqrt(kd.sum() / len(kd))
    for dense, read, dims, factor in ((mha.query_dense, x, kd, scale), (mha.key_dense, source, kd, 1.0),
                                      (mha.value_dense, source, vd, 1.0)):
        new[id(dense.kernel)] = take(dense.kernel, read, heads, dims) * factor
        if dense.bias is not None:
            new[id(dense.bias)] = take(dense.bias, heads, dims) * factor
    o = mha.output_dense
    new[id(o.kernel)] = take(o.kernel, heads, vd, x)
    if o.bias is not None:
        new[id(o.bias)] = take(o.bias, x)


def _feed_forward_weights(new, x, norms, ff1, ff2, units):
    for norm in norms:
        for w in norm.weights:
            new[id(w)] = take(w, x)
    for dense, rows, cols in ((ff1, x, units), (ff2, units, x)):
        new[id(dense.kernel)] = take(dense.kernel, rows, cols)
        if dense.bias is not None:
            new[id(dense.bias)] = take(dense.bias, cols)


def _block_weights(new, parts, keep, x, suffix=""):
    mha, ln1, ln2, ff1, ff2 = parts
    _attention_weights(new, mha, keep, _names(suffix=suffix), x)
    _feed_forward_weights(new, x, (ln1, ln2), ff1, ff2, keep.internal["intermediate" + suffix])


class TransformerEncoder(Handler):
    """keras_hub.layers.TransformerEncoder and :class:`TransformerBlock` (see the module
    docstring). Masks are not channels."""

    kind = "attention"

    def trace(self, node, inputs, ctx):
        x = _encoder_input(node, inputs, ctx)
        _trace_block(node, ctx, x, _parts(node.layer))
        return extra_outputs(ctx, [x])

    @staticmethod
    def _expressible(layer, keep):
        """Whether the layer's own class can say the result: a TransformerBlock always; keras-hub's
        encoder (key size derived as hidden // heads) only while its attention and hidden stay."""
        return isinstance(layer, TransformerBlock) or (
            _whole(layer._self_attention_layer, keep, _names()) and keep.inputs[keep.meta["encoder_input"]].all())

    def rebuild(self, layer, config, keep):
        heads, key_dim, value_dim = _attention_sizes(layer._self_attention_layer, keep, _names())
        units = int(keep.internal["intermediate"].sum())
        if self._expressible(layer, keep):
            config["intermediate_dim"] = units
            if isinstance(layer, TransformerBlock):
                config.update(num_heads=heads, key_dim=key_dim, value_dim=value_dim)
            return config
        new = {k: config[k] for k in _BLOCK_KEYS if k in config}
        new.update(num_heads=heads, intermediate_dim=units, key_dim=key_dim, value_dim=value_dim)
        return new

    def rebuild_class(self, layer, keep):
        return type(layer) if self._expressible(layer, keep) else TransformerBlock

    def rebuild_weights(self, layer, keep):
        new = {}
        _block_weights(new, _parts(layer), keep, keep.inputs[keep.meta["encoder_input"]])
        return [new[id(w)] for w in layer.weights]


_CROSS = _names("cross_")


class TransformerDecoder(Handler):
    """keras_hub.layers.TransformerDecoder and :class:`TransformerDecoderBlock`: the
    self-attention's heads, key dims and value dims (inner units ``heads``, ``key_dim``,
    ``value_dim``), the cross-attention's (``cross_heads``, ...; its key and value read the
    encoder sequence's channels) and the feed-forward units (``intermediate``); the decoder's
    hidden channels pass through every residual add and LayerNormalization (lossy). Masks and
    caches are not channels. A keras-hub decoder that loses attention units or hidden channels
    becomes a TransformerDecoderBlock; one that loses only feed-forward units stays what it is."""

    kind = "attention"

    def trace(self, node, inputs, ctx):
        layer = node.layer
        x, source = _block_inputs(node, inputs, ctx, "decoder_sequence", "encoder_sequence")
        mha, ln1, ln2, ff1, ff2 = _parts(layer)
        _trace_attention(node, ctx, mha, x, _names())
        norms = [ln1, ln2]
        cross = getattr(layer, "_cross_attention_layer", None)
        if (cross is None) != (source is None):
            raise Unsupported("a decoder called without the encoder sequence it was built with")
        if cross is not None:
            _trace_attention(node, ctx, cross, x, _CROSS, source)
            norms.append(layer._cross_attention_layer_norm)
        _trace_feed_forward(node, ctx, x, norms, ff1, ff2, ctx.inner(node, "intermediate", ff1.units))
        return extra_outputs(ctx, [x])

    @staticmethod
    def _expressible(layer, keep):
        cross = getattr(layer, "_cross_attention_layer", None)
        return isinstance(layer, TransformerDecoderBlock) or (
            _whole(layer._self_attention_layer, keep, _names()) and (cross is None or _whole(cross, keep, _CROSS))
            and keep.inputs[keep.meta["encoder_input"]].all())

    def rebuild(self, layer, config, keep):
        units = int(keep.internal["intermediate"].sum())
        mha, cross = layer._self_attention_layer, getattr(layer, "_cross_attention_layer", None)
        sizes = dict(zip(("num_heads", "key_dim", "value_dim"), _attention_sizes(mha, keep, _names())))
        if cross is not None:
            sizes.update(zip(("cross_num_heads", "cross_key_dim", "cross_value_dim"),
                             _attention_sizes(cross, keep, _CROSS)))
        if self._expressible(layer, keep):
            config["intermediate_dim"] = units
            if isinstance(layer, TransformerDecoderBlock):
                config.update(sizes)
            return config
        new = {k: config[k] for k in _BLOCK_KEYS if k in config}
        new.update(sizes, intermediate_dim=units)
        return new

    def rebuild_class(self, layer, keep):
        return type(layer) if self._expressible(layer, keep) else TransformerDecoderBlock

    def rebuild_weights(self, layer, keep):
        x = keep.inputs[keep.meta["encoder_input"]]
        mha, ln1, ln2, ff1, ff2 = _parts(layer)
        new, norms = {}, [ln1, ln2]
        _attention_weights(new, mha, keep, _names(), x)
        cross = getattr(layer, "_cross_attention_layer", None)
        if cross is not None:
            _attention_weights(new, cross, keep, _CROSS, x, keep.inputs[keep.meta["cross_input"]])
            norms.append(layer._cross_attention_layer_norm)
        _feed_forward_weights(new, x, norms, ff1, ff2, keep.internal["intermediate"])
        return [new[id(w)] for w in layer.weights]


def _stack_blocks(layer):
    """(blocks, part names) of a ViTEncoder or TransformerStack."""
    if isinstance(layer, TransformerStack):
        return layer.blocks, _ENCODER_PARTS
    blocks = getattr(layer, "encoder_layers", None)
    if not blocks or getattr(layer, "layer_norm", None) is None:
        raise Unsupported("a ViT encoder without built blocks")
    if not (getattr(layer, "use_mha_bias", True) and getattr(layer, "use_mlp_bias", True)):
        raise Unsupported("a ViT encoder without attention or MLP biases (its pruned form has them)")
    return blocks, _VIT_PARTS


class ViTEncoder(Handler):
    """keras-hub's ViTEncoder and :class:`TransformerStack`: every block's heads, key dims, value
    dims and MLP units (inner units ``heads/<i>``, ``key_dim/<i>``, ``value_dim/<i>``,
    ``intermediate/<i>``), the hidden channels coupled through every block and the final
    LayerNormalization."""

    kind = "attention"

    def trace(self, node, inputs, ctx):
        x = _encoder_input(node, inputs, ctx)
        blocks, names = _stack_blocks(node.layer)
        for i, block in enumerate(blocks):
            _trace_block(node, ctx, x, _parts(block, names), f"/{i}")
        for v in node.layer.layer_norm.weights:
            ctx.add_slice(node, v, 0, x, "param")
        return extra_outputs(ctx, [x])

    def rebuild(self, layer, config, keep):
        blocks, names = _stack_blocks(layer)
        sizes = []
        for i, block in enumerate(blocks):
            mha = _parts(block, names)[0]
            heads, key_dim, value_dim = _attention_sizes(mha, keep, _names(suffix=f"/{i}"))
            sizes.append({"num_heads": heads, "key_dim": key_dim, "value_dim": value_dim,
                          "intermediate_dim": int(keep.internal[f"intermediate/{i}"].sum())})
        if isinstance(layer, TransformerStack):
            config["blocks"] = sizes
            return config
        new = {k: config[k] for k in ("name", "trainable", "dtype", "layer_norm_epsilon") if k in config}
        new.update(blocks=sizes, dropout=config.get("dropout_rate", 0.0),
                   attention_dropout=config.get("attention_dropout", 0.0), activation="gelu")
        return new

    def rebuild_class(self, layer, keep):
        return TransformerStack

    def rebuild_weights(self, layer, keep):
        blocks, names = _stack_blocks(layer)
        x = keep.inputs[keep.meta["encoder_input"]]
        new, order = {}, []
        for i, block in enumerate(blocks):  # in TransformerStack's order: attention, norms, dense, dense
            parts = _parts(block, names)
            _block_weights(new, parts, keep, x, f"/{i}")
            order += [w for part in parts for w in part.weights]
        for w in layer.layer_norm.weights:
            new[id(w)] = take(w, x)
        return [new[id(w)] for w in order + list(layer.layer_norm.weights)]


class ViTPatchingAndEmbedding(Handler):
    """keras-hub's ViTPatchingAndEmbedding and :class:`PatchEmbedding`: a patch convolution
    (reads the image channels), a class token and a position table, all writing its own hidden
    channels. keras-hub's layer is always rebuilt as a PatchEmbedding (same weights): its own
    config does not load back."""

    kind = "consumes"
    #: the class every copy of the layer is made of
    replacement = PatchEmbedding

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        conv = getattr(layer, "patch_embedding", None)
        if conv is None or getattr(layer, "data_format", "channels_last") != "channels_last":
            raise Unsupported("an unbuilt or channels_first patch embedding")
        out = ctx.own(node, int(layer.hidden_dim))
        ctx.add_slice(node, conv.kernel, 2, x, "consume")
        ctx.add_slice(node, conv.kernel, 3, out, "produce")
        if conv.bias is not None:
            ctx.add_slice(node, conv.bias, 0, out, "param")
        if getattr(layer, "class_token", None) is not None:
            ctx.add_slice(node, layer.class_token, 2, out, "produce")
        ctx.add_slice(node, layer.position_embedding.embeddings, 1, out, "produce")
        return [out]

    def config(self, layer):
        """The PatchEmbedding config of the layer (keras-hub's holds keys its constructor refuses)."""
        config = layer.get_config()
        keys = ("name", "trainable", "dtype", "image_size", "patch_size", "hidden_dim", "num_channels",
                "use_class_token")
        out = {k: config[k] for k in keys if k in config}
        out["use_patch_bias"] = bool(getattr(layer, "use_patch_bias", True))
        return out

    def rebuild(self, layer, config, keep):
        config["hidden_dim"] = int(keep.owned.sum())
        config["num_channels"] = int(keep.inputs[0].sum())
        return config

    def rebuild_class(self, layer, keep):
        return PatchEmbedding


def patching_cost(layer, input_shape, output_shape):
    """The patch convolution: patches x (patch area x image channels x hidden)."""
    return layer.num_patches * math.prod(tuple(layer.patch_embedding.kernel.shape))


class PositionEmbedding(Handler):
    """keras_hub.layers.PositionEmbedding: a learned ``(sequence, hidden)`` table broadcast to
    its input's shape. Its output channels are its own (the table's columns compute them) and
    are coupled to the input's, whose shape they take."""

    kind = "consumes"

    def trace(self, node, inputs, ctx):
        table = getattr(node.layer, "position_embeddings", None)
        if table is None:
            raise Unsupported("a position embedding without a `position_embeddings` table")
        x = inputs[0]
        out = ctx.own(node, len(x))
        ctx.couple(x, out)
        ctx.add_slice(node, table, 1, out, "produce")
        return [out]


def _cost_parts(layer):
    """The MultiHeadAttention and Dense sublayers of a composite layer, in weight order."""
    found = []

    def walk(sub):
        for child in sub._flatten_layers(include_self=False, recursive=False):
            if isinstance(child, (keras.layers.MultiHeadAttention, keras.layers.Dense)):
                found.append(child)
            else:
                walk(child)

    walk(layer)
    return found


def composite_cost_from_shapes(layer, shapes, input_shape, output_shape):
    """MACs of a layer made of encoder or decoder blocks, from its kept weight shapes: each
    attention's (:func:`~tf_groupsparse.graph.costs.attention_from_shapes`; a decoder's
    cross-attention over the encoder sequence's positions) plus ``T * in * out`` per Dense (``T``
    positions)."""
    shapes_in = input_shape if isinstance(input_shape, list) else [input_shape]
    x = shapes_in[0]
    t = costs._prod(x, layer, "inputs") // int(x[-1])
    source = next((tuple(s) for s in shapes_in[1:] if len(s) == len(x)), tuple(x))  # masks have one axis less
    cross = getattr(layer, "_cross_attention_layer", None)
    index = {id(w): i for i, w in enumerate(layer.weights)}
    total = 0
    for part in _cost_parts(layer):
        own = [tuple(shapes[index[id(w)]]) for w in part.weights]
        if isinstance(part, keras.layers.MultiHeadAttention):
            s = costs._positions(layer, source, "encoder sequence") if part is cross else t
            total += costs.attention_from_shapes(part, own, None, output_shape, positions=(t, s))
        else:
            total += t * int(np.prod(own[0]))
    return total


def composite_cost(layer, input_shape, output_shape):
    """See :func:`composite_cost_from_shapes`, with the layer's own weight shapes."""
    return composite_cost_from_shapes(layer, [tuple(w.shape) for w in layer.weights], input_shape, output_shape)
