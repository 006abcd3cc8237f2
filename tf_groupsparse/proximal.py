"""Proximal operators of the group-sparse penalties, and Keras constraints that apply them.

Proximal gradient descent trains ``loss(W) + lambda * penalty(W)`` by alternating a gradient
step on the loss with the proximal operator of the penalty,

    prox_{t * penalty}(v) = argmin_x 1/2 ||x - v||^2 + t * penalty(x),    t = learning_rate * lambda.

Unlike a (sub)gradient step on the penalty, the proximal step sets whole groups to EXACTLY zero,
so channels can be removed without a magnitude threshold.

Prox functions (``keras.ops`` only, vectorized over all groups of a kernel, which comes back in
its own shape; groups are rows of :func:`tf_groupsparse.groups.grouped`):

- :func:`prox_l1`: ``x = sign(v) * max(|v| - t, 0)``.
- :func:`prox_group_lasso`: ``x_g = max(0, 1 - t c_g / ||v_g||_2) * v_g`` (``x_g = 0`` when
  ``v_g = 0``), ``c_g = 1`` or ``sqrt(|g|)``.
- :func:`prox_sparse_group_lasso`: the group step with ``t (1 - alpha)`` applied to the L1
  step's result with ``t alpha`` (the exact prox of this sum).
- :func:`prox_exclusive`: exclusive sparsity ``1/2 ||x_g||_1^2``, exact (the threshold by a
  finite fixed-point iteration, no sort).
- :func:`prox_l1_exclusive`: ``a ||x||_1 + b/2 sum_g ||x_g||_1^2`` (L1112), exact.
- :func:`prox_group_exclusive`: ``a sum_g c_g ||x_g||_2 + b/2 sum_g ||x_g||_1^2`` (CGES's
  penalty), exact, by a vectorized bisection on one scalar per group.
- :func:`prox_cges`: group step then the exact exclusive step (CGES operator splitting), or
  the exact prox of the sum with ``exact=True``.

Constraints (:class:`ProximalConstraint` subclasses) run those prox functions after every
optimizer step: Keras 3 applies ``variable.constraint`` inside ``optimizer.apply`` right after
the gradient update, so a constraint bound to the optimizer reads the live learning rate (or
the schedule at the current iteration) inside the compiled train step. Bind with
:func:`bind` after ``compile`` or with ``tf_groupsparse.callbacks.ProximalStep()``.

Sources: Ma & Niu, "Compact Deep Neural Networks with l1,1 and l1,2 Regularization", ICDMW 2018
(proximal gradient for l1,1 + l1,2); Yoon & Hwang, "Combined Group and Exclusive Sparsity for
Deep Neural Networks", ICML 2017 (CGES).

Example:
    >>> import numpy as np
    >>> from tf_groupsparse.proximal import prox_group_lasso
    >>> w = np.array([[3.0, 4.0], [0.3, 0.4]])   # Dense kernel, 2 input rows
    >>> np.asarray(prox_group_lasso(w, 1.0)).round(3).tolist()   # row norms 5 and 0.5
    [[2.4, 3.2], [0.0, 0.0]]
"""

from __future__ import annotations

import inspect
import math
import numbers

import keras
from keras import ops

from . import groups
from ._validation import check_number

__all__ = [
    "prox_l1",
    "prox_group_lasso",
    "prox_sparse_group_lasso",
    "prox_exclusive",
    "prox_l1_exclusive",
    "prox_group_exclusive",
    "prox_cges",
    "ProximalConstraint",
    "ProxL1",
    "ProxGroupLasso",
    "ProxSparseGroupLasso",
    "ProxExclusive",
    "ProxCombinedL11L12",
    "ProxCGES",
    "bind",
    "to_constraint",
]

_UNBOUND_FIX = (
    "pass tgs.callbacks.ProximalStep() to fit(), or call tf_groupsparse.proximal.bind(model) "
    "after model.compile()"
)


# --------------------------------------------------------------------------- argument checks


