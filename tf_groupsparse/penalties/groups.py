"""How a kernel splits into groups, and norms that are safe at zero.

A kernel has the Keras layout ``(*S, C_in, C_out)``: ``S`` are the spatial axes (none for
Dense, ``(kh, kw)`` for Conv2D). ``K_io = W[..., i, o]`` is the kernel between input channel
``i`` and output channel ``o``.

- ``axis="input"`` (HGSR's feature-wise groups): group ``i`` is ``W[..., i, :]``; a zero group
  removes input channel ``i``.
- ``axis="output"`` (HGSR's neuron-wise groups): group ``o`` is ``W[..., :, o]``; a zero group
  removes output channel (filter) ``o``.

DepthwiseConv2D kernels ``(kh, kw, C, m)`` follow the same layout: ``axis="input"`` gives ``C``
groups of ``m`` kernels (one per input channel), ``axis="output"`` gives ``m`` groups across all
channels. Conv*Transpose kernels store ``(*S, C_out, C_in)``, so there the two names swap.

Everything here uses ``keras.ops`` so it runs inside a compiled train step.

Examples:
    >>> import numpy as np
    >>> from tf_groupsparse.penalties import groups
    >>> w = np.arange(24, dtype="float32").reshape(2, 3, 4)   # Conv1D: k=2, C_in=3, C_out=4
    >>> tuple(groups.grouped(w, "input").shape)
    (3, 8)
    >>> tuple(groups.kernel_blocks(w).shape)                  # (C_in, C_out, k)
    (3, 4, 2)
"""

from __future__ import annotations

import math

from keras import ops

from .._validation import check_choice

AXES = ("input", "output")
#: ``axis="head"``: the heads of attention layers, each over every slice of its four projections
HEAD = "head"


def check_axis(axis, owner=None, head=False):
    """Return `axis` if it is "input" or "output" (or "head" where `head` allows it), else raise
    ValueError."""
    return check_choice("axis", axis, AXES + ((HEAD,) if head else ()), owner)


def check_not_head(penalty):
    """Raise ValueError when a penalty with ``axis="head"`` is applied to one kernel: head groups
    span the query, key, value and output projections of an attention layer together."""
    if getattr(penalty, "axis", None) == HEAD:
        raise ValueError(
            f"{type(penalty).__name__}: Expected to be attached with tgs.regularize(model, penalty) when "
            f"axis='head' (a head's group spans the four projections of an attention layer, which one "
            f"kernel regularizer or constraint cannot see). Received: axis='head' on a single kernel"
        )


def check_kernel(kernel, owner=None):
    """Raise ValueError unless `kernel` has rank >= 2 and a fully known static shape."""
    shape = tuple(kernel.shape)
    if len(shape) < 2 or any(d is None for d in shape):
        prefix = f"{owner}: " if owner else ""
        raise ValueError(
            f"{prefix}Expected a kernel of rank >= 2 with layout (*spatial, C_in, C_out) and a known "
            f"shape (Dense, Conv1D/2D/3D, DepthwiseConv). Received: kernel.shape={shape}"
        )
    return shape


def group_axis_index(axis):
    """Position of the grouping axis in a kernel: -2 for "input", -1 for "output"."""
    return -2 if axis == "input" else -1


def n_groups(shape, axis):
    """Number of groups of a kernel of `shape` along `axis`."""
    return int(shape[group_axis_index(axis)])


def kernel_blocks(kernel):
    """Reshape a kernel ``(*S, C_in, C_out)`` to ``(C_in, C_out, prod(S))``.

    Entry ``[i, o, :]`` is the flattened kernel ``K_io`` (length 1 for Dense).
    """
    shape = check_kernel(kernel)
    rank = len(shape)
    k = math.prod(shape[:-2])
    perm = (rank - 2, rank - 1) + tuple(range(rank - 2))
    return ops.reshape(ops.transpose(kernel, perm), (shape[-2], shape[-1], k))


def grouped(kernel, axis):
    """Reshape a kernel to ``(n_groups, group_size)``: one row per group along `axis`."""
    shape = check_kernel(kernel)
    rank = len(shape)
    first = rank + group_axis_index(axis)
    perm = (first,) + tuple(d for d in range(rank) if d != first)
    g = shape[first]
    return ops.reshape(ops.transpose(kernel, perm), (g, math.prod(shape) // g))


def ungrouped(rows, shape, axis):
    """Inverse of :func:`grouped`: rows ``(n_groups, group_size)`` back to a kernel of `shape`."""
    shape = tuple(int(d) for d in shape)
    rank = len(shape)
    first = rank + group_axis_index(axis)
    rest = tuple(d for d in range(rank) if d != first)
    moved = (shape[first],) + tuple(shape[d] for d in rest)
    perm = (first,) + rest
    inverse = [0] * rank
    for position, dim in enumerate(perm):
        inverse[dim] = position
    return ops.transpose(ops.reshape(rows, moved), inverse)


def safe_sqrt(x):
    """``sqrt(x)`` for ``x >= 0`` whose gradient at ``x == 0`` is 0 instead of inf/NaN."""
    positive = x > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, x, ops.ones_like(x))), ops.zeros_like(x))


def safe_l2(x, axis=-1, keepdims=False):
    """Euclidean norm along `axis` with a finite (zero) gradient where the norm is 0."""
    return safe_sqrt(ops.sum(ops.square(x), axis=axis, keepdims=keepdims))


def safe_abs(x):
    """``|x|`` whose gradient at ``x == 0`` is the subgradient 0 on every backend (JAX's own
    ``abs`` has gradient 1 there)."""
    x = ops.convert_to_tensor(x)
    return ops.where(ops.equal(x, 0), ops.zeros_like(x), ops.abs(x))


def l1(x, axis=-1, keepdims=False):
    """Sum of absolute values along `axis` (its gradient at 0 is the subgradient 0)."""
    return ops.sum(safe_abs(x), axis=axis, keepdims=keepdims)
