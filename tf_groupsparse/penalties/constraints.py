"""Keras constraints that apply a proximal operator after every optimizer step.

Keras 3 applies ``variable.constraint`` inside ``optimizer.apply`` right after the gradient
update, so a :class:`ProximalConstraint` bound to the optimizer turns training into proximal
gradient descent, ``W <- prox_{lr * strength * penalty}(W - lr * grad)``: it reads the live
learning rate (or the schedule at the current iteration) inside the compiled train step. Bind
with :func:`bind` after ``compile`` or with ``tgs.callbacks.ProximalStep()``. The operators
themselves are in :mod:`tf_groupsparse.penalties.prox`; every penalty of
:mod:`tf_groupsparse.penalties.regularizers` names its constraint (``penalty.to_constraint()``).

Examples:
    >>> import keras
    >>> from tf_groupsparse.penalties import ProxGroupLasso
    >>> layer = keras.layers.Dense(4, kernel_constraint=ProxGroupLasso(1e-2, axis="output"))
"""

from __future__ import annotations

import keras
from keras import ops

from .._validation import check_bool, check_number
from . import groups
from .prox import (
    _as,
    prox_cges,
    prox_exclusive,
    prox_group_lasso,
    prox_l1,
    prox_l1_exclusive,
    prox_sparse_group_lasso,
)

__all__ = [
    "ProximalConstraint",
    "ProxL1",
    "ProxGroupLasso",
    "ProxSparseGroupLasso",
    "ProxExclusive",
    "ProxCombinedL11L12",
    "ProxCGES",
    "bind",
]

_UNBOUND_FIX = (
    "pass tgs.callbacks.ProximalStep() to fit(), or call tf_groupsparse.penalties.bind(model) "
    "after model.compile()"
)

class ProximalConstraint(keras.constraints.Constraint):
    """Base class: a constraint that applies a prox with step ``learning_rate * strength``.

    Keras 3 calls ``variable.assign(variable.constraint(variable))`` inside
    ``optimizer.apply``, right after the gradient update and before ``iterations`` grows, so
    ``x_{n+1} = prox_{lr_n * strength * penalty}(x_n - lr_n * grad_n)``: a proximal gradient
    step. The learning rate is read from the bound optimizer when the train step is traced
    (``optimizer.learning_rate`` is a variable, or the LearningRateSchedule evaluated at
    ``optimizer.iterations``), so it stays live in the compiled graph. With
    ``gradient_accumulation_steps`` the prox runs only on the steps that update the weights.
    With adaptive optimizers (Adam, RMSprop) the step is the same heuristic
    ``lr * strength``; the proximal-gradient theory holds for SGD.

    Subclasses implement :meth:`prox`. The bound optimizer is not part of the config: a loaded
    model must be bound again (``bind(model)`` or the ``ProximalStep`` callback).

    Raises:
        ValueError: called during training while unbound.

    Examples:
        >>> import keras
        >>> class ProxClip(ProximalConstraint):        # a new proximal step: clip to [-t, t]
        ...     def prox(self, w, learning_rate):
        ...         return keras.ops.clip(w, -learning_rate, learning_rate)
        ...     def get_config(self):
        ...         return {}
        >>> c = ProxClip().bind(keras.optimizers.SGD(learning_rate=0.5))
        >>> keras.ops.convert_to_numpy(c(keras.ops.array([-2.0, 0.25, 1.0]))).tolist()
        [-0.5, 0.25, 0.5]
    """

    #: a scalar variable that multiplies the step during training (set by
    #: ``tgs.callbacks.SparsityTarget``; not part of the config), or None
    scale = None

    def __init__(self):
        self._optimizer = None

    def bind(self, optimizer):
        """Read the learning rate from `optimizer` (a keras Optimizer); returns self."""
        if not (hasattr(optimizer, "learning_rate") and hasattr(optimizer, "iterations")):
            raise TypeError(
                f"{type(self).__name__}.bind: Expected a keras.optimizers.Optimizer. "
                f"Received: optimizer of type {type(optimizer).__name__}"
            )
        self._optimizer = optimizer
        return self

    @property
    def optimizer(self):
        """The bound optimizer, or None."""
        return self._optimizer

    def learning_rate(self, dtype="float32"):
        """The bound optimizer's current learning rate as a scalar tensor of `dtype`.

        Zero on the micro-steps of gradient accumulation that do not update the weights.
        """
        if self._optimizer is None:
            raise ValueError(
                f"{type(self).__name__}: Expected the proximal constraint to be bound to the "
                f"optimizer before training; {_UNBOUND_FIX}. Received: an unbound constraint"
            )
        optimizer = self._optimizer
        lr = ops.cast(optimizer.learning_rate, dtype)
        steps = getattr(optimizer, "gradient_accumulation_steps", None)
        if steps:
            # `optimizer.iterations` counts real updates under accumulation; the optimizer
            # itself decides on the raw step counter, so the prox follows the same test.
            raw = getattr(optimizer, "_iterations", None)
            if raw is None:
                raise ValueError(
                    f"{type(self).__name__}: Expected an optimizer that exposes its raw step "
                    "counter when gradient_accumulation_steps is set. Received: "
                    f"{type(optimizer).__name__}(gradient_accumulation_steps={steps})"
                )
            is_update = ops.equal(ops.mod(raw + 1, steps), 0)
            lr = lr * ops.cast(is_update, dtype)
        if self.scale is not None:
            lr = lr * ops.cast(self.scale, dtype)
        return lr

    def __call__(self, w):
        return self.prox(w, self.learning_rate(w.dtype))

    def prox(self, w, learning_rate):
        """Apply the prox of ``learning_rate * strength * penalty`` to `w`."""
        raise NotImplementedError(f"{type(self).__name__} does not define prox()")

    def get_config(self):
        raise NotImplementedError(f"{type(self).__name__} does not define get_config()")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _strength(value, owner, name="strength"):
    return check_number(name, value, owner)


