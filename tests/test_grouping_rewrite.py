"""apply_mask / to_block_diagonal / for_target: equal outputs, weight counts, round trips, errors."""

import keras
import numpy as np
import pytest

from tf_groupsparse.deploy import convert_tflite, run_tflite
from tf_groupsparse.grouping.em import fit_groups
from tf_groupsparse.grouping.rewrite import apply_mask, for_target, to_block_diagonal
from tf_groupsparse.grouping.structure import GroupStructure, LayerGroups
from tf_groupsparse.layers import BlockDiagonalDense, BlockMask, ChannelGather

L = keras.layers
RNG = np.random.default_rng(0)


def randomize_bn(model):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([RNG.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])
    return model


def mlp():
    return keras.Sequential([keras.Input((20,)), L.Dense(24, activation="relu", name="fc1"), L.BatchNormalization(),
                             L.Dense(16, activation="relu", name="fc2"), L.Dropout(0.2), L.Dense(12, name="fc3"),
                             L.Dense(5, name="head")], name="mlp")


def cnn2d():
    return randomize_bn(keras.Sequential([
        keras.Input((8, 8, 4)), L.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
        L.Conv2D(12, 3, name="c2"), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(),
        L.Conv2D(8, 1, name="c3"), L.Flatten(), L.Dense(12, name="fc"), L.Dense(4, name="head")], name="cnn"))


def cnn1d():
    return keras.Sequential([keras.Input((10, 6)), L.Conv1D(8, 3, name="a"), L.AveragePooling1D(2),
                             L.Conv1D(8, 2, activation="relu", name="b"), L.GlobalAveragePooling1D(), L.Dense(3)])


def unequal_structure(model, names, k=2, seed=0):
    """Random unequal labels that chain (each layer's inputs = producer's outputs)."""
    rng = np.random.default_rng(seed)
    entries, prev = [], None
    for name in names:
        kernel = model.get_layer(name).kernel
        c_in, c_out = kernel.shape[-2:]
        c = prev if prev is not None and len(prev) == c_in else rng.integers(0, k, c_in)
        g = rng.integers(0, k, c_out)
        g[:k] = np.arange(k)
        entries.append(LayerGroups(name, kernel.shape, c, g, k, "dense" if len(kernel.shape) == 2 else "conv"))
        prev = g
    return GroupStructure(entries)


