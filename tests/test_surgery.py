"""prune_channels: sliced weights against NumPy, equal outputs to the zeroed model, errors."""

import re

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tf_groupsparse.graph import build_graph
from tf_groupsparse.graph.surgery import plan_groups, prune_channels, remove_groups, zero_channels, zero_slices

L = keras.layers


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.normal(size=w.shape).astype("float32") * 0.5
        if "variance" in w.path:
            v = np.abs(v) + 0.5
        w.assign(v)
    return model


def outputs(model, x):
    return np.asarray(model(x, training=False))


def cnn():
    x = keras.Input((8, 8, 3), name="x")
    c1 = L.Conv2D(6, 3, padding="same", name="conv1")(x)
    b1 = L.BatchNormalization(name="bn1")(c1)
    r1 = L.ReLU(name="relu1")(b1)
    dw = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(r1)
    c2 = L.Conv2D(12, 1, name="conv2")(dw)
    add = L.Add(name="add")([c2, dw])
    c3 = L.Conv2D(4, 1, name="conv3")(add)
    cat = L.Concatenate(name="cat")([add, c3, r1])
    pool = L.MaxPooling2D(name="pool")(cat)
    y = L.Dense(3, name="head")(L.Flatten(name="flat")(pool))
    return randomize(keras.Model(x, y))


def test_dense_chain_matches_numpy_slices():
    m = randomize(keras.Sequential([keras.Input((5,)), L.Dense(6, activation="relu", name="h"), L.Dense(3, name="y")]))
    small = prune_channels(m, {"h": [0, 4]})
    keep = [1, 2, 3, 5]
    w1, b1, w2, b2 = m.get_weights()
    np.testing.assert_array_equal(small.get_layer("h").kernel.numpy(), w1[:, keep])
    np.testing.assert_array_equal(small.get_layer("h").bias.numpy(), b1[keep])
    np.testing.assert_array_equal(small.get_layer("y").kernel.numpy(), w2[keep, :])
    x = np.random.default_rng(1).normal(size=(4, 5)).astype("float32")
    reference = np.maximum(x @ w1[:, keep] + b1[keep], 0) @ w2[keep] + b2
    np.testing.assert_allclose(outputs(small, x), reference, atol=1e-5)


def test_cnn_prune_equals_zeroed_model_and_params_fall_exactly():
    m = cnn()
    plan = {"conv1": [1, 4], "conv3": [0, 2]}
    small = prune_channels(m, plan)
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(zero_channels(m, plan), x), atol=1e-4)
    assert np.abs(outputs(small, x) - outputs(m, x)).max() > 1e-3  # the plan changed something
    # conv1 6->4; dw 12->8 outputs; conv2 12->8 out, in 12->8; conv3 4->2 out, 12->8 in; cat 12+4+6 -> 8+2+4
    expected = (
        (3 * 3 * 3 * 4 + 4) + 4 * 4 + (3 * 3 * 4 * 2 + 8) + (8 * 8 + 8) + (8 * 2 + 2)
        + (14 * 16 * 3 + 3)
    )
    assert small.count_params() == expected
    assert [layer.name for layer in small.layers] == [layer.name for layer in m.layers]
    assert small.get_layer("dw").kernel.shape == (3, 3, 4, 2)


def test_original_model_is_unchanged():
    m = cnn()
    before = [w.copy() for w in m.get_weights()]
    prune_channels(m, {"conv1": [0]})
    zero_channels(m, {"conv1": [0]})
    assert m.get_layer("conv1").filters == 6
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_nested_sequential_shared_layer_and_embedding():
    i = keras.Input((5,), dtype="int32")
    e = L.Embedding(10, 6, name="emb")(i)
    inner = keras.Sequential([L.Dense(7, name="in1"), L.ReLU(), L.Dense(4, name="in2")], name="inner")
    shared = L.Dense(6, name="shared")
    h = L.Add()([shared(e), shared(L.Activation("tanh")(e))])
    y = L.Dense(2)(L.Flatten()(inner(h)))
    m = randomize(keras.Model(i, y))
    plan = {"emb": [0, 3], "shared": [2], "in1": [0, 1], "inner/in2": [3]}
    small = prune_channels(m, plan)
    x = np.random.default_rng(3).integers(0, 10, size=(2, 5)).astype("int32")
    np.testing.assert_allclose(outputs(small, x), outputs(zero_channels(m, plan), x), atol=1e-5)
    assert small.get_layer("emb").output_dim == 4
    assert small.get_layer("inner").get_layer("in1").units == 5
    assert small.get_layer("shared").kernel.shape == (4, 5)


