"""Layers for block-diagonal (grouped) models and the fixed block mask constraint.

- :class:`BlockDiagonalDense`: ``y = act(x W_bd + b)`` where ``W_bd`` is block diagonal with K
  blocks ``W_k`` of shape ``(in_k, out_k)``; only the blocks are stored
  (``params = sum_k in_k * out_k (+ units bias)``).
- :class:`BlockMask`: a kernel constraint ``W <- W * M`` with ``M_io = [c_i == g_o]``, which
  keeps off-block weights at zero while fine-tuning a masked model.
- :class:`ChannelGather` / :class:`ChannelSlice`: reorder / slice the last (channel) axis.

Block-diagonal structure of a layer's weights as learned by EM: Yi & Choi, "Learning the group
structure of deep neural networks with an expectation maximization method", ICDMW 2018.

Examples:
    >>> import numpy as np
    >>> from tf_groupsparse.layers import BlockDiagonalDense
    >>> layer = BlockDiagonalDense(8, n_groups=4)
    >>> tuple(layer(np.ones((2, 16), "float32")).shape), layer.count_params()  # 4 blocks 4x2 + 8 bias
    ((2, 8), 40)
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
from keras import ops

from ._validation import check_choice, check_int, renamed

register = keras.saving.register_keras_serializable(package="tf_groupsparse")


def _sizes(name, value, total, k, owner):
    """Validate a list of K non-negative block sizes (or None)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise TypeError(f"{owner}: Expected `{name}` to be a list of non-negative ints (block sizes). Received: {name}={value!r}")
    value = [int(v) for v in value]
    if len(value) != k:
        raise ValueError(f"{owner}: Expected `{name}` to have one size per group (groups={k}). Received: {name}={value}")
    if total is not None and sum(value) != total:
        raise ValueError(f"{owner}: Expected `{name}` to sum to {total}. Received: {name}={value} (sum {sum(value)})")
    return value