def _check_step(name, value, owner):
    """Check a Python step size (>= 0); scalar tensors (lr * strength in a graph) pass through."""
    if isinstance(value, numbers.Real) or not hasattr(value, "shape"):
        return check_number(name, value, owner)
    if len(tuple(value.shape)) != 0:
        raise ValueError(
            f"{owner}: Expected `{name}` to be a scalar. Received: {name}.shape={tuple(value.shape)}"
        )
    return value


def _check_bool(name, value, owner):
    if not isinstance(value, bool):
        raise TypeError(
            f"{owner}: Expected `{name}` to be True or False. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return value


def _kernel(v, owner):
    v = ops.convert_to_tensor(v)
    groups.check_kernel(v, owner)
    return v


def _as(t, v):
    """`t` in the dtype of `v` (Python numbers convert directly, without a float32 detour)."""
    if isinstance(t, numbers.Real):
        return ops.convert_to_tensor(float(t), dtype=v.dtype)
    return ops.cast(t, v.dtype)


# --------------------------------------------------------------------------- prox functions


def prox_l1(v, t):
    """Proximal operator of ``t * sum |x|`` (soft thresholding).

    ``x = sign(v) * max(|v| - t, 0)``, elementwise; works on a tensor of any shape.

    Args:
        v: tensor or array (any shape).
        t: step ``>= 0`` (learning_rate * strength), a Python number or a scalar tensor.

    Returns:
        Tensor of the shape and dtype of ``v``.

    Raises:
        ValueError: ``t`` is negative or not finite.
        TypeError: ``t`` is not a number.

    Example:
        >>> import numpy as np
        >>> np.asarray(prox_l1(np.array([-2.0, 0.5, 1.5]), 1.0)).tolist()
        [-1.0, 0.0, 0.5]

    Source: Ma & Niu, ICDMW 2018 (the l1,1 part of their proximal gradient).
    """
    t = _check_step("t", t, "prox_l1")
    v = ops.convert_to_tensor(v)
    return ops.sign(v) * ops.maximum(ops.abs(v) - _as(t, v), 0)


def _group_shrink(rows, t, scale_by_size):
    """Row-wise group soft thresholding of ``rows`` (n_groups, group_size)."""
    size = int(rows.shape[-1])
    c = math.sqrt(size) if scale_by_size else 1.0
    threshold = _as(t, rows) * c
    norm = ops.sqrt(ops.sum(ops.square(rows), axis=-1, keepdims=True))
    safe = ops.where(norm > 0, norm, ops.ones_like(norm))
    factor = ops.where(norm > threshold, 1 - threshold / safe, ops.zeros_like(norm))
    return rows * factor


def prox_group_lasso(v, t, axis="input", scale_by_size=False):
    """Proximal operator of ``t * sum_g c_g ||x_g||_2`` (group soft thresholding).

    ``x_g = max(0, 1 - t c_g / ||v_g||_2) * v_g`` for each group ``g`` along `axis`, with
    ``c_g = sqrt(|g|)`` when `scale_by_size` else 1; a zero group stays zero (no NaN).

    Args:
        v: kernel of rank >= 2 with layout ``(*spatial, C_in, C_out)``.
        t: step ``>= 0``, a Python number or a scalar tensor.
        axis: "input" (group = everything leaving one input channel) or "output"
            (everything entering one output channel). Default "input".
        scale_by_size: multiply the threshold by ``sqrt(group size)``. Default False.

    Returns:
        Tensor with the shape of ``v``.

    Raises:
        ValueError: bad `axis`, negative `t`, or a kernel of rank < 2.
        TypeError: `scale_by_size` is not a bool or `t` not a number.

    Example:
        >>> import numpy as np
        >>> w = np.array([[3.0, 4.0], [0.3, 0.4]])
        >>> np.asarray(prox_group_lasso(w, 1.0)).round(3).tolist()
        [[2.4, 3.2], [0.0, 0.0]]

    Source: the group lasso step used by Yoon & Hwang, ICML 2017 (CGES).
    """
    owner = "prox_group_lasso"
    groups.check_axis(axis, owner)
    _check_bool("scale_by_size", scale_by_size, owner)
    t = _check_step("t", t, owner)
    v = _kernel(v, owner)
    rows = _group_shrink(groups.grouped(v, axis), t, scale_by_size)
    return groups.ungrouped(rows, v.shape, axis)


def prox_sparse_group_lasso(v, t, alpha=0.5, axis="input", scale_by_size=False):
    """Proximal operator of ``t * (alpha sum |x| + (1 - alpha) sum_g c_g ||x_g||_2)``.

    ``x = prox_group_lasso(prox_l1(v, t alpha), t (1 - alpha))``. This composition is the exact
    prox of the sum: soft thresholding keeps each coordinate's sign and only shrinks it, and the
    group step then scales whole groups, so the optimality conditions of both terms hold at once.

    Args:
        v: kernel of rank >= 2 ``(*spatial, C_in, C_out)``.
        t: step ``>= 0``.
        alpha: weight of the L1 term in ``[0, 1]``. Default 0.5.
        axis: "input" or "output". Default "input".
        scale_by_size: ``c_g = sqrt(|g|)`` for the group term. Default False.

    Returns:
        Tensor with the shape of ``v``.

    Raises:
        ValueError: bad `axis`, `alpha` outside [0, 1], negative `t`.
        TypeError: non-bool `scale_by_size`.

    Example:
        >>> import numpy as np
        >>> w = np.array([[3.5, 4.5], [0.3, 0.4]])
        >>> np.asarray(prox_sparse_group_lasso(w, 1.0, alpha=0.5)).round(3).tolist()
        [[2.7, 3.6], [0.0, 0.0]]
    """
    owner = "prox_sparse_group_lasso"
    alpha = check_number("alpha", alpha, owner, maximum=1.0)
    groups.check_axis(axis, owner)
    _check_bool("scale_by_size", scale_by_size, owner)
    t = _check_step("t", t, owner)
    v = _kernel(v, owner)
    rows = groups.grouped(v, axis)
    rows = ops.sign(rows) * ops.maximum(ops.abs(rows) - _as(t, rows) * alpha, 0)
    rows = _group_shrink(rows, _as(t, rows) * (1 - alpha), scale_by_size)
    return groups.ungrouped(rows, v.shape, axis)


def _exclusive_rows(rows, a, b):
    """Row-wise prox of ``a ||x||_1 + b/2 ||x||_1^2`` on ``rows`` (n_groups, group_size).

    ``x = sign(v) max(|v| - tau, 0)`` with ``tau = max_k (a + b S_k) / (1 + b k)``, ``S_k`` the
    sum of the ``k`` largest magnitudes. ``tau`` is the fixed point of
    ``tau <- (a + b S(tau)) / (1 + b n(tau))`` (``n``, ``S``: count and sum of the magnitudes
    above ``tau``), reached exactly by Michelot's iteration started from the full support: each
    step raises ``tau`` and drops the magnitudes now at or below it, and only magnitudes below the
    optimal ``tau`` are ever dropped, so the loop stops at the optimum after at most
    ``group_size + 1`` steps (in practice a few). No sort: under XLA this is several times faster
    than sorting every row, which matters because it runs after every optimizer step.
    """
    a = _as(a, rows)
    b = _as(b, rows)
    magnitude = ops.abs(rows)

    def next_tau(tau):
        keep = ops.cast(magnitude > tau, rows.dtype)
        total = ops.sum(magnitude * keep, axis=-1, keepdims=True)
        count = ops.sum(keep, axis=-1, keepdims=True)
        return ops.maximum(tau, (a + b * total) / (1 + b * count))  # monotone also in rounding

    start = -ops.ones_like(magnitude[:, :1])
    tau, _ = ops.while_loop(
        lambda tau, previous: ops.any(tau > previous),
        lambda tau, previous: (next_tau(tau), tau),
        (next_tau(start), start),
        maximum_iterations=int(rows.shape[-1]) + 1,
    )
    return ops.sign(rows) * ops.maximum(magnitude - tau, 0)


def prox_l1_exclusive(v, a, b, axis="input"):
    """Proximal operator of ``a sum |x| + b/2 sum_g ||x_g||_1^2`` (L1112, exact).

    Per group: with ``|v|`` in descending order ``s_1 >= s_2 >= ...`` and ``S_k = s_1 + ... + s_k``,
    ``tau = max_k (a + b S_k) / (1 + b k)`` (computed without sorting, see ``_exclusive_rows``), ``x = sign(v) * max(|v| - tau, 0)``. The
    optimality conditions: every kept ``x_j`` has ``|x_j| = |v_j| - a - b ||x_g||_1`` with the
    sign of ``v_j``, every dropped one has ``|v_j| <= a + b ||x_g||_1``. The sequence
    ``(a + b S_k) / (1 + b k)`` rises while the next magnitude exceeds it and falls afterwards,
    so its maximum is reached exactly at the size of the support. It equals the L1 step by
    ``a`` followed by the exclusive step by ``b``.

    Args:
        v: kernel of rank >= 2 ``(*spatial, C_in, C_out)``.
        a: L1 step ``>= 0`` (learning_rate * l11).
        b: exclusive step ``>= 0`` (learning_rate * l12).
        axis: "input" or "output". Default "input".

    Returns:
        Tensor with the shape of ``v``.

    Raises:
        ValueError: bad `axis`, negative `a` or `b`.

    Example:
        >>> import numpy as np
        >>> w = np.array([[3.0, 1.0, 0.2]]).T        # one output column: axis="output"
        >>> np.asarray(prox_l1_exclusive(w, 0.1, 0.5, axis="output")).round(4).ravel().tolist()
        [1.9333, 0.0, 0.0]

    Source: Ma & Niu, "Compact Deep Neural Networks with l1,1 and l1,2 Regularization",
    ICDMW 2018.
    """
    owner = "prox_l1_exclusive"
    groups.check_axis(axis, owner)
    a = _check_step("a", a, owner)
    b = _check_step("b", b, owner)
    v = _kernel(v, owner)
    rows = _exclusive_rows(groups.grouped(v, axis), a, b)
    return groups.ungrouped(rows, v.shape, axis)


def prox_exclusive(v, t, axis="input"):
    """Proximal operator of ``t/2 * sum_g ||x_g||_1^2`` (exclusive sparsity, exact).

    Per group: with ``S_k`` the sum of the ``k`` largest ``|v|``, ``tau = max_k t S_k / (1 + t k)``
    and ``x = sign(v) * max(|v| - tau, 0)``; every kept ``x_j`` has ``|x_j| = |v_j| - t ||x_g||_1``.
    ``tau`` is computed without sorting, by an exact fixed-point iteration (see the module code).
    Inside a group the weights compete: only the largest survive.

    Args:
        v: kernel of rank >= 2 ``(*spatial, C_in, C_out)``.
        t: step ``>= 0``.
        axis: "input" or "output". Default "input".

    Returns:
        Tensor with the shape of ``v``.

    Raises:
        ValueError: bad `axis` or negative `t`.

    Example:
        >>> import numpy as np
        >>> w = np.array([[3.0, 1.0, 0.2]])
        >>> np.asarray(prox_exclusive(w, 0.5)).round(4).tolist()
        [[2.0, 0.0, 0.0]]

    Source: Yoon & Hwang, ICML 2017 (exclusive sparsity); Ma & Niu, ICDMW 2018 (l1,2).
    """
    owner = "prox_exclusive"
    groups.check_axis(axis, owner)
    t = _check_step("t", t, owner)
    v = _kernel(v, owner)
    rows = _exclusive_rows(groups.grouped(v, axis), 0.0, t)
    return groups.ungrouped(rows, v.shape, axis)


_BISECTION_STEPS = 60


def _group_exclusive_rows(rows, d, b):
    """Row-wise exact prox of ``d ||x||_2 + b/2 ||x||_1^2`` (d may be a column of thresholds).

    ``x = 0`` when ``||v||_2 <= d``; otherwise ``x = (1 - d / ||u||_2) u`` with
    ``u = sign(v) max(|v| - tau, 0)`` and ``tau`` the root of the increasing function
    ``h(tau) = tau - b (1 - d / ||u(tau)||_2)_+ ||u(tau)||_1`` on ``[0, max |v|]``, found by
    bisection (60 halvings: below float64 resolution).
    """
    d = _as(d, rows)
    b = _as(b, rows)
    magnitude = ops.abs(rows)

    def shrunk(tau):
        u = ops.maximum(magnitude - tau, 0)
        norm = ops.sqrt(ops.sum(ops.square(u), axis=-1, keepdims=True))
        safe = ops.where(norm > 0, norm, ops.ones_like(norm))
        scale = ops.where(norm > d, 1 - d / safe, ops.zeros_like(norm))
        return u, scale

    def body(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        u, scale = shrunk(mid)
        above = mid - b * scale * ops.sum(u, axis=-1, keepdims=True) > 0
        return ops.where(above, lo, mid), ops.where(above, mid, hi)

    lo = ops.zeros_like(magnitude[..., :1])
    hi = ops.max(magnitude, axis=-1, keepdims=True)
    lo, hi = ops.fori_loop(0, _BISECTION_STEPS, body, (lo, hi))
    u, scale = shrunk((lo + hi) / 2)
    return ops.sign(rows) * scale * u


def prox_group_exclusive(v, a, b, axis="input", scale_by_size=False):
    """Exact proximal operator of ``a sum_g c_g ||x_g||_2 + b/2 sum_g ||x_g||_1^2``.

    The optimality conditions give ``x_g = 0`` when ``||v_g||_2 <= a c_g``, and otherwise
    ``x_g = (1 - a c_g / ||u||_2) u`` with ``u = sign(v_g) max(|v_g| - tau, 0)`` and
    ``tau = b ||x_g||_1``. ``tau`` is the unique root of an increasing scalar function per
    group, found by a fixed number of vectorized bisection steps (``keras.ops.fori_loop``).
    This is the exact prox of the CGES penalty; :func:`prox_cges` uses the paper's splitting
    unless asked for this one.

    Args:
        v: kernel of rank >= 2 ``(*spatial, C_in, C_out)``.
        a: group step ``>= 0`` (learning_rate * strength * mu for CGES).
        b: exclusive step ``>= 0`` (learning_rate * strength * (1 - mu) for CGES).
        axis: "input" or "output". Default "input".
        scale_by_size: ``c_g = sqrt(|g|)``. Default False.

    Returns:
        Tensor with the shape of ``v``.

    Raises:
        ValueError: bad `axis`, negative `a` or `b`.
        TypeError: non-bool `scale_by_size`.

    Example:
        >>> import numpy as np
        >>> w = np.array([[3.0, 1.0], [0.3, 0.4]])
        >>> np.asarray(prox_group_exclusive(w, 0.5, 0.5)).round(4).tolist()
        [[1.6335, 0.1015], [0.0, 0.0]]

    Source: the penalty of Yoon & Hwang, ICML 2017 (CGES).
    """
    owner = "prox_group_exclusive"
    groups.check_axis(axis, owner)
    _check_bool("scale_by_size", scale_by_size, owner)
    a = _check_step("a", a, owner)
    b = _check_step("b", b, owner)
    v = _kernel(v, owner)
    rows = groups.grouped(v, axis)
    c = math.sqrt(int(rows.shape[-1])) if scale_by_size else 1.0
    rows = _group_exclusive_rows(rows, _as(a, rows) * c, b)
    return groups.ungrouped(rows, v.shape, axis)


def prox_cges(v, t, mu=0.5, axis="input", scale_by_size=False, exact=False):
    """CGES step: the group step with ``t mu`` then the exact exclusive step with ``t (1 - mu)``.

    Penalty: ``mu sum_g c_g ||x_g||_2 + (1 - mu)/2 sum_g ||x_g||_1^2``.
    ``x = prox_exclusive(prox_group_lasso(v, t mu), t (1 - mu))``.

    The CGES paper applies an approximate exclusive step ``(|w_j| - t (1 - mu) ||w_g||_1)_+``
    that thresholds with the norm of the *input* group. Here the exclusive step is its exact
    proximal operator (threshold ``t (1 - mu) ||x_g||_1`` of the *output*), so each half is a
    proper proximal-gradient step and the iteration inherits its descent guarantees for that
    term. The group-then-exclusive composition itself is the paper's operator splitting: it is
    not the exact prox of the sum of both terms (the exclusive step changes the direction of a
    group, so the group term's optimality condition no longer holds exactly). With
    ``exact=True`` the step is the exact prox of the sum, :func:`prox_group_exclusive`.

    Args:
        v: kernel of rank >= 2 ``(*spatial, C_in, C_out)``.
        t: step ``>= 0``.
        mu: weight of the group term in ``[0, 1]``. Default 0.5.
        axis: "input" or "output". Default "input".
        scale_by_size: ``c_g = sqrt(|g|)`` for the group term. Default False.
        exact: use the exact prox of the sum (:func:`prox_group_exclusive`) instead of the
            splitting. Default False.

    Returns:
        Tensor with the shape of ``v``.

    Raises:
        ValueError: bad `axis`, `mu` outside [0, 1], negative `t`.
        TypeError: non-bool `scale_by_size` or `exact`.

    Example:
        >>> import numpy as np
        >>> w = np.array([[3.0, 4.0], [0.3, 0.4]])
        >>> np.asarray(prox_cges(w, 1.0, mu=0.5)).round(3).tolist()
        [[1.125, 2.025], [0.0, 0.0]]
        >>> np.asarray(prox_cges(w, 1.0, mu=0.5, exact=True)).round(3).tolist()
        [[1.168, 1.99], [0.0, 0.0]]

    Source: Yoon & Hwang, "Combined Group and Exclusive Sparsity for Deep Neural Networks",
    ICML 2017.
    """
    owner = "prox_cges"
    mu = check_number("mu", mu, owner, maximum=1.0)
    groups.check_axis(axis, owner)
    _check_bool("scale_by_size", scale_by_size, owner)
    _check_bool("exact", exact, owner)
    t = _check_step("t", t, owner)
    v = _kernel(v, owner)
    rows = groups.grouped(v, axis)
    if exact:
        c = math.sqrt(int(rows.shape[-1])) if scale_by_size else 1.0
        rows = _group_exclusive_rows(rows, _as(t, v) * mu * c, _as(t, v) * (1 - mu))
    else:
        rows = _group_shrink(rows, _as(t, v) * mu, scale_by_size)
        rows = _exclusive_rows(rows, 0.0, _as(t, v) * (1 - mu))
    return groups.ungrouped(rows, v.shape, axis)


# --------------------------------------------------------------------------- constraints


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
    """

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

    Example:
        >>> import keras
        >>> from tf_groupsparse import proximal
        >>> layer = keras.layers.Dense(4, kernel_constraint=proximal.ProxL1(1e-3))

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

    Example:
        >>> import keras
        >>> from tf_groupsparse import proximal
        >>> layer = keras.layers.Dense(4, kernel_constraint=proximal.ProxGroupLasso(1e-2))

    Source: Yoon & Hwang, ICML 2017 (group sparsity by proximal steps).
    """

    def __init__(self, strength, axis="input", scale_by_size=False):
        super().__init__()
        owner = "ProxGroupLasso"
        self.strength = _strength(strength, owner)
        self.axis = groups.check_axis(axis, owner)
        self.scale_by_size = _check_bool("scale_by_size", scale_by_size, owner)

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

    Example:
        >>> from tf_groupsparse import proximal
        >>> c = proximal.ProxSparseGroupLasso(1e-2, alpha=0.3, axis="output")
    """

    def __init__(self, strength, alpha=0.5, axis="input", scale_by_size=False):
        super().__init__()
        owner = "ProxSparseGroupLasso"
        self.strength = _strength(strength, owner)
        self.alpha = check_number("alpha", alpha, owner, maximum=1.0)
        self.axis = groups.check_axis(axis, owner)
        self.scale_by_size = _check_bool("scale_by_size", scale_by_size, owner)

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

    Example:
        >>> from tf_groupsparse import proximal
        >>> c = proximal.ProxExclusive(1e-2, axis="output")

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

    Example:
        >>> from tf_groupsparse import proximal
        >>> c = proximal.ProxCombinedL11L12(1e-3, 1e-2)

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

    Example:
        >>> from tf_groupsparse import proximal
        >>> c = proximal.ProxCGES(1e-2, mu=0.8)

    Source: Yoon & Hwang, "Combined Group and Exclusive Sparsity for Deep Neural Networks",
    ICML 2017.
    """

    def __init__(self, strength, mu=0.5, axis="input", scale_by_size=False, exact=False):
        super().__init__()
        owner = "ProxCGES"
        self.strength = _strength(strength, owner)
        self.mu = check_number("mu", mu, owner, maximum=1.0)
        self.axis = groups.check_axis(axis, owner)
        self.scale_by_size = _check_bool("scale_by_size", scale_by_size, owner)
        self.exact = _check_bool("exact", exact, owner)

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

    Example:
        >>> import keras
        >>> from tf_groupsparse import proximal
        >>> m = keras.Sequential([keras.Input((3,)),
        ...     keras.layers.Dense(2, kernel_constraint=proximal.ProxGroupLasso(0.1))])
        >>> m.compile("sgd", "mse")
        >>> proximal.bind(m)
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
    return len(found)


# --------------------------------------------------------------------------- regularizer -> constraint

# regularizer class name -> constraint class taking the same arguments
_PROX_FOR = {
    "L1": ProxL1,
    "GroupLasso": ProxGroupLasso,
    "SparseGroupLasso": ProxSparseGroupLasso,
    "ExclusiveSparsity": ProxExclusive,
    "CombinedL11L12": ProxCombinedL11L12,
    "CombinedGroupExclusive": ProxCGES,
}
_NO_PROX = ("HierarchicalGroupSparse", "GroupL12", "BlockDiagonal")


def _constraint_arguments(cls):
    """(all argument names, those without a default) of a constraint class."""
    params = [p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"]
    return [p.name for p in params], [p.name for p in params if p.default is p.empty]


def to_constraint(regularizer):
    """The :class:`ProximalConstraint` that trains `regularizer`'s penalty by proximal steps.

    Dispatches on the regularizer's class name (or a base class's name) through a table:
    L1 -> ProxL1, GroupLasso -> ProxGroupLasso, SparseGroupLasso -> ProxSparseGroupLasso,
    ExclusiveSparsity -> ProxExclusive, CombinedL11L12 -> ProxCombinedL11L12,
    CombinedGroupExclusive -> ProxCGES, with the same arguments taken from
    ``regularizer.get_config()``. ``keras.regularizers.L1(l1)`` maps to ``ProxL1(l1)``.

    Args:
        regularizer: a tf_groupsparse regularizer instance.

    Returns:
        A new, unbound ProximalConstraint.

    Raises:
        ValueError: the penalty has no closed-form prox here (HierarchicalGroupSparse,
            GroupL12, BlockDiagonal): train it through the loss (proximal=False).
        TypeError: the object is not a known regularizer.

    Example:
        >>> from tf_groupsparse.regularizers import GroupLasso
        >>> from tf_groupsparse.proximal import to_constraint
        >>> to_constraint(GroupLasso(1e-3, axis="output", scale_by_size=True))
        ProxGroupLasso(strength=0.001, axis='output', scale_by_size=True)
    """
    if type(regularizer) is keras.regularizers.L1:
        return ProxL1(float(regularizer.l1))
    for klass in type(regularizer).__mro__:
        name = klass.__name__
        if name in _NO_PROX:
            raise ValueError(
                f"to_constraint: Expected a regularizer with a closed-form proximal operator "
                f"({', '.join(_PROX_FOR)}). {name} has none here: train it through the loss "
                f"(proximal=False). Received: regularizer={type(regularizer).__name__}"
            )
        if name in _PROX_FOR:
            cls = _PROX_FOR[name]
            config = regularizer.get_config()
            names, required = _constraint_arguments(cls)
            if any(a not in config for a in required):
                raise ValueError(
                    f"to_constraint: Expected {name}.get_config() to contain {required}. "
                    f"Received: config={config!r}"
                )
            return cls(**{a: config[a] for a in names if a in config})
    raise TypeError(
        "to_constraint: Expected a tf_groupsparse regularizer "
        f"({', '.join(_PROX_FOR)}). "
        f"Received: regularizer of type {type(regularizer).__name__}"
    )
