"""Masked and block-diagonal versions of a model from a GroupStructure.

- :func:`apply_mask`: same architecture; every grouped layer gets a :class:`BlockMask` kernel
  constraint (``W <- W * M``, ``M_io = [c_i == g_o]``) and starts with masked weights, so
  off-block weights stay zero while fine-tuning.
- :func:`to_block_diagonal`: a new functional model in which each grouped Dense becomes a
  :class:`BlockDiagonalDense` and each grouped Conv1D/Conv2D becomes ``Conv(groups=K)`` (equal
  blocks) or slice + per-block conv + concat (unequal blocks); its outputs equal the masked
  model's. Channels are reordered group by group (inputs by the stable argsort of ``c``,
  outputs by that of ``g``). The reordering is folded into the weights where the layout allows:
  a grouped layer's outputs stay in block order, BatchNormalization parameters follow, the
  consumer's kernel rows are permuted (through Flatten too), and an ungrouped producer's output
  channels (kernel columns and bias) are permuted to the order a grouped consumer needs. Where
  no weight can absorb it (the model input, a grouped layer after Flatten, groups that do not
  chain, a grouped last layer) one :class:`ChannelGather` layer is inserted.
- :func:`for_target`: switch the grouped layers' implementation for an export target.

Supported: Sequential models and functional linear chains of Dense, Conv1D, Conv2D,
BatchNormalization, activations, pooling, Flatten and Dropout (channels_last).

Source: Yi & Choi, "Learning the group structure of deep neural networks with an expectation
maximization method", ICDMW 2018.

Examples:
    >>> import keras
    >>> from tf_groupsparse.grouping import fit_groups
    >>> from tf_groupsparse.grouping.rewrite import apply_mask, to_block_diagonal
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16, name="fc1"),
    ...                           keras.layers.Dense(16, name="fc2"), keras.layers.Dense(2)])
    >>> structure = fit_groups(model, 4, balanced=True, seed=0, verbose=0)
    >>> masked = apply_mask(model, structure)        # fine-tune this one
    >>> small = to_block_diagonal(masked, structure) # same outputs, 1/4 of the grouped weights
"""

from __future__ import annotations

import keras
import numpy as np

from .._validation import check_choice, check_keras_model
from ..layers import BlockDiagonalDense, BlockMask, ChannelGather, ChannelSlice
from .chain import channel_positions, linear_chain, role
from .structure import GroupStructure

# target -> BlockDiagonalDense implementation for equal blocks (unequal blocks always "split").
# Chosen from benchmarks/results/grouping_speed.md (LiteRT, XNNPack, 1 thread).
TARGETS = {"xnnpack": "batched", "portable": "split"}


def _check_structure(structure, owner):
    if not isinstance(structure, GroupStructure):
        raise TypeError(f"{owner}: Expected a GroupStructure (from fit_groups). Received: structure of type {type(structure).__name__}")
    return structure


def _clone(layer, **changes):
    config = layer.get_config()
    config.update(changes)
    return type(layer).from_config(config)


def apply_mask(model, structure):
    """A new model whose grouped layers keep their off-block kernel weights at zero.

    Each grouped layer gets the kernel constraint ``BlockMask(c, g, constraint=<its own>)``
    (applied by the optimizer after every update) and its kernel is multiplied by the mask.

    Args:
        model: built keras.Model (not modified).
        structure: GroupStructure fitted on `model`.

    Returns:
        keras.Model with the same architecture and masked weights (not compiled).

    Raises:
        TypeError: not a model / not a GroupStructure.
        ValueError: a structure layer missing from the model or with another kernel shape.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.grouping import fit_groups
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc1"),
        ...                           keras.layers.Dense(2)])
        >>> masked = apply_mask(model, fit_groups(model, 2, seed=0, verbose=0))
        >>> masked.count_params() == model.count_params()    # same shapes, off-block weights zero
        True
    """
    owner = "apply_mask"
    check_keras_model(model, owner)
    _check_structure(structure, owner).check(model)

    def clone_fn(layer):
        if layer.name in structure:
            e = structure[layer.name]
            mask = BlockMask(e.input_groups.tolist(), e.output_groups.tolist(), constraint=layer.kernel_constraint)
            return _clone(layer, kernel_constraint=keras.constraints.serialize(mask))
        return _clone(layer)

    new = keras.models.clone_model(model, clone_function=clone_fn)
    new.set_weights(model.get_weights())
    for e in structure:
        kernel = new.get_layer(e.name).kernel
        kernel.assign(keras.ops.convert_to_numpy(kernel) * e.mask())
    return new


def _inverse(perm):
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    return inv


