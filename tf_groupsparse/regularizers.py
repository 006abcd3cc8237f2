"""Group-sparse weight penalties as ``keras.regularizers.Regularizer`` subclasses.

Every penalty is multiplied by its strength and summed over the groups of a kernel with the
Keras layout ``(*S, C_in, C_out)`` (see :mod:`tf_groupsparse.groups`):

- ``axis="input"`` (feature-wise): group ``i`` is ``W[..., i, :]``; a zero group removes input
  channel ``i`` (output channel ``i`` of the layer that produces it).
- ``axis="output"`` (neuron-wise): group ``o`` is ``W[..., :, o]``; a zero group removes output
  channel (filter) ``o``.

DepthwiseConv2D kernels ``(kh, kw, C, m)`` use the same layout: ``axis="input"`` gives ``C``
groups of ``m`` kernels, ``axis="output"`` gives ``m`` groups across all channels.
Conv*Transpose kernels are stored as ``(*S, C_out, C_in)``, so there the two names swap:
use ``axis="output"`` to group by the transposed layer's input channels.

Everything here uses ``keras.ops`` only, so the penalties run inside a compiled train step and
under ``tf.distribute``. Gradients are finite where a group (or the whole kernel) is exactly
zero: square roots go through :func:`tf_groupsparse.groups.safe_sqrt`, whose gradient at 0 is
the subgradient 0.

Sources (see METHODS.md): L1112 (Ma & Niu, ICDMW 2018), CGES (Yoon & Hwang, ICML 2017), HGSR
(Mitsuno, Miyao & Kurita, IJCNN 2020, arXiv 2004.04394), EMG (Yi & Choi, ICDMW 2018).

Example:
    >>> import keras
    >>> from tf_groupsparse.regularizers import GroupLasso
    >>> layer = keras.layers.Dense(8, kernel_regularizer=GroupLasso(1e-3, axis="output"))
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
from keras import ops

from . import groups
from ._validation import check_choice, check_int, check_number

__all__ = [
    "L1",
    "GroupLasso",
    "ExclusiveSparsity",
    "GroupL12",
    "SparseGroupLasso",
    "CombinedL11L12",
    "CombinedGroupExclusive",
    "HierarchicalGroupSparse",
    "BlockDiagonal",
    "cges_mu_schedule",
    "HGSR_VARIANTS",
]

_register = keras.saving.register_keras_serializable(package="tf_groupsparse")


def _check_bool(name, value, owner):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{owner}: Expected `{name}` to be True or False. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return bool(value)


def _size_weight(group_size, scale_by_size):
    """``c_g``: sqrt(|g|) when scaling by group size, else 1 (all groups of a kernel are equal)."""
    return float(np.sqrt(group_size)) if scale_by_size else 1.0


def _group_l2_sum(x, axis, scale_by_size):
    """``sum_g c_g ||w_g||_2`` with a zero gradient on zero groups."""
    rows = groups.grouped(x, axis)
    return _size_weight(rows.shape[1], scale_by_size) * ops.sum(groups.safe_l2(rows, axis=1))


def _exclusive_sum(x, axis):
    """``1/2 sum_g ||w_g||_1^2``."""
    return 0.5 * ops.sum(ops.square(groups.l1(groups.grouped(x, axis), axis=1)))


class _Regularizer(keras.regularizers.Regularizer):
    """Common base: validates `strength`, builds a flat config and a readable repr.

    Subclasses list their constructor arguments in ``_config_keys`` (stored as attributes of
    the same name) and implement ``_penalty(x)``; ``__call__`` returns
    ``strength * _penalty(x)``.
    """

    _config_keys: tuple = ("strength",)

    def __init__(self, strength=1e-4):
        self.strength = check_number("strength", strength, type(self).__name__)

    def __call__(self, x):
        return self.strength * self._penalty(x)

    def _penalty(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, x):
        """The kernel's static shape; ValueError naming it if its rank is < 2."""
        return groups.check_kernel(x, type(self).__name__)

    def get_config(self):
        config = {}
        for key in self._config_keys:
            value = getattr(self, key)
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _GroupRegularizer(_Regularizer):
    """Base for penalties with groups along ``axis`` ("input" or "output")."""

    _config_keys = ("strength", "axis")

    def __init__(self, strength=1e-4, axis="input"):
        super().__init__(strength)
        self.axis = groups.check_axis(axis, type(self).__name__)


