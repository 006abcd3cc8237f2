"""Regularizer values and gradients against independent NumPy loops; config round trips; errors."""

import json
import re

import keras
from _backend import value_and_grad
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tf_groupsparse.regularizers import (
    L1,
    BlockDiagonal,
    CombinedGroupExclusive,
    CombinedL11L12,
    ExclusiveSparsity,
    GroupL12,
    GroupLasso,
    HierarchicalGroupSparse,
    SparseGroupLasso,
    cges_mu_schedule,
)

pytestmark = pytest.mark.backends  # also run under JAX and PyTorch by `make test`

VARIANTS = (
    "sqrt_group_lasso",
    "squared_group_lasso",
    "sqrt_exclusive",
    "squared_exclusive",
    "sqrt_group_l12",
    "squared_group_l12",
)


# ----------------------------------------------------------------------------------------------
# Independent NumPy references: explicit loops over channels and kernels, float64.
# ----------------------------------------------------------------------------------------------
def channel_slices(w, axis):
    """One flat float64 vector per group: W[..., i, :] (input) or W[..., :, o] (output)."""
    w = np.asarray(w, dtype=np.float64)
    if axis == "input":
        return [w[..., i, :].ravel() for i in range(w.shape[-2])]
    return [w[..., :, o].ravel() for o in range(w.shape[-1])]


def ref_l1(w, strength):
    return strength * sum(abs(float(v)) for v in np.ravel(w))


def ref_group_lasso(w, strength, axis, scale_by_size=False):
    total = 0.0
    for g in channel_slices(w, axis):
        c = np.sqrt(g.size) if scale_by_size else 1.0
        total += c * np.sqrt(np.sum(g * g))
    return strength * total


def ref_exclusive(w, strength, axis):
    return strength * 0.5 * sum(np.sum(np.abs(g)) ** 2 for g in channel_slices(w, axis))


def ref_group_l12(w, strength, axis):
    return strength * sum(np.sqrt(np.sum(np.abs(g))) for g in channel_slices(w, axis))


def ref_sparse_group_lasso(w, strength, alpha, axis, scale_by_size):
    return alpha * ref_l1(w, strength) + (1 - alpha) * ref_group_lasso(w, strength, axis, scale_by_size)


def ref_l11_l12(w, l11, l12, axis):
    return ref_l1(w, l11) + ref_exclusive(w, l12, axis)


def ref_cges(w, strength, mu, axis, scale_by_size):
    return mu * ref_group_lasso(w, strength, axis, scale_by_size) + (1 - mu) * ref_exclusive(
        w, strength, axis
    )


def ref_hgsr(w, strength, variant, axis, l1_mix):
    outer_name, inner_name = variant.split("_", 1)
    inner = {
        "group_lasso": lambda k: np.sqrt(np.sum(k * k)),
        "exclusive": lambda k: np.sum(np.abs(k)) ** 2,
        "group_l12": lambda k: np.sqrt(np.sum(np.abs(k))),
    }[inner_name]
    outer = {"sqrt": np.sqrt, "squared": np.square}[outer_name]
    w = np.asarray(w, dtype=np.float64)
    c_in, c_out = w.shape[-2], w.shape[-1]
    total = 0.0
    if axis == "input":
        for i in range(c_in):
            total += outer(sum(inner(np.ravel(w[..., i, o])) for o in range(c_out)))
    else:
        for o in range(c_out):
            total += outer(sum(inner(np.ravel(w[..., i, o])) for i in range(c_in)))
    return strength * ((1 - l1_mix) * total + l1_mix * np.sum(np.abs(w)))


def ref_block_diagonal(w, strength, input_groups, output_groups):
    w = np.asarray(w, dtype=np.float64)
    c_in, c_out = w.shape[-2], w.shape[-1]
    total = 0.0
    for i in range(c_in):
        off = [w[..., i, o].ravel() for o in range(c_out) if output_groups[o] != input_groups[i]]
        total += np.sqrt(sum(np.sum(k * k) for k in off)) if off else 0.0
    for o in range(c_out):
        off = [w[..., i, o].ravel() for i in range(c_in) if input_groups[i] != output_groups[o]]
        total += np.sqrt(sum(np.sum(k * k) for k in off)) if off else 0.0
    return strength * total


