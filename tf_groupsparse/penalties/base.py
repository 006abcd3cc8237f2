"""The base class of the group-sparse penalties, and the penalty -> proximal constraint link.

Every penalty is a ``keras.regularizers.Regularizer`` with a flat config; it names the Keras
constraint that applies its exact proximal step (``constraint``), so ``to_constraint`` needs no
table of class names.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
from keras import ops

from .._validation import check_number
from . import groups

_register = keras.saving.register_keras_serializable(package="tf_groupsparse")


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
    ``strength * _penalty(x)``. A subclass names the Keras constraint that applies its exact
    proximal step in ``constraint`` (a :class:`~tf_groupsparse.penalties.ProximalConstraint`
    class taking the same arguments), or leaves it None when the penalty has no closed-form
    proximal operator here (it then trains through the loss).
    """

    _config_keys: tuple = ("strength",)
    constraint = None

    #: a scalar variable that multiplies the penalty during training (set by
    #: ``tgs.callbacks.SparsityTarget``; not part of the config), or None
    scale = None

    def __init__(self, strength=1e-4):
        self.strength = check_number("strength", strength, type(self).__name__)

    def __call__(self, x):
        groups.check_not_head(self)
        value = self._value(x)
        if self.scale is None:
            return value
        return value * ops.cast(self.scale, value.dtype)

    def _value(self, x):
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

    @property
    def has_prox(self):
        """Whether the penalty has an exact proximal step (``constraint`` is set)."""
        return self.constraint is not None

    def to_constraint(self):
        """A new, unbound constraint that applies this penalty's proximal step.

        Raises:
            ValueError: the penalty has no closed-form proximal operator (HGSR, group l1/2,
                block-diagonal): train it through the loss (``proximal=False``).
        """
        groups.check_not_head(self)
        if self.constraint is None:
            with_prox = ", ".join(sorted(c.__name__ for c in _with_prox()))
            raise ValueError(
                f"to_constraint: Expected a penalty with a closed-form proximal operator ({with_prox}). "
                f"{type(self).__name__} has none here: train it through the loss (proximal=False). "
                f"Received: regularizer={type(self).__name__}"
            )
        config = self.get_config()
        names = [n for n in inspect.signature(self.constraint.__init__).parameters if n != "self"]
        return self.constraint(**{n: config[n] for n in names if n in config})


def _with_prox():
    """Every penalty class (subclasses of the base, recursively) that declares a constraint."""
    out, todo = [], [_Regularizer]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.constraint is not None:
            out.append(cls)
    return out


def to_constraint(regularizer):
    """The :class:`~tf_groupsparse.penalties.ProximalConstraint` that trains `regularizer` by proximal steps.

    Each penalty class names its own constraint (``GroupLasso.constraint is ProxGroupLasso``);
    the constraint gets the penalty's arguments. ``keras.regularizers.L1(l1)`` maps to
    ``ProxL1(l1)``.

    Args:
        regularizer: a tf_groupsparse penalty, or ``keras.regularizers.L1``.

    Returns:
        A new, unbound ProximalConstraint.

    Raises:
        ValueError: the penalty has no closed-form prox here (HierarchicalGroupSparse,
            GroupL12, BlockDiagonal): train it through the loss (proximal=False).
        TypeError: the object is not a tf_groupsparse penalty.

    Examples:
        >>> from tf_groupsparse.penalties import GroupLasso, to_constraint
        >>> to_constraint(GroupLasso(1e-3, axis="output", scale_by_size=True))
        ProxGroupLasso(strength=0.001, axis='output', scale_by_size=True)
    """
    if type(regularizer) is keras.regularizers.L1:
        from .constraints import ProxL1

        return ProxL1(float(regularizer.l1))
    if not isinstance(regularizer, _Regularizer):
        with_prox = ", ".join(sorted(c.__name__ for c in _with_prox()))
        raise TypeError(
            f"to_constraint: Expected a tf_groupsparse penalty ({with_prox}). "
            f"Received: regularizer of type {type(regularizer).__name__}"
        )
    return regularizer.to_constraint()


class _GroupRegularizer(_Regularizer):
    """Base for penalties with groups along ``axis`` ("input" or "output")."""

    _config_keys = ("strength", "axis")
    #: whether ``axis="head"`` (attention heads, through ``tgs.regularize``) is available
    head_groups = False

    def __init__(self, strength=1e-4, axis="input"):
        super().__init__(strength)
        self.axis = groups.check_axis(axis, type(self).__name__, head=self.head_groups)