@_register
class L1(_Regularizer):
    """Lasso (l1,1) penalty on every weight.

    ``penalty(W) = strength * sum_j |w_j|``

    Element-wise, so unlike the group penalties it accepts tensors of any rank (biases too).
    Its gradient at an exact zero is the subgradient 0.

    Args:
        strength: lambda >= 0. Default 1e-4.

    Returns:
        Calling the regularizer on a tensor returns the scalar penalty.

    Raises:
        TypeError: `strength` is not a real number.
        ValueError: `strength` is negative or not finite.

    Example:
        >>> import numpy as np
        >>> from tf_groupsparse.regularizers import L1
        >>> float(L1(0.5)(np.array([[1.0, -2.0]], "float32")))
        1.5

    Reference: the l1,1 term of Ma & Niu, "Compact Deep Neural Networks with l1,1 and l1,2
    Regularization", ICDMW 2018 (L1112).
    """

    def _penalty(self, x):
        return ops.sum(ops.abs(x))


@_register
class GroupLasso(_GroupRegularizer):
    """Group lasso (l2,1): the sum of the groups' Euclidean norms.

    ``penalty(W) = strength * sum_g c_g ||w_g||_2``, ``c_g = sqrt(|g|)`` if `scale_by_size`
    else 1.

    Drives whole groups (input channels with ``axis="input"``, filters with ``axis="output"``)
    to zero. DepthwiseConv2D kernels ``(kh, kw, C, m)``: ``axis="input"`` gives C groups of m
    kernels. Conv*Transpose kernels store ``(*S, C_out, C_in)``, so the axis names swap there.

    Args:
        strength: lambda >= 0. Default 1e-4.
        axis: "input" (feature-wise groups) or "output" (neuron-wise groups). Default "input".
        scale_by_size: weight each group by sqrt of its size. Default False.

    Returns:
        Calling the regularizer on a kernel returns the scalar penalty.

    Raises:
        TypeError: `strength` is not a real number, or `scale_by_size` is not a bool.
        ValueError: `strength` < 0 or not finite, unknown `axis`, or a kernel of rank < 2.

    Example:
        >>> import numpy as np
        >>> from tf_groupsparse.regularizers import GroupLasso
        >>> w = np.array([[3.0, 4.0], [0.0, 0.0]], "float32")   # Dense: 2 inputs, 2 outputs
        >>> float(GroupLasso(1.0, axis="input")(w))             # ||(3, 4)|| + ||(0, 0)||
        5.0

    Reference: group sparsity as used in Yoon & Hwang, "Combined Group and Exclusive Sparsity
    for Deep Neural Networks", ICML 2017 (CGES), and Mitsuno et al., IJCNN 2020 (HGSR).
    """

    _config_keys = ("strength", "axis", "scale_by_size")

    def __init__(self, strength=1e-4, axis="input", scale_by_size=False):
        super().__init__(strength, axis)
        self.scale_by_size = _check_bool("scale_by_size", scale_by_size, type(self).__name__)

    def _penalty(self, x):
        self._check(x)
        return _group_l2_sum(x, self.axis, self.scale_by_size)


@_register
class ExclusiveSparsity(_GroupRegularizer):
    """Exclusive sparsity (l1,2): half the sum of the groups' squared l1 norms.

    ``penalty(W) = strength * 1/2 * sum_g ||w_g||_1^2``

    Makes weights compete inside each group (sparsity within groups, every group keeps some
    weights). Depthwise and Conv*Transpose kernels: see :class:`GroupLasso`.

    Args:
        strength: lambda >= 0. Default 1e-4.
        axis: "input" or "output". Default "input".

    Returns:
        Calling the regularizer on a kernel returns the scalar penalty.

    Raises:
        TypeError: `strength` is not a real number.
        ValueError: `strength` < 0 or not finite, unknown `axis`, or a kernel of rank < 2.

    Example:
        >>> import numpy as np
        >>> from tf_groupsparse.regularizers import ExclusiveSparsity
        >>> w = np.array([[1.0, -2.0], [0.0, 1.0]], "float32")
        >>> float(ExclusiveSparsity(1.0, axis="input")(w))      # (3^2 + 1^2) / 2
        5.0

    Reference: Yoon & Hwang, ICML 2017 (CGES); the l1,2 term of Ma & Niu, ICDMW 2018 (L1112).
    """

    def _penalty(self, x):
        self._check(x)
        return _exclusive_sum(x, self.axis)


@_register
class GroupL12(_GroupRegularizer):
    """Group l1/2: the sum of square roots of the groups' l1 norms.

    ``penalty(W) = strength * sum_g sqrt(||w_g||_1)``

    The square root is zero-safe (its gradient at a zero group is 0, not inf/NaN).
    Depthwise and Conv*Transpose kernels: see :class:`GroupLasso`.

    Args:
        strength: lambda >= 0. Default 1e-4.
        axis: "input" or "output". Default "input".

    Returns:
        Calling the regularizer on a kernel returns the scalar penalty.

    Raises:
        TypeError: `strength` is not a real number.
        ValueError: `strength` < 0 or not finite, unknown `axis`, or a kernel of rank < 2.

    Example:
        >>> import numpy as np
        >>> from tf_groupsparse.regularizers import GroupL12
        >>> w = np.array([[1.0, -3.0], [0.0, 0.0]], "float32")
        >>> float(GroupL12(1.0)(w))                             # sqrt(4) + sqrt(0)
        2.0

    Reference: Mitsuno, Miyao & Kurita, "Hierarchical Group Sparse Regularization for Deep
    Convolutional Neural Networks", IJCNN 2020 (HGSR).
    """

    def _penalty(self, x):
        self._check(x)
        return ops.sum(groups.safe_sqrt(groups.l1(groups.grouped(x, self.axis), axis=1)))