def _block_groups(shape):
    """Deterministic non-trivial group ids for a kernel shape (3 groups)."""
    return [i % 3 for i in range(shape[-2])], [(o + 1) % 3 for o in range(shape[-1])]


# Each case: id -> (make(axis, shape) -> regularizer, ref(w, axis, shape) -> float).
CASES = {
    "L1": (lambda a, s: L1(0.3), lambda w, a, s: ref_l1(w, 0.3)),
    "GroupLasso": (
        lambda a, s: GroupLasso(0.7, axis=a),
        lambda w, a, s: ref_group_lasso(w, 0.7, a),
    ),
    "GroupLasso-scaled": (
        lambda a, s: GroupLasso(0.7, axis=a, scale_by_size=True),
        lambda w, a, s: ref_group_lasso(w, 0.7, a, True),
    ),
    "ExclusiveSparsity": (
        lambda a, s: ExclusiveSparsity(0.4, axis=a),
        lambda w, a, s: ref_exclusive(w, 0.4, a),
    ),
    "GroupL12": (lambda a, s: GroupL12(0.9, axis=a), lambda w, a, s: ref_group_l12(w, 0.9, a)),
    "SparseGroupLasso": (
        lambda a, s: SparseGroupLasso(0.6, alpha=0.3, axis=a, scale_by_size=True),
        lambda w, a, s: ref_sparse_group_lasso(w, 0.6, 0.3, a, True),
    ),
    "CombinedL11L12": (
        lambda a, s: CombinedL11L12(l11=0.2, l12=0.5, axis=a),
        lambda w, a, s: ref_l11_l12(w, 0.2, 0.5, a),
    ),
    "CombinedGroupExclusive": (
        lambda a, s: CombinedGroupExclusive(0.8, mu=0.3, axis=a, scale_by_size=True),
        lambda w, a, s: ref_cges(w, 0.8, 0.3, a, True),
    ),
    **{
        f"HGSR-{v}": (
            lambda a, s, v=v: HierarchicalGroupSparse(0.5, variant=v, axis=a, l1_mix=0.25),
            lambda w, a, s, v=v: ref_hgsr(w, 0.5, v, a, 0.25),
        )
        for v in VARIANTS
    },
    "BlockDiagonal": (
        lambda a, s: BlockDiagonal(0.6, *_block_groups(s)),
        lambda w, a, s: ref_block_diagonal(w, 0.6, *_block_groups(s)),
    ),
}

SHAPES = {
    "dense": st.tuples(st.integers(1, 6), st.integers(1, 6)),
    "conv1d": st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
    "conv2d": st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
}