def test_grouped_conv_reshape_multiply_and_transpose():
    x = keras.Input((8, 8, 4))
    a = L.Conv2D(8, 1, name="a")(x)
    g = L.Conv2D(8, 3, groups=4, padding="same", name="g")(a)
    se = L.Dense(8, activation="sigmoid", name="se")(L.Reshape((1, 1, 8))(L.GlobalAveragePooling2D()(g)))
    s = L.Subtract()([L.Multiply()([g, se]), a])
    t = L.Conv2DTranspose(5, 3, strides=2, name="t")(s)
    r = L.Reshape((-1, 5), name="r")(t)
    y = L.Dense(2)(L.Flatten()(L.Dense(3, name="d")(r)))
    m = randomize(keras.Model(x, y))
    plan = {"g": [2], "t": [0, 4]}
    small = prune_channels(m, plan)
    xx = np.random.default_rng(4).normal(size=(2, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(outputs(small, xx), outputs(zero_channels(m, plan), xx), atol=1e-4)
    assert small.get_layer("g").groups == 3 and small.get_layer("g").filters == 6
    assert small.get_layer("r").target_shape == (17 * 17, 3)


def test_group_api_zero_and_remove_agree():
    m = cnn()
    graph = build_graph(m)
    groups = plan_groups(graph, {"conv3": [1]})
    assert len(groups) == 1
    small = remove_groups(graph, groups)
    copy = keras.models.clone_model(m)
    copy.set_weights(m.get_weights())
    copy_groups = plan_groups(build_graph(copy), {"conv3": [1]})
    zero_slices(copy_groups[0].slices)
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(outputs(small, x), outputs(copy, x), atol=1e-5)
    assert small.get_layer("conv3").filters == 3


def test_pruned_model_saves_and_loads(tmp_path):
    small = prune_channels(cnn(), {"conv1": [2], "conv3": [3]})
    path = str(tmp_path / "small.keras")
    small.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(6).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(outputs(loaded, x), outputs(small, x), atol=1e-6)


def test_bad_inputs_have_exact_messages():
    m = cnn()
    with pytest.raises(TypeError, match=re.escape(
        "prune_channels: Expected `model` to be a keras.Model (Sequential or functional). Received: model of type str"
    )):
        prune_channels("model", {})
    with pytest.raises(TypeError, match=re.escape(
        "prune_channels: Expected `plan` to be a dict {layer_name: output channel indices}. Received: plan of type list"
    )):
        prune_channels(m, [("conv1", [0])])
    with pytest.raises(ValueError, match=re.escape("Received: layer='conv9'")):
        prune_channels(m, {"conv9": [0]})
    with pytest.raises(ValueError, match=re.escape(
        "prune_channels: Expected channel indices of layer 'conv1' in [0, 6). Received: channel=6"
    )):
        prune_channels(m, {"conv1": [6]})
    with pytest.raises(TypeError, match=re.escape(
        "prune_channels: Expected integer channel indices in plan['conv1']. Received: 1.5"
    )):
        prune_channels(m, {"conv1": [1.5]})
    with pytest.raises(ValueError, match=re.escape(
        "prune_channels: Expected at least one channel to remain in every layer. Received: a plan that "
        "removes all 6 channels of layer 'conv1'"
    )):
        prune_channels(m, {"conv1": range(6)})
    with pytest.raises(ValueError, match=re.escape(
        "prune_channels: Expected removable channels. Received: channel 0 of layer 'head', which is "
        "coupled to a model input/output or a frozen layer"
    )):
        prune_channels(m, {"head": [0]})


def test_unsupported_layer_error_and_freeze():
    class Doubler(L.Layer):
        def call(self, x):
            return 2.0 * x

    x = keras.Input((4,))
    m = keras.Model(x, L.Dense(2)(Doubler(name="dbl")(L.Dense(3, name="a")(L.Dense(5, name="d")(x)))))
    with pytest.raises(ValueError, match=re.escape("Received: layer 'dbl' of class Doubler has no registered handler")):
        prune_channels(m, {"d": [0]})
    with pytest.raises(ValueError, match=re.escape("Received: channel 1 of layer 'a', which is coupled")):
        prune_channels(m, {"a": [1]}, unsupported="freeze")


# ---------------------------------------------------------------- random architectures

BLOCKS = ("conv", "bn", "relu", "dw", "res", "cat", "pool", "sep", "prelu", "gconv")


def random_model(blocks, width, head):
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(width, 3, padding="same")(x)
    size = 8
    for i, kind in enumerate(blocks):
        c = h.shape[-1]
        if kind == "conv":
            h = L.Conv2D(width + i % 3, 1 + 2 * (i % 2), padding="same")(h)
        elif kind == "bn":
            h = L.BatchNormalization()(h)
        elif kind == "relu":
            h = L.ReLU()(h)
        elif kind == "dw":
            h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=1 + i % 2)(h)
        elif kind == "res":
            h = L.Add()([h, L.BatchNormalization()(L.Conv2D(c, 3, padding="same")(h))])
        elif kind == "cat":
            h = L.Concatenate()([h, L.Conv2D(2, 1)(h)])
        elif kind == "pool" and size >= 4:
            h = L.MaxPooling2D()(h)
            size //= 2
        elif kind == "sep":
            h = L.SeparableConv2D(width, 3, padding="same")(h)
        elif kind == "prelu":
            h = L.PReLU(shared_axes=[1, 2])(h)
        elif kind == "gconv" and c % 2 == 0:
            h = L.Conv2D(c, 3, padding="same", groups=2)(h)
    h = L.Flatten()(h) if head == "flatten" else L.GlobalAveragePooling2D()(h)
    y = L.Dense(3)(L.Dense(5, activation="relu")(h))
    return keras.Model(x, y)


def random_plan(graph, rng, fraction=0.4):
    groups = [g for g in graph.groups() if not g.lossy]
    chosen = [groups[i] for i in rng.permutation(len(groups))[: max(1, int(fraction * len(groups)))]]
    plan = {}
    for g in chosen:
        name, _, idx = next(m for m in g.members() if m[1] == "out")
        plan.setdefault(name, []).append(idx[0])
    return plan


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(
    blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=6),
    width=st.integers(3, 6),
    head=st.sampled_from(["flatten", "gap"]),
    seed=st.integers(0, 1000),
)
def test_random_architectures_prune_equals_zeroed(blocks, width, head, seed):
    keras.utils.set_random_seed(seed)
    m = randomize(random_model(blocks, width, head), seed)
    rng = np.random.default_rng(seed)
    plan = random_plan(build_graph(m), rng)
    try:
        small = prune_channels(m, plan)
    except ValueError as exc:  # the random plan emptied a layer: that must be the reason
        assert "Expected at least one channel to remain in every layer" in str(exc)
        return
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    # float32 sums in another order: six stacked random convs reach outputs of ~500 (1e-6 relative)
    np.testing.assert_allclose(outputs(small, x), outputs(zero_channels(m, plan), x), rtol=1e-5, atol=1e-4)
    assert small.count_params() < m.count_params()


