"""Hierarchical group sparse regularization (HGSR, six variants) and the block-diagonal penalty (EMG).

Neither has a closed-form proximal operator here, so both train through the loss (their
``constraint`` is None). Square roots are zero-safe (:func:`tf_groupsparse.penalties.groups.safe_sqrt`).

Sources: Mitsuno, Miyao & Kurita, "Hierarchical Group Sparse Regularization for Deep
Convolutional Neural Networks", IJCNN 2020, arXiv 2004.04394 (HGSR); Yi & Choi, "Learning the
group structure of deep neural networks with an expectation maximization method", ICDMW 2018
(EMG).

Examples:
    >>> import keras
    >>> from tf_groupsparse.penalties import HierarchicalGroupSparse
    >>> layer = keras.layers.Conv2D(8, 3, kernel_regularizer=HierarchicalGroupSparse.squared_group_l12(1e-3))
"""

from __future__ import annotations

import numbers

import numpy as np
from keras import ops

from .._validation import check_choice, check_number
from . import groups
from .base import _GroupRegularizer, _Regularizer, _register

__all__ = ["HierarchicalGroupSparse", "BlockDiagonal", "HGSR_VARIANTS"]


def _inner_l2(blocks):
    return groups.safe_l2(blocks, axis=-1)


def _inner_squared_l1(blocks):
    return ops.square(groups.l1(blocks, axis=-1))


def _inner_sqrt_l1(blocks):
    return groups.safe_sqrt(groups.l1(blocks, axis=-1))


_INNER = {"l2": _inner_l2, "squared_l1": _inner_squared_l1, "sqrt_l1": _inner_sqrt_l1}
_OUTER = {"sqrt": groups.safe_sqrt, "square": ops.square}

#: HGSR variant name -> (inner, outer): inner(K) maps one kernel K_io to a number
#: ("l2" = ||K||_2, "squared_l1" = ||K||_1^2, "sqrt_l1" = sqrt(||K||_1)); outer maps a group's
#: sum of inner values ("sqrt" or "square").
HGSR_VARIANTS = {
    "sqrt_group_lasso": ("l2", "sqrt"),
    "squared_group_lasso": ("l2", "square"),
    "sqrt_exclusive": ("squared_l1", "sqrt"),
    "squared_exclusive": ("squared_l1", "square"),
    "sqrt_group_l12": ("sqrt_l1", "sqrt"),
    "squared_group_l12": ("sqrt_l1", "square"),
}


