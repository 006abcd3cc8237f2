"""shrink: removal of dead groups, exact constant folding, keep_min, report, applications."""

import re

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_surgery import BLOCKS, outputs, random_model, random_plan, randomize

from tf_groupsparse.graph import build_graph
from tf_groupsparse.pruning.shrink import ShrinkReport, shrink
from tf_groupsparse.graph.surgery import plan_groups, prune_channels, zero_channels, zero_slices

L = keras.layers


def dense_model(dead=(1, 4)):
    m = keras.Sequential([keras.Input((5,)), L.Dense(6, activation="relu", name="h"), L.Dense(3, name="y")])
    randomize(m, 1)
    h = m.get_layer("h")
    k = h.kernel.numpy()
    k[:, list(dead)] = 0.0
    h.kernel.assign(k)
    h.bias.assign(np.linspace(-1, 1, 6).astype("float32"))
    return m


def test_dense_constant_folds_into_consumer_bias():
    m = dense_model()
    small = shrink(m)
    w1, b1, w2, b2 = m.get_weights()
    keep, dead = [0, 2, 3, 5], [1, 4]
    assert small.get_layer("h").units == 4
    np.testing.assert_allclose(small.get_layer("h").kernel.numpy(), w1[:, keep])
    np.testing.assert_allclose(small.get_layer("y").bias.numpy(), b2 + np.maximum(b1[dead], 0) @ w2[dead], rtol=1e-6)
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(m, x), atol=1e-5)


def conv_model(kernel, padding, bn_shift=0.5, bias=1.0):
    i = keras.Input((8, 8, 3))
    c = L.Conv2D(5, 3, padding="same", name="c1")(i)
    b = L.BatchNormalization(name="bn")(c)
    a = L.Activation("relu")(b)
    o = L.Conv2D(2, kernel, padding=padding, use_bias=False, name="c2")(a)
    m = randomize(keras.Model(i, o), 2)
    c1 = m.get_layer("c1")
    k = c1.kernel.numpy()
    k[..., 2] = 0.0
    c1.kernel.assign(k)
    c1.bias.assign(np.full(5, bias, "float32"))
    m.get_layer("bn").beta.assign(np.full(5, bn_shift, "float32"))
    return m


@pytest.mark.parametrize("kernel,padding", [(1, "same"), (1, "valid"), (3, "valid")])
def test_conv_constant_folds_where_exact(kernel, padding):
    m = conv_model(kernel, padding)
    small = shrink(m)
    assert small.get_layer("c1").filters == 4
    assert small.get_layer("c2").use_bias  # the folded constant needed a bias
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(m, x), atol=1e-4)
    # NumPy reference of the constant: BN(bias) then ReLU, times the summed kernel taps
    gamma, beta, mean, var = m.get_layer("bn").get_weights()
    v = max(gamma[2] * (1.0 - mean[2]) / np.sqrt(var[2] + 1e-3) + beta[2], 0.0)
    taps = m.get_layer("c2").kernel.numpy()[..., 2, :].reshape(-1, 2).sum(axis=0)
    np.testing.assert_allclose(small.get_layer("c2").bias.numpy(), v * taps, rtol=1e-5)


def test_same_padded_3x3_consumer_keeps_the_channel_or_raises():
    m = conv_model(3, "same")
    small = shrink(m)
    assert small.get_layer("c1").filters == 5
    msg = (
        "shrink: Expected every zero group's constant output to fold exactly into its consumers. "
        "Received: prune out channels of c1 [2] => in channels of bn [2], in channels of activation [2], "
        "in channels of c2 [2] carries a constant"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        shrink(m, constants="error")


def test_constants_keep_never_folds():
    m = conv_model(1, "same")
    assert shrink(m, constants="keep").get_layer("c1").filters == 5


def test_zero_constant_needs_no_folding_even_with_same_padding():
    m = conv_model(3, "same", bn_shift=0.0, bias=0.0)
    bn = m.get_layer("bn")
    bn.moving_mean.assign(np.zeros(5, "float32"))
    small = shrink(m)
    assert small.get_layer("c1").filters == 4
    assert not small.get_layer("c2").use_bias
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(m, x), atol=1e-4)


def test_consumer_dead_channel_is_removed():
    m = randomize(keras.Sequential([keras.Input((4,)), L.Dense(5, name="h"), L.Dense(2, name="y")]), 3)
    y = m.get_layer("y")
    k = y.kernel.numpy()
    k[3] = 1e-5  # below threshold: nothing reads h's unit 3
    y.kernel.assign(k)
    small = shrink(m)
    assert small.get_layer("h").units == 4
    x = np.random.default_rng(3).normal(size=(4, 4)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(m, x), atol=1e-4)


