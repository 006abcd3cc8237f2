"""Proximal operators of the group-sparse penalties (keras.ops only, vectorized over groups).

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

The Keras constraints that apply these after every optimizer step are in
:mod:`tf_groupsparse.penalties.constraints`.

Sources: Ma & Niu, "Compact Deep Neural Networks with l1,1 and l1,2 Regularization", ICDMW 2018
(proximal gradient for l1,1 + l1,2); Yoon & Hwang, "Combined Group and Exclusive Sparsity for
Deep Neural Networks", ICML 2017 (CGES).

Examples:
    >>> import numpy as np
    >>> from tf_groupsparse.penalties.prox import prox_group_lasso
    >>> w = np.array([[3.0, 4.0], [0.3, 0.4]])   # Dense kernel, 2 input rows
    >>> np.asarray(prox_group_lasso(w, 1.0)).round(3).tolist()   # row norms 5 and 0.5
    [[2.4, 3.2], [0.0, 0.0]]
"""

from __future__ import annotations

import math
import numbers

from keras import ops

from .._validation import check_bool, check_number
from . import groups

__all__ = [
    "prox_l1",
    "prox_group_lasso",
    "prox_sparse_group_lasso",
    "prox_exclusive",
    "prox_l1_exclusive",
    "prox_group_exclusive",
    "prox_cges",
]


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

    Examples:
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

    Examples:
        >>> import numpy as np
        >>> w = np.array([[3.0, 4.0], [0.3, 0.4]])
        >>> np.asarray(prox_group_lasso(w, 1.0)).round(3).tolist()
        [[2.4, 3.2], [0.0, 0.0]]

    Source: the group lasso step used by Yoon & Hwang, ICML 2017 (CGES).
    """
    owner = "prox_group_lasso"
    groups.check_axis(axis, owner)
    check_bool("scale_by_size", scale_by_size, owner)
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

    Examples:
        >>> import numpy as np
        >>> w = np.array([[3.5, 4.5], [0.3, 0.4]])
        >>> np.asarray(prox_sparse_group_lasso(w, 1.0, alpha=0.5)).round(3).tolist()
        [[2.7, 3.6], [0.0, 0.0]]
    """
    owner = "prox_sparse_group_lasso"
    alpha = check_number("alpha", alpha, owner, maximum=1.0)
    groups.check_axis(axis, owner)
    check_bool("scale_by_size", scale_by_size, owner)
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

    Examples:
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

    Examples:
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

    Examples:
        >>> import numpy as np
        >>> w = np.array([[3.0, 1.0], [0.3, 0.4]])
        >>> np.asarray(prox_group_exclusive(w, 0.5, 0.5)).round(4).tolist()
        [[1.6335, 0.1015], [0.0, 0.0]]

    Source: the penalty of Yoon & Hwang, ICML 2017 (CGES).
    """
    owner = "prox_group_exclusive"
    groups.check_axis(axis, owner)
    check_bool("scale_by_size", scale_by_size, owner)
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

    Examples:
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
    check_bool("scale_by_size", scale_by_size, owner)
    check_bool("exact", exact, owner)
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
