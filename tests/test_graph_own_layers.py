"""The toolkit's own layers compose with the dependency graph: a model from to_block_diagonal
(ChannelGather + BlockDiagonalDense) can be shrunk and pruned, and models with unnamed inputs
go through every pass that clones a model."""

import keras
import numpy as np
import pytest

import tf_groupsparse as tgs
from tf_groupsparse.graph import build_graph
from tf_groupsparse.layers import BlockDiagonalDense, ChannelGather, ChannelSlice

L = keras.layers


def grouped_model(implementation):
    inp = keras.Input((8,))
    h = ChannelGather([3, 0, 1, 2, 7, 4, 5, 6], name="gather")(inp)
    h = BlockDiagonalDense(6, n_groups=2, implementation=implementation, activation="relu", name="bd")(h)
    h = ChannelSlice(1, 5, name="slice")(h)
    out = L.Dense(3, name="out")(h)
    return keras.Model(inp, out)


@pytest.mark.parametrize("implementation", ["batched", "split"])
def test_shrink_removes_zero_channels_of_a_block_diagonal_layer(implementation, tmp_path):
    keras.utils.set_random_seed(0)
    model = grouped_model(implementation)
    bd = model.get_layer("bd")
    blocks = bd.block_kernels()
    blocks[1][:, 1] = 0.0                 # output channel 4 of bd: its column in block 1 ...
    bias = bd.bias.numpy()
    bias[4] = 0.0                         # ... and its bias: a constant 0 that nothing needs
    bd.set_block_kernels(blocks)
    bd.bias.assign(bias)
    out = model.get_layer("out")
    w = out.kernel.numpy()
    w[0] = 0.0                            # the Dense reads bd's channel 1 (slice position 0) with zeros
    out.kernel.assign(w)
    x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    small, report = tgs.shrink(model, threshold=0.0, return_report=True)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    # removed: channel 1 (read with zeros), 4 (zero column, zero bias) and 0, 5 (outside the slice)
    new_bd = small.get_layer("bd")
    assert new_bd.units == 2 and new_bd.output_groups == [1, 1]
    assert (small.get_layer("slice").start, small.get_layer("slice").stop) == (0, 2)
    assert report.totals["groups_removed"] == 4
    # equal blocks stay in the requested form; the result saves and loads
    assert new_bd.implementation == implementation
    path = str(tmp_path / f"bd_{implementation}.keras")
    small.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_unequal_removal_switches_to_the_split_form_and_gather_follows():
    keras.utils.set_random_seed(1)
    model = grouped_model("batched")
    graph = build_graph(model)
    # output channel 0 of bd lies outside the slice: nothing reads it
    assert graph.group("bd", 0).slices and not graph.group("bd", 0).frozen
    pruned = tgs.prune_channels(model, {"bd": [0]})
    new_bd = pruned.get_layer("bd")
    assert new_bd.output_groups == [2, 3] and new_bd.implementation == "split"
    x = np.random.default_rng(1).normal(size=(8, 8)).astype("float32")
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert pruned.get_layer("slice").get_config()["start"] == 0


def test_gather_maps_input_channels_through_removal():
    inp = keras.Input((6,))
    h = L.Dense(5, name="h")(inp)
    g = ChannelGather([4, 0, 2], name="g")(h)
    out = L.Dense(2, name="out")(g)
    model = keras.Model(inp, out)
    pruned = tgs.prune_channels(model, {"h": [1, 3]})       # channels nobody gathers
    assert pruned.get_layer("h").units == 3 and pruned.get_layer("g").indices == [2, 0, 1]
    x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_to_block_diagonal_output_can_be_pruned_by_loss():
    keras.utils.set_random_seed(2)
    x = np.random.default_rng(3).normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((8,)), L.Dense(8, activation="relu", name="fc1"),
                              L.Dense(8, activation="relu", name="fc2"), L.Dense(2, name="out")])
    structure = tgs.fit_groups(model, 2, layers=["fc2"], balanced=True, seed=0, verbose=0)
    grouped = tgs.to_block_diagonal(model, structure)
    pruned, report = tgs.prune_filters(grouped, (x, y), tolerance=10.0, max_fraction=0.5, allow_untrained=True,
                                       verbose=0)
    assert report.totals["params_after"] < report.totals["params_before"]
    assert pruned.predict(x, verbose=0).shape == (64, 2)


def test_unnamed_inputs_pass_through_every_rewrite():
    x_in = keras.Input((8,))            # no name: Keras calls its layer "input_layer*"
    h = L.Dense(6, name="d1")(x_in)
    model = keras.Model(x_in, L.Dense(3, name="d2")(h))
    x = np.random.default_rng(4).normal(size=(32, 8)).astype("float32")
    y = np.arange(32) % 3
    expected = model.predict(x, verbose=0)
    penalised = tgs.grouping.add_em_penalty(model, 2, layers=["d1"])
    np.testing.assert_allclose(tgs.grouping.strip_em_penalty(penalised).predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(tgs.regularize(model, tgs.regularizers.GroupLasso(1e-3)).predict(x, verbose=0),
                               expected, atol=1e-6)
    np.testing.assert_allclose(tgs.shrink(model).predict(x, verbose=0), expected, atol=1e-6)
    structure = tgs.fit_groups(model, 2, layers=["d1"], seed=0, verbose=0)
    assert tgs.apply_mask(model, structure).predict(x, verbose=0).shape == (32, 3)
    assert tgs.to_block_diagonal(model, structure).predict(x, verbose=0).shape == (32, 3)
    assert tgs.prune_channels(model, {"d1": [0]}).get_layer("d1").units == 5
    pruned, _ = tgs.prune_filters(model, (x, y), allow_untrained=True, verbose=0)
    assert pruned.predict(x, verbose=0).shape == (32, 3)
    grown, _ = tgs.plant(model, model, (x, y), max_steps=1, epochs_per_step=1, verbose=0)
    assert grown.get_layer("d1").units > 6


def test_token_id_inputs_without_a_channel_axis_are_frozen_not_an_error():
    ids = keras.Input((None,), dtype="int32")
    h = L.Embedding(20, 8, name="emb")(ids)
    h = L.Dense(6, name="d")(h)
    out = L.Dense(2, name="o")(L.GlobalAveragePooling1D()(h))
    model = keras.Model(ids, out)
    graph = build_graph(model)
    assert not graph.group("d", 0).frozen
    assert tgs.shrink(model).get_layer("d").units == 6