@keras.saving.register_keras_serializable(package="tf_groupsparse")
class ProxL1(ProximalConstraint):
    """Proximal step of ``strength * sum |w|``: soft thresholding by ``lr * strength``.

    ``w <- sign(w) * max(|w| - lr * strength, 0)`` after each optimizer step.

    Args:
        strength: lambda ``>= 0``.

    Raises:
        ValueError / TypeError: negative or non-numeric `strength`.

    Examples:
        >>> import keras
        >>> from tf_groupsparse import penalties
        >>> layer = keras.layers.Dense(4, kernel_constraint=penalties.ProxL1(1e-3))

    Source: Ma & Niu, ICDMW 2018.
    """

    def __init__(self, strength):
        super().__init__()
        self.strength = _strength(strength, "ProxL1")

    def prox(self, w, learning_rate):
        return prox_l1(w, _as(learning_rate, w) * self.strength)

    def get_config(self):
        return {"strength": self.strength}


@keras.saving.register_keras_serializable(package="tf_groupsparse")
class ProxGroupLasso(ProximalConstraint):
    """Proximal step of ``strength * sum_g c_g ||w_g||_2``: whole groups become exactly zero.

    ``w_g <- max(0, 1 - lr * strength * c_g / ||w_g||_2) * w_g``, ``c_g = sqrt(|g|)`` when
    `scale_by_size`.

    Args:
        strength: lambda ``>= 0``.
        axis: "input" or "output" groups (see :mod:`tf_groupsparse.groups`). Default "input".
        scale_by_size: scale each group's threshold by ``sqrt(group size)``. Default False.

    Raises:
        ValueError: negative `strength` or bad `axis`.
        TypeError: non-numeric `strength` or non-bool `scale_by_size`.

    Examples:
        >>> import keras
        >>> from tf_groupsparse import penalties
        >>> layer = keras.layers.Dense(4, kernel_constraint=penalties.ProxGroupLasso(1e-2))

    Source: Yoon & Hwang, ICML 2017 (group sparsity by proximal steps).
    """

    def __init__(self, strength, axis="input", scale_by_size=False):
        super().__init__()
        owner = "ProxGroupLasso"
        self.strength = _strength(strength, owner)
        self.axis = groups.check_axis(axis, owner)
        self.scale_by_size = check_bool("scale_by_size", scale_by_size, owner)

    def prox(self, w, learning_rate):
        return prox_group_lasso(
            w, _as(learning_rate, w) * self.strength, self.axis, self.scale_by_size
        )

    def get_config(self):
        return {"strength": self.strength, "axis": self.axis, "scale_by_size": self.scale_by_size}