@_register
class HierarchicalGroupSparse(_GroupRegularizer):
    """Hierarchical group sparse regularization (HGSR), six variants, optionally mixed with l1.

    ``penalty(W) = strength * ((1 - l1_mix) * sum_g outer(sum_{k in g} inner(K_k))
    + l1_mix * sum_j |w_j|)``

    The kernel is seen as blocks ``K_io = W[..., i, o]`` (a scalar for Dense). With
    ``axis="input"`` group ``i`` covers the kernels ``K_io`` over all ``o``; with
    ``axis="output"`` group ``o`` covers ``K_io`` over all ``i``. The variants:

    ==================== ============== =========
    variant              inner(K)       outer(s)
    ==================== ============== =========
    sqrt_group_lasso     ||K||_2        sqrt(s)
    squared_group_lasso  ||K||_2        s^2
    sqrt_exclusive       ||K||_1^2      sqrt(s)
    squared_exclusive    ||K||_1^2      s^2
    sqrt_group_l12       sqrt(||K||_1)  sqrt(s)
    squared_group_l12    sqrt(||K||_1)  s^2
    ==================== ============== =========

    The reference training setting of HGSR is ``strength=1e-3``,
    ``variant="squared_group_l12"``, ``l1_mix=0.5``, ``axis="input"`` (feature-wise) on all
    conv layers except 1x1 shortcut convs. Unlike the reference code, square roots here are
    zero-safe: a zero kernel or zero group gets the subgradient 0, never NaN.
    Depthwise kernels ``(kh, kw, C, m)`` have C input groups of m kernels; Conv*Transpose
    kernels store ``(*S, C_out, C_in)``, so the axis names swap there.

    Args:
        strength: lambda >= 0. Default 1e-4.
        variant: one of the six names above. Default "squared_group_l12".
        axis: "input" (feature-wise) or "output" (neuron-wise). Default "input".
        l1_mix: weight of the plain l1 term, in [0, 1]. Default 0.0.

    Returns:
        Calling the regularizer on a kernel returns the scalar penalty. The read-only
        properties ``inner`` ("l2", "squared_l1", "sqrt_l1") and ``outer`` ("sqrt", "square")
        name the variant's parts. Each variant also has a classmethod constructor of the same
        name, e.g. ``HierarchicalGroupSparse.squared_group_l12(1e-3, l1_mix=0.5)``.

    Raises:
        TypeError: `strength` or `l1_mix` is not a real number.
        ValueError: `strength` < 0, `l1_mix` outside [0, 1], unknown `variant` or `axis`, or
            a kernel of rank < 2.

    Examples:
        >>> import numpy as np
        >>> from tf_groupsparse.penalties import HierarchicalGroupSparse
        >>> reg = HierarchicalGroupSparse.squared_group_l12(1e-3, l1_mix=0.5)  # HGSR setting
        >>> w = np.array([[4.0, 1.0], [0.0, 0.0]], "float32")
        >>> float(HierarchicalGroupSparse(1.0, "squared_group_l12")(w))   # (2 + 1)^2 + 0
        9.0

    Reference: Mitsuno, Miyao & Kurita, "Hierarchical Group Sparse Regularization for Deep
    Convolutional Neural Networks", IJCNN 2020, arXiv 2004.04394 (HGSR).
    """

    head_groups = True

    _config_keys = ("strength", "variant", "axis", "l1_mix")

    def __init__(self, strength=1e-4, variant="squared_group_l12", axis="input", l1_mix=0.0):
        super().__init__(strength, axis)
        owner = type(self).__name__
        self.variant = check_choice("variant", variant, tuple(HGSR_VARIANTS), owner)
        self.l1_mix = check_number("l1_mix", l1_mix, owner, minimum=0.0, maximum=1.0)

    @property
    def inner(self):
        """Name of the per-kernel measure: "l2", "squared_l1" or "sqrt_l1"."""
        return HGSR_VARIANTS[self.variant][0]

    @property
    def outer(self):
        """Name of the per-group function: "sqrt" or "square"."""
        return HGSR_VARIANTS[self.variant][1]

    def _penalty(self, x):
        self._check(x)
        per_kernel = _INNER[self.inner](groups.kernel_blocks(x))  # (C_in, C_out)
        per_group = ops.sum(per_kernel, axis=1 if self.axis == "input" else 0)
        hierarchical = ops.sum(_OUTER[self.outer](per_group))
        if self.l1_mix == 0.0:
            return hierarchical
        return (1.0 - self.l1_mix) * hierarchical + self.l1_mix * ops.sum(groups.safe_abs(x))

    @classmethod
    def sqrt_group_lasso(cls, strength=1e-4, axis="input", l1_mix=0.0):
        """HGSR variant ``sum_g sqrt(sum_{k in g} ||K_k||_2)``."""
        return cls(strength, "sqrt_group_lasso", axis=axis, l1_mix=l1_mix)

    @classmethod
    def squared_group_lasso(cls, strength=1e-4, axis="input", l1_mix=0.0):
        """HGSR variant ``sum_g (sum_{k in g} ||K_k||_2)^2``."""
        return cls(strength, "squared_group_lasso", axis=axis, l1_mix=l1_mix)

    @classmethod
    def sqrt_exclusive(cls, strength=1e-4, axis="input", l1_mix=0.0):
        """HGSR variant ``sum_g sqrt(sum_{k in g} ||K_k||_1^2)``."""
        return cls(strength, "sqrt_exclusive", axis=axis, l1_mix=l1_mix)

    @classmethod
    def squared_exclusive(cls, strength=1e-4, axis="input", l1_mix=0.0):
        """HGSR variant ``sum_g (sum_{k in g} ||K_k||_1^2)^2``."""
        return cls(strength, "squared_exclusive", axis=axis, l1_mix=l1_mix)

    @classmethod
    def sqrt_group_l12(cls, strength=1e-4, axis="input", l1_mix=0.0):
        """HGSR variant ``sum_g sqrt(sum_{k in g} sqrt(||K_k||_1))``."""
        return cls(strength, "sqrt_group_l12", axis=axis, l1_mix=l1_mix)

    @classmethod
    def squared_group_l12(cls, strength=1e-4, axis="input", l1_mix=0.0):
        """HGSR variant ``sum_g (sum_{k in g} sqrt(||K_k||_1))^2`` (the reference setting)."""
        return cls(strength, "squared_group_l12", axis=axis, l1_mix=l1_mix)