@_register
class SparseGroupLasso(_GroupRegularizer):
    """Sparse group lasso: a convex mix of l1 and group lasso.

    ``penalty(W) = strength * (alpha * sum_j |w_j| + (1 - alpha) * sum_g c_g ||w_g||_2)``,
    ``c_g = sqrt(|g|)`` if `scale_by_size` else 1.

    Depthwise and Conv*Transpose kernels: see :class:`GroupLasso`.

    Args:
        strength: lambda >= 0. Default 1e-4.
        alpha: weight of the l1 part, in [0, 1]. Default 0.5.
        axis: "input" or "output". Default "input".
        scale_by_size: weight each group by sqrt of its size. Default False.

    Returns:
        Calling the regularizer on a kernel returns the scalar penalty.

    Raises:
        TypeError: `strength` or `alpha` is not a real number, or `scale_by_size` is not a bool.
        ValueError: `strength` < 0, `alpha` outside [0, 1], unknown `axis`, or a kernel of
            rank < 2.

    Example:
        >>> import numpy as np
        >>> from tf_groupsparse.regularizers import SparseGroupLasso
        >>> w = np.array([[3.0, 4.0]], "float32")
        >>> float(SparseGroupLasso(1.0, alpha=0.5)(w))          # 0.5 * 7 + 0.5 * 5
        6.0

    Reference: the l1 + group mix of Yoon & Hwang, ICML 2017 (CGES) and Mitsuno et al.,
    IJCNN 2020 (HGSR).
    """

    _config_keys = ("strength", "alpha", "axis", "scale_by_size")

    def __init__(self, strength=1e-4, alpha=0.5, axis="input", scale_by_size=False):
        super().__init__(strength, axis)
        owner = type(self).__name__
        self.alpha = check_number("alpha", alpha, owner, minimum=0.0, maximum=1.0)
        self.scale_by_size = _check_bool("scale_by_size", scale_by_size, owner)

    def _penalty(self, x):
        self._check(x)
        return self.alpha * ops.sum(ops.abs(x)) + (1.0 - self.alpha) * _group_l2_sum(
            x, self.axis, self.scale_by_size
        )


@_register
class CombinedL11L12(_Regularizer):
    """Combined l1,1 + l1,2 penalty with two separate strengths (L1112).

    ``penalty(W) = l11 * sum_j |w_j| + l12 / 2 * sum_g ||w_g||_1^2``

    The pair of strengths replaces `strength` (there is no overall multiplier).
    Depthwise and Conv*Transpose kernels: see :class:`GroupLasso`.

    Args:
        l11: strength of the l1,1 (lasso) term, >= 0. Default 1e-4.
        l12: strength of the l1,2 (exclusive) term, >= 0. Default 1e-4.
        axis: "input" or "output". Default "input".

    Returns:
        Calling the regularizer on a kernel returns the scalar penalty.

    Raises:
        TypeError: `l11` or `l12` is not a real number.
        ValueError: `l11` or `l12` < 0 or not finite, unknown `axis`, or a kernel of rank < 2.

    Example:
        >>> import numpy as np
        >>> from tf_groupsparse.regularizers import CombinedL11L12
        >>> w = np.array([[1.0, -2.0], [0.0, 1.0]], "float32")
        >>> float(CombinedL11L12(l11=1.0, l12=2.0)(w))          # 4 + (9 + 1)
        14.0

    Reference: Ma & Niu, "Compact Deep Neural Networks with l1,1 and l1,2 Regularization",
    ICDMW 2018 (L1112).
    """

    _config_keys = ("l11", "l12", "axis")

    def __init__(self, l11=1e-4, l12=1e-4, axis="input"):
        owner = type(self).__name__
        self.l11 = check_number("l11", l11, owner)
        self.l12 = check_number("l12", l12, owner)
        self.axis = groups.check_axis(axis, owner)

    def __call__(self, x):
        self._check(x)
        return self.l11 * ops.sum(ops.abs(x)) + self.l12 * _exclusive_sum(x, self.axis)