@keras.saving.register_keras_serializable(package="tf_groupsparse")
class ProxSparseGroupLasso(ProximalConstraint):
    """Proximal step of ``strength * (alpha sum |w| + (1 - alpha) sum_g c_g ||w_g||_2)`` (exact).

    Soft thresholding by ``lr * strength * alpha``, then the group step by
    ``lr * strength * (1 - alpha)``.

    Args:
        strength: lambda ``>= 0``.
        alpha: weight of the L1 term in ``[0, 1]``. Default 0.5.
        axis: "input" or "output". Default "input".
        scale_by_size: ``c_g = sqrt(|g|)``. Default False.

    Raises:
        ValueError: negative `strength`, `alpha` outside [0, 1], bad `axis`.
        TypeError: non-numeric arguments or non-bool `scale_by_size`.

    Examples:
        >>> from tf_groupsparse import penalties
        >>> c = penalties.ProxSparseGroupLasso(1e-2, alpha=0.3, axis="output")
    """

    def __init__(self, strength, alpha=0.5, axis="input", scale_by_size=False):
        super().__init__()
        owner = "ProxSparseGroupLasso"
        self.strength = _strength(strength, owner)
        self.alpha = check_number("alpha", alpha, owner, maximum=1.0)
        self.axis = groups.check_axis(axis, owner)
        self.scale_by_size = check_bool("scale_by_size", scale_by_size, owner)

    def prox(self, w, learning_rate):
        return prox_sparse_group_lasso(
            w, _as(learning_rate, w) * self.strength, self.alpha, self.axis, self.scale_by_size
        )

    def get_config(self):
        return {
            "strength": self.strength,
            "alpha": self.alpha,
            "axis": self.axis,
            "scale_by_size": self.scale_by_size,
        }


@keras.saving.register_keras_serializable(package="tf_groupsparse")
class ProxExclusive(ProximalConstraint):
    """Proximal step of ``strength/2 * sum_g ||w_g||_1^2`` (exclusive sparsity, exact).

    Per group, ``tau = max_k b S_k / (1 + b k)`` with ``b = lr * strength`` and ``S_k`` the
    sum of the ``k`` largest magnitudes; ``w <- sign(w) max(|w| - tau, 0)``.

    Args:
        strength: lambda ``>= 0``.
        axis: "input" or "output". Default "input".

    Raises:
        ValueError: negative `strength` or bad `axis`.

    Examples:
        >>> from tf_groupsparse import penalties
        >>> c = penalties.ProxExclusive(1e-2, axis="output")

    Source: Yoon & Hwang, ICML 2017; Ma & Niu, ICDMW 2018.
    """

    def __init__(self, strength, axis="input"):
        super().__init__()
        owner = "ProxExclusive"
        self.strength = _strength(strength, owner)
        self.axis = groups.check_axis(axis, owner)

    def prox(self, w, learning_rate):
        return prox_exclusive(w, _as(learning_rate, w) * self.strength, self.axis)

    def get_config(self):
        return {"strength": self.strength, "axis": self.axis}


@keras.saving.register_keras_serializable(package="tf_groupsparse")
class ProxCombinedL11L12(ProximalConstraint):
    """Proximal step of ``l11 sum |w| + l12/2 sum_g ||w_g||_1^2`` (L1112, exact).

    With ``a = lr * l11``, ``b = lr * l12``: ``tau = max_k (a + b S_k) / (1 + b k)`` per group
    and ``w <- sign(w) max(|w| - tau, 0)``.

    Args:
        l11: weight of the l1,1 term ``>= 0``.
        l12: weight of the l1,2 term ``>= 0``.
        axis: "input" or "output". Default "input".

    Raises:
        ValueError: negative weights or bad `axis`.

    Examples:
        >>> from tf_groupsparse import penalties
        >>> c = penalties.ProxCombinedL11L12(1e-3, 1e-2)

    Source: Ma & Niu, "Compact Deep Neural Networks with l1,1 and l1,2 Regularization",
    ICDMW 2018.
    """

    def __init__(self, l11, l12, axis="input"):
        super().__init__()
        owner = "ProxCombinedL11L12"
        self.l11 = _strength(l11, owner, "l11")
        self.l12 = _strength(l12, owner, "l12")
        self.axis = groups.check_axis(axis, owner)

    def prox(self, w, learning_rate):
        lr = _as(learning_rate, w)
        return prox_l1_exclusive(w, lr * self.l11, lr * self.l12, self.axis)

    def get_config(self):
        return {"l11": self.l11, "l12": self.l12, "axis": self.axis}


