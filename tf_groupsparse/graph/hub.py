"""keras-hub encoders in the dependency graph: ``TransformerEncoder`` (removable attention heads
and feed-forward units) and ``PositionEmbedding``, and :class:`TransformerBlock`, the layer a
pruned encoder becomes.

keras-hub's ``TransformerEncoder`` derives its attention key size from its input
(``hidden_dim // num_heads``), so its config cannot say "3 heads of 16": an encoder that loses
heads or hidden channels is rebuilt as a :class:`TransformerBlock`, the same computation with explicit
``key_dim`` / ``value_dim`` and the same weights in the same order. An encoder that loses only
feed-forward units (and no hidden channels) stays a ``TransformerEncoder``. Key and value dims inside a head are not
removed here (whole heads are). The handlers are registered by class name, so keras-hub is
never imported by the toolkit itself.

Not supported (their channels would have to be traced inside one layer that holds every
block): ``ViTEncoder`` (all of a ViT's blocks in one layer whose config has one head count),
``TransformerDecoder`` (self and cross attention with a cache). Such layers raise the graph's
"no registered handler" error, or are frozen with ``unsupported="freeze"``.

Examples:
    >>> import keras, numpy as np
    >>> from tf_groupsparse.graph import TransformerBlock
    >>> block = TransformerBlock(intermediate_dim=32, num_heads=2, key_dim=8)
    >>> tuple(block(np.zeros((1, 5, 16), "float32")).shape)
    (1, 5, 16)
"""

from __future__ import annotations

import keras
from keras import ops

from .._validation import check_int
from . import costs
from .handlers import Handler, Unsupported
from .handlers_attention import extra_outputs

__all__ = ["TransformerBlock", "TransformerEncoder", "PositionEmbedding", "transformer_cost",
           "transformer_cost_from_shapes"]

_PARTS = ("_self_attention_layer", "_self_attention_layer_norm", "_feedforward_layer_norm",
          "_feedforward_intermediate_dense", "_feedforward_output_dense")