def _even(total, k, what, owner):
    if total % k:
        raise ValueError(
            f"{owner}: Expected {what} divisible by groups={k} for equal blocks, or pass explicit block sizes. "
            f"Received: {what}={total}"
        )
    return [total // k] * k


@register
class BlockDiagonalDense(keras.layers.Layer):
    """Dense layer with a block-diagonal kernel: ``y = act(x W_bd + b)``.

    Inputs are split into K contiguous blocks of sizes ``input_groups`` and block k feeds only
    the k-th contiguous block of ``output_groups`` outputs: ``y[out block k] = x[in block k] W_k``.
    Channels must therefore be ordered group by group (``to_block_diagonal`` takes care of it).
    An output block with no inputs gives ``act(b)``; inputs of a block with no outputs are unused.

    Implementations (same weights, so they can be switched with ``for_target``):
    ``"batched"``: one batched matmul, ``x`` reshaped to ``(..., K, in/K)`` and
    ``einsum("...ka,kab->...kb")`` with the kernel ``(K, in/K, out/K)`` (equal blocks only);
    ``"grouped_conv"``: a 1x1 ``conv`` with K groups on a ``(N, 1, 1, in)`` reshape (equal blocks
    only); ``"split"``: per-block matmul and concat (any block sizes).

    Weights: equal blocks store one ``kernel`` of shape ``(K, in/K, out/K)``; unequal blocks store
    ``kernel_k`` of shape ``(in_k, out_k)`` for each block with ``in_k, out_k > 0``.

    Args:
        units: output width (sum of the output block sizes).
        n_groups: K, default 2 (``groups`` is its deprecated name).
        input_groups: list of K input block sizes; default None = K equal blocks.
        output_groups: list of K output block sizes; default None = K equal blocks.
        implementation: "batched" (default), "split" or "grouped_conv".
        activation: default None. use_bias: default True.
        kernel_initializer: default "glorot_uniform". bias_initializer: default "zeros".

    Raises:
        ValueError: bad units/n_groups/sizes (TypeError for the wrong types); a
            batched/grouped_conv implementation with unequal blocks; an input width that does
            not match ``input_groups``.

    Examples:
        >>> layer = BlockDiagonalDense(6, n_groups=2, input_groups=[3, 1], output_groups=[2, 4],
        ...                            implementation="split")
    """

    IMPLEMENTATIONS = ("batched", "split", "grouped_conv")

    def __init__(self, units, n_groups=None, input_groups=None, output_groups=None, implementation="batched",
                 activation=None, use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 groups=None, **kwargs):
        super().__init__(**kwargs)
        owner = f"BlockDiagonalDense({self.name!r})"
        n_groups = renamed(owner, "n_groups", n_groups, "groups", groups)
        self.units = check_int("units", units, owner, minimum=1)
        self.n_groups = check_int("n_groups", 2 if n_groups is None else n_groups, owner, minimum=1)
        self.input_groups = _sizes("input_groups", input_groups, None, self.n_groups, owner)
        self.output_groups = _sizes("output_groups", output_groups, self.units, self.n_groups, owner) or _even(
            self.units, self.n_groups, "units", owner)
        self.implementation = check_choice("implementation", implementation, self.IMPLEMENTATIONS, owner)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self._owner = owner
        if self.input_groups is not None:
            self._check_implementation(self.input_groups)

    @property
    def groups(self):
        """Deprecated name of :attr:`n_groups`."""
        return self.n_groups

    def _equal(self, in_sizes):
        return len(set(in_sizes)) == 1 and len(set(self.output_groups)) == 1

    def _check_implementation(self, in_sizes):
        if self.implementation != "split" and not self._equal(in_sizes):
            raise ValueError(
                f"{self._owner}: Expected equal blocks for implementation={self.implementation!r}; use "
                f"implementation='split' for unequal blocks. Received: input_groups={in_sizes}, "
                f"output_groups={self.output_groups}"
            )

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None:
            raise ValueError(f"{self._owner}: Expected a known last input dimension. Received: input_shape={input_shape}")
        if self.input_groups is None:
            self.input_groups = _even(int(width), self.n_groups, "the input width", self._owner)
        elif sum(self.input_groups) != width:
            raise ValueError(
                f"{self._owner}: Expected an input width of sum(input_groups)={sum(self.input_groups)}. "
                f"Received: input_shape={input_shape}"
            )
        self._check_implementation(self.input_groups)
        self.equal_blocks = self._equal(self.input_groups)
        if self.equal_blocks:
            a, b = self.input_groups[0], self.output_groups[0]
            self.kernel = self.add_weight(name="kernel", shape=(self.n_groups, a, b), initializer=self.kernel_initializer)
        else:
            self.kernels = [
                self.add_weight(name=f"kernel_{k}", shape=(a, b), initializer=self.kernel_initializer)
                if a and b else None
                for k, (a, b) in enumerate(zip(self.input_groups, self.output_groups))
            ]
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer) if self.use_bias else None

    def _block(self, k):
        if self.equal_blocks:
            return self.kernel[k]
        return self.kernels[k]

    def _batched(self, x):
        k, a = self.n_groups, self.input_groups[0]
        inner = tuple(x.shape[1:-1])
        xs = ops.reshape(x, (-1,) + inner + (k, a))
        y = ops.einsum("...ka,kab->...kb", xs, self.kernel)
        return ops.reshape(y, (-1,) + inner + (self.units,))

    def _grouped_conv(self, x):
        k, a, b = self.n_groups, self.input_groups[0], self.output_groups[0]
        inner = tuple(x.shape[1:-1])
        xs = ops.reshape(x, (-1, 1, 1, k * a))
        w = ops.reshape(ops.transpose(self.kernel, (1, 0, 2)), (1, 1, a, k * b))
        y = ops.conv(xs, w, strides=1, padding="valid")
        return ops.reshape(y, (-1,) + inner + (self.units,))

    def _split(self, x):
        outs, start = [], 0
        for k, (a, b) in enumerate(zip(self.input_groups, self.output_groups)):
            if b:
                if a:
                    outs.append(ops.matmul(x[..., start:start + a], self._block(k)))
                else:
                    outs.append(ops.zeros_like(x[..., :1]) * ops.zeros((b,), dtype=x.dtype))
            start += a
        return outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=-1)

    def call(self, inputs):
        y = {"batched": self._batched, "split": self._split, "grouped_conv": self._grouped_conv}[self.implementation](inputs)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def block_kernels(self):
        """List of the K blocks as NumPy arrays ``(in_k, out_k)`` (zeros for empty blocks)."""
        return [
            keras.ops.convert_to_numpy(self._block(k)) if a and b else np.zeros((a, b), "float32")
            for k, (a, b) in enumerate(zip(self.input_groups, self.output_groups))
        ]

    def set_block_kernels(self, blocks):
        """Assign the K blocks (arrays ``(in_k, out_k)``)."""
        if self.equal_blocks:
            self.kernel.assign(np.stack(blocks).astype("float32"))
        else:
            for var, block in zip(self.kernels, blocks):
                if var is not None:
                    var.assign(np.asarray(block, "float32"))

    def dense_kernel(self):
        """The full ``(in, units)`` block-diagonal kernel as a NumPy array."""
        w = np.zeros((sum(self.input_groups), self.units), "float32")
        r = c = 0
        for block, (a, b) in zip(self.block_kernels(), zip(self.input_groups, self.output_groups)):
            w[r:r + a, c:c + b] = block
            r, c = r + a, c + b
        return w

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units, "n_groups": self.n_groups, "input_groups": self.input_groups,
            "output_groups": self.output_groups, "implementation": self.implementation,
            "activation": keras.activations.serialize(self.activation) if self.activation is not None else None,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config


