"""Per-layer structured sparsity of a Keras model: zero weights, channels, kernels, removable params.

Which weights of which layer kinds are kernels is one table, :data:`KERNEL_SLOTS` (first
``isinstance`` match wins); :mod:`tf_groupsparse.regularize` attaches penalties through the
same table. A kernel is read in the layout ``(*S, C_in, C_out)`` of METHODS.md;
Conv*Transpose kernels, stored ``(*S, C_out, C_in)``, are swapped before counting.

Example:
    >>> import keras
    >>> from tf_groupsparse.sparsity import sparsity_report
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    >>> w = model.get_layer("fc").kernel
    >>> _ = w.assign(keras.ops.zeros_like(w))
    >>> report = sparsity_report(model)
    >>> report.rows[0]["zero_in"], report.rows[0]["removable"]
    (4, 15)
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from ._validation import check_keras_model, check_number
from .report import Report

# --------------------------------------------------------------------------- kernel table


@dataclass(frozen=True)
class KernelSlot:
    """One kernel-like weight of a layer kind.

    Attributes:
        weight: attribute holding the variable (``"kernel"``, ``"depthwise_kernel"``, ...).
        regularizer_arg: constructor argument that takes its regularizer.
        constraint_arg: constructor argument that takes its constraint.
        layout: ``"standard"`` ``(*S, C_in, C_out)``; ``"transposed"`` ``(*S, C_out, C_in)``
            (Conv*Transpose); ``"depthwise"`` ``(*S, C, m)`` where output channel ``c * m + j``
            is the single kernel ``K_cj``.
        output: True for the slot whose output channels are the layer's (bias, BN follow it).
        regularizable: False where a regularizer's ``axis`` would name the wrong channels
            (transposed kernels), so :func:`~tf_groupsparse.regularize.regularize` refuses it.
    """

    weight: str
    regularizer_arg: str
    constraint_arg: str
    layout: str = "standard"
    output: bool = True
    regularizable: bool = True


_L = keras.layers
_KERNEL = KernelSlot("kernel", "kernel_regularizer", "kernel_constraint")
_DEPTHWISE = KernelSlot("kernel", "depthwise_regularizer", "depthwise_constraint", "depthwise")

#: (layer classes, kernel slots), matched in order with isinstance; users may prepend entries.
KERNEL_SLOTS = [
    (
        (_L.SeparableConv1D, _L.SeparableConv2D),
        (
            KernelSlot("depthwise_kernel", "depthwise_regularizer", "depthwise_constraint", "depthwise", output=False),
            KernelSlot("pointwise_kernel", "pointwise_regularizer", "pointwise_constraint"),
        ),
    ),
    ((_L.DepthwiseConv1D, _L.DepthwiseConv2D), (_DEPTHWISE,)),
    (
        (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose),
        (KernelSlot("kernel", "kernel_regularizer", "kernel_constraint", "transposed", regularizable=False),),
    ),
    ((_L.Conv1D, _L.Conv2D, _L.Conv3D, _L.Dense), (_KERNEL,)),
    ((_L.Embedding,), (KernelSlot("embeddings", "embeddings_regularizer", "embeddings_constraint"),)),
]


def kernel_slots(layer):
    """The :class:`KernelSlot` tuple of `layer` from :data:`KERNEL_SLOTS`, or ``()``.

    Example:
        >>> [s.regularizer_arg for s in kernel_slots(keras.layers.SeparableConv2D(4, 3))]
        ['depthwise_regularizer', 'pointwise_regularizer']
    """
    for classes, slots in KERNEL_SLOTS:
        if isinstance(layer, classes):
            return slots
    return ()


def iter_layers(model, prefix=""):
    """Yield ``(path, layer)`` for every layer, descending into nested models.

    ``path`` joins the names of enclosing models with ``/`` (``"backbone/conv1"``).

    Example:
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="inner")
        >>> outer = keras.Sequential([keras.Input((3,)), inner])
        >>> [p for p, _ in iter_layers(outer)]
        ['inner/d']
    """
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer, path + "/")
        else:
            yield path, layer


# --------------------------------------------------------------------------- counting


def zero_mask(values, threshold):
    """Boolean mask of weights counted as zero: ``|w| < threshold`` or ``w == 0``."""
    values = np.asarray(values)
    return (np.abs(values) < threshold) | (values == 0)


def _standard(kernel, layout):
    kernel = np.asarray(kernel)
    if layout == "transposed":
        return np.swapaxes(kernel, -1, -2)
    return kernel


def kernel_stats(kernel, threshold=1e-3, layout="standard"):
    """Count zero weights, channels and kernels of one kernel.

    With ``Z = zero_mask(W)`` on the standard layout ``(*S, C_in, C_out)``:
    ``zero_kernel[i, o] = all(Z[..., i, o])``, ``zero_in[i] = all_o zero_kernel[i, o]``,
    ``zero_out[o] = all_i zero_kernel[i, o]``, and the removable kernel weights are
    ``prod(S) * #{(i, o): zero_in[i] or zero_out[o]}``. For ``layout="depthwise"``
    ``(*S, C, m)`` the ``C * m`` output channels are the single kernels, so
    ``zero_out = zero_kernel`` flattened and removable = the weights of zero kernels.

    Args:
        kernel: array in the `layout` given.
        threshold: a weight counts as zero when ``|w| < threshold`` or ``w == 0``
            (default 1e-3; 0 counts exact zeros only).
        layout: ``"standard"``, ``"transposed"`` or ``"depthwise"`` (see :class:`KernelSlot`).

    Returns:
        dict with ``weights, zero_weights, in_channels, zero_in, out_channels, zero_out,
        kernels, zero_kernels, removable_kernel`` and the boolean vector ``zero_out_mask``.

    Example:
        >>> w = np.ones((2, 3)); w[0] = 0            # Dense kernel, input row 0 is zero
        >>> s = kernel_stats(w)
        >>> s["zero_in"], s["zero_out"], s["removable_kernel"]
        (1, 0, 3)
    """
    w = _standard(kernel, layout)
    z = zero_mask(w, threshold)
    c_in, c_out = w.shape[-2], w.shape[-1]
    k = int(np.prod(w.shape[:-2])) if w.ndim > 2 else 1
    blocks = np.moveaxis(z, (-2, -1), (0, 1)).reshape(c_in, c_out, k)
    zero_kernel = blocks.all(axis=-1)
    zero_in = zero_kernel.all(axis=1)
    if layout == "depthwise":
        zero_out = zero_kernel.reshape(-1)
        removable = k * int(zero_kernel.sum())
    else:
        zero_out = zero_kernel.all(axis=0)
        removable = k * int((zero_in[:, None] | zero_out[None, :]).sum())
    return {
        "weights": int(w.size),
        "zero_weights": int(z.sum()),
        "in_channels": int(c_in),
        "zero_in": int(zero_in.sum()),
        "out_channels": int(zero_out.size),
        "zero_out": int(zero_out.sum()),
        "kernels": int(zero_kernel.size),
        "zero_kernels": int(zero_kernel.sum()),
        "removable_kernel": removable,
        "zero_out_mask": zero_out,
    }


def _layer_output(layer):
    try:
        return layer.output
    except (AttributeError, ValueError, RuntimeError):  # never called, or called more than once
        return None


def _following_batchnorms(model):
    """Map id(producer layer) -> list of BatchNormalization layers fed by its output tensor."""
    layers = [layer for _, layer in iter_layers(model)]
    outputs = {}
    for layer in layers:
        out = _layer_output(layer)
        if out is not None:
            outputs[id(out)] = layer
    following = {}
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            try:
                source = outputs.get(id(layer.input))
            except (AttributeError, ValueError, RuntimeError):
                source = None
            if source is not None:
                following.setdefault(id(source), []).append(layer)
    return following


# --------------------------------------------------------------------------- report


class SparsityReport(Report):
    """A :class:`~tf_groupsparse.report.Report` with one row per kernel and model totals.

    Row columns: ``layer, type, weight, params, zero_weights, zero_frac, in_channels, zero_in,
    out_channels, zero_out, kernels, zero_kernels, removable``. Totals sum them and add
    ``model_params``, ``group_sparsity_input`` (zero input groups / input groups),
    ``group_sparsity_output``, ``zero_weight_fraction`` and ``removable_fraction`` (removable /
    model params).
    """

    def row(self, layer):
        """The first row whose ``layer`` column equals `layer` (raises KeyError if none)."""
        for row in self.rows:
            if row["layer"] == layer:
                return row
        raise KeyError(f"No row for layer {layer!r}; rows: {[r['layer'] for r in self.rows]}")


def sparsity_report(model, threshold=1e-3):
    """Measure the structured sparsity of every kernel in `model` (nested models included).

    A weight is zero when ``|w| < threshold`` (or exactly 0). Per kernel of the layout
    ``(*S, C_in, C_out)`` with ``K_io = W[..., i, o]``:

    - ``zero_in``: input channels i with ``W[..., i, :]`` all zero (an ``axis="input"`` group);
    - ``zero_out``: output channels o with ``W[..., :, o]`` all zero (an ``axis="output"`` group);
    - ``zero_kernels``: pairs (i, o) with ``K_io`` all zero;
    - ``removable``: the parameters a channel shrink of this layer alone deletes, precisely
      ``prod(S) * #{(i, o): i in zero_in or o in zero_out}`` kernel weights, plus, on the
      layer's output kernel, one bias entry per zero output channel and the per-channel
      weights (gamma, beta, moving mean, moving variance as present) of every
      BatchNormalization whose input is exactly this layer's output. It assumes the constant
      that a zero filter still emits (its bias through BN and activation) is folded into the
      consumer, and it does not count the producer's filter that a zero input channel makes
      dead (that appears once the producer itself is shrunk).

    Depthwise kernels ``(*S, C, m)`` have ``C * m`` output channels, one kernel each, so their
    ``zero_out`` equals ``zero_kernels``. Layers without a kernel in :data:`KERNEL_SLOTS` are
    listed in ``report.meta["skipped"]`` when they hold weights.

    Args:
        model: a built ``keras.Model``.
        threshold: zero threshold, >= 0 (default 1e-3, the HGSR setting; 0 counts exact zeros).

    Returns:
        :class:`SparsityReport`; ``str()`` is a table, ``to_dict()`` / ``to_markdown()`` convert it.

    Raises:
        TypeError: `model` is not a keras.Model or `threshold` not a number.
        ValueError: the model is not built or `threshold` < 0.

    Reference: the zero threshold 1e-3 and group definitions follow Mitsuno, Miyao & Kurita,
    "Hierarchical Group Sparse Regularization for Deep Convolutional Neural Networks", IJCNN 2020.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="c")])
        >>> sparsity_report(m).row("c")["params"]
        40
    """
    owner = "sparsity_report"
    check_keras_model(model, owner)
    threshold = check_number("threshold", threshold, owner, minimum=0.0)
    following = _following_batchnorms(model)
    rows, skipped = [], []
    for path, layer in iter_layers(model):
        slots = kernel_slots(layer)
        if not slots:
            if layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
                skipped.append(path)
            continue
        for slot in slots:
            variable = getattr(layer, slot.weight, None)
            if variable is None:  # unbuilt layer inside a built model: nothing to count
                skipped.append(f"{path}/{slot.weight}")
                continue
            stats = kernel_stats(keras.ops.convert_to_numpy(variable), threshold, slot.layout)
            params, removable = stats["weights"], stats["removable_kernel"]
            zero_out = stats.pop("zero_out_mask")
            if slot.output:
                bias = getattr(layer, "bias", None)
                if bias is not None:
                    params += int(np.prod(bias.shape))
                    removable += int(zero_out.sum())
                for bn in following.get(id(layer), ()):
                    if all(tuple(v.shape) == (zero_out.size,) for v in bn.weights):
                        removable += len(bn.weights) * int(zero_out.sum())
            rows.append({
                "layer": path if len(slots) == 1 else f"{path}/{slot.weight}",
                "type": type(layer).__name__,
                "params": params,
                "zero_weights": stats["zero_weights"],
                "zero_frac": stats["zero_weights"] / max(stats["weights"], 1),
                "in_channels": stats["in_channels"],
                "zero_in": stats["zero_in"],
                "out_channels": stats["out_channels"],
                "zero_out": stats["zero_out"],
                "kernels": stats["kernels"],
                "zero_kernels": stats["zero_kernels"],
                "removable": removable,
                "_weights": stats["weights"],
            })
    totals = _totals(rows, model.count_params())
    for row in rows:
        row.pop("_weights")
    return SparsityReport(
        f"Sparsity of {model.name} (|w| < {threshold:g} counts as zero)",
        rows,
        totals,
        {"threshold": threshold, "skipped": skipped},
    )


def _totals(rows, model_params):
    keys = ("params", "zero_weights", "in_channels", "zero_in", "out_channels", "zero_out",
            "kernels", "zero_kernels", "removable", "_weights")
    s = {k: sum(r[k] for r in rows) for k in keys}
    return {
        "params": s["params"],
        "model_params": int(model_params),
        "zero_weights": s["zero_weights"],
        "zero_weight_fraction": s["zero_weights"] / max(s["_weights"], 1),
        "zero_in": s["zero_in"],
        "group_sparsity_input": s["zero_in"] / max(s["in_channels"], 1),
        "zero_out": s["zero_out"],
        "group_sparsity_output": s["zero_out"] / max(s["out_channels"], 1),
        "zero_kernels": s["zero_kernels"],
        "removable": s["removable"],
        "removable_fraction": s["removable"] / max(int(model_params), 1),
    }