def test_keep_min():
    m = dense_model(dead=range(6))
    m.get_layer("h").bias.assign(np.zeros(6, "float32"))
    assert shrink(m).get_layer("h").units == 1
    assert shrink(m, keep_min=3).get_layer("h").units == 3
    assert shrink(m, keep_min=10).get_layer("h").units == 6


def test_norm_l1_l2_callable_and_the_old_criterion_spelling():
    m = keras.Sequential([keras.Input((4,)), L.Dense(3, name="h"), L.Dense(2)])
    randomize(m, 4)
    h = m.get_layer("h")
    k = h.kernel.numpy()
    k[:, 0] = 4e-4  # l2 = 8e-4 < 1e-3 < l1 = 1.6e-3
    h.kernel.assign(k)
    h.bias.assign(np.zeros(3, "float32"))
    assert shrink(m, norm="l2").get_layer("h").units == 2
    assert shrink(m, norm="l1").get_layer("h").units == 3
    assert shrink(m, norm=lambda rows: np.abs(rows).max(axis=1)).get_layer("h").units == 2
    with pytest.warns(DeprecationWarning, match="`criterion` is deprecated; use `norm`"):
        assert shrink(m, criterion="l1").get_layer("h").units == 3


def test_layer_norm_groups_are_never_shrunk():
    m = keras.Sequential([keras.Input((4,)), L.Dense(5, name="h"), L.LayerNormalization(), L.Dense(2)])
    randomize(m, 5)
    k = m.get_layer("h").kernel.numpy()
    k[:, 1] = 0.0
    m.get_layer("h").kernel.assign(k)
    assert shrink(m).get_layer("h").units == 5


def test_report_rows_and_totals():
    m = dense_model()
    small, report = shrink(m, return_report=True)
    assert isinstance(report, ShrinkReport)
    assert report.rows == [
        {"layer": "h", "class": "Dense", "channels_before": 6, "channels_after": 4,
         "params_before": 36, "params_after": 24, "bias_folded": False},
        {"layer": "y", "class": "Dense", "channels_before": 3, "channels_after": 3,
         "params_before": 21, "params_after": 15, "bias_folded": True},
    ]
    assert report.totals["params_before"] == 57 and report.totals["params_after"] == 39
    assert report.totals["groups_removed"] == 2
    assert small.count_params() == 39


def test_shrunk_model_saves_and_loads(tmp_path):
    m = conv_model(1, "same")
    small = shrink(m)
    path = str(tmp_path / "shrunk.keras")
    small.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(6).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(outputs(loaded, x), outputs(m, x), atol=1e-4)


def test_shrink_leaves_input_model_unchanged():
    m = dense_model()
    before = [w.copy() for w in m.get_weights()]
    shrink(m)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"threshold": -1.0}, ValueError, "shrink: Expected `threshold` >= 0. Received: threshold=-1.0"),
        ({"norm": "l3"}, ValueError, "shrink: Expected `norm` to be one of 'l2', 'l1'. Received: norm='l3'"),
        ({"keep_min": 0}, ValueError, "shrink: Expected `keep_min` >= 1. Received: keep_min=0"),
        ({"round_to": 0}, ValueError, "shrink: Expected `round_to` >= 1. Received: round_to=0"),
        ({"constants": "drop"}, ValueError,
         "shrink: Expected `constants` to be one of 'fold', 'keep', 'error'. Received: constants='drop'"),
        ({"unsupported": "skip"}, ValueError,
         "shrink: Expected `unsupported` to be one of 'error', 'freeze'. Received: unsupported='skip'"),
        ({"return_report": "yes"}, TypeError, "shrink: Expected `return_report` to be True or False. Received: return_report='yes' of type str"),
        ({"norm": lambda rows: rows}, ValueError,
         "shrink: Expected `norm` to map an array (n_channels, size) to n_channels norms. "
         "Received: output shape (30,) for input shape (5, 6)"),
    ],
)
def test_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        shrink(dense_model(), **kwargs)


