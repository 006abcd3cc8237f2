"""The transformer layers that pruned keras-hub encoders and decoders become:
:class:`TransformerBlock` (one encoder block with explicit head sizes),
:class:`TransformerDecoderBlock` (one decoder block), :class:`TransformerStack` (blocks of different sizes
in one layer, what a ViT encoder becomes) and :class:`PatchEmbedding` (what a ViT's patch
embedding becomes).

keras-hub's encoders derive their attention key size from their width (``hidden // heads``)
and, for a ViT, hold every block in one layer with one head count: neither can say "3 heads of
16 in block 1, 4 in block 2". These layers compute the same with the sizes stated, and save and
load like any Keras layer (see :mod:`tf_groupsparse.graph.hub`).

Examples:
    >>> import numpy as np
    >>> from tf_groupsparse.graph import TransformerStack
    >>> stack = TransformerStack([{"num_heads": 2, "key_dim": 4, "intermediate_dim": 8},
    ...                           {"num_heads": 1, "key_dim": 4, "intermediate_dim": 6}])
    >>> tuple(stack(np.zeros((1, 5, 8), "float32")).shape)
    (1, 5, 8)
"""

from __future__ import annotations

import keras
from keras import ops

from .._validation import check_int

__all__ = ["TransformerBlock", "TransformerDecoderBlock", "TransformerStack", "PatchEmbedding"]

_register = keras.saving.register_keras_serializable(package="tf_groupsparse")


@_register
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
        attention_dropout: dropout rate of the attention weights (default None: `dropout`).

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
                 normalize_first=False, attention_dropout=None, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.attention_dropout = None if attention_dropout is None else float(attention_dropout)
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
            self.num_heads, self.key_dim, value_dim=self.value_dim,
            dropout=self.dropout if self.attention_dropout is None else self.attention_dropout, dtype=policy,
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
            "normalize_first": self.normalize_first, "attention_dropout": self.attention_dropout,
        })
        return config


