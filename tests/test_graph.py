"""Channel dependency graph: exact group membership, dependencies, handlers registry, errors."""

import re

import keras
import numpy as np
import pytest

from tf_groupsparse.graph import Handler, build_graph, handlers, kinds, register_handler
from tf_groupsparse.graph.kinds import handler_for

L = keras.layers


def residual_model():
    x = keras.Input((8, 8, 3), name="x")
    c1 = L.Conv2D(4, 3, padding="same", name="conv1")(x)
    b1 = L.BatchNormalization(name="bn1")(c1)
    r1 = L.ReLU(name="relu1")(b1)
    c2 = L.Conv2D(4, 3, padding="same", name="conv2")(r1)
    add = L.Add(name="add")([c2, r1])
    y = L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="gap")(add))
    return keras.Model(x, y)


def concat_model():
    x = keras.Input((4, 4, 2), name="x")
    a = L.Conv2D(3, 1, name="a")(x)
    b = L.Conv2D(2, 1, name="b")(x)
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(b)
    cat = L.Concatenate(name="cat")([a, d])
    flat = L.Flatten(name="flat")(cat)
    y = L.Dense(2, name="head")(flat)
    return keras.Model(x, y)


def test_residual_add_couples_both_branches():
    g = build_graph(residual_model())
    assert str(g.group("conv1", 2)) == (
        "prune out channels of conv1 [2] => in channels of bn1 [2], in channels of relu1 [2], "
        "in channels of conv2 [2], out channels of conv2 [2], in channels of add [2], "
        "in channels of gap [2], in channels of head [2]"
    )
    assert g.group("conv1", 2) == g.group("conv2", 2)
    assert g.group("conv1", 2) != g.group("conv1", 1)
    assert len(g.groups()) == 4  # one group per residual channel
    assert len(g.groups("conv2")) == 4


def test_residual_dependencies_listed():
    g = build_graph(residual_model())
    text = [str(d) for d in g.dependencies]
    assert "out channels of conv1 => in channels of bn1 (identity)" in text
    assert "out channels of conv2 => in channels of add (coupled)" in text
    assert "out channels of relu1 => in channels of add (coupled)" in text
    assert "out channels of gap => in channels of head (consumes)" in text
    assert str(g).startswith("DependencyGraph of 'functional': 7 layers, 4 prunable groups")


def test_concat_offsets_depthwise_and_flatten_positions():
    g = build_graph(concat_model())
    # b's channel 1 -> depthwise outputs 2, 3 -> cat offset 3 -> 5, 6 -> flat 5 + 7p, 6 + 7p
    group = g.group("b", 1)
    members = dict(((name, role), idx) for name, role, idx in group.members())
    assert members[("dw", "in")] == (1,)
    assert members[("cat", "in")] == (2, 3)  # positions within cat's second input
    expected_flat = tuple(sorted([5 + 7 * p for p in range(16)] + [6 + 7 * p for p in range(16)]))
    assert members[("head", "in")] == expected_flat
    assert members[("flat", "in")] == (5, 6)
    # a's channel 2 keeps its index in the concatenation
    assert dict(((n, r), i) for n, r, i in g.group("a", 2).members())[("head", "in")] == tuple(
        2 + 7 * p for p in range(16)
    )


def test_group_slices_are_exact_weight_positions():
    g = build_graph(concat_model())
    slices = {(s.layer.name, s.layer.weights[s.weight_index].name, s.axis): (s.indices, s.role)
              for s in g.group("b", 1).slices}
    assert slices == {
        ("b", "kernel", 3): ((1,), "produce"),
        ("b", "bias", 0): ((1,), "param"),
        ("dw", "kernel", 2): ((1,), "param"),
        ("dw", "bias", 0): ((2, 3), "param"),
        ("head", "kernel", 0): (tuple(sorted([5 + 7 * p for p in range(16)] + [6 + 7 * p for p in range(16)])), "consume"),
    }


def test_model_inputs_and_outputs_are_frozen():
    g = build_graph(residual_model())
    assert g.group("head", 0).frozen
    assert g.groups("head") == []
    assert len(g.groups("head", include_frozen=True)) == 2


def test_sequential_and_nested_models_use_path_names():
    inner = keras.Sequential([L.Dense(5, name="i1"), L.ReLU(name="r"), L.Dense(3, name="i2")], name="inner")
    x = keras.Input((4,))
    y = L.Dense(2, name="out")(inner(L.Dense(6, name="pre")(x)))
    g = build_graph(keras.Model(x, y))
    assert [n.name for n in g.nodes] == ["pre", "inner/i1", "inner/r", "inner/i2", "out"]
    assert str(g.group("pre", 4)) == "prune out channels of pre [4] => in channels of inner/i1 [4]"
    assert str(g.group("inner/i2", 0)) == "prune out channels of inner/i2 [0] => in channels of out [0]"
    assert g.node("i1") is g.node("inner/i1")


def test_layer_norm_and_softmax_groups_are_lossy():
    x = keras.Input((6,))
    h = L.LayerNormalization(name="ln")(L.Dense(4, name="d")(x))
    y = L.Dense(3, name="o")(h)
    g = build_graph(keras.Model(x, y))
    assert g.group("d", 0).lossy and not g.group("d", 0).frozen
    assert str(g.group("d", 0)).endswith("[lossy]")