def test_not_a_model():
    with pytest.raises(TypeError, match=re.escape(
        "shrink: Expected `model` to be a keras.Model (Sequential or functional). Received: model of type dict"
    )):
        shrink({})


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(
    blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=6),
    width=st.integers(3, 6),
    head=st.sampled_from(["flatten", "gap"]),
    seed=st.integers(0, 1000),
)
def test_random_architectures_shrink_keeps_outputs(blocks, width, head, seed):
    keras.utils.set_random_seed(seed)
    m = randomize(random_model(blocks, width, head), seed)
    rng = np.random.default_rng(seed)
    plan = random_plan(build_graph(m), rng, fraction=0.3)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    # (a) filters zeroed, biases and BN shifts left: constants are folded or the group is kept
    filters_zeroed = keras.models.clone_model(m)
    filters_zeroed.set_weights(m.get_weights())
    for g in plan_groups(build_graph(filters_zeroed), plan):
        zero_slices([s for s in g.slices if s.role == "produce"])
    small = shrink(filters_zeroed, threshold=0)  # exact zeros only: a random filter can fall under 1e-3
    np.testing.assert_allclose(outputs(small, x), outputs(filters_zeroed, x), atol=1e-4)
    assert small.count_params() <= m.count_params()
    # (b) whole groups zeroed: shrink removes exactly what prune_channels removes
    try:
        pruned = prune_channels(m, plan)
    except ValueError as exc:
        assert "Expected at least one channel to remain in every layer" in str(exc)
        return
    zeroed = zero_channels(m, plan)
    shrunk = shrink(zeroed, threshold=0)
    np.testing.assert_allclose(outputs(shrunk, x), outputs(zeroed, x), atol=1e-4)
    assert shrunk.count_params() == pruned.count_params()


# (every other family's exact shrink is in test_applications.py)
APPLICATIONS = {
    "MobileNetV2": keras.applications.MobileNetV2,
    "ResNet50": keras.applications.ResNet50,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_applications_shrink_after_zeroing_groups(name):
    m = APPLICATIONS[name](weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    rng = np.random.default_rng(0)
    graph = build_graph(m)
    plan = random_plan(graph, rng, fraction=0.01)
    groups = plan_groups(graph, plan)
    zeroed = zero_channels(m, plan)
    small, report = shrink(zeroed, return_report=True)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(zeroed, x), atol=1e-4)
    assert len(small.layers) == len(m.layers)
    assert report.totals["groups_removed"] == len(groups)
    # expected size: every weight keeps prod over its axes of the entries not in a removed group
    removed = {g.id for g in groups}
    kept = {}
    for s in graph.slices:
        shape = kept.setdefault((id(s.node), s.weight_index), list(s.node.layer.weights[s.weight_index].shape))
        shape[s.axis] = int(sum(graph.labels[i] not in removed for i in s.ids))
    by_weight = {(id(n), i): int(np.prod(w.shape)) for n in graph.nodes for i, w in enumerate(n.layer.weights)}
    expected = sum(int(np.prod(kept[k])) if k in kept else size for k, size in by_weight.items())
    assert small.count_params() == expected < m.count_params()


@pytest.mark.slow
def test_mobilenet_filters_zeroed_constants_folded_outputs_kept():
    m = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    rng = np.random.default_rng(1)
    for w in m.weights:  # trained-looking BN statistics and shifts, so zero filters emit constants
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype("float32"))
        elif any(k in w.path for k in ("moving_mean", "beta", "bias")):
            w.assign(rng.normal(size=w.shape).astype("float32") * 0.1)
    graph = build_graph(m)
    groups = plan_groups(graph, random_plan(graph, rng, fraction=0.05))
    for g in groups:  # zero only the filters (kernel columns), as filter-wise group lasso would
        zero_slices([s for s in g.slices if s.role == "produce"])
    small, report = shrink(m, return_report=True)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(m, x), atol=1e-4)
    assert report.totals["layers_with_folded_constants"] > 0
    assert 0 < report.totals["groups_removed"] <= len(groups)
    assert small.count_params() < m.count_params()


def test_unknown_spatial_size_folds_into_1x1_consumer():
    x = keras.Input((None, None, 3))
    c = L.Conv2D(4, 3, padding="same", name="c1")(x)
    m = keras.Model(x, L.GlobalAveragePooling2D()(L.Conv2D(2, 1, name="c2")(L.ReLU()(c))))
    k = m.get_layer("c1").kernel.numpy()
    k[..., 1] = 0.0
    m.get_layer("c1").kernel.assign(k)
    m.get_layer("c1").bias.assign(np.ones(4, "float32"))
    small = shrink(m)
    assert small.get_layer("c1").filters == 3
    xx = np.random.default_rng(7).normal(size=(2, 7, 9, 3)).astype("float32")
    np.testing.assert_allclose(outputs(small, xx), outputs(m, xx), atol=1e-5)