def random_kernel(shape, seed, zero_fraction=0.3):
    """Normal values with some whole input groups, output groups and single kernels set to 0."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape)
    w[..., rng.random(shape[-2]) < zero_fraction, :] = 0.0
    w[..., :, rng.random(shape[-1]) < zero_fraction] = 0.0
    kernel_mask = rng.random(shape[-2:]) < zero_fraction
    w[..., kernel_mask] = 0.0
    return w


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=20)
@given(data=st.data())
def test_penalty_matches_numpy_reference(case, data):
    axis = data.draw(st.sampled_from(["input", "output"]))
    kind = data.draw(st.sampled_from(sorted(SHAPES)))
    shape = data.draw(SHAPES[kind])
    w = random_kernel(shape, data.draw(st.integers(0, 2**31 - 1)))
    make, ref = CASES[case]
    got = float(make(axis, shape)(w.astype("float32")))
    expected = ref(w.astype("float32"), axis, shape)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def test_penalty_on_conv3d_and_depthwise_kernels():
    for shape in [(2, 2, 2, 3, 4), (3, 3, 5, 2)]:  # Conv3D, DepthwiseConv2D (kh, kw, C, m)
        w = random_kernel(shape, 7)
        for case, (make, ref) in CASES.items():
            for axis in ("input", "output"):
                got = float(make(axis, shape)(w.astype("float32")))
                np.testing.assert_allclose(got, ref(w, axis, shape), rtol=2e-5, err_msg=f"{case} {axis} {shape}")


def test_depthwise_layer_penalty_groups_channels():
    reg = HierarchicalGroupSparse.squared_group_l12(0.1, axis="input", l1_mix=0.5)
    layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, depthwise_regularizer=reg)
    layer.build((None, 8, 8, 5))
    w = keras.ops.convert_to_numpy(layer.kernel)
    assert w.shape == (3, 3, 5, 2)  # 5 groups (input channels) of 2 kernels
    np.testing.assert_allclose(float(layer.losses[0]), ref_hgsr(w, 0.1, "squared_group_l12", "input", 0.5), rtol=1e-5)


HAND = [
    # Dense W = [[3, 4], [0, 0]]: group 0 = (3, 4), group 1 = (0, 0) along inputs.
    (GroupLasso(1.0), [[3.0, 4.0], [0.0, 0.0]], 5.0),
    (GroupLasso(1.0, axis="output"), [[3.0, 4.0], [0.0, 0.0]], 7.0),
    (GroupLasso(2.0, scale_by_size=True), [[3.0, 4.0], [0.0, 0.0]], 2.0 * np.sqrt(2) * 5.0),
    (L1(0.5), [[1.0, -2.0], [0.0, 3.0]], 3.0),
    (ExclusiveSparsity(1.0), [[1.0, -2.0], [0.0, 1.0]], 5.0),
    (ExclusiveSparsity(1.0, axis="output"), [[1.0, -2.0], [0.0, 1.0]], 5.0),
    (GroupL12(1.0), [[1.0, -3.0], [0.0, 0.0]], 2.0),
    (SparseGroupLasso(1.0, alpha=0.5), [[3.0, 4.0]], 6.0),
    (CombinedL11L12(l11=1.0, l12=2.0), [[1.0, -2.0], [0.0, 1.0]], 14.0),
    (CombinedGroupExclusive(1.0, mu=0.5), [[3.0, 4.0]], 2.5 + 12.25),
    (HierarchicalGroupSparse(1.0, "squared_group_l12"), [[4.0, 1.0], [0.0, 0.0]], 9.0),
    (HierarchicalGroupSparse(1.0, "sqrt_group_lasso"), [[4.0, 5.0], [0.0, 0.0]], 3.0),
    (HierarchicalGroupSparse(1.0, "squared_exclusive", axis="output"), [[1.0], [2.0]], 25.0),
    (HierarchicalGroupSparse(2.0, "squared_group_l12", l1_mix=0.5), [[4.0, 1.0]], 2.0 * (4.5 + 2.5)),
    (BlockDiagonal(1.0, [0, 1], [0, 1]), [[1.0, 3.0], [4.0, 1.0]], 14.0),
    (BlockDiagonal(1.0, [0, 0], [0, 1]), [[1.0, 3.0], [4.0, 4.0]], 3.0 + 4.0 + 5.0),
]


def test_hand_computed_values():
    got = [float(reg(np.asarray(w, "float32"))) for reg, w, _ in HAND]
    expected = [e for _, _, e in HAND]
    np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=str([repr(h[0]) for h in HAND]))


def test_hand_computed_conv1d_hgsr():
    # Conv1D kernel (k=2, C_in=1, C_out=2): K_00 = (3, 4), K_01 = (0, 0).
    w = np.array([[[3.0, 0.0]], [[4.0, 0.0]]], "float32")
    assert float(HierarchicalGroupSparse(1.0, "squared_group_lasso")(w)) == pytest.approx(25.0)
    assert float(HierarchicalGroupSparse(1.0, "sqrt_exclusive", axis="output")(w)) == pytest.approx(7.0)


def numeric_gradient(f, w, h=1e-6):
    """Central differences in float64; at an exact zero of |.| they give the subgradient 0."""
    grad = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        plus, minus = w.copy(), w.copy()
        plus[idx] += h
        minus[idx] -= h
        grad[idx] = (f(plus) - f(minus)) / (2 * h)
    return grad


def tf_gradient(reg, w):
    """The penalty and its gradient by the backend's automatic differentiation."""
    return value_and_grad(reg, w)


