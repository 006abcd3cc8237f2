"""Tests of tf_groupsparse.penalties: optimality (KKT), a generic solver, vectorization, training
with bound constraints, learning-rate schedules, serialization and argument errors."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import brentq, minimize

from tf_groupsparse import penalties as proximal
from tf_groupsparse.penalties import (
    ProxCGES,
    ProxCombinedL11L12,
    ProxExclusive,
    ProxGroupLasso,
    ProxL1,
    ProxSparseGroupLasso,
    prox_cges,
    prox_exclusive,
    prox_group_exclusive,
    prox_group_lasso,
    prox_l1,
    prox_l1_exclusive,
    prox_sparse_group_lasso,
)

TOL = 1e-9


# ----------------------------------------------------------------------------- NumPy references


def np_rows(w, axis):
    """Groups of a kernel as rows, NumPy only (independent of tf_groupsparse.penalties.groups)."""
    idx = -2 if axis == "input" else -1
    return np.moveaxis(w, idx, 0).reshape(w.shape[idx], -1)


def soft(v, a):
    return np.sign(v) * np.maximum(np.abs(v) - a, 0.0)


def ref_group(g, d):
    """Group soft thresholding of one flat group with threshold d."""
    norm = np.linalg.norm(g)
    return np.zeros_like(g) if norm <= d else (1 - d / norm) * g


def ref_l1_exclusive(g, a, b):
    """prox of a||x||_1 + b/2 ||x||_1^2 on one group by searching the support size k whose
    threshold is consistent (s_k > tau_k >= s_{k+1}); no use of the max formula."""
    s = np.sort(np.abs(g))[::-1]
    for k in range(1, len(s) + 1):
        tau = (a + b * s[:k].sum()) / (1 + b * k)
        nxt = s[k] if k < len(s) else -np.inf
        if s[k - 1] > tau >= nxt:
            return soft(g, tau)
    return np.zeros_like(g)


def ref_group_exclusive(g, d, b):
    """prox of d||x||_2 + b/2 ||x||_1^2 on one group: Brent's method on the scalar
    tau = b ||x||_1 with x = (1 - d/||soft(v, tau)||)_+ soft(v, tau)."""
    if np.linalg.norm(g) <= d:
        return np.zeros_like(g)

    def x_of(tau):
        u = soft(g, tau)
        norm = np.linalg.norm(u)
        return np.zeros_like(g) if norm <= d else (1 - d / norm) * u

    top = np.abs(g).max()
    if b == 0:
        return x_of(0.0)
    tau = brentq(lambda tau: tau - b * np.abs(x_of(tau)).sum(), 0.0, top, xtol=1e-15, rtol=1e-15)
    return x_of(tau)


def loop_over_groups(w, axis, fn):
    """Apply fn to each group (flattened) in a Python loop and put it back."""
    out = np.array(w, dtype=float, copy=True)
    idx = -2 if axis == "input" else -1
    for i in range(w.shape[idx]):
        sl = (Ellipsis, i, slice(None)) if axis == "input" else (Ellipsis, i)
        out[sl] = fn(w[sl].ravel()).reshape(w[sl].shape)
    return out


def group_c(rows, scale):
    return np.sqrt(rows.shape[1]) if scale else 1.0


# penalties, already multiplied by the step(s)
def pen_l1(x, p):
    return p["t"] * np.abs(x).sum()


def pen_group(x, p):
    rows = np_rows(x, p["axis"])
    return p["t"] * group_c(rows, p["scale"]) * np.linalg.norm(rows, axis=1).sum()


def pen_sgl(x, p):
    rows = np_rows(x, p["axis"])
    c = group_c(rows, p["scale"])
    return p["t"] * (p["w"] * np.abs(x).sum() + (1 - p["w"]) * c * np.linalg.norm(rows, axis=1).sum())


def pen_l1excl(x, p):
    rows = np_rows(x, p["axis"])
    return p["a"] * np.abs(x).sum() + p["b"] / 2 * (np.abs(rows).sum(axis=1) ** 2).sum()


def pen_group_excl(x, p):
    rows = np_rows(x, p["axis"])
    c = group_c(rows, p["scale"])
    return (p["a"] * c * np.linalg.norm(rows, axis=1).sum()
            + p["b"] / 2 * (np.abs(rows).sum(axis=1) ** 2).sum())


# KKT checks of argmin 1/2||x - v||^2 + penalty(x), per group
def kkt_l1(v, x, p):
    kept = x != 0
    assert np.all(np.sign(x[kept]) == np.sign(v[kept]))
    np.testing.assert_allclose(v[kept] - x[kept], p["t"] * np.sign(x[kept]), atol=TOL)
    assert np.all(np.abs(v[~kept]) <= p["t"] + TOL)


def _kkt_l1_group(vr, xr, a, d):
    """v - x in a * d||x||_1 + d * d||x_g||_2 for each row."""
    for vg, xg in zip(vr, xr):
        norm = np.linalg.norm(xg)
        if norm == 0:
            assert np.linalg.norm(soft(vg, a)) <= d + TOL
            continue
        kept = xg != 0
        assert np.all(np.sign(xg[kept]) == np.sign(vg[kept]))
        np.testing.assert_allclose(
            vg[kept] - xg[kept], a * np.sign(xg[kept]) + d * xg[kept] / norm, atol=TOL
        )
        assert np.all(np.abs(vg[~kept]) <= a + TOL)


def kkt_group(v, x, p):
    vr, xr = np_rows(v, p["axis"]), np_rows(x, p["axis"])
    _kkt_l1_group(vr, xr, 0.0, p["t"] * group_c(vr, p["scale"]))


def kkt_sgl(v, x, p):
    vr, xr = np_rows(v, p["axis"]), np_rows(x, p["axis"])
    _kkt_l1_group(vr, xr, p["t"] * p["w"], p["t"] * (1 - p["w"]) * group_c(vr, p["scale"]))


def kkt_l1excl(v, x, p):
    vr, xr = np_rows(v, p["axis"]), np_rows(x, p["axis"])
    for vg, xg in zip(vr, xr):
        tau = p["a"] + p["b"] * np.abs(xg).sum()
        kept = xg != 0
        assert np.all(np.sign(xg[kept]) == np.sign(vg[kept]))
        np.testing.assert_allclose(np.abs(xg[kept]), np.abs(vg[kept]) - tau, atol=TOL)
        assert np.all(np.abs(vg[~kept]) <= tau + TOL)


def kkt_group_excl(v, x, p):
    vr, xr = np_rows(v, p["axis"]), np_rows(x, p["axis"])
    d = p["a"] * group_c(vr, p["scale"])
    for vg, xg in zip(vr, xr):
        norm = np.linalg.norm(xg)
        if norm == 0:
            assert np.linalg.norm(vg) <= d + TOL
            continue
        tau = p["b"] * np.abs(xg).sum()
        kept = xg != 0
        assert np.all(np.sign(xg[kept]) == np.sign(vg[kept]))
        np.testing.assert_allclose(
            vg[kept] - xg[kept], d * xg[kept] / norm + tau * np.sign(xg[kept]), atol=TOL
        )
        assert np.all(np.abs(vg[~kept]) <= tau + TOL)


# name -> (prox under test, penalty, KKT check)
EXACT = {
    "l1": (lambda v, p: prox_l1(v, p["t"]), pen_l1, kkt_l1),
    "group": (lambda v, p: prox_group_lasso(v, p["t"], p["axis"], p["scale"]), pen_group, kkt_group),
    "sgl": (
        lambda v, p: prox_sparse_group_lasso(v, p["t"], p["w"], p["axis"], p["scale"]),
        pen_sgl,
        kkt_sgl,
    ),
    "exclusive": (lambda v, p: prox_exclusive(v, p["b"], p["axis"]), pen_l1excl, kkt_l1excl),
    "l1_exclusive": (
        lambda v, p: prox_l1_exclusive(v, p["a"], p["b"], p["axis"]),
        pen_l1excl,
        kkt_l1excl,
    ),
    "group_exclusive": (
        lambda v, p: prox_group_exclusive(v, p["a"], p["b"], p["axis"], p["scale"]),
        pen_group_excl,
        kkt_group_excl,
    ),
}

values = st.one_of(
    st.floats(-3, 3, allow_nan=False, width=64), st.sampled_from([0.0, 1.0, -1.0, 0.5, -0.5])
)
kernels = arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 5)), elements=values)
params = st.fixed_dictionaries(
    {
        "t": st.floats(0, 2),
        "a": st.floats(0, 1),
        "b": st.floats(0, 2),
        "w": st.floats(0, 1),
        "axis": st.sampled_from(["input", "output"]),
        "scale": st.booleans(),
    }
)


def objective(x, v, penalty, p):
    return 0.5 * np.sum((x - v) ** 2) + penalty(x, p)


@pytest.mark.parametrize("name", sorted(EXACT))
@settings(max_examples=25)
@given(v=kernels, p=params, seed=st.integers(0, 2**16))
def test_prox_satisfies_kkt_and_beats_perturbations(name, v, p, seed):
    prox, penalty, kkt = EXACT[name]
    if name == "exclusive":
        p = dict(p, a=0.0)
    x = np.asarray(prox(v, p))
    assert x.shape == v.shape and x.dtype == np.float64
    assert np.all(np.isfinite(x))
    kkt(v, x, p)
    best = objective(x, v, penalty, p)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        other = x + 1e-3 * rng.standard_normal(x.shape)
        assert best <= objective(other, v, penalty, p) + 1e-12


# ----------------------------------------------------------------------------- generic solver


def generic_objective(x, v, a=0.0, b=0.0, d=0.0):
    l1 = np.abs(x).sum()
    return 0.5 * np.sum((x - v) ** 2) + a * l1 + b / 2 * l1**2 + d * np.linalg.norm(x)


def solve_generic(v, a=0.0, b=0.0, d=0.0):
    """argmin 1/2||x - v||^2 + a||x||_1 + b/2 ||x||_1^2 + d||x||_2 for one group by a generic
    solver: x = p - q with p, q >= 0 makes the l1 parts smooth; the l2 part is either an
    epigraph s >= ||x||_2 (SLSQP) or smoothed as sqrt(||x||^2 + 1e-16) (L-BFGS-B); several
    starts, the best objective wins."""
    n = v.size

    def exact(x):
        return generic_objective(x, v, a, b, d)

    def epigraph(z):
        p, q, s = z[:n], z[n : 2 * n], z[2 * n]
        r, l1 = p - q - v, np.sum(p + q)
        f = 0.5 * np.sum(r**2) + a * l1 + b / 2 * l1**2 + d * s
        return f, np.concatenate([r + a + b * l1, -r + a + b * l1, [d]])

    def cone(z):
        x = z[:n] - z[n : 2 * n]
        return z[2 * n] ** 2 - np.sum(x**2)

    def cone_jac(z):
        x = z[:n] - z[n : 2 * n]
        return np.concatenate([-2 * x, 2 * x, [2 * z[2 * n]]])

    def smoothed(z):
        p, q = z[:n], z[n:]
        l1 = np.sum(p + q)
        root = np.sqrt(np.sum((p - q) ** 2) + 1e-16)
        r = p - q - v
        f = 0.5 * np.sum(r**2) + a * l1 + b / 2 * l1**2 + d * root
        gx = r + d * (p - q) / root
        return f, np.concatenate([gx + a + b * l1, -gx + a + b * l1])

    candidates = []
    pq = np.concatenate([np.maximum(v, 0), np.maximum(-v, 0)])
    res = minimize(
        smoothed, pq, jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * n),
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000},
    )
    candidates.append(res.x[:n] - res.x[n:])
    for scale in (1.0, 0.0) if d > 0 else ():  # the l2 term is not smooth at 0
        res = minimize(
            epigraph, np.append(pq * scale, np.linalg.norm(v) * scale), jac=True,
            method="SLSQP", bounds=[(0, None)] * (2 * n + 1),
            constraints=[{"type": "ineq", "fun": cone, "jac": cone_jac}],
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        candidates.append(res.x[:n] - res.x[n : 2 * n])
    best = min(candidates, key=exact)
    return best, exact(best)


groups_1d = arrays(np.float64, st.integers(1, 6), elements=values)


@settings(max_examples=12)
@given(v=groups_1d, t=st.floats(0, 1.5), w=st.floats(0, 1), scale=st.booleans())
def test_prox_matches_generic_solver(v, t, w, scale):
    c = np.sqrt(v.size) if scale else 1.0
    row = v[None, :]  # one group along axis="input"
    cases = [
        (prox_l1(row, t), dict(a=t)),
        (prox_group_lasso(row, t, "input", scale), dict(d=t * c)),
        (prox_sparse_group_lasso(row, t, w, "input", scale), dict(a=t * w, d=t * (1 - w) * c)),
        (prox_exclusive(row, t), dict(b=t)),
        (prox_l1_exclusive(row, t * w, t), dict(a=t * w, b=t)),
        (prox_group_exclusive(row, t * w, t, "input", scale), dict(d=t * w * c, b=t)),
    ]
    for x, kwargs in cases:
        x = np.asarray(x)[0]
        expected, best = solve_generic(v, **kwargs)
        mine = generic_objective(x, v, **kwargs)
        assert mine <= best + 1e-10  # never worse than the generic solver
        np.testing.assert_allclose(x, expected, atol=1e-4)


def test_cges_is_group_then_exact_exclusive_and_not_the_prox_of_the_sum():
    v = np.array([[3.0, 1.0]])
    t, mu = 1.0, 0.5
    x = np.asarray(prox_cges(v, t, mu))[0]
    composed = ref_l1_exclusive(ref_group(v[0], t * mu), 0.0, t * (1 - mu))
    np.testing.assert_allclose(x, composed, atol=1e-12)
    np.testing.assert_allclose(x, [1.6838, 0.0], atol=1e-4)
    # the exact prox of mu||x||_2 + (1-mu)/2 ||x||_1^2 (generic solver) is a different point with
    # a lower objective: the splitting is CGES's scheme, not the prox of the sum
    exact, best = solve_generic(v[0], b=t * (1 - mu), d=t * mu)
    split_objective = 0.5 * np.sum((x - v[0]) ** 2) + t * (
        mu * np.linalg.norm(x) + (1 - mu) / 2 * np.abs(x).sum() ** 2
    )
    assert best < split_objective - 1e-3
    assert np.max(np.abs(exact - x)) > 1e-2
    # exact=True gives the prox of the sum
    x_exact = np.asarray(prox_cges(v, t, mu, exact=True))[0]
    np.testing.assert_allclose(x_exact, exact, atol=1e-5)
    np.testing.assert_allclose(x_exact, [1.63347, 0.10150], atol=1e-5)


# ----------------------------------------------------------------------------- vectorization

VECTOR_CASES = {
    "l1": (lambda w, ax: prox_l1(w, 0.3), lambda g: soft(g, 0.3)),
    "group": (lambda w, ax: prox_group_lasso(w, 0.9, ax), lambda g: ref_group(g, 0.9)),
    "group_scaled": (
        lambda w, ax: prox_group_lasso(w, 0.3, ax, True),
        lambda g: ref_group(g, 0.3 * np.sqrt(g.size)),
    ),
    "sgl": (
        lambda w, ax: prox_sparse_group_lasso(w, 0.8, 0.3, ax, True),
        lambda g: ref_group(soft(g, 0.24), 0.56 * np.sqrt(g.size)),
    ),
    "exclusive": (lambda w, ax: prox_exclusive(w, 0.2, ax), lambda g: ref_l1_exclusive(g, 0.0, 0.2)),
    "l1_exclusive": (
        lambda w, ax: prox_l1_exclusive(w, 0.1, 0.3, ax),
        lambda g: ref_l1_exclusive(g, 0.1, 0.3),
    ),
    "cges": (
        lambda w, ax: prox_cges(w, 0.6, 0.8, ax, True),
        lambda g: ref_l1_exclusive(ref_group(g, 0.48 * np.sqrt(g.size)), 0.0, 0.12),
    ),
    "cges_exact": (
        lambda w, ax: prox_cges(w, 0.6, 0.8, ax, True, exact=True),
        lambda g: ref_group_exclusive(g, 0.48 * np.sqrt(g.size), 0.12),
    ),
    "group_exclusive": (
        lambda w, ax: prox_group_exclusive(w, 0.3, 0.4, ax),
        lambda g: ref_group_exclusive(g, 0.3, 0.4),
    ),
}


@pytest.mark.parametrize("name", sorted(VECTOR_CASES))
def test_vectorized_prox_equals_group_by_group_loop(name):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, 3, 4, 5))  # Conv2D kernel
    w[..., 1, :] *= 0.05  # a weak input channel
    w[..., 2] = 0.0  # an output channel that is already zero
    fn, ref = VECTOR_CASES[name]
    for axis in ("input", "output"):
        out = np.asarray(fn(w, axis))
        np.testing.assert_allclose(out, loop_over_groups(w, axis, ref), atol=1e-12)
        out32 = fn(w.astype("float32"), axis)
        assert out32.dtype == tf.float32
        np.testing.assert_allclose(np.asarray(out32), out, atol=1e-5)


def test_zero_group_and_zero_step_are_finite_and_exact():
    w = np.zeros((3, 4))
    for x in (prox_group_lasso(w, 1.0), prox_cges(w, 1.0), prox_exclusive(w, 1.0)):
        assert np.array_equal(np.asarray(x), w)
    v = np.random.default_rng(0).standard_normal((3, 4))
    for x in (prox_group_lasso(v, 0.0), prox_exclusive(v, 0.0), prox_sparse_group_lasso(v, 0.0)):
        np.testing.assert_array_equal(np.asarray(x), v)


# ----------------------------------------------------------------------------- constraints in training


def _zero_grad_steps(constraint, lr, n_steps, jit, accumulation=None):
    """Run optimizer.apply with zero gradients inside one traced tf.function; return kernels."""
    w0 = np.array([[1.0, -2.0, 0.3], [0.5, 0.1, -0.05]], "float32")
    var = keras.Variable(w0)
    var.constraint = constraint
    opt = keras.optimizers.SGD(learning_rate=lr, gradient_accumulation_steps=accumulation)
    opt.build([var])
    constraint.bind(opt)
    step = tf.function(lambda: opt.apply([tf.zeros_like(var)], [var]), jit_compile=jit)
    out = [w0]
    for _ in range(n_steps):
        step()
        out.append(np.asarray(var))
    return out


@pytest.mark.parametrize("jit", [False, True])
def test_step_at_iteration_n_is_schedule_n_times_strength(jit):
    schedule = keras.optimizers.schedules.InverseTimeDecay(0.4, decay_steps=1, decay_rate=1.0)
    lrs = [0.4 / (1 + n) for n in range(4)]  # schedule(n) at the iteration n of the step
    kernels = _zero_grad_steps(ProxL1(0.5), schedule, 4, jit)
    for n, lr in enumerate(lrs):
        np.testing.assert_allclose(kernels[n + 1], soft(kernels[n], lr * 0.5), atol=1e-6)


def test_gradient_accumulation_applies_prox_only_on_update_steps():
    kernels = _zero_grad_steps(ProxL1(1.0), 0.1, 4, False, accumulation=2)
    np.testing.assert_array_equal(kernels[1], kernels[0])
    np.testing.assert_allclose(kernels[2], soft(kernels[0], 0.1), atol=1e-6)
    np.testing.assert_array_equal(kernels[3], kernels[2])
    np.testing.assert_allclose(kernels[4], soft(kernels[0], 0.2), atol=1e-6)


def _linear_model(constraint):
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3, use_bias=False, kernel_constraint=constraint)]
    )


FIT_CASES = {
    "group_lasso": (lambda: ProxGroupLasso(2.0, axis="input"), lambda row, lr: ref_group(row, lr * 2.0)),
    "cges_exact": (
        lambda: ProxCGES(2.5, mu=0.8, exact=True),
        lambda row, lr: ref_group_exclusive(row, lr * 2.0, lr * 0.5),
    ),
}


@pytest.mark.parametrize("case", sorted(FIT_CASES))
@pytest.mark.parametrize("jit_compile", [False, "auto"])
def test_fit_equals_numpy_proximal_gradient_with_schedule(jit_compile, case):
    make_constraint, row_prox = FIT_CASES[case]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6)).astype("float32")
    y = rng.standard_normal((16, 3)).astype("float32")
    model = _linear_model(make_constraint())
    w = np.asarray(model.layers[0].kernel, dtype=float)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.2, decay_steps=1, decay_rate=0.5)
    model.compile(keras.optimizers.SGD(schedule), "mse", jit_compile=jit_compile)
    assert proximal.bind(model) == 1
    model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0)
    for n in range(4):
        lr = 0.2 * 0.5**n
        grad = 2.0 / (16 * 3) * x.T.astype(float) @ (x @ w - y)
        w = w - lr * grad
        w = np.stack([row_prox(row, lr) for row in w])
    np.testing.assert_allclose(np.asarray(model.layers[0].kernel), w, atol=1e-5)
    assert np.any(np.all(w == 0, axis=1))  # the case really zeroes a group


def test_fit_under_tf_distribute_strategy_equals_numpy():
    # the constraint runs in the replica context of MirroredStrategy (one CPU replica here)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6)).astype("float32")
    y = rng.standard_normal((16, 3)).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _linear_model(ProxGroupLasso(2.0))
        model.compile(keras.optimizers.SGD(0.1), "mse")
    w = np.asarray(model.layers[0].kernel, dtype=float)
    assert proximal.bind(model) == 1
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    for _ in range(3):
        w = w - 0.1 * 2.0 / (16 * 3) * x.T.astype(float) @ (x @ w - y)
        w = np.stack([ref_group(row, 0.2) for row in w])
    np.testing.assert_allclose(np.asarray(model.layers[0].kernel), w, atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, "auto"])
def test_training_zeroes_whole_groups_exactly(jit_compile):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 16)).astype("float32")
    w_true = rng.uniform(1.0, 2.0, (4, 2)) * rng.choice([-1, 1], (4, 2))
    y = (x[:, :4] @ w_true).astype("float32")  # only the first 4 inputs matter
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(8, activation="relu", kernel_constraint=ProxGroupLasso(1.0)),
            keras.layers.Dense(2),
        ]
    )
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=16, decay_rate=0.8)
    model.compile(keras.optimizers.SGD(schedule), "mse", jit_compile=jit_compile)
    proximal.bind(model)
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    kernel = np.asarray(model.layers[0].kernel)
    assert np.all(np.isfinite(kernel)) and np.isfinite(history.history["loss"][-1])
    zero_rows = np.all(kernel == 0, axis=1)
    assert np.all(zero_rows[4:])  # every noise input is removed exactly
    assert not np.any(zero_rows[:4])  # the informative inputs stay
    assert history.history["loss"][-1] < history.history["loss"][0]


class _BindAtTrainBegin(keras.callbacks.Callback):
    """What tgs.callbacks.ProximalStep does: bind at on_train_begin."""

    def on_train_begin(self, logs=None):
        self.count = proximal.bind(self.model)


def test_binding_at_on_train_begin_precedes_tracing():
    # Keras 3 builds train_function (a tf.function) before on_train_begin but traces it at
    # the first batch, so a constraint bound by a callback is live in the compiled step.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6)).astype("float32")
    constraint = ProxGroupLasso(50.0)  # lr * strength = 0.5 per step: every row of norm < 0.5 dies
    model = _linear_model(constraint)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    callback = _BindAtTrainBegin()
    model.fit(x, np.zeros((8, 3), "float32"), epochs=3, verbose=0, callbacks=[callback])
    assert callback.count == 1 and constraint.optimizer is model.optimizer
    assert np.all(np.asarray(model.layers[0].kernel) == 0)


def test_unbound_constraint_in_fit_raises_clear_error():
    model = _linear_model(ProxGroupLasso(0.1))
    model.compile("sgd", "mse")
    x = np.ones((4, 6), "float32")
    with pytest.raises(ValueError, match=re.escape(
        "ProxGroupLasso: Expected the proximal constraint to be bound to the optimizer before "
        "training; pass tgs.callbacks.ProximalStep() to fit(), or call "
        "tf_groupsparse.penalties.bind(model) after model.compile(). Received: an unbound constraint"
    )):
        model.fit(x, np.ones((4, 3), "float32"), epochs=1, verbose=0)


def test_bind_counts_nested_and_shared_constraints():
    shared = ProxExclusive(0.1, axis="output")
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, kernel_constraint=ProxCGES(0.1, 0.8))]
    )
    inp = keras.Input((6,))
    h = keras.layers.Dense(5, kernel_constraint=shared)(inp)
    h = inner(h)
    h = keras.layers.Dense(4, kernel_constraint=shared)(h)
    out = keras.layers.Dense(2, kernel_constraint=keras.constraints.NonNeg())(h)
    model = keras.Model(inp, out)
    opt = keras.optimizers.SGD(0.01)
    model.compile(opt, "mse")
    assert proximal.bind(model) == 2
    assert shared.optimizer is opt and inner.layers[0].kernel_constraint.optimizer is opt
    conv = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.SeparableConv2D(
                3, 3, depthwise_constraint=ProxL1(0.1), pointwise_constraint=ProxGroupLasso(0.1)
            ),
            keras.layers.Conv2D(2, 1, kernel_constraint=ProxExclusive(0.1)),
        ]
    )
    conv.compile("sgd", "mse")
    assert proximal.bind(conv) == 3
    other = keras.optimizers.Adam(0.5)
    assert proximal.bind(model, other) == 2 and shared.optimizer is other
    np.testing.assert_allclose(float(shared.learning_rate()), 0.5)


# ----------------------------------------------------------------------------- serialization

CONSTRAINTS = [
    ProxL1(0.25),
    ProxGroupLasso(0.3, "output", True),
    ProxSparseGroupLasso(0.2, 0.3, "output", True),
    ProxExclusive(0.15, "output"),
    ProxCombinedL11L12(0.01, 0.02, "output"),
    ProxCGES(0.4, 0.8, "output", True, exact=True),
]


@pytest.mark.parametrize("constraint", CONSTRAINTS, ids=lambda c: type(c).__name__)
def test_model_with_constraint_round_trips(constraint, tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_constraint=constraint)])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    restored = loaded.layers[0].kernel_constraint
    assert type(restored) is type(constraint)
    assert restored.get_config() == constraint.get_config()
    assert all(isinstance(v, (float, str, bool)) for v in restored.get_config().values())
    assert restored.optimizer is None
    kernel = np.asarray(model.layers[0].kernel)
    np.testing.assert_array_equal(np.asarray(loaded.layers[0].kernel), kernel)
    np.testing.assert_allclose(
        np.asarray(restored.prox(kernel, 0.7)), np.asarray(constraint.prox(kernel, 0.7)), atol=0
    )
    clone = type(constraint).from_config(constraint.get_config())
    assert clone.get_config() == constraint.get_config()


# ----------------------------------------------------------------------------- to_constraint


def _regularizer_cases():
    from tf_groupsparse import regularizers as r

    return [
        (r.L1(0.03), ProxL1, {"strength": 0.03}),
        (r.GroupLasso(0.02, "output", True), ProxGroupLasso,
         {"strength": 0.02, "axis": "output", "scale_by_size": True}),
        (r.SparseGroupLasso(0.02, 0.7, "output", True), ProxSparseGroupLasso,
         {"strength": 0.02, "alpha": 0.7, "axis": "output", "scale_by_size": True}),
        (r.ExclusiveSparsity(0.04, "output"), ProxExclusive, {"strength": 0.04, "axis": "output"}),
        (r.CombinedL11L12(0.01, 0.05, "output"), ProxCombinedL11L12,
         {"l11": 0.01, "l12": 0.05, "axis": "output"}),
        (r.CombinedGroupExclusive(0.06, 0.8, "output", True), ProxCGES,
         {"strength": 0.06, "mu": 0.8, "axis": "output", "scale_by_size": True}),
        (keras.regularizers.L1(0.03), ProxL1, {"strength": 0.03}),
    ]


def test_to_constraint_maps_each_regularizer_with_its_arguments():
    for regularizer, cls, config in _regularizer_cases():
        constraint = proximal.to_constraint(regularizer)
        assert type(constraint) is cls
        for key, value in config.items():
            assert constraint.get_config()[key] == pytest.approx(value) if isinstance(
                value, float
            ) else constraint.get_config()[key] == value


@pytest.mark.parametrize("name", ["HierarchicalGroupSparse", "GroupL12", "BlockDiagonal"])
def test_to_constraint_refuses_penalties_without_prox(name):
    from tf_groupsparse import regularizers as r

    kwargs = {"BlockDiagonal": {"input_groups": [0, 0, 1], "output_groups": [0, 1]}}.get(name, {})
    regularizer = getattr(r, name)(1e-3, **kwargs)
    message = (
        "to_constraint: Expected a penalty with a closed-form proximal operator (CombinedGroupExclusive, "
        "CombinedL11L12, ExclusiveSparsity, GroupLasso, L1, SparseGroupLasso). "
        f"{name} has none here: train it through the loss "
        f"(proximal=False). Received: regularizer={name}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        proximal.to_constraint(regularizer)


# ----------------------------------------------------------------------------- argument errors

W = np.ones((3, 2))

BAD = [
    (lambda: ProxGroupLasso(-1.0), ValueError,
     "ProxGroupLasso: Expected `strength` >= 0. Received: strength=-1.0"),
    (lambda: ProxGroupLasso(0.1, axis="rows"), ValueError,
     "ProxGroupLasso: Expected `axis` to be one of 'input', 'output'. Received: axis='rows'"),
    (lambda: ProxGroupLasso(0.1, scale_by_size="yes"), TypeError,
     "ProxGroupLasso: Expected `scale_by_size` to be True or False. "
     "Received: scale_by_size='yes' of type str"),
    (lambda: ProxCGES(0.1, mu=1.5), ValueError,
     "ProxCGES: Expected `mu` >= 0 and <= 1. Received: mu=1.5"),
    (lambda: ProxCGES(0.1, mu=-0.2), ValueError,
     "ProxCGES: Expected `mu` >= 0 and <= 1. Received: mu=-0.2"),
    (lambda: ProxSparseGroupLasso(0.1, alpha=2), ValueError,
     "ProxSparseGroupLasso: Expected `alpha` >= 0 and <= 1. Received: alpha=2.0"),
    (lambda: ProxL1("big"), TypeError,
     "ProxL1: Expected `strength` to be a real number. Received: strength='big' of type str"),
    (lambda: ProxExclusive(0.1, axis=1), ValueError,
     "ProxExclusive: Expected `axis` to be one of 'input', 'output'. Received: axis=1"),
    (lambda: ProxCombinedL11L12(0.1, -2), ValueError,
     "ProxCombinedL11L12: Expected `l12` >= 0. Received: l12=-2.0"),
    (lambda: prox_exclusive(W, -0.1), ValueError,
     "prox_exclusive: Expected `t` >= 0. Received: t=-0.1"),
    (lambda: prox_l1_exclusive(W, 0.1, -1.0, "output"), ValueError,
     "prox_l1_exclusive: Expected `b` >= 0. Received: b=-1.0"),
    (lambda: ProxCGES(0.1, exact=1), TypeError,
     "ProxCGES: Expected `exact` to be True or False. Received: exact=1 of type int"),
    (lambda: prox_group_exclusive(W, -0.5, 0.1), ValueError,
     "prox_group_exclusive: Expected `a` >= 0. Received: a=-0.5"),
    (lambda: prox_cges(W, 0.1, mu=3), ValueError,
     "prox_cges: Expected `mu` >= 0 and <= 1. Received: mu=3.0"),
    (lambda: prox_group_lasso(W, 0.1, axis="rows"), ValueError,
     "prox_group_lasso: Expected `axis` to be one of 'input', 'output'. Received: axis='rows'"),
    (lambda: prox_group_lasso(np.ones(3), 0.1), ValueError,
     "prox_group_lasso: Expected a kernel of rank >= 2 with layout (*spatial, C_in, C_out)"),
    (lambda: prox_l1(W, tf.ones((2,))), ValueError,
     "prox_l1: Expected `t` to be a scalar. Received: t.shape=(2,)"),
    (lambda: proximal.to_constraint("l1"), TypeError,
     "to_constraint: Expected a tf_groupsparse penalty (CombinedGroupExclusive, CombinedL11L12, "
     "ExclusiveSparsity, GroupLasso, L1, SparseGroupLasso). Received: regularizer of type str"),
    (lambda: proximal.bind("model"), TypeError,
     "bind: Expected `model` to be a keras.Model. Received: model of type str"),
    (lambda: ProxL1(0.1).bind(object()), TypeError,
     "ProxL1.bind: Expected a keras.optimizers.Optimizer. Received: optimizer of type object"),
]


def test_bad_arguments_raise_with_exact_message():
    for call, error, message in BAD:  # one test item: each keras session teardown costs time
        with pytest.raises(error, match=re.escape(message)):
            call()


def test_bind_uncompiled_model_raises():
    model = _linear_model(ProxL1(0.1))
    message = (
        "bind: Expected a compiled model (call model.compile(optimizer, loss) first) or an "
        "`optimizer` argument. Received: model.optimizer=None for model "
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        proximal.bind(model)