@keras.saving.register_keras_serializable(package="tf_groupsparse")
class ProxCGES(ProximalConstraint):
    """CGES proximal step: group step by ``lr*strength*mu``, then exact exclusive step.

    Penalty ``strength * (mu sum_g c_g ||w_g||_2 + (1 - mu)/2 sum_g ||w_g||_1^2)``; see
    :func:`prox_cges` for why the exclusive step is the exact one and for the operator
    splitting. CGES decreases `mu` with depth (e.g. 0.8 for the first layer, lower later).

    Args:
        strength: lambda ``>= 0``.
        mu: weight of the group term in ``[0, 1]``. Default 0.5.
        axis: "input" or "output". Default "input".
        scale_by_size: ``c_g = sqrt(|g|)``. Default False.
        exact: apply the exact prox of the sum (:func:`prox_group_exclusive`, a vectorized
            bisection) instead of the paper's group-then-exclusive splitting. Default False.

    Raises:
        ValueError: negative `strength`, `mu` outside [0, 1], bad `axis`.
        TypeError: non-bool `scale_by_size` or `exact`.

    Examples:
        >>> from tf_groupsparse import penalties
        >>> c = penalties.ProxCGES(1e-2, mu=0.8)

    Source: Yoon & Hwang, "Combined Group and Exclusive Sparsity for Deep Neural Networks",
    ICML 2017.
    """

    def __init__(self, strength, mu=0.5, axis="input", scale_by_size=False, exact=False):
        super().__init__()
        owner = "ProxCGES"
        self.strength = _strength(strength, owner)
        self.mu = check_number("mu", mu, owner, maximum=1.0)
        self.axis = groups.check_axis(axis, owner)
        self.scale_by_size = check_bool("scale_by_size", scale_by_size, owner)
        self.exact = check_bool("exact", exact, owner)

    def prox(self, w, learning_rate):
        return prox_cges(
            w,
            _as(learning_rate, w) * self.strength,
            self.mu,
            self.axis,
            self.scale_by_size,
            self.exact,
        )

    def get_config(self):
        return {
            "strength": self.strength,
            "mu": self.mu,
            "axis": self.axis,
            "scale_by_size": self.scale_by_size,
            "exact": self.exact,
        }


# --------------------------------------------------------------------------- binding


def _walk_layers(layer):
    yield layer
    for child in getattr(layer, "layers", None) or ():
        if child is not layer:
            yield from _walk_layers(child)


def bind(model, optimizer=None):
    """Bind every :class:`ProximalConstraint` of `model` to the optimizer; returns their count.

    Looks at the constraints of ``model.trainable_variables`` and at the
    ``kernel_constraint`` / ``depthwise_constraint`` / ``pointwise_constraint`` attributes of
    all (nested) layers. Call it after ``model.compile`` and before ``fit`` (the
    ``tgs.callbacks.ProximalStep`` callback does it at ``on_train_begin``, which Keras runs
    before the train function is first traced).

    Args:
        model: a compiled keras.Model.
        optimizer: optimizer to read the learning rate from. Default None: ``model.optimizer``.

    Returns:
        Number of distinct proximal constraints bound (0 if the model has none).

    Raises:
        TypeError: `model` is not a keras.Model.
        ValueError: no `optimizer` given and the model is not compiled.

    Examples:
        >>> import keras
        >>> from tf_groupsparse import penalties
        >>> m = keras.Sequential([keras.Input((3,)),
        ...     keras.layers.Dense(2, kernel_constraint=penalties.ProxGroupLasso(0.1))])
        >>> m.compile("sgd", "mse")
        >>> penalties.bind(m)
        1
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "bind: Expected `model` to be a keras.Model. "
            f"Received: model of type {type(model).__name__}"
        )
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            "bind: Expected a compiled model (call model.compile(optimizer, loss) first) or an "
            f"`optimizer` argument. Received: model.optimizer=None for model {model.name!r}"
        )
    found = {}
    for variable in model.trainable_variables:
        constraint = getattr(variable, "constraint", None)
        if isinstance(constraint, ProximalConstraint):
            found[id(constraint)] = constraint
    for layer in _walk_layers(model):
        for name in ("kernel_constraint", "depthwise_constraint", "pointwise_constraint"):
            constraint = getattr(layer, name, None)
            if isinstance(constraint, ProximalConstraint):
                found[id(constraint)] = constraint
    for constraint in found.values():
        constraint.bind(optimizer)
    for variable in model.trainable_variables:  # coupled penalties: bind them to these variables
        for value in (getattr(variable, "regularizer", None), getattr(variable, "constraint", None)):
            if callable(getattr(value, "bind_model", None)):
                value.bind_model(model)
                if hasattr(value, "anchor"):
                    value.anchor = variable
    return len(found)