@keras.saving.register_keras_serializable(package="tf_groupsparse")
class TransformerBlock(keras.layers.Layer):
    """A transformer encoder block with explicit head sizes.

    ``x + Dropout(MultiHeadAttention(x, x))`` then ``LayerNormalization`` (or the norm first
    with ``normalize_first``), and the same around ``Dense(hidden)(Dense(intermediate_dim,
    activation)(x))``: the computation of ``keras_hub.layers.TransformerEncoder``, with the
    weights in the same order, but ``key_dim`` and ``value_dim`` given rather than derived from
    the width, so that an encoder with some heads removed can be expressed.

    Args:
        intermediate_dim: units of the feed-forward block's hidden layer.
        num_heads: attention heads.
        key_dim: size of each head for query and key.
        value_dim: size of each head for value (default None: `key_dim`).
        dropout: dropout rate of attention and both residual branches (default 0).
        activation: of the feed-forward hidden layer (default "relu").
        layer_norm_epsilon: of both LayerNormalizations (default 1e-5).
        kernel_initializer, bias_initializer: of the projections (defaults "glorot_uniform",
            "zeros").
        normalize_first: normalize before each sub-block instead of after the residual add
            (default False).

    Call arguments: ``inputs`` (batch, sequence, hidden); ``padding_mask`` (batch, sequence),
    True where a token is real; ``attention_mask`` (batch, sequence, sequence); ``training``.

    Examples:
        >>> import numpy as np
        >>> block = TransformerBlock(intermediate_dim=16, num_heads=3, key_dim=4)
        >>> y = block(np.ones((2, 6, 8), "float32"), padding_mask=np.ones((2, 6), bool))
        >>> tuple(y.shape), block.get_config()["key_dim"]
        ((2, 6, 8), 4)
    """

    def __init__(self, intermediate_dim, num_heads, key_dim, value_dim=None, dropout=0.0, activation="relu",
                 layer_norm_epsilon=1e-5, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 normalize_first=False, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.intermediate_dim = check_int("intermediate_dim", intermediate_dim, owner, minimum=1)
        self.num_heads = check_int("num_heads", num_heads, owner, minimum=1)
        self.key_dim = check_int("key_dim", key_dim, owner, minimum=1)
        self.value_dim = self.key_dim if value_dim is None else check_int("value_dim", value_dim, owner, minimum=1)
        self.dropout = float(dropout)
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.normalize_first = bool(normalize_first)
        self.supports_masking = True

    def _initializers(self):
        return {"kernel_initializer": keras.initializers.get(keras.initializers.serialize(self.kernel_initializer)),
                "bias_initializer": keras.initializers.get(keras.initializers.serialize(self.bias_initializer))}

    def build(self, inputs_shape):
        hidden = int(inputs_shape[-1])
        policy = self.dtype_policy
        # created in the order of TransformerEncoder's, so the weights line up
        self._self_attention_layer = keras.layers.MultiHeadAttention(
            self.num_heads, self.key_dim, value_dim=self.value_dim, dropout=self.dropout, dtype=policy,
            name="self_attention_layer", **self._initializers())
        self._self_attention_layer.build(query_shape=inputs_shape, value_shape=inputs_shape)
        self._self_attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="self_attention_layer_norm")
        self._self_attention_layer_norm.build(inputs_shape)
        self._self_attention_dropout = keras.layers.Dropout(self.dropout, dtype=policy, name="self_attention_dropout")
        self._feedforward_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="feedforward_layer_norm")
        self._feedforward_layer_norm.build(inputs_shape)
        self._feedforward_intermediate_dense = keras.layers.Dense(
            self.intermediate_dim, activation=self.activation, dtype=policy, name="feedforward_intermediate_dense",
            **self._initializers())
        self._feedforward_intermediate_dense.build(inputs_shape)
        self._feedforward_output_dense = keras.layers.Dense(
            hidden, dtype=policy, name="feedforward_output_dense", **self._initializers())
        self._feedforward_output_dense.build(tuple(inputs_shape[:-1]) + (self.intermediate_dim,))
        self._feedforward_dropout = keras.layers.Dropout(self.dropout, dtype=policy, name="feedforward_dropout")
        self.built = True

    @staticmethod
    def _attention_mask(padding_mask, attention_mask):
        """(batch, 1, sequence) from the padding mask, combined with the attention mask."""
        mask = None if padding_mask is None else ops.cast(ops.expand_dims(padding_mask, axis=1), "int32")
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "int32")
            mask = attention_mask if mask is None else ops.minimum(mask, attention_mask)
        return mask

    def call(self, inputs, padding_mask=None, attention_mask=None, training=None, mask=None):
        mask = self._attention_mask(mask if padding_mask is None else padding_mask, attention_mask)
        x = inputs
        h = self._self_attention_layer_norm(x) if self.normalize_first else x
        h = self._self_attention_layer(query=h, value=h, attention_mask=mask, training=training)
        x = x + self._self_attention_dropout(h, training=training)
        if not self.normalize_first:
            x = self._self_attention_layer_norm(x)
        h = self._feedforward_layer_norm(x) if self.normalize_first else x
        h = self._feedforward_output_dense(self._feedforward_intermediate_dense(h))
        x = x + self._feedforward_dropout(h, training=training)
        if not self.normalize_first:
            x = self._feedforward_layer_norm(x)
        return x

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "intermediate_dim": self.intermediate_dim, "num_heads": self.num_heads, "key_dim": self.key_dim,
            "value_dim": self.value_dim, "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "normalize_first": self.normalize_first,
        })
        return config


def _parts(layer):
    parts = [getattr(layer, name, None) for name in _PARTS]
    if any(p is None for p in parts) or not isinstance(parts[0], keras.layers.MultiHeadAttention):
        raise Unsupported("an encoder without the sublayers of keras_hub's TransformerEncoder (unbuilt?)")
    return parts