def _desired_orders(layers, structure):
    """Output channel order for each ungrouped weight layer whose next weight layer is grouped."""
    desired = {}
    for idx, layer in enumerate(layers):
        if role(layer, "to_block_diagonal") != "weight" or layer.name in structure:
            continue
        for nxt in layers[idx + 1:]:
            r = role(nxt, "to_block_diagonal")
            if r == "flatten":
                break
            if r == "weight":
                if nxt.name in structure:
                    desired[layer.name] = structure.permutations(nxt.name)[0]
                break
    return desired


def _blocks(e):
    a, b = e.block_sizes()
    rows = np.concatenate([[0], np.cumsum(a)])
    cols = np.concatenate([[0], np.cumsum(b)])
    return a, b, rows, cols


def _grouped_dense(layer, e, wp, bias, implementation):
    a, b, rows, cols = _blocks(e)
    equal = len(set(a)) == 1 and len(set(b)) == 1
    new = BlockDiagonalDense(
        e.output_groups.size, n_groups=e.n_groups, input_groups=a.tolist(), output_groups=b.tolist(),
        implementation=implementation if equal else "split", activation=layer.get_config()["activation"],
        use_bias=layer.use_bias, name=layer.name)

    def load():
        new.set_block_kernels([wp[rows[k]:rows[k + 1], cols[k]:cols[k + 1]] for k in range(e.n_groups)])
        if layer.use_bias:
            new.bias.assign(bias)
    return new, load


def _grouped_conv(layer, e, wp, bias, x):
    """Conv(groups=K) for equal blocks, else slice + per-block conv + concat. Returns (output, loaders)."""
    a, b, rows, cols = _blocks(e)
    k = e.n_groups
    changes = {"kernel_constraint": None, "kernel_regularizer": None}
    if len(set(a)) == 1 and len(set(b)) == 1:
        conv = _clone(layer, groups=k, **changes)
        y = conv(x)
        kernel = np.concatenate([wp[..., rows[g]:rows[g + 1], cols[g]:cols[g + 1]] for g in range(k)], axis=-1)

        def load():
            conv.set_weights([kernel, bias] if layer.use_bias else [kernel])
        return y, [load]
    outs, loaders = [], []
    for g in range(k):
        if not b[g]:
            continue
        if a[g]:
            part = ChannelSlice(int(rows[g]), int(rows[g + 1]), name=f"{layer.name}_in{g}")(x)
            kernel = wp[..., rows[g]:rows[g + 1], cols[g]:cols[g + 1]]
        else:  # outputs fed by no input: act(bias) from a zero kernel on one channel
            part = ChannelSlice(0, 1, name=f"{layer.name}_in{g}")(x)
            kernel = np.zeros(wp.shape[:-2] + (1, b[g]), "float32")
        conv = _clone(layer, filters=int(b[g]), name=f"{layer.name}_block{g}", **changes)
        outs.append(conv(part))
        weights = [kernel, bias[cols[g]:cols[g + 1]]] if layer.use_bias else [kernel]
        loaders.append(lambda conv=conv, weights=weights: conv.set_weights(weights))
    y = outs[0] if len(outs) == 1 else keras.layers.Concatenate(name=f"{layer.name}_concat")(outs)
    return y, loaders