@pytest.mark.parametrize("case", list(CASES))
def test_gradient_finite_and_correct_with_zero_groups(case):
    for shape in [(4, 3), (2, 3, 3), (2, 2, 3, 2)]:  # Dense, Conv1D, Conv2D
        for axis in ("input", "output"):
            _check_gradient(case, axis, shape)
    make, _ = CASES[case]
    for shape in [(5, 4), (3, 3, 4, 2)]:  # an all-zero kernel
        for axis in ("input", "output"):
            value, grad = tf_gradient(make(axis, shape), np.zeros(shape, "float32"))
            assert float(value) == 0.0
            assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)


def _check_gradient(case, axis, shape):
    rng = np.random.default_rng(3)
    # Non-zero entries kept away from 0 so the finite differences stay on smooth pieces.
    w = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.2, 1.0, size=shape)
    w[..., 1, :] = 0.0  # a zero input group
    w[..., :, 0] = 0.0  # a zero output group
    w[..., 2, 1] = 0.0  # a zero kernel inside non-zero groups
    make, ref = CASES[case]
    _, grad = tf_gradient(make(axis, shape), w)
    assert np.all(np.isfinite(grad))
    expected = numeric_gradient(lambda v: ref(v, axis, shape), w)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7, err_msg=f"{case} {axis} {shape}")
    # At every exact zero (zero groups, zero kernels) the chosen subgradient is exactly 0.
    assert np.all(grad[w == 0.0] == 0.0)


def test_group_lasso_gradient_is_normalized_group():
    w = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    _, grad = tf_gradient(GroupLasso(2.0), w)
    np.testing.assert_allclose(grad, [[1.2, 1.6], [0.0, 0.0], [2.0, 0.0]], rtol=1e-6)


def test_compiled_train_step_from_zero_kernels_stays_finite():
    convs = [
        keras.layers.Conv2D(
            2,
            3,
            padding="same",
            kernel_initializer="zeros",
            kernel_regularizer=HierarchicalGroupSparse(1e-2, variant=v, l1_mix=0.5),
        )
        for v in VARIANTS
    ]
    model = keras.Sequential(
        [keras.Input((4, 4, 2)), *convs, keras.layers.Flatten()]
        + [keras.layers.Dense(2, kernel_initializer="zeros", kernel_regularizer=GroupL12(1e-2, axis="output"))]
    )
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.random.randn(8, 4, 4, 2).astype("float32")
    y = np.random.randn(8, 2).astype("float32")
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(v))) for v in model.trainable_variables)


# ----------------------------------------------------------------------------------------------
# Configs and serialization
# ----------------------------------------------------------------------------------------------
NON_DEFAULT = [
    L1(0.003),
    GroupLasso(0.02, axis="output", scale_by_size=True),
    ExclusiveSparsity(0.03, axis="output"),
    GroupL12(0.04, axis="output"),
    SparseGroupLasso(0.05, alpha=0.2, axis="output", scale_by_size=True),
    CombinedL11L12(l11=0.06, l12=0.07, axis="output"),
    CombinedGroupExclusive(0.08, mu=0.9, axis="output", scale_by_size=True),
    HierarchicalGroupSparse(0.09, variant="sqrt_exclusive", axis="output", l1_mix=0.3),
    BlockDiagonal(0.1, input_groups=[0, 1, 1, 0], output_groups=[1, 0, 2, 2]),
]


def test_config_round_trip_is_flat_and_lossless():
    for reg in NON_DEFAULT:
        _check_config_round_trip(reg)


def _check_config_round_trip(reg):
    config = reg.get_config()
    assert json.loads(json.dumps(config)) == config  # plain Python values only
    clone = type(reg).from_config(config)
    assert clone.get_config() == config
    assert repr(clone) == repr(reg) == f"{type(reg).__name__}(" + ", ".join(
        f"{k}={v!r}" for k, v in config.items()
    ) + ")"
    got = keras.regularizers.get(
        {"class_name": f"tf_groupsparse>{type(reg).__name__}", "config": config}
    )
    assert type(got) is type(reg) and got.get_config() == config
    w = np.random.randn(3, 4, 4).astype("float32")
    assert float(got(w)) == pytest.approx(float(reg(w)), rel=1e-6)