def test_shared_nested_functional_and_concat_on_spatial_axis():
    ii = keras.Input((6, 6, 4))
    inner = keras.Model(ii, L.Add(name="iadd")([L.Conv2D(3, 1, name="ia")(ii), L.Conv2D(3, 1, name="ib")(ii)]), name="blk")
    x = keras.Input((6, 6, 2))
    h = inner(L.Conv2D(4, 3, padding="same", name="pre")(x))
    h2 = inner(L.Conv2D(4, 1, name="mid")(h))
    c = L.Concatenate(axis=1, name="cat1")([h, h2])  # not the channel axis: couples like Add
    m = randomize(keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(c))))
    graph = build_graph(m)
    # the shared block reads pre's and mid's channels with the same weights: they are coupled
    assert graph.group("pre", 1) == graph.group("mid", 1)
    assert graph.group("blk/ia", 0) == graph.group("blk/ib", 0)
    plan = {"pre": [1], "ia": [0]}
    small = prune_channels(m, plan)
    xx = np.random.default_rng(7).normal(size=(2, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(outputs(small, xx), outputs(zero_channels(m, plan), xx), atol=1e-5)
    assert tuple(small.get_layer("blk").get_layer("ia").kernel.shape) == (1, 1, 3, 2)
    assert small.get_layer("mid").filters == 3


def test_normalization_rescaling_leaky_relu_after_dense():
    x = keras.Input((5,))
    h = L.Dense(4, name="d")(x)
    norm = L.Normalization(name="norm")
    norm.adapt(np.random.default_rng(8).normal(size=(20, 4)).astype("float32"))
    h = L.Rescaling([1.0, 2.0, 3.0, 4.0], name="scale")(L.LeakyReLU(name="lrelu")(norm(h)))
    m = keras.Model(x, L.Dense(2, name="o")(h))
    randomize(m, 9)
    norm_weights = {w.name: w.numpy() for w in m.get_layer("norm").weights}
    small = prune_channels(m, {"d": [1]})
    small_weights = {w.name: w.numpy() for w in small.get_layer("norm").weights}
    np.testing.assert_array_equal(small_weights["variance"], norm_weights["variance"][[0, 2, 3]])
    np.testing.assert_array_equal(small_weights["mean"], norm_weights["mean"][[0, 2, 3]])
    np.testing.assert_allclose(np.asarray(small.get_layer("norm").variance).ravel(), norm_weights["variance"][[0, 2, 3]])
    assert small.get_layer("scale").scale == [1.0, 3.0, 4.0]
    xx = np.random.default_rng(10).normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(outputs(small, xx), outputs(zero_channels(m, {"d": [1]}), xx), atol=1e-5)


@pytest.mark.parametrize("rank", [1, 3])
def test_1d_and_3d_layers(rank):
    if rank == 1:
        x = keras.Input((16, 3))
        h = L.PReLU(shared_axes=[1], name="pr")(L.Conv1D(6, 3, padding="same", name="c")(x))
        h = L.SeparableConv1D(8, 3, depth_multiplier=2, name="sep")(h)
        h = L.Conv1DTranspose(4, 3, name="ct")(L.Cropping1D(1)(L.UpSampling1D(2)(h)))
        y = L.Dense(2)(L.GlobalMaxPooling1D()(L.DepthwiseConv1D(3, name="dw")(h)))
        plan, shape = {"c": [0, 5], "sep": [1], "ct": [3]}, (2, 16, 3)
    else:
        x = keras.Input((6, 6, 6, 2))
        h = L.Conv3DTranspose(5, 2, name="ct")(L.Conv3D(4, 3, name="c")(x))
        h = L.AveragePooling3D(2)(L.ZeroPadding3D(1)(h))
        y = L.Dense(2)(L.Flatten()(L.SpatialDropout3D(0.3)(h)))
        plan, shape = {"c": [0], "ct": [1, 2]}, (2, 6, 6, 6, 2)
    m = randomize(keras.Model(x, y), rank)
    small = prune_channels(m, plan)
    xx = np.random.default_rng(rank).normal(size=shape).astype("float32")
    np.testing.assert_allclose(outputs(small, xx), outputs(zero_channels(m, plan), xx), atol=1e-4)
    assert small.get_layer("c").filters == m.get_layer("c").filters - len(plan["c"])
    assert small.get_layer("ct").filters == m.get_layer("ct").filters - len(plan["ct"])


def test_layer_norm_channels_can_be_pruned_structurally():
    m = randomize(keras.Sequential([keras.Input((4,)), L.Dense(5, name="h"), L.LayerNormalization(name="ln"), L.Dense(2)]))
    small = prune_channels(m, {"h": [1, 3]})
    gamma, beta = m.get_layer("ln").get_weights()
    np.testing.assert_array_equal(small.get_layer("ln").gamma.numpy(), gamma[[0, 2, 4]])
    np.testing.assert_array_equal(small.get_layer("ln").beta.numpy(), beta[[0, 2, 4]])