def assert_equivalent(model, structure, x, target="xnnpack"):
    masked = apply_mask(model, structure)
    small = to_block_diagonal(masked, structure, target=target)
    ref = keras.ops.convert_to_numpy(masked(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(small(x)), ref, atol=1e-4)
    kept = sum(e.params_kept for e in structure)
    removed = sum(e.params_total for e in structure) - kept
    assert small.count_params() == masked.count_params() - removed
    return masked, small


@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.parametrize("chain", [True, False])
def test_mlp_equivalence(balanced, chain):
    model = randomize_bn(mlp())
    s = fit_groups(model, 2, balanced=balanced, chain=chain, seed=0)
    x = RNG.normal(size=(7, 20)).astype("float32")
    for target in ("xnnpack", "portable"):
        masked, small = assert_equivalent(model, s, x, target)
    grouped = [layer for layer in small.layers if isinstance(layer, BlockDiagonalDense)]
    assert [g.name for g in grouped] == ["fc1", "fc2", "fc3"]
    kernel_params = sum(g.count_params() - g.units for g in grouped)
    assert kernel_params == sum(e.params_kept for e in s)
    gathers = [layer.name for layer in small.layers if isinstance(layer, ChannelGather)]
    # chained groups need only the gather at the model input; independent groups need one per layer
    assert gathers == (["fc1_gather"] if chain else ["fc1_gather", "fc2_gather", "fc3_gather"])


def test_functional_linear_chain():
    inp = keras.Input((12,), name="pixels")
    h = L.Dense(8, activation="relu", name="fc1")(inp)
    out = L.Dense(3, name="head")(L.Dense(8, name="fc2")(h))
    model = keras.Model(inp, out, name="func")
    s = fit_groups(model, 2, seed=0)
    _, small = assert_equivalent(model, s, RNG.normal(size=(4, 12)).astype("float32"))
    assert [layer.name for layer in small.layers[1:]] == ["fc1_gather", "fc1", "fc2", "head"]


def test_permutation_folded_into_ungrouped_producer():
    model = mlp()
    s = fit_groups(model, 2, layers=["fc2"], seed=0)
    x = RNG.normal(size=(5, 20)).astype("float32")
    _, small = assert_equivalent(model, s, x)
    assert not any(isinstance(layer, ChannelGather) for layer in small.layers)  # fc1's columns were permuted


def test_unequal_groups_dense_with_empty_blocks():
    model = mlp()
    s = GroupStructure([LayerGroups("fc1", (20, 24), np.arange(20) % 3, np.r_[np.zeros(12), np.ones(12)], 3),
                        LayerGroups("fc2", (24, 16), np.r_[np.zeros(12), np.ones(12)], np.arange(16) % 3, 3)])
    x = RNG.normal(size=(5, 20)).astype("float32")
    _, small = assert_equivalent(model, s, x, "portable")
    assert small.get_layer("fc1").output_groups == [12, 12, 0]


@pytest.mark.parametrize("balanced", [True, False])
def test_conv2d_chain_equivalence(balanced):
    model = cnn2d()
    s = fit_groups(model, 2, layers=["c2", "c3", "fc"], balanced=balanced, seed=0) if balanced else \
        unequal_structure(model, ["c2", "c3", "fc"])
    x = RNG.normal(size=(3, 8, 8, 4)).astype("float32")
    masked, small = assert_equivalent(model, s, x)
    if balanced:
        assert small.get_layer("c2").groups == 2 and small.get_layer("c3").groups == 2
    else:
        assert any(layer.name.startswith("c2_block") for layer in small.layers)


@pytest.mark.parametrize("balanced", [True, False])
def test_conv1d_equivalence(balanced):
    model = cnn1d()
    s = fit_groups(model, 2, balanced=balanced, seed=0) if balanced else unequal_structure(model, ["a", "b"])
    x = RNG.normal(size=(4, 10, 6)).astype("float32")
    assert_equivalent(model, s, x)


def test_apply_mask_keeps_off_block_weights_zero_while_training():
    model = mlp()
    s = fit_groups(model, 2, seed=0)
    before = [w.copy() for w in model.get_weights()]
    masked = apply_mask(model, s)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the user's model is untouched
    masked.compile(keras.optimizers.SGD(0.1), "mse")
    masked.fit(RNG.normal(size=(32, 20)), RNG.normal(size=(32, 5)), epochs=1, batch_size=8, verbose=0)
    for e in s:
        kernel = keras.ops.convert_to_numpy(masked.get_layer(e.name).kernel)
        assert np.count_nonzero(kernel * (1 - e.mask())) == 0
        assert np.count_nonzero(kernel * e.mask()) == e.params_kept
        assert isinstance(masked.get_layer(e.name).kernel_constraint, BlockMask)


def test_keras_round_trips(tmp_path):
    model = cnn2d()
    s = fit_groups(model, 2, layers=["c2", "c3", "fc"], balanced=True, seed=0)
    x = RNG.normal(size=(2, 8, 8, 4)).astype("float32")
    masked = apply_mask(model, s)
    masked.save(tmp_path / "masked.keras")
    loaded = keras.models.load_model(tmp_path / "masked.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(x), masked(x), atol=1e-6)
    assert loaded.get_layer("c2").kernel_constraint.get_config() == masked.get_layer("c2").kernel_constraint.get_config()
    dense = randomize_bn(mlp())
    sd = unequal_structure(dense, ["fc1", "fc2"])
    for m, st, xi in ((masked, s, x), (dense, sd, RNG.normal(size=(2, 20)).astype("float32"))):
        small = to_block_diagonal(m, st)
        small.save(tmp_path / "small.keras")
        back = keras.models.load_model(tmp_path / "small.keras", safe_mode=True)
        np.testing.assert_allclose(back(xi), small(xi), atol=1e-6)


@pytest.mark.slow
def test_tflite_matches_masked_model():
    model = randomize_bn(mlp())
    s = fit_groups(model, 4, layers=["fc1", "fc2"], balanced=True, seed=0)
    x = RNG.normal(size=(3, 20)).astype("float32")
    masked = apply_mask(model, s)
    for target in ("xnnpack", "portable"):
        small = to_block_diagonal(masked, s, target=target)
        np.testing.assert_allclose(run_tflite(convert_tflite(small), x), masked(x), atol=1e-4)


def test_for_target_switches_implementation():
    model = mlp()
    s = fit_groups(model, 2, balanced=True, seed=0)
    small = to_block_diagonal(model, s, target="xnnpack")
    assert {small.get_layer(n).implementation for n in ("fc1", "fc2", "fc3")} == {"batched"}
    portable = for_target(small, "portable")
    assert {portable.get_layer(n).implementation for n in ("fc1", "fc2", "fc3")} == {"split"}
    assert small.get_layer("fc1").implementation == "batched"  # not mutated
    x = RNG.normal(size=(4, 20)).astype("float32")
    np.testing.assert_allclose(portable(x), small(x), atol=1e-5)
    assert for_target(model, "portable") is model  # nothing grouped: same model
    with pytest.raises(ValueError, match=r"for_target: Expected `target` to be one of 'xnnpack', 'portable'. Received: target='gpu'"):
        for_target(small, "gpu")


def test_errors():
    model = mlp()
    s = fit_groups(model, 2, seed=0)
    with pytest.raises(TypeError, match="apply_mask: Expected a GroupStructure \\(from fit_groups\\). Received: structure of type dict"):
        apply_mask(model, {})
    with pytest.raises(ValueError, match=r"to_block_diagonal: Expected `target` to be one of 'xnnpack', 'portable'"):
        to_block_diagonal(model, s, target="cpu")
    other = keras.Sequential([keras.Input((20,)), L.Dense(30, name="fc1"), L.Dense(5)])
    with pytest.raises(ValueError, match=r"Expected layer 'fc1' to have kernel shape \(20, 24\)"):
        to_block_diagonal(other, s)
    with pytest.raises(ValueError, match=r"GroupStructure.check: Expected a layer named 'fc2' in model"):
        apply_mask(keras.Sequential([keras.Input((20,)), L.Dense(24, name="fc1"), L.Dense(5)]), s)
    ln = keras.Sequential([keras.Input((20,)), L.Dense(24, name="fc1"), L.LayerNormalization(name="ln"), L.Dense(5)])
    s_ln = GroupStructure([LayerGroups("fc1", (20, 24), np.arange(20) % 2, np.arange(24) % 2, 2)])
    with pytest.raises(ValueError, match=r"to_block_diagonal: Expected a chain of .*Received: layer 'ln' of type LayerNormalization"):
        to_block_diagonal(ln, s_ln)
    inp = keras.Input((20,))
    h = L.Dense(24, name="fc1")(inp)
    branched = keras.Model(inp, L.Concatenate()([h, inp]))
    with pytest.raises(ValueError, match=r"to_block_diagonal: Expected a linear chain"):
        to_block_diagonal(branched, s_ln)