def _check_group_ids(name, value, owner):
    """A non-empty list of Python ints from a list/tuple/1-D array of integers."""
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else value
    if (
        not isinstance(value, (list, tuple))
        or not value
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value)
    ):
        raise TypeError(
            f"{owner}: Expected `{name}` to be a non-empty list of integer group ids, one per "
            f"channel. Received: {name}={value!r}"
        )
    return [int(v) for v in value]


@_register
class BlockDiagonal(_Regularizer):
    """Group lasso on the off-block part of every row and column of a block structure (EMG).

    ``penalty(W) = strength * (sum_i ||W[..., i, {o : g_o != c_i}]||_2
    + sum_o ||W[..., {i : c_i != g_o}, o]||_2)``

    ``c_i = input_groups[i]`` is the group of input channel ``i``, ``g_o = output_groups[o]``
    that of output channel ``o``. Weights inside the blocks (``c_i == g_o``) are free; the
    weights that link different groups are pushed to zero row by row and column by column, so
    that permuting inputs by ``c`` and outputs by ``g`` leaves a block-diagonal kernel.
    Depthwise kernels ``(kh, kw, C, m)`` take C input and m output group ids; Conv*Transpose
    kernels store ``(*S, C_out, C_in)``, so give the transposed layer's output groups as
    `input_groups` there.

    Args:
        strength: lambda >= 0. Default 1e-4.
        input_groups: list of ints, length C_in: the group id of each input channel. Required.
        output_groups: list of ints, length C_out: the group id of each output channel.
            Required.

    Returns:
        Calling the regularizer on a kernel returns the scalar penalty.

    Raises:
        TypeError: `strength` is not a real number, or a group list is missing or not a list
            of ints.
        ValueError: `strength` < 0, a kernel of rank < 2, or a kernel whose C_in / C_out do
            not match the lengths of `input_groups` / `output_groups`.

    Examples:
        >>> import numpy as np
        >>> from tf_groupsparse.penalties import BlockDiagonal
        >>> reg = BlockDiagonal(1.0, input_groups=[0, 1], output_groups=[0, 1])
        >>> w = np.array([[1.0, 3.0], [4.0, 1.0]], "float32")   # off-block: 3 and 4
        >>> float(reg(w))                                       # rows 3 + 4, columns 4 + 3
        14.0

    Reference: the block-diagonal group structure of Yi & Choi, "Learning the group structure
    of deep neural networks with an expectation maximization method", ICDMW 2018 (EMG).
    """

    _config_keys = ("strength", "input_groups", "output_groups")

    def __init__(self, strength=1e-4, input_groups=None, output_groups=None):
        super().__init__(strength)
        owner = type(self).__name__
        self.input_groups = _check_group_ids("input_groups", input_groups, owner)
        self.output_groups = _check_group_ids("output_groups", output_groups, owner)
        off = np.not_equal.outer(np.asarray(self.input_groups), np.asarray(self.output_groups))
        self._off_block = off  # (C_in, C_out), True where a weight links different groups

    def _penalty(self, x):
        shape = self._check(x)
        c_in, c_out = int(shape[-2]), int(shape[-1])
        if (c_in, c_out) != self._off_block.shape:
            raise ValueError(
                f"BlockDiagonal: Expected a kernel with C_in = len(input_groups) = "
                f"{len(self.input_groups)} and C_out = len(output_groups) = "
                f"{len(self.output_groups)}; build the regularizer from this layer's channel "
                f"groups. Received: kernel.shape={tuple(shape)} (C_in={c_in}, C_out={c_out})"
            )
        blocks = groups.kernel_blocks(x)
        mask = ops.convert_to_tensor(self._off_block, dtype=blocks.dtype)
        squares = ops.sum(ops.square(blocks), axis=-1) * mask  # (C_in, C_out)
        rows = groups.safe_sqrt(ops.sum(squares, axis=1))
        cols = groups.safe_sqrt(ops.sum(squares, axis=0))
        return ops.sum(rows) + ops.sum(cols)