def _index_list(name, value, owner):
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{owner}: Expected `{name}` to be a list of ints. Received: {name}={value!r}")
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        raise TypeError(f"{owner}: Expected `{name}` to be a non-empty list of non-negative ints. Received: {name}={value!r}")
    return [int(v) for v in arr]


@register
class ChannelGather(keras.layers.Layer):
    """Reorder/select the last axis: ``y[..., j] = x[..., indices[j]]`` (``keras.ops.take``).

    Args:
        indices: list of channel indices.

    Examples:
        >>> keras.ops.convert_to_numpy(ChannelGather([2, 0, 1])(np.array([[10., 20., 30.]]))).tolist()
        [[30.0, 10.0, 20.0]]
    """

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = _index_list("indices", indices, f"ChannelGather({self.name!r})")
        self._indices = np.asarray(self.indices, dtype="int32")

    def build(self, input_shape):
        if input_shape[-1] is not None and max(self.indices) >= input_shape[-1]:
            raise ValueError(
                f"ChannelGather({self.name!r}): Expected indices < {input_shape[-1]} (the channels). "
                f"Received: max(indices)={max(self.indices)}"
            )

    def call(self, inputs):
        return ops.take(inputs, self._indices, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        return {**super().get_config(), "indices": self.indices}


@register
class ChannelSlice(keras.layers.Layer):
    """Channels ``start:stop`` of the last axis: ``y = x[..., start:stop]``.

    Args:
        start: first channel (inclusive). stop: last channel (exclusive), > start.

    Examples:
        >>> keras.ops.convert_to_numpy(ChannelSlice(1, 3)(np.array([[1., 2., 3., 4.]]))).tolist()
        [[2.0, 3.0]]
    """

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        owner = f"ChannelSlice({self.name!r})"
        self.start = check_int("start", start, owner, minimum=0)
        self.stop = check_int("stop", stop, owner, minimum=self.start + 1)

    def call(self, inputs):
        return inputs[..., self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.stop - self.start,)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@register
class BlockMask(keras.constraints.Constraint):
    """Kernel constraint ``W <- W * M`` with the fixed block mask ``M_io = [c_i == g_o]``.

    The mask ``(C_in, C_out)`` broadcasts over a conv kernel's spatial axes. It is stored as the
    two label lists, so the config stays small.

    Args:
        input_groups: group label per input channel (length C_in).
        output_groups: group label per output channel (length C_out).
        constraint: another constraint applied before the mask (default None).

    Examples:
        >>> m = BlockMask([0, 1], [1, 0, 0])
        >>> keras.ops.convert_to_numpy(m(np.ones((2, 3), "float32"))).tolist()
        [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    """

    def __init__(self, input_groups, output_groups, constraint=None):
        self.input_groups = _index_list("input_groups", input_groups, "BlockMask")
        self.output_groups = _index_list("output_groups", output_groups, "BlockMask")
        self.constraint = keras.constraints.get(constraint)
        self.mask = (np.asarray(self.input_groups)[:, None] == np.asarray(self.output_groups)[None, :]).astype("float32")

    def __call__(self, w):
        if tuple(w.shape[-2:]) != self.mask.shape:
            raise ValueError(
                f"BlockMask: Expected a kernel whose last two axes are {self.mask.shape} (C_in, C_out). "
                f"Received: w.shape={tuple(w.shape)}"
            )
        if self.constraint is not None:
            w = self.constraint(w)
        return w * ops.cast(self.mask, w.dtype)

    def get_config(self):
        return {
            "input_groups": self.input_groups, "output_groups": self.output_groups,
            "constraint": keras.constraints.serialize(self.constraint) if self.constraint is not None else None,
        }
