"""Parameters and multiply-adds per layer, against numbers worked out by hand in each test."""

import logging

import keras
import numpy as np
import pytest

from tf_groupsparse.metrics import (
    count_params,
    flops,
    layer_costs,
    layer_params,
    register_layer_cost,
)

L = keras.layers


def _rows(model):
    return {r["layer"]: r for r in layer_costs(model).rows}


def test_dense_on_rank2_and_rank3_inputs():
    inp = keras.Input((5, 7))
    x = L.Dense(4, name="d3")(inp)          # 5 positions * 7 in * 4 out = 140
    x = L.Flatten(name="flat")(x)           # 20 features
    out = L.Dense(3, name="d2")(x)          # 20 * 3 = 60
    m = keras.Model(inp, out)
    rows = _rows(m)
    assert rows["d3"]["macs"] == 140 and rows["d3"]["params"] == 7 * 4 + 4
    assert rows["flat"]["macs"] == 0
    assert rows["d2"]["macs"] == 60 and rows["d2"]["params"] == 63
    assert flops(m) == 200
    assert count_params(m) == 32 + 63


def test_conv_1d_2d_3d_and_groups():
    m1 = keras.Sequential([keras.Input((10, 3)), L.Conv1D(4, 3, name="c")])       # out (8, 4)
    assert _rows(m1)["c"]["macs"] == 8 * 4 * 3 * 3                                 # 288
    m2 = keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(8, 3, padding="same", groups=2, name="c")])
    # 6*6*8 outputs, each 3*3 kernel over 4/2 = 2 input channels: 288 * 18 = 5184
    assert _rows(m2)["c"]["macs"] == 5184 and _rows(m2)["c"]["params"] == 3 * 3 * 2 * 8 + 8
    m3 = keras.Sequential([keras.Input((4, 4, 4, 2)), L.Conv3D(3, 2, strides=2, name="c")])  # out (2,2,2,3)
    assert _rows(m3)["c"]["macs"] == 24 * 8 * 2                                     # 384


def test_conv_channels_first_reads_channels_from_axis_1():
    m = keras.Sequential([keras.Input((3, 6, 6)), L.Conv2D(4, 3, data_format="channels_first", name="c")])
    assert _rows(m)["c"]["macs"] == 4 * 4 * 4 * 9 * 3                              # 1728


def test_depthwise_and_separable():
    m = keras.Sequential([
        keras.Input((8, 8, 3)),
        L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),     # out (6, 6, 6): 216 * 9 = 1944
        L.SeparableConv2D(5, 3, depth_multiplier=1, name="sep"), # out (4, 4, 5), 16 positions
    ])
    rows = _rows(m)
    assert rows["dw"]["macs"] == 1944 and rows["dw"]["params"] == 3 * 3 * 3 * 2 + 6
    # depthwise part 16 * 6 * 9 = 864, pointwise part 16 * 6 * 5 = 480
    assert rows["sep"]["macs"] == 1344 and rows["sep"]["params"] == 54 + 30 + 5
    m1 = keras.Sequential([keras.Input((10, 4)), L.DepthwiseConv1D(3, name="dw1")])  # out (8, 4)
    assert _rows(m1)["dw1"]["macs"] == 32 * 3
    m2 = keras.Sequential([keras.Input((10, 4)), L.SeparableConv1D(2, 3, depth_multiplier=2, name="s")])
    # out (8, 2): 8 positions * 8 channels * 3 + 8 * 8 * 2 = 192 + 128
    assert _rows(m2)["s"]["macs"] == 320


def test_conv_transpose_costs_scatter_from_every_input_position():
    m = keras.Sequential([keras.Input((4, 4, 3)), L.Conv2DTranspose(2, 3, strides=2, name="t")])
    # 4*4*3 input elements, each scattered through a 3x3 kernel into 2 filters: 48 * 9 * 2
    assert _rows(m)["t"]["macs"] == 864
    m1 = keras.Sequential([keras.Input((5, 2)), L.Conv1DTranspose(3, 2, name="t")])
    assert _rows(m1)["t"]["macs"] == 10 * 2 * 3
    m3 = keras.Sequential([keras.Input((2, 2, 2, 1)), L.Conv3DTranspose(2, 2, name="t")])
    assert _rows(m3)["t"]["macs"] == 8 * 8 * 2


def test_weightless_and_lookup_layers_cost_zero():
    a = keras.Input((6, 6, 2))
    b = keras.Input((6, 6, 2))
    s = L.Add(name="add")([a, b])
    c = L.Concatenate(name="cat")([s, a])
    p = L.MaxPooling2D(name="maxpool")(c)
    p = L.AveragePooling2D(1, name="avgpool")(p)
    n = L.BatchNormalization(name="bn")(p)
    g = L.GlobalAveragePooling2D(name="gap")(n)
    m = keras.Model([a, b], g)
    rows = _rows(m)
    for name in ("add", "cat", "maxpool", "avgpool", "bn", "gap"):
        assert rows[name]["macs"] == 0, name
    assert rows["bn"]["params"] == 4 * 4
    assert rows["cat"]["output_shape"] == "(None, 6, 6, 4)"
    e = keras.Sequential([keras.Input((7,), dtype="int32"), L.Embedding(50, 4, name="emb")])
    assert _rows(e)["emb"] == {"layer": "emb", "kind": "Embedding", "output_shape": "(None, 7, 4)",
                               "params": 200, "macs": 0}