def test_grouped_conv_couples_whole_conv_groups():
    x = keras.Input((6, 6, 4))
    a = L.Conv2D(4, 1, name="a")(x)
    c = L.Conv2D(6, 3, groups=2, name="g")(a)
    y = L.Dense(2)(L.Flatten()(c))
    g = build_graph(keras.Model(x, y))
    members = dict(((n, r), i) for n, r, i in g.group("g", 4).members())
    assert members[("a", "out")] == (2, 3)
    assert members[("g", "out")] == (3, 4, 5)


def test_reshape_couples_channels_mod_gcd():
    x = keras.Input((4, 6))
    d = L.Dense(6, name="d")(x)
    r = L.Reshape((8, 3), name="r")(d)  # gcd(6, 3) = 3: input channel i ~ i mod 3
    y = L.Dense(2, name="o")(L.Flatten()(r))
    g = build_graph(keras.Model(x, y))
    members = dict(((n, role), i) for n, role, i in g.group("d", 4).members())
    assert members[("d", "out")] == (1, 4)
    assert members[("o", "in")] == tuple(1 + 3 * p for p in range(8))


class Doubler(L.Layer):
    def call(self, x):
        return 2.0 * x


def test_unknown_layer_error_names_layer_and_fix():
    x = keras.Input((4,))
    y = L.Dense(2)(Doubler(name="dbl")(L.Dense(3, name="d")(x)))
    model = keras.Model(x, y)
    msg = (
        "build_graph: Expected every layer to have a channel handler. Received: layer 'dbl' of "
        "class Doubler has no registered handler. Register a handler with "
        "tf_groupsparse.graph.register_handler(Doubler, handler) or pass "
        'unsupported="freeze" to keep its channels.'
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        build_graph(model)
    g = build_graph(model, unsupported="freeze")
    assert g.node("dbl").frozen
    assert g.group("d", 0).frozen


def test_register_handler_extends_registry():
    class Tripler(L.Layer):
        def call(self, x):
            return 3.0 * x

    register_handler(Tripler, handlers.Identity())
    try:
        x = keras.Input((4,))
        y = L.Dense(2)(Tripler(name="t")(L.Dense(3, name="d")(x)))
        g = build_graph(keras.Model(x, y))
        assert not g.group("d", 1).frozen
        assert isinstance(handler_for(Tripler()), Handler)
    finally:
        kinds.REGISTRY.pop(Tripler)


def test_register_handler_rejects_bad_arguments():
    with pytest.raises(TypeError, match=re.escape(
        "register_handler: Expected `layer_class` to be a subclass of keras.layers.Layer. Received: layer_class=3"
    )):
        register_handler(3, handlers.Identity())
    with pytest.raises(TypeError, match=re.escape(
        "register_handler: Expected `handler` to be a Handler instance with a trace() method. Received: handler='x'"
    )):
        register_handler(Doubler, "x")


def test_channels_first_conv_is_unsupported():
    x = keras.Input((3, 8, 8))
    y = L.Dense(2)(L.Flatten()(L.Conv2D(4, 3, data_format="channels_first", name="cf")(x)))
    with pytest.raises(ValueError, match=re.escape(
        "Received: layer 'cf' of class Conv2D: data_format='channels_first' (only channels_last is supported). Register"
    )):
        build_graph(keras.Model(x, y))


def test_bad_arguments():
    with pytest.raises(TypeError, match=re.escape(
        "build_graph: Expected `model` to be a keras.Model (Sequential or functional). Received: model of type list"
    )):
        build_graph([1])
    with pytest.raises(ValueError, match=re.escape(
        "build_graph: Expected `unsupported` to be one of 'error', 'freeze'. Received: unsupported='skip'"
    )):
        build_graph(residual_model(), unsupported="skip")
    g = build_graph(residual_model())
    with pytest.raises(ValueError, match=re.escape("Received: layer='nope'")):
        g.node("nope")
    with pytest.raises(ValueError, match=re.escape(
        "DependencyGraph.group: Expected `channel` in [0, 4) for layer 'conv1'. Received: channel=4"
    )):
        g.group("conv1", 4)


def test_graph_does_not_modify_model():
    model = residual_model()
    before = [w.copy() for w in model.get_weights()]
    config = model.get_config()
    build_graph(model)
    assert model.get_config() == config
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_elementwise_keras_ops_pass_channels_and_others_are_unsupported_or_frozen():
    x = keras.Input((5,))
    h = keras.ops.relu(L.Dense(4, name="d")(x) * 2.0 + 1.0)      # elementwise calls: channel by channel
    g = build_graph(keras.Model(x, L.Dense(2, name="o")(h)))
    assert str(g.group("d", 1)) == ("prune out channels of d [1] => in channels of multiply [1], in channels of "
                                    "add [1], in channels of relu [1], in channels of o [1]")
    mixed = keras.ops.cumsum(L.Dense(4, name="d")(x), axis=-1)    # mixes channels: no handler
    model = keras.Model(x, L.Dense(2, name="o")(L.Dense(3, name="e")(mixed)))
    with pytest.raises(ValueError, match=re.escape(
        "build_graph: Expected every operation to be a layer with a channel handler. Received: "
        "operation 'cumsum' of class Cumsum, a keras.ops call."
    )):
        build_graph(model)
    g = build_graph(model, unsupported="freeze")
    assert g.group("d", 0).frozen and not g.group("e", 0).frozen
    assert str(g.group("e", 2)) == "prune out channels of e [2] => in channels of o [2]"