def to_block_diagonal(model, structure, *, target="xnnpack"):
    """A new, smaller functional model with block-diagonal grouped layers and the same outputs.

    For grouped layer with input order ``pi = argsort(c)`` and output order ``po = argsort(g)``
    the stored blocks are ``(W * M)[..., pi, :][..., po]`` restricted to the diagonal blocks;
    see the module docstring for where permutations are folded. Off-block weights are dropped
    (use it on a model trained with :func:`apply_mask`). Grouped layers lose their kernel
    regularizer/constraint (they were written for the full kernel).

    Args:
        model: built Sequential or linear functional keras.Model (not modified).
        structure: GroupStructure fitted on `model`.
        target: "xnnpack" (default; batched matmul for equal Dense blocks) or "portable"
            (per-block matmul + concat), see :func:`for_target`.

    Returns:
        functional keras.Model named ``<model.name>_blockdiag`` (not compiled).

    Raises:
        ValueError: unknown target, structure not matching the model, a layer kind outside the
            supported chain, or a model that is not a linear chain.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.grouping import fit_groups
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc1"),
        ...                           keras.layers.Dense(2)])
        >>> structure = fit_groups(model, 2, balanced=True, seed=0, verbose=0)
        >>> small = to_block_diagonal(model, structure, target="portable")
        >>> small.count_params() < model.count_params()
        True
    """
    owner = "to_block_diagonal"
    check_keras_model(model, owner)
    check_choice("target", target, tuple(TARGETS), owner)
    _check_structure(structure, owner).check(model)
    layers = linear_chain(model, owner)
    desired = _desired_orders(layers, structure)
    inp = keras.Input(shape=tuple(model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype)
    x, perm, loaders = inp, None, []
    for layer in layers:
        r = role(layer, owner)
        if r == "weight":
            weights = [keras.ops.convert_to_numpy(w) for w in layer.weights]
            w, bias = weights[0], (weights[1] if layer.use_bias else None)
            if perm is not None:
                w = w[..., perm, :]
            if layer.name in structure:
                e = structure[layer.name]
                pin, pout = e.permutations()
                cur = np.arange(w.shape[-2]) if perm is None else perm
                w = (weights[0] * e.mask())[..., pin, :][..., pout]
                if not np.array_equal(cur, pin):
                    x = ChannelGather(_inverse(cur)[pin].tolist(), name=f"{layer.name}_gather")(x)
                b = bias[pout] if bias is not None else None
                if e.kind == "dense":
                    new, load = _grouped_dense(layer, e, w, b, TARGETS[target])
                    x = new(x)
                    loaders.append(load)
                else:
                    x, more = _grouped_conv(layer, e, w, b, x)
                    loaders.extend(more)
                perm = pout
            else:
                out = desired.get(layer.name)
                if out is not None:
                    w, bias = w[..., out], (bias[out] if bias is not None else None)
                new = _clone(layer)
                x = new(x)
                loaders.append(lambda new=new, ws=[w] + ([bias] if bias is not None else []): new.set_weights(ws))
                perm = out
        elif r == "channelwise":
            new = _clone(layer)
            x = new(x)
            ws = [keras.ops.convert_to_numpy(v) for v in layer.weights]
            if perm is not None:
                ws = [v[perm] for v in ws]
            loaders.append(lambda new=new, ws=ws: new.set_weights(ws))
        else:
            if r == "flatten" and perm is not None:
                n = channel_positions(layer)
                perm = (np.arange(n)[:, None] * len(perm) + perm[None, :]).reshape(-1)
            x = _clone(layer)(x)
    if perm is not None and not np.array_equal(perm, np.arange(len(perm))):
        x = ChannelGather(_inverse(perm).tolist(), name="output_order")(x)
    new_model = keras.Model(inp, x, name=f"{model.name}_blockdiag")
    for load in loaders:
        load()
    return new_model


def for_target(model, target):
    """A copy of `model` whose BlockDiagonalDense layers use the implementation for `target`.

    ``"xnnpack"``: equal blocks run as one batched matmul (the fastest form in LiteRT with
    XNNPack, see benchmarks/results/grouping_speed.md); ``"portable"``: per-block matmul +
    concat (plain FullyConnected ops every TFLite runtime has). Unequal blocks are always split.
    Weights are shared layouts, so outputs are unchanged. Grouped convolutions stay
    ``Conv(groups=K)`` for both targets: LiteRT runs them with XNNPack and with its builtin
    CONV_2D kernel (checked by converting and running without the default delegate).

    Args:
        model: keras.Model (not modified). target: "xnnpack" or "portable".

    Returns:
        keras.Model (the same object when it holds no BlockDiagonalDense layer).

    Raises:
        ValueError: unknown target.

    Examples:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.grouping import GroupStructure, LayerGroups
        >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc1"),
        ...                       keras.layers.Dense(2)])
        >>> s = GroupStructure([LayerGroups("fc1", (8, 8), [0, 1] * 4, [0, 1] * 4, 2)])
        >>> fast = to_block_diagonal(m, s)                   # target="xnnpack"
        >>> portable = for_target(fast, "portable")
        >>> fast.get_layer("fc1").implementation, portable.get_layer("fc1").implementation
        ('batched', 'split')
        >>> x = np.random.rand(3, 8).astype("float32")
        >>> np.allclose(portable(x), fast(x), atol=1e-6)
        True
    """
    check_choice("target", target, tuple(TARGETS), "for_target")
    check_keras_model(model, "for_target")
    if not any(isinstance(layer, BlockDiagonalDense) for layer in model.layers):
        return model

    def clone_fn(layer):
        if isinstance(layer, BlockDiagonalDense):
            equal = len(set(layer.input_groups)) == 1 and len(set(layer.output_groups)) == 1
            return _clone(layer, implementation=TARGETS[target] if equal else "split")
        return _clone(layer)

    new = keras.models.clone_model(model, clone_function=clone_fn)
    new.set_weights(model.get_weights())
    return new