def test_recurrent_layers():
    m = keras.Sequential([
        keras.Input((6, 3)),
        L.SimpleRNN(4, return_sequences=True, name="rnn"),  # 6 * 1 * 4 * (3 + 4) = 168
        L.GRU(2, return_sequences=True, name="gru"),        # 6 * 3 * 2 * (4 + 2) = 216
        L.Bidirectional(L.LSTM(2), name="bi"),               # 2 * 6 * 4 * 2 * (2 + 2) = 384
    ])
    rows = _rows(m)
    assert (rows["rnn"]["macs"], rows["gru"]["macs"], rows["bi"]["macs"]) == (168, 216, 384)


def test_block_diagonal_dense_counts_only_its_blocks():
    from tf_groupsparse.layers import BlockDiagonalDense, ChannelGather

    m = keras.Sequential([
        keras.Input((5, 16)),
        ChannelGather(list(range(15, -1, -1)), name="gather"),
        BlockDiagonalDense(8, groups=4, name="equal"),          # 4 blocks 4x2 at 5 positions
        BlockDiagonalDense(6, groups=2, input_groups=[3, 5], output_groups=[2, 4],
                           implementation="split", name="unequal"),  # 3*2 + 5*4 at 5 positions
    ])
    rows = _rows(m)
    assert rows["gather"]["macs"] == 0
    assert rows["equal"]["macs"] == 5 * 4 * 4 * 2 and rows["equal"]["params"] == 32 + 8
    assert rows["unequal"]["macs"] == 5 * (6 + 20) and rows["unequal"]["params"] == 26 + 6


def test_nested_models_are_walked_with_prefixed_names():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="d")], name="block")
    inp = keras.Input((4,), name="x")
    out = L.Dense(2, name="head")(inner(inp))
    m = keras.Model(inp, out)
    rows = _rows(m)
    assert rows["block/d"]["macs"] == 12 and rows["head"]["macs"] == 6
    assert layer_params(m) == {"x": 0, "block/d": 15, "head": 8}
    report = layer_costs(m)
    assert report.totals == {"params": 23, "trainable_params": 23, "macs": 18}


def test_non_trainable_params_are_counted_separately():
    m = keras.Sequential([keras.Input((3,)), L.Dense(2), L.BatchNormalization()])
    t = layer_costs(m).totals
    assert t["params"] == 8 + 8 and t["trainable_params"] == 8 + 4
    assert count_params(m) == m.count_params()


def test_unknown_layer_counts_zero_and_logs(caplog):
    class Twice(L.Layer):
        def call(self, x):
            return 2.0 * x

    m = keras.Sequential([keras.Input((3,)), Twice(name="twice"), L.Dense(2, name="d")])
    with caplog.at_level(logging.WARNING, logger="tf_groupsparse.metrics"):
        rows = _rows(m)
    assert rows["twice"]["macs"] == 0 and rows["twice"]["note"] == "unknown kind: 0 MACs"
    assert "layer 'twice' of kind Twice has no registered cost" in caplog.text


def test_register_layer_cost_extends_the_table():
    class Scale(L.Layer):
        def call(self, x):
            return 3.0 * x

    @register_layer_cost(Scale)
    def _cost(layer, input_shape, output_shape):
        return int(np.prod(output_shape[1:]))

    m = keras.Sequential([keras.Input((5,)), Scale(name="s")])
    assert _rows(m)["s"]["macs"] == 5 and "note" not in _rows(m)["s"]
    with pytest.raises(TypeError, match=r"Expected keras.layers.Layer subclasses\. Received: layer_class=3"):
        register_layer_cost(3)


def test_unknown_dimension_and_bad_model_are_refused():
    m = keras.Sequential([keras.Input((None, 3)), L.Conv1D(2, 3, name="c")])
    with pytest.raises(ValueError, match=r"Expected layer 'c' to have a fully known input shape .* "
                                         r"Received: input_shape=\(None, None, 3\)"):
        layer_costs(m)
    with pytest.raises(TypeError, match=r"count_params: Expected `model` to be a keras.Model .* "
                                        r"Received: model of type str"):
        count_params("model")
    with pytest.raises(ValueError, match="Expected `model` to be built"):
        flops(keras.Sequential([L.Dense(2)]))


def test_report_renders_and_serializes():
    m = keras.Sequential([keras.Input((4,)), L.Dense(2, name="d")])
    r = layer_costs(m)
    assert r.title == "Layer costs" and "macs: 8" in str(r)
    assert r.to_dict()["rows"][0] == {"layer": "d", "kind": "Dense", "output_shape": "(None, 2)",
                                      "params": 10, "macs": 8}


