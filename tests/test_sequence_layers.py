"""Recurrent layers, Bidirectional, TimeDistributed, dot-product attention and GroupNormalization
in the dependency graph: zero units and groups go, outputs stay."""

import keras
import numpy as np
import pytest

import tf_groupsparse as tgs
from tf_groupsparse.graph import build_graph, remove_groups
from tf_groupsparse.pruning.cost import CostModel

L = keras.layers


def _x(model, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(model.inputs[0].shape[1:])).astype("float32")


def _close(a, b, x, atol=1e-5):
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=atol)


def _kill_units(layer, units, gates):
    """Zero every weight of recurrent `units` (input, recurrent, bias columns and recurrent rows)."""
    cell = getattr(layer, "cell", layer)
    n = cell.units
    cols = [g * n + u for g in range(gates) for u in units]
    for variable, axes in ((cell.kernel, (1,)), (cell.recurrent_kernel, (0, 1)), (cell.bias, (-1,))):
        value = variable.numpy()
        for axis in axes:
            index = [slice(None)] * value.ndim
            index[axis] = cols if axis != 0 or variable is not cell.recurrent_kernel else units
            value[tuple(index)] = 0.0
        variable.assign(value)


@pytest.mark.parametrize("kind, gates", [("SimpleRNN", 1), ("GRU", 3), ("LSTM", 4)])
def test_recurrent_units_with_zero_weights_go(kind, gates, tmp_path):
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 5), name="x")
    h = getattr(L, kind)(6, return_sequences=True, name="rnn")(L.Dense(8, name="proj")(x))
    model = keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling1D()(h)))
    _kill_units(model.get_layer("rnn"), [1, 4], gates)
    small = tgs.shrink(model, threshold=0.0)
    assert small.get_layer("rnn").units == 4
    _close(small, model, _x(model))
    small.save(tmp_path / "rnn.keras")
    keras.models.load_model(tmp_path / "rnn.keras", safe_mode=True)
    graph = build_graph(model)
    cost = CostModel(graph)
    chosen = graph.groups("rnn")[:2]
    cost.remove(chosen)
    assert cost.macs == tgs.flops(remove_groups(graph, chosen))


def test_a_unit_that_other_units_read_stays():
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 5))
    model = keras.Model(x, L.Dense(2, name="head")(L.LSTM(6, name="rnn")(x)))
    _kill_units(model.get_layer("rnn"), [2], 4)
    cell = model.get_layer("rnn").cell
    k = cell.recurrent_kernel.numpy()
    k[2, 0] = 0.3  # unit 0 reads unit 2's state: unit 2 is still computed from its (zero) weights ...
    cell.recurrent_kernel.assign(k)
    small = tgs.shrink(model, threshold=0.0)  # ... and its state is zero, so it goes exactly
    assert small.get_layer("rnn").units == 5
    _close(small, model, _x(model))
    b = cell.bias.numpy()
    b[[2, 6 + 2, 12 + 2, 18 + 2]] = 1.0  # a nonzero bias: its state is not zero and unit 0 reads it
    cell.bias.assign(b)
    assert tgs.shrink(model, threshold=0.0).get_layer("rnn").units == 6


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_bidirectional_loses_a_unit_in_both_directions(merge_mode):
    keras.utils.set_random_seed(0)
    x = keras.Input((7, 5))
    h = L.Bidirectional(L.GRU(6, return_sequences=True), merge_mode=merge_mode, name="bi")(x)
    model = keras.Model(x, L.Dense(2, name="head")(L.GlobalMaxPooling1D()(h)))
    bi = model.get_layer("bi")
    for part in (bi.forward_layer, bi.backward_layer):
        _kill_units(part, [3], 3)
    small = tgs.shrink(model, threshold=0.0)
    sb = small.get_layer("bi")
    assert sb.forward_layer.units == sb.backward_layer.units == 5
    _close(small, model, _x(model))


def test_time_distributed_dense_shrinks_like_dense():
    keras.utils.set_random_seed(0)
    x = keras.Input((4, 6))
    h = L.TimeDistributed(L.Dense(8, activation="relu"), name="td")(x)
    model = keras.Model(x, L.TimeDistributed(L.Dense(3), name="out")(h))
    out = model.get_layer("out").layer
    k = out.kernel.numpy()
    k[[0, 5]] = 0.0
    out.kernel.assign(k)
    small = tgs.shrink(model, threshold=0.0)
    assert small.get_layer("td").layer.units == 6
    _close(small, model, _x(model))
    costs = {r["layer"]: r["macs"] for r in tgs.layer_costs(model).rows}
    assert costs["td"] == 4 * 6 * 8 and costs["out"] == 4 * 8 * 3