@_register
class TransformerDecoderBlock(TransformerBlock):
    """A transformer decoder block with explicit head sizes: causal self-attention, optional
    cross-attention on an encoder sequence, a feed-forward block, each with a residual add and a
    LayerNormalization (after, or before with ``normalize_first``): the computation and weight
    order of ``keras_hub.layers.TransformerDecoder``, whose key size is its width over its head
    count and whose two attentions share one head count, so that it cannot say what pruning
    leaves (self-attention heads, cross-attention heads and feed-forward units removed apart).

    It runs without a key/value cache (training, scoring, export); cached generation is the
    keras-hub layer's.

    Args:
        intermediate_dim: feed-forward hidden units.
        num_heads: self-attention heads.
        key_dim: self-attention query/key size per head.
        value_dim: self-attention value size per head (default `key_dim`).
        cross_num_heads: cross-attention heads (default `num_heads`); the cross-attention exists
            when the block is called with an encoder sequence.
        cross_key_dim: cross-attention query/key size per head (default `key_dim`).
        cross_value_dim: cross-attention value size per head (default `cross_key_dim`).
        **kwargs: the other arguments of :class:`TransformerBlock` (dropout, activation,
            layer_norm_epsilon, initializers, normalize_first, attention_dropout) and Layer's.

    Examples:
        >>> import numpy as np
        >>> block = TransformerDecoderBlock(intermediate_dim=16, num_heads=3, key_dim=4, cross_num_heads=1)
        >>> y = block(np.ones((2, 6, 8), "float32"), np.ones((2, 4, 5), "float32"))
        >>> tuple(y.shape), block._cross_attention_layer.num_heads
        ((2, 6, 8), 1)
    """

    def __init__(self, intermediate_dim, num_heads, key_dim, value_dim=None, cross_num_heads=None,
                 cross_key_dim=None, cross_value_dim=None, **kwargs):
        super().__init__(intermediate_dim, num_heads, key_dim, value_dim=value_dim, **kwargs)
        owner = type(self).__name__
        self.cross_num_heads = self.num_heads if cross_num_heads is None else check_int(
            "cross_num_heads", cross_num_heads, owner, minimum=1)
        self.cross_key_dim = self.key_dim if cross_key_dim is None else check_int(
            "cross_key_dim", cross_key_dim, owner, minimum=1)
        self.cross_value_dim = self.cross_key_dim if cross_value_dim is None else check_int(
            "cross_value_dim", cross_value_dim, owner, minimum=1)

    def _attention(self, name, heads, key_dim, value_dim, query_shape, value_shape):
        rate = self.dropout if self.attention_dropout is None else self.attention_dropout
        layer = keras.layers.MultiHeadAttention(heads, key_dim, value_dim=value_dim, dropout=rate,
                                                dtype=self.dtype_policy, name=name, **self._initializers())
        layer.build(query_shape=query_shape, value_shape=value_shape)
        norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
                                               name=f"{name}_layer_norm")
        norm.build(query_shape)
        return layer, norm, keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=f"{name}_dropout")

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        shape = decoder_sequence_shape
        # created in the order of keras-hub's TransformerDecoder, so the weights line up
        self._self_attention_layer, self._self_attention_layer_norm, self._self_attention_dropout = \
            self._attention("self_attention", self.num_heads, self.key_dim, self.value_dim, shape, shape)
        self._cross_attention_layer = None
        if encoder_sequence_shape is not None:
            self._cross_attention_layer, self._cross_attention_layer_norm, self._cross_attention_dropout = \
                self._attention("cross_attention", self.cross_num_heads, self.cross_key_dim, self.cross_value_dim,
                                shape, encoder_sequence_shape)
        self._feedforward_intermediate_dense = keras.layers.Dense(
            self.intermediate_dim, activation=self.activation, dtype=self.dtype_policy,
            name="feedforward_intermediate_dense", **self._initializers())
        self._feedforward_intermediate_dense.build(shape)
        self._feedforward_output_dense = keras.layers.Dense(
            int(shape[-1]), dtype=self.dtype_policy, name="feedforward_output_dense", **self._initializers())
        self._feedforward_output_dense.build(tuple(shape[:-1]) + (self.intermediate_dim,))
        self._feedforward_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="feedforward_layer_norm")
        self._feedforward_layer_norm.build(shape)
        self._feedforward_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy,
                                                         name="feedforward_dropout")
        self.built = True

    def _residual(self, x, norm, branch, dropout, training):
        h = branch(norm(x) if self.normalize_first else x)
        x = x + dropout(h, training=training)
        return x if self.normalize_first else norm(x)

    def call(self, decoder_sequence, encoder_sequence=None, decoder_padding_mask=None, decoder_attention_mask=None,
             encoder_padding_mask=None, encoder_attention_mask=None, self_attention_cache=None,
             self_attention_cache_update_index=None, cross_attention_cache=None,
             cross_attention_cache_update_index=None, use_causal_mask=True, training=None, mask=None):
        owner = f"{type(self).__name__} {self.name!r}"
        if self_attention_cache is not None or cross_attention_cache is not None:
            raise ValueError(f"{owner}: Expected no key/value cache (this block runs whole sequences). Received: "
                             "a cache; generate with the keras-hub model, or call the block without one")
        if (encoder_sequence is None) != (self._cross_attention_layer is None):
            raise ValueError(f"{owner}: Expected the encoder sequence it was built with "
                             f"({'one' if self._cross_attention_layer is not None else 'none'}). Received: "
                             f"encoder_sequence={'None' if encoder_sequence is None else 'a tensor'}; "
                             "cross-attention exists only in a block first called with an encoder sequence, "
                             "so call it as it was built or build a new block")
        self_mask = self._attention_mask(mask if decoder_padding_mask is None else decoder_padding_mask,
                                         decoder_attention_mask)

        def self_attention(h):
            return self._self_attention_layer(query=h, value=h, attention_mask=self_mask,
                                              use_causal_mask=bool(use_causal_mask), training=training)

        x = self._residual(decoder_sequence, self._self_attention_layer_norm, self_attention,
                           self._self_attention_dropout, training)
        if encoder_sequence is not None:
            cross_mask = self._attention_mask(encoder_padding_mask, encoder_attention_mask)

            def cross_attention(h):
                return self._cross_attention_layer(query=h, value=encoder_sequence, attention_mask=cross_mask,
                                                   training=training)

            x = self._residual(x, self._cross_attention_layer_norm, cross_attention, self._cross_attention_dropout,
                               training)

        def feed_forward(h):
            return self._feedforward_output_dense(self._feedforward_intermediate_dense(h))

        return self._residual(x, self._feedforward_layer_norm, feed_forward, self._feedforward_dropout, training)

    def compute_output_shape(self, decoder_sequence_shape, encoder_sequence_shape=None):
        return decoder_sequence_shape

    def get_config(self):
        config = super().get_config()
        config.update({"cross_num_heads": self.cross_num_heads, "cross_key_dim": self.cross_key_dim,
                       "cross_value_dim": self.cross_value_dim})
        return config