@_register
class CombinedGroupExclusive(_GroupRegularizer):
    """Combined group and exclusive sparsity (CGES).

    ``penalty(W) = strength * (mu * sum_g c_g ||w_g||_2 + (1 - mu) / 2 * sum_g ||w_g||_1^2)``,
    ``c_g = sqrt(|g|)`` if `scale_by_size` else 1.

    CGES changes `mu` with depth: group sparsity dominates near the input and exclusive
    sparsity near the output; :func:`cges_mu_schedule` gives the paper's per-layer values
    (0.8, 0.6, 0.4, ...). Depthwise and Conv*Transpose kernels: see :class:`GroupLasso`.

    Args:
        strength: lambda >= 0. Default 1e-4.
        mu: weight of the group term, in [0, 1]. Default 0.5.
        axis: "input" or "output". Default "input".
        scale_by_size: weight each group's l2 norm by sqrt of its size. Default False.

    Returns:
        Calling the regularizer on a kernel returns the scalar penalty.

    Raises:
        TypeError: `strength` or `mu` is not a real number, or `scale_by_size` is not a bool.
        ValueError: `strength` < 0, `mu` outside [0, 1], unknown `axis`, or a kernel of
            rank < 2.

    Example:
        >>> import numpy as np
        >>> from tf_groupsparse.regularizers import CombinedGroupExclusive, cges_mu_schedule
        >>> mus = cges_mu_schedule(3)                           # [0.8, 0.6, 0.4]
        >>> regs = [CombinedGroupExclusive(1e-3, mu=m) for m in mus]
        >>> float(CombinedGroupExclusive(1.0, mu=0.5)(np.array([[3.0, 4.0]], "float32")))
        14.75

    Reference: Yoon & Hwang, "Combined Group and Exclusive Sparsity for Deep Neural Networks",
    ICML 2017 (CGES).
    """

    _config_keys = ("strength", "mu", "axis", "scale_by_size")

    def __init__(self, strength=1e-4, mu=0.5, axis="input", scale_by_size=False):
        super().__init__(strength, axis)
        owner = type(self).__name__
        self.mu = check_number("mu", mu, owner, minimum=0.0, maximum=1.0)
        self.scale_by_size = _check_bool("scale_by_size", scale_by_size, owner)

    def _penalty(self, x):
        self._check(x)
        return self.mu * _group_l2_sum(x, self.axis, self.scale_by_size) + (
            1.0 - self.mu
        ) * _exclusive_sum(x, self.axis)


def cges_mu_schedule(n_layers, start=0.8, step=0.2):
    """Per-layer CGES mix ``mu_l = max(start - step * l, 0)`` for ``l = 0 .. n_layers - 1``.

    Layer 0 is the one nearest the input. Values are rounded to 12 decimals so that
    ``0.8 - 0.2 * 3`` reads 0.2.

    Args:
        n_layers: number of regularized layers, an int >= 0.
        start: mu of the first layer, in [0, 1]. Default 0.8.
        step: decrease per layer, >= 0. Default 0.2.

    Returns:
        A list of `n_layers` Python floats in [0, 1].

    Raises:
        TypeError: a non-integer `n_layers`, or a non-numeric `start`/`step`.
        ValueError: `n_layers` < 0, `start` outside [0, 1], or `step` < 0.

    Example:
        >>> from tf_groupsparse.regularizers import cges_mu_schedule
        >>> cges_mu_schedule(5)
        [0.8, 0.6, 0.4, 0.2, 0.0]

    Reference: Yoon & Hwang, ICML 2017 (CGES).
    """
    owner = "cges_mu_schedule"
    n_layers = check_int("n_layers", n_layers, owner, minimum=0)
    start = check_number("start", start, owner, minimum=0.0, maximum=1.0)
    step = check_number("step", step, owner, minimum=0.0)
    return [round(max(start - step * layer, 0.0), 12) for layer in range(n_layers)]


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

    Example:
        >>> import numpy as np
        >>> from tf_groupsparse.regularizers import HierarchicalGroupSparse
        >>> reg = HierarchicalGroupSparse.squared_group_l12(1e-3, l1_mix=0.5)  # HGSR setting
        >>> w = np.array([[4.0, 1.0], [0.0, 0.0]], "float32")
        >>> float(HierarchicalGroupSparse(1.0, "squared_group_l12")(w))   # (2 + 1)^2 + 0
        9.0

    Reference: Mitsuno, Miyao & Kurita, "Hierarchical Group Sparse Regularization for Deep
    Convolutional Neural Networks", IJCNN 2020, arXiv 2004.04394 (HGSR).
    """

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
        return (1.0 - self.l1_mix) * hierarchical + self.l1_mix * ops.sum(ops.abs(x))

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

    Example:
        >>> import numpy as np
        >>> from tf_groupsparse.regularizers import BlockDiagonal
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