def test_get_config_values():
    assert HierarchicalGroupSparse(0.09, variant="sqrt_exclusive", axis="output", l1_mix=0.3).get_config() == {
        "strength": 0.09,
        "variant": "sqrt_exclusive",
        "axis": "output",
        "l1_mix": 0.3,
    }
    assert CombinedL11L12(l11=1, l12=2).get_config() == {"l11": 1.0, "l12": 2.0, "axis": "input"}
    groups_in, groups_out = np.array([0, 1, 1]), (2, 0)
    reg = BlockDiagonal(1e-3, groups_in, groups_out)
    assert reg.get_config() == {"strength": 1e-3, "input_groups": [0, 1, 1], "output_groups": [2, 0]}
    assert groups_in.tolist() == [0, 1, 1] and groups_out == (2, 0)  # arguments untouched


def test_model_with_every_regularizer_saves_and_loads_in_safe_mode(tmp_path):
    inputs = keras.Input((3, 4))
    x = inputs
    for i, reg in enumerate(NON_DEFAULT):
        x = keras.layers.Conv1D(4, 2, padding="same", kernel_regularizer=reg, name=f"conv{i}")(x)
    model = keras.Model(inputs, x)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    for i, reg in enumerate(NON_DEFAULT):
        got = loaded.get_layer(f"conv{i}").kernel_regularizer
        assert type(got) is type(reg) and got.get_config() == reg.get_config()
    before = np.array([float(v) for v in model.losses])
    after = np.array([float(v) for v in loaded.losses])
    assert before.shape == (len(NON_DEFAULT),) and np.all(before > 0)
    np.testing.assert_allclose(after, before, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# HGSR variants API and the CGES schedule
# ----------------------------------------------------------------------------------------------
def test_hgsr_classmethods_and_parts():
    for variant in VARIANTS:
        _check_hgsr_variant(variant)
    assert HierarchicalGroupSparse().variant == "squared_group_l12"


def _check_hgsr_variant(variant):
    reg = getattr(HierarchicalGroupSparse, variant)(0.2, axis="output", l1_mix=0.4)
    assert reg.get_config() == {"strength": 0.2, "variant": variant, "axis": "output", "l1_mix": 0.4}
    inner = {"group_lasso": "l2", "exclusive": "squared_l1", "group_l12": "sqrt_l1"}
    outer = {"sqrt": "sqrt", "squared": "square"}
    prefix, rest = variant.split("_", 1)
    assert (reg.inner, reg.outer) == (inner[rest], outer[prefix])
    with pytest.raises(AttributeError):
        reg.inner = "l2"


def test_cges_mu_schedule():
    assert cges_mu_schedule(6) == [0.8, 0.6, 0.4, 0.2, 0.0, 0.0]
    assert cges_mu_schedule(3, start=0.5, step=0.1) == [0.5, 0.4, 0.3]
    assert cges_mu_schedule(2, start=1, step=0) == [1.0, 1.0]
    assert cges_mu_schedule(0) == []


# ----------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------
BAD = [
    (lambda: GroupLasso(-1.0), ValueError, "GroupLasso: Expected `strength` >= 0. Received: strength=-1.0"),
    (lambda: L1("a"), TypeError, "L1: Expected `strength` to be a real number. Received: strength='a' of type str"),
    (lambda: L1(True), TypeError, "L1: Expected `strength` to be a real number. Received: strength=True of type bool"),
    (lambda: GroupL12(float("nan")), ValueError, "GroupL12: Expected `strength` to be finite. Received: strength=nan"),
    (
        lambda: ExclusiveSparsity(1e-3, axis="rows"),
        ValueError,
        "ExclusiveSparsity: Expected `axis` to be one of 'input', 'output'. Received: axis='rows'",
    ),
    (
        lambda: GroupLasso(scale_by_size="yes"),
        TypeError,
        "GroupLasso: Expected `scale_by_size` to be True or False. Received: scale_by_size='yes' of type str",
    ),
    (
        lambda: SparseGroupLasso(alpha=1.5),
        ValueError,
        "SparseGroupLasso: Expected `alpha` >= 0 and <= 1. Received: alpha=1.5",
    ),
    (
        lambda: CombinedGroupExclusive(mu=-0.1),
        ValueError,
        "CombinedGroupExclusive: Expected `mu` >= 0 and <= 1. Received: mu=-0.1",
    ),
    (lambda: CombinedL11L12(l11=-2), ValueError, "CombinedL11L12: Expected `l11` >= 0. Received: l11=-2.0"),
    (
        lambda: CombinedL11L12(l12=None),
        TypeError,
        "CombinedL11L12: Expected `l12` to be a real number. Received: l12=None of type NoneType",
    ),
    (
        lambda: HierarchicalGroupSparse(l1_mix=2),
        ValueError,
        "HierarchicalGroupSparse: Expected `l1_mix` >= 0 and <= 1. Received: l1_mix=2.0",
    ),
    (
        lambda: HierarchicalGroupSparse(variant="squared"),
        ValueError,
        "HierarchicalGroupSparse: Expected `variant` to be one of 'sqrt_group_lasso', "
        "'squared_group_lasso', 'sqrt_exclusive', 'squared_exclusive', 'sqrt_group_l12', "
        "'squared_group_l12'. Received: variant='squared'",
    ),
    (
        lambda: HierarchicalGroupSparse.sqrt_group_lasso(-1e-3),
        ValueError,
        "HierarchicalGroupSparse: Expected `strength` >= 0. Received: strength=-0.001",
    ),
    (
        lambda: BlockDiagonal(1e-3),
        TypeError,
        "BlockDiagonal: Expected `input_groups` to be a non-empty list of integer group ids, one per "
        "channel. Received: input_groups=None",
    ),
    (
        lambda: BlockDiagonal(1e-3, [0, 1], [0, 1.5]),
        TypeError,
        "BlockDiagonal: Expected `output_groups` to be a non-empty list of integer group ids, one per "
        "channel. Received: output_groups=[0, 1.5]",
    ),
    (
        lambda: BlockDiagonal(1e-3, [0, 1], [0, 1, 1])(np.zeros((3, 3), "float32")),
        ValueError,
        "BlockDiagonal: Expected a kernel with C_in = len(input_groups) = 2 and C_out = "
        "len(output_groups) = 3; build the regularizer from this layer's channel groups. "
        "Received: kernel.shape=(3, 3) (C_in=3, C_out=3)",
    ),
    (lambda: cges_mu_schedule(-1), ValueError, "cges_mu_schedule: Expected `n_layers` >= 0. Received: n_layers=-1"),
    (
        lambda: cges_mu_schedule(2.5),
        TypeError,
        "cges_mu_schedule: Expected `n_layers` to be an integer. Received: n_layers=2.5 of type float",
    ),
    (
        lambda: cges_mu_schedule(3, start=1.2),
        ValueError,
        "cges_mu_schedule: Expected `start` >= 0 and <= 1. Received: start=1.2",
    ),
    (lambda: cges_mu_schedule(3, step=-0.1), ValueError, "cges_mu_schedule: Expected `step` >= 0. Received: step=-0.1"),
]


def test_bad_arguments_raise_with_exact_message():
    for make, error, message in BAD:
        with pytest.raises(error, match="^" + re.escape(message) + "$"):
            make()


def test_rank_one_kernel_is_refused_by_group_penalties():
    for make, _ in CASES.values():
        _check_rank_one(make("input", (3, 3)))


def _check_rank_one(reg):
    if isinstance(reg, L1):  # element-wise: any rank, e.g. a bias
        assert float(reg(np.array([1.0, -2.0], "float32"))) == pytest.approx(0.9)
        return
    name = type(reg).__name__
    with pytest.raises(
        ValueError,
        match="^" + re.escape(f"{name}: Expected a kernel of rank >= 2 with layout (*spatial, C_in, C_out)")
        + r".*" + re.escape("Received: kernel.shape=(5,)") + "$",
    ):
        reg(np.zeros(5, "float32"))


