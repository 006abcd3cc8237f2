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

Sources: L1112 (Ma & Niu, ICDMW 2018), CGES (Yoon & Hwang, ICML 2017), HGSR
(Mitsuno, Miyao & Kurita, IJCNN 2020, arXiv 2004.04394), EMG (Yi & Choi, ICDMW 2018).

Examples:
    >>> import keras
    >>> from tf_groupsparse.penalties import GroupLasso
    >>> layer = keras.layers.Dense(8, kernel_regularizer=GroupLasso(1e-3, axis="output"))
"""

from __future__ import annotations

from keras import ops

from .._validation import check_bool, check_int, check_number
from . import constraints, groups
from .base import _GroupRegularizer, _Regularizer, _exclusive_sum, _group_l2_sum, _register, to_constraint

__all__ = [
    "L1",
    "GroupLasso",
    "ExclusiveSparsity",
    "GroupL12",
    "SparseGroupLasso",
    "CombinedL11L12",
    "CombinedGroupExclusive",
    "cges_mu_schedule",
    "to_constraint",
]

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

    Examples:
        >>> import numpy as np
        >>> from tf_groupsparse.penalties import L1
        >>> float(L1(0.5)(np.array([[1.0, -2.0]], "float32")))
        1.5

    Reference: the l1,1 term of Ma & Niu, "Compact Deep Neural Networks with l1,1 and l1,2
    Regularization", ICDMW 2018 (L1112).
    """

    constraint = constraints.ProxL1

    def _penalty(self, x):
        return ops.sum(groups.safe_abs(x))


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
        axis: "input" (feature-wise groups) or "output" (neuron-wise groups); "head" (one
            group per attention head, through ``tgs.regularize(model, penalty)`` only; also for
            SparseGroupLasso, GroupL12 and HierarchicalGroupSparse). Default "input".
        scale_by_size: weight each group by sqrt of its size. Default False.

    Returns:
        Calling the regularizer on a kernel returns the scalar penalty.

    Raises:
        TypeError: `strength` is not a real number, or `scale_by_size` is not a bool.
        ValueError: `strength` < 0 or not finite, unknown `axis`, or a kernel of rank < 2.

    Examples:
        >>> import numpy as np
        >>> from tf_groupsparse.penalties import GroupLasso
        >>> w = np.array([[3.0, 4.0], [0.0, 0.0]], "float32")   # Dense: 2 inputs, 2 outputs
        >>> float(GroupLasso(1.0, axis="input")(w))             # ||(3, 4)|| + ||(0, 0)||
        5.0

    Reference: group sparsity as used in Yoon & Hwang, "Combined Group and Exclusive Sparsity
    for Deep Neural Networks", ICML 2017 (CGES), and Mitsuno et al., IJCNN 2020 (HGSR).
    """

    head_groups = True

    constraint = constraints.ProxGroupLasso

    _config_keys = ("strength", "axis", "scale_by_size")

    def __init__(self, strength=1e-4, axis="input", scale_by_size=False):
        super().__init__(strength, axis)
        self.scale_by_size = check_bool("scale_by_size", scale_by_size, type(self).__name__)

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

    Examples:
        >>> import numpy as np
        >>> from tf_groupsparse.penalties import ExclusiveSparsity
        >>> w = np.array([[1.0, -2.0], [0.0, 1.0]], "float32")
        >>> float(ExclusiveSparsity(1.0, axis="input")(w))      # (3^2 + 1^2) / 2
        5.0

    Reference: Yoon & Hwang, ICML 2017 (CGES); the l1,2 term of Ma & Niu, ICDMW 2018 (L1112).
    """

    constraint = constraints.ProxExclusive

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

    Examples:
        >>> import numpy as np
        >>> from tf_groupsparse.penalties import GroupL12
        >>> w = np.array([[1.0, -3.0], [0.0, 0.0]], "float32")
        >>> float(GroupL12(1.0)(w))                             # sqrt(4) + sqrt(0)
        2.0

    Reference: Mitsuno, Miyao & Kurita, "Hierarchical Group Sparse Regularization for Deep
    Convolutional Neural Networks", IJCNN 2020 (HGSR).
    """

    head_groups = True

    constraint = None  # no closed-form proximal operator here

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

    Examples:
        >>> import numpy as np
        >>> from tf_groupsparse.penalties import SparseGroupLasso
        >>> w = np.array([[3.0, 4.0]], "float32")
        >>> float(SparseGroupLasso(1.0, alpha=0.5)(w))          # 0.5 * 7 + 0.5 * 5
        6.0

    Reference: the l1 + group mix of Yoon & Hwang, ICML 2017 (CGES) and Mitsuno et al.,
    IJCNN 2020 (HGSR).
    """

    head_groups = True

    constraint = constraints.ProxSparseGroupLasso

    _config_keys = ("strength", "alpha", "axis", "scale_by_size")

    def __init__(self, strength=1e-4, alpha=0.5, axis="input", scale_by_size=False):
        super().__init__(strength, axis)
        owner = type(self).__name__
        self.alpha = check_number("alpha", alpha, owner, minimum=0.0, maximum=1.0)
        self.scale_by_size = check_bool("scale_by_size", scale_by_size, owner)

    def _penalty(self, x):
        self._check(x)
        return self.alpha * ops.sum(groups.safe_abs(x)) + (1.0 - self.alpha) * _group_l2_sum(
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

    Examples:
        >>> import numpy as np
        >>> from tf_groupsparse.penalties import CombinedL11L12
        >>> w = np.array([[1.0, -2.0], [0.0, 1.0]], "float32")
        >>> float(CombinedL11L12(l11=1.0, l12=2.0)(w))          # 4 + (9 + 1)
        14.0

    Reference: Ma & Niu, "Compact Deep Neural Networks with l1,1 and l1,2 Regularization",
    ICDMW 2018 (L1112).
    """

    constraint = constraints.ProxCombinedL11L12

    _config_keys = ("l11", "l12", "axis")

    def __init__(self, l11=1e-4, l12=1e-4, axis="input"):
        owner = type(self).__name__
        self.l11 = check_number("l11", l11, owner)
        self.l12 = check_number("l12", l12, owner)
        self.axis = groups.check_axis(axis, owner)

    def _value(self, x):
        self._check(x)
        return self.l11 * ops.sum(groups.safe_abs(x)) + self.l12 * _exclusive_sum(x, self.axis)


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

    Examples:
        >>> import numpy as np
        >>> from tf_groupsparse.penalties import CombinedGroupExclusive, cges_mu_schedule
        >>> mus = cges_mu_schedule(3)                           # [0.8, 0.6, 0.4]
        >>> regs = [CombinedGroupExclusive(1e-3, mu=m) for m in mus]
        >>> float(CombinedGroupExclusive(1.0, mu=0.5)(np.array([[3.0, 4.0]], "float32")))
        14.75

    Reference: Yoon & Hwang, "Combined Group and Exclusive Sparsity for Deep Neural Networks",
    ICML 2017 (CGES).
    """

    constraint = constraints.ProxCGES

    _config_keys = ("strength", "mu", "axis", "scale_by_size")

    def __init__(self, strength=1e-4, mu=0.5, axis="input", scale_by_size=False):
        super().__init__(strength, axis)
        owner = type(self).__name__
        self.mu = check_number("mu", mu, owner, minimum=0.0, maximum=1.0)
        self.scale_by_size = check_bool("scale_by_size", scale_by_size, owner)

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

    Examples:
        >>> from tf_groupsparse.penalties import cges_mu_schedule
        >>> cges_mu_schedule(5)
        [0.8, 0.6, 0.4, 0.2, 0.0]

    Reference: Yoon & Hwang, ICML 2017 (CGES).
    """
    owner = "cges_mu_schedule"
    n_layers = check_int("n_layers", n_layers, owner, minimum=0)
    start = check_number("start", start, owner, minimum=0.0, maximum=1.0)
    step = check_number("step", step, owner, minimum=0.0)
    return [round(max(start - step * layer, 0.0), 12) for layer in range(n_layers)]