@_register
class TransformerStack(keras.layers.Layer):
    """Pre-norm transformer blocks of individual sizes, then a LayerNormalization: the
    computation of keras-hub's ``ViTEncoder`` (dropout, ``num_layers`` blocks
    ``x + MHA(LN(x))``, ``x + MLP(LN(x))``, a final LayerNormalization) when every block may
    have its own head count and MLP width. In training, dropout acts after each residual
    branch (keras-hub's ViT block also drops inside the MLP); at inference both are the same.

    Args:
        blocks: one dict per block with ``num_heads``, ``key_dim``, ``intermediate_dim`` (and
            optionally ``value_dim``).
        dropout: dropout rate at the input and in the blocks (default 0).
        attention_dropout: dropout rate of the attention weights (default 0).
        activation: of the MLP hidden layer (default "gelu").
        layer_norm_epsilon: of every LayerNormalization (default 1e-6).

    Examples:
        >>> import numpy as np
        >>> stack = TransformerStack([{"num_heads": 2, "key_dim": 4, "intermediate_dim": 8},
        ...                           {"num_heads": 1, "key_dim": 4, "intermediate_dim": 8}])
        >>> y = stack(np.zeros((2, 3, 6), "float32"))
        >>> stack.num_layers, [b.num_heads for b in stack.blocks]
        (2, [2, 1])
    """

    def __init__(self, blocks, dropout=0.0, attention_dropout=0.0, activation="gelu", layer_norm_epsilon=1e-6,
                 **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        if not isinstance(blocks, (list, tuple)) or not blocks or not all(isinstance(b, dict) for b in blocks):
            raise TypeError(f"{owner}: Expected `blocks` to be a non-empty list of dicts (num_heads, key_dim, "
                            f"intermediate_dim). Received: blocks={blocks!r}")
        self.block_sizes = []
        for i, b in enumerate(blocks):
            missing = {"num_heads", "key_dim", "intermediate_dim"} - set(b)
            if missing:
                raise ValueError(f"{owner}: Expected block {i} to give {sorted(missing)}. Received: {b!r}")
            self.block_sizes.append({k: check_int(f"blocks[{i}][{k!r}]", v, owner, minimum=1) for k, v in b.items()})
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.blocks = [
            TransformerBlock(dropout=self.dropout, activation=self.activation, layer_norm_epsilon=self.layer_norm_epsilon,
                             normalize_first=True, attention_dropout=self.attention_dropout, dtype=self.dtype_policy,
                             name=f"block_{i}", **sizes)
            for i, sizes in enumerate(self.block_sizes)
        ]
        self._input_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="dropout")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
                                                          name="ln")

    @property
    def num_layers(self):
        return len(self.block_sizes)

    def build(self, inputs_shape):
        for block in self.blocks:
            block.build(inputs_shape)
        self.layer_norm.build(inputs_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = self._input_dropout(inputs, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.layer_norm(x)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update({"blocks": [dict(b) for b in self.block_sizes], "dropout": self.dropout,
                       "attention_dropout": self.attention_dropout,
                       "activation": keras.activations.serialize(self.activation),
                       "layer_norm_epsilon": self.layer_norm_epsilon})
        return config


@_register
class PatchEmbedding(keras.layers.Layer):
    """Image patches embedded as a sequence: a ``patch_size``-strided convolution to
    ``hidden_dim`` channels, flattened over the patch grid, an optional learned class token in
    front, plus a learned position table; the computation and weight order of keras-hub's
    ``ViTPatchingAndEmbedding`` (class token, convolution kernel and bias, positions), whose own
    config does not load back. Channels last.

    Args:
        image_size: ``(height, width)`` of the input images.
        patch_size: ``(height, width)`` of a patch.
        hidden_dim: embedding channels.
        num_channels: image channels (default 3).
        use_class_token: prepend a class token (default True).
        use_patch_bias: bias in the patch convolution (default True).

    Examples:
        >>> import numpy as np
        >>> layer = PatchEmbedding((8, 8), (4, 4), hidden_dim=6)
        >>> tuple(layer(np.zeros((2, 8, 8, 3), "float32")).shape)   # 4 patches + class token
        (2, 5, 6)
    """

    def __init__(self, image_size, patch_size, hidden_dim, num_channels=3, use_class_token=True,
                 use_patch_bias=True, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.image_size = tuple(check_int("image_size", int(s), owner, minimum=1) for s in image_size)
        self.patch_size = tuple(check_int("patch_size", int(s), owner, minimum=1) for s in patch_size)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, owner, minimum=1)
        self.num_channels = check_int("num_channels", num_channels, owner, minimum=1)
        self.use_class_token = bool(use_class_token)
        self.use_patch_bias = bool(use_patch_bias)
        self.num_patches = (self.image_size[0] // self.patch_size[0]) * (self.image_size[1] // self.patch_size[1])
        self.num_positions = self.num_patches + int(self.use_class_token)

    def build(self, input_shape):
        if self.use_class_token:
            self.class_token = self.add_weight(shape=(1, 1, self.hidden_dim), initializer="random_normal",
                                               name="class_token")
        self.patch_embedding = keras.layers.Conv2D(
            self.hidden_dim, self.patch_size, strides=self.patch_size, padding="valid",
            use_bias=self.use_patch_bias, dtype=self.dtype_policy, name="patch_embedding")
        self.patch_embedding.build(input_shape)
        self.position_embedding = keras.layers.Embedding(
            self.num_positions, self.hidden_dim, embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=self.dtype_policy, name="position_embedding")
        self.position_embedding.build((1, self.num_positions))
        self.built = True

    def call(self, inputs):
        x = self.patch_embedding(inputs)
        x = ops.reshape(x, (ops.shape(x)[0], -1, self.hidden_dim))
        if self.use_class_token:
            token = ops.tile(ops.cast(self.class_token, x.dtype), (ops.shape(x)[0], 1, 1))
            x = ops.concatenate([token, x], axis=1)
        return x + self.position_embedding(ops.expand_dims(ops.arange(self.num_positions), 0))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_positions, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"image_size": self.image_size, "patch_size": self.patch_size, "hidden_dim": self.hidden_dim,
                       "num_channels": self.num_channels, "use_class_token": self.use_class_token,
                       "use_patch_bias": self.use_patch_bias})
        return config