class TransformerEncoder(Handler):
    """keras_hub.layers.TransformerEncoder and :class:`TransformerBlock`: the hidden channels
    pass through (both residual adds), coupled to every projection that reads or writes them
    and to both LayerNormalizations (lossy); removable inner units are the attention heads (a
    head's query/key/value slices and biases and its output projection rows) and the
    feed-forward hidden units (a column of the first Dense and its bias, a row of the second).
    Masks are not channels."""

    kind = "attention"

    def trace(self, node, inputs, ctx):
        layer = node.layer
        mha, ln1, ln2, ff1, ff2 = _parts(layer)
        first = ctx.arguments.get(0, ctx.arguments.get("inputs"))
        if first is None:
            raise Unsupported("the encoder input must be one tensor")
        for i, ids in enumerate(inputs):
            if i != first:
                ctx.freeze(ids)
        if float(keras.ops.convert_to_numpy(ff1.activation(keras.ops.zeros((1,))))[0]) != 0.0:
            raise Unsupported("a feed-forward activation with f(0) != 0 (a zero unit would not be silent)")
        x = inputs[first]
        node.meta["encoder_input"] = first
        ctx.mark_lossy(x)
        heads = ctx.inner(node, "heads", mha.num_heads)
        units = ctx.inner(node, "intermediate", ff1.units)
        for dense in (mha.query_dense, mha.key_dense, mha.value_dense):
            ctx.add_slice(node, dense.kernel, 0, x, "consume")
            ctx.add_slice(node, dense.kernel, 1, heads, "produce")
            if dense.bias is not None:
                ctx.add_slice(node, dense.bias, 0, heads, "param")
        o = mha.output_dense
        ctx.add_slice(node, o.kernel, 0, heads, "consume")
        ctx.add_slice(node, o.kernel, 2, x, "produce")
        if o.bias is not None:
            ctx.add_slice(node, o.bias, 0, x, "param")
        for norm in (ln1, ln2):
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
        return extra_outputs(ctx, [x])

    @staticmethod
    def _expressible(layer, keep):
        """Whether the layer's own class can say the result: a TransformerBlock always; keras-hub's
        encoder (key size derived as hidden // heads) only while heads and hidden stay."""
        return isinstance(layer, TransformerBlock) or (
            int(keep.internal["heads"].sum()) == layer.num_heads and keep.inputs[keep.meta["encoder_input"]].all())

    def rebuild(self, layer, config, keep):
        heads = int(keep.internal["heads"].sum())
        units = int(keep.internal["intermediate"].sum())
        if self._expressible(layer, keep):
            config.update(num_heads=heads, intermediate_dim=units)
            return config
        mha = layer._self_attention_layer
        keys = ("name", "trainable", "dtype", "dropout", "activation", "layer_norm_epsilon", "kernel_initializer",
                "bias_initializer", "normalize_first")
        new = {k: config[k] for k in keys if k in config}
        new.update(num_heads=heads, intermediate_dim=units, key_dim=int(mha.key_dim), value_dim=int(mha.value_dim))
        return new

    def rebuild_class(self, layer, keep):
        return type(layer) if self._expressible(layer, keep) else TransformerBlock


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


def transformer_cost_from_shapes(layer, shapes, input_shape, output_shape):
    """MACs of an encoder block from its kept weight shapes: the attention's
    (:func:`~tf_groupsparse.graph.costs.attention_from_shapes`) plus ``T (D I + I D)`` for the
    feed-forward block (``T`` positions, ``D`` hidden, ``I`` feed-forward units)."""
    mha = _parts(layer)[0]
    n = len(mha.weights)
    x = input_shape[0] if isinstance(input_shape, list) else input_shape
    attention = costs.attention_from_shapes(mha, shapes[:n], [x, x], output_shape)
    kernels = [tuple(s) for s in shapes[n:] if len(s) == 2]
    t = costs._prod(x, layer, "inputs") // int(x[-1])
    return attention + t * sum(a * b for a, b in kernels)


def transformer_cost(layer, input_shape, output_shape):
    """See :func:`transformer_cost_from_shapes`, with the layer's own weight shapes."""
    return transformer_cost_from_shapes(layer, [tuple(w.shape) for w in layer.weights], input_shape, output_shape)