def test_threshold_zero_removes_exact_zeros_only():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(3, name="b"),
                          keras.layers.Dense(2, name="c")])
    k, bias = m.get_layer("b").get_weights()
    k[1] = 0.0      # input channel 1 of b reads nothing: a's unit 1 is dead
    k[2] = 1e-12    # tiny but nonzero: kept at threshold=0
    m.get_layer("b").set_weights([k, bias])
    small, report = shrink(m, threshold=0.0, return_report=True)
    assert small.get_layer("a").units == 3 and report.totals["groups_removed"] == 1
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)
    assert shrink(m, threshold=1e-6).get_layer("a").units == 2  # the tiny group goes too


def _zero_units(model, layer, units):
    """Zero the kernel columns and biases of `units` of Dense `layer` (the units then carry 0)."""
    dense = model.get_layer(layer)
    k, b = dense.kernel.numpy(), dense.bias.numpy()
    k[:, units], b[units] = 0.0, 0.0
    dense.kernel.assign(k)
    dense.bias.assign(b)


def test_channel_multiple_rounds_widths_up_with_the_strongest_zero_groups_and_keeps_outputs():
    m = randomize(keras.Sequential([keras.Input((12,)), L.Dense(40, activation="relu", name="h1"),
                                    L.Dense(20, activation="relu", name="h2"), L.Dense(3, name="y")]), 5)
    _zero_units(m, "h1", list(range(0, 40, 3)))  # 14 dead, 26 alive
    _zero_units(m, "h2", list(range(13)))  # 13 dead, 7 alive
    # the consumers' rows of two dead h1 units are larger than the others': they come back first
    y2 = m.get_layer("h2")
    k = y2.kernel.numpy()
    k[[36, 39]] *= 10.0
    y2.kernel.assign(k)
    plain = shrink(m, threshold=0)
    assert (plain.get_layer("h1").units, plain.get_layer("h2").units) == (26, 7)
    small, report = shrink(m, threshold=0, round_to=8, return_report=True)
    assert (small.get_layer("h1").units, small.get_layer("h2").units) == (32, 8)
    assert small.get_layer("y").units == 3  # model outputs keep their width
    assert int((np.abs(small.get_layer("h1").kernel.numpy()).sum(0) == 0).sum()) == 6  # 6 zero units came back
    # ... among them units 36 and 39 (the last dead ones), whose rows in h2 are the largest (h2's rows are kept whole
    # but for h2's removed columns, so a kept unit's row is a subset of its original row)
    old_rows, new_rows = m.get_layer("h2").kernel.numpy(), small.get_layer("h2").kernel.numpy()
    for unit in (36, 39):
        assert any(np.isin(row, old_rows[unit]).all() for row in new_rows)
    x = np.random.default_rng(5).normal(size=(16, 12)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(m, x), atol=1e-5)
    np.testing.assert_allclose(outputs(plain, x), outputs(m, x), atol=1e-5)
    assert report.totals["params_after"] == small.count_params() > plain.count_params()
    # a multiple wider than the layer keeps the whole layer; 1 changes nothing
    assert shrink(m, threshold=0, round_to=64).get_layer("h1").units == 40
    assert shrink(m, threshold=0, round_to=1).get_layer("h1").units == 26


def test_channel_multiple_follows_residual_coupling():
    i = keras.Input((6, 6, 2))
    a = L.Conv2D(12, 1, name="a")(i)
    b = L.Conv2D(12, 1, name="b")(i)
    s = L.Add(name="add")([a, b])
    o = L.Conv2D(2, 1, name="out")(L.ReLU()(s))
    m = randomize(keras.Model(i, o), 6)
    for name in ("a", "b"):  # channels 0-6 of the residual sum are zero in both producers
        conv = m.get_layer(name)
        k, bias = conv.kernel.numpy(), conv.bias.numpy()
        k[..., :7], bias[:7] = 0.0, 0.0
        conv.kernel.assign(k)
        conv.bias.assign(bias)
    assert shrink(m, threshold=0).get_layer("a").filters == 5
    small = shrink(m, threshold=0, round_to=4)
    assert small.get_layer("a").filters == small.get_layer("b").filters == 8
    x = np.random.default_rng(6).normal(size=(2, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(m, x), atol=1e-5)