@pytest.mark.parametrize("kind", ["Attention", "AdditiveAttention"])
def test_dot_attention_couples_query_and_key_and_passes_value_channels(kind):
    keras.utils.set_random_seed(0)
    q = keras.Input((5, 6), name="q")
    v = keras.Input((7, 6), name="v")
    qp = L.Dense(8, name="qp")(q)
    vp = L.Dense(8, name="vp")(v)
    a = getattr(L, kind)(name="att")([qp, vp])
    model = keras.Model([q, v], L.Dense(2, name="head")(a))
    graph = build_graph(model)
    group = graph.group("qp", 0)
    assert group.lossy and {m[0] for m in group.members()} >= {"qp", "vp", "att", "head"}
    head = model.get_layer("head")  # nothing reads value channel 3 any more, but the scores do
    k = head.kernel.numpy()
    k[3] = 0.0
    head.kernel.assign(k)
    small = tgs.shrink(model, threshold=0.0)  # lossy (scores): shrink keeps it
    assert small.get_layer("vp").units == 8
    costs = {r["layer"]: r["macs"] for r in tgs.layer_costs(model).rows}
    assert costs["att"] == 5 * 7 * (8 + 8)


def test_group_normalization_loses_whole_groups():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 3, padding="same", name="conv")(x)
    h = L.GroupNormalization(groups=4, name="gn")(h)
    model = keras.Model(x, L.Conv2D(2, 1, name="out")(L.ReLU()(h)))
    graph = build_graph(model)
    assert len(graph.groups("conv")) == 4
    out = model.get_layer("out")
    k = out.kernel.numpy()
    k[..., 2:4, :] = 0.0  # the second normalization group
    out.kernel.assign(k)
    small = tgs.shrink(model, threshold=0.0)
    assert (small.get_layer("conv").filters, small.get_layer("gn").groups) == (6, 3)
    _close(small, model, _x(model))


class _DictBackbone(keras.Model):
    """A functional model with its own constructor config (as keras-hub backbones are), named
    inputs and an index op ``x[:, 0, :]`` in its graph."""

    def __init__(self, width=6, **kwargs):
        tokens = keras.Input((5, 4), name="tokens")
        extra = keras.Input((5, 4), name="extra")
        h = L.Dense(width, activation="relu", name="h")(L.Add(name="sum")([tokens, extra]))
        seq = L.Dense(3, name="seq")(h)
        pooled = L.Dense(2, name="pooled")(h[:, 0, :])
        super().__init__({"tokens": tokens, "extra": extra}, {"seq": seq, "pooled": pooled}, **kwargs)
        self.width = width

    def get_config(self):
        return {"width": self.width, "name": self.name}


def test_functional_subclass_with_named_inputs_and_an_index_shrinks():
    keras.utils.set_random_seed(0)
    model = _DictBackbone()
    h = model.get_layer("h")
    kernel = h.kernel.numpy()
    kernel[:, [1, 4]] = 0.0
    h.kernel.assign(kernel)
    h.bias.assign(np.where(np.isin(np.arange(6), [1, 4]), 0.0, 0.1).astype("float32"))
    rng = np.random.default_rng(0)
    x = {"tokens": rng.standard_normal((3, 5, 4)).astype("float32"),
         "extra": rng.standard_normal((3, 5, 4)).astype("float32")}
    small = tgs.shrink(model, threshold=0.0)
    assert small.get_layer("h").units == 4
    assert tuple(small.get_layer("pooled").kernel.shape) == (4, 2)
    want, got = model(x), small(x)
    for key in ("seq", "pooled"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got[key]), keras.ops.convert_to_numpy(want[key]),
                                   atol=1e-5)


def test_an_index_into_the_channel_axis_is_named_in_the_error():
    x = keras.Input((5, 4))
    y = L.Dense(3)(L.Dense(6, name="h")(x)[..., 0:3])
    with pytest.raises(ValueError, match="does not keep the channel"):
        build_graph(keras.Model(x, y))
