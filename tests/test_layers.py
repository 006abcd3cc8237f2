"""BlockDiagonalDense, ChannelGather, ChannelSlice and BlockMask: NumPy references, configs, errors."""

import keras
import numpy as np
import pytest

from tf_groupsparse.layers import BlockDiagonalDense, BlockMask, ChannelGather, ChannelSlice


def reference(layer, x):
    """y = x @ blockdiag(W_1..W_K) + b with the blocks read back from the layer."""
    w = np.zeros((sum(layer.input_groups), layer.units), "float32")
    r = c = 0
    for block in layer.block_kernels():
        a, b = block.shape
        w[r:r + a, c:c + b] = block
        r, c = r + a, c + b
    return x @ w + (layer.bias.numpy() if layer.use_bias else 0)


@pytest.mark.parametrize("implementation", ["batched", "split", "grouped_conv"])
def test_equal_blocks_match_numpy(implementation):
    x = np.random.default_rng(0).normal(size=(5, 12)).astype("float32")
    layer = BlockDiagonalDense(8, n_groups=4, implementation=implementation, bias_initializer="ones")
    y = layer(x)
    np.testing.assert_allclose(y, reference(layer, x), atol=1e-5)
    assert layer.kernel.shape == (4, 3, 2)
    assert layer.count_params() == 4 * 3 * 2 + 8
    np.testing.assert_allclose(layer.dense_kernel()[:3, 2:], 0)


def test_unequal_blocks_with_empty_blocks_match_numpy():
    x = np.random.default_rng(1).normal(size=(4, 9)).astype("float32")
    layer = BlockDiagonalDense(7, n_groups=3, input_groups=[4, 0, 5], output_groups=[3, 2, 2],
                               implementation="split", activation="relu", bias_initializer="ones")
    y = layer(x)
    np.testing.assert_allclose(y, np.maximum(reference(layer, x), 0), atol=1e-5)
    np.testing.assert_allclose(y[:, 3:5], 1.0)  # outputs without inputs: relu(bias)
    assert layer.count_params() == 4 * 3 + 5 * 2 + 7
    inputs_only = BlockDiagonalDense(4, n_groups=2, input_groups=[3, 6], output_groups=[4, 0], implementation="split")
    np.testing.assert_allclose(inputs_only(x), x[:, :3] @ inputs_only.block_kernels()[0], atol=1e-5)


def test_rank3_inputs():
    x = np.random.default_rng(2).normal(size=(2, 3, 8)).astype("float32")
    for impl in ("batched", "split", "grouped_conv"):
        layer = BlockDiagonalDense(4, n_groups=2, implementation=impl)
        layer.build((None, 3, 8))
        layer.set_block_kernels([np.full((4, 2), 0.5, "float32"), np.full((4, 2), -1.0, "float32")])
        y = keras.ops.convert_to_numpy(layer(x))
        np.testing.assert_allclose(y[..., :2], np.repeat(x[..., :4].sum(-1, keepdims=True) * 0.5, 2, -1), atol=1e-5)
        np.testing.assert_allclose(y[..., 2:], np.repeat(-x[..., 4:].sum(-1, keepdims=True), 2, -1), atol=1e-5)


def test_config_and_keras_round_trip(tmp_path):
    layer = BlockDiagonalDense(6, n_groups=2, input_groups=[3, 5], output_groups=[4, 2], implementation="split",
                               activation="tanh", use_bias=False, kernel_initializer="he_normal", name="bd")
    config = layer.get_config()
    assert config["input_groups"] == [3, 5] and config["implementation"] == "split" and config["use_bias"] is False
    clone = BlockDiagonalDense.from_config(config)
    assert clone.get_config() == config
    model = keras.Sequential([keras.Input((8,)), layer, ChannelGather([5, 0, 1], name="g"), ChannelSlice(1, 3, name="s")])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(3).normal(size=(3, 8)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.get_layer("g").indices == [5, 0, 1] and loaded.get_layer("s").stop == 3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"units": 7, "groups": 2}, ValueError, r"Expected units divisible by groups=2 for equal blocks, or pass explicit block sizes. Received: units=7"),
        ({"units": 0}, ValueError, r"Expected `units` >= 1. Received: units=0"),
        ({"units": 4, "n_groups": 0}, ValueError, r"Expected `n_groups` >= 1. Received: n_groups=0"),
        ({"units": 4, "output_groups": [1, 2]}, ValueError, r"Expected `output_groups` to sum to 4. Received: output_groups=\[1, 2\]"),
        ({"units": 4, "input_groups": [1, 2, 3]}, ValueError, r"Expected `input_groups` to have one size per group \(groups=2\)"),
        ({"units": 4, "input_groups": [1, -2]}, TypeError, r"Expected `input_groups` to be a list of non-negative ints"),
        ({"units": 4, "input_groups": [1, 3]}, ValueError, r"Expected equal blocks for implementation='batched'; use implementation='split'"),
        ({"units": 4, "implementation": "fast"}, ValueError, r"Expected `implementation` to be one of 'batched', 'split', 'grouped_conv'. Received: implementation='fast'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        BlockDiagonalDense(**kwargs)


def test_bad_input_width():
    with pytest.raises(ValueError, match=r"Expected the input width divisible by groups=2.*Received: the input width=5"):
        BlockDiagonalDense(4, n_groups=2)(np.zeros((1, 5), "float32"))
    with pytest.raises(ValueError, match=r"Expected an input width of sum\(input_groups\)=4"):
        BlockDiagonalDense(4, n_groups=2, input_groups=[2, 2])(np.zeros((1, 5), "float32"))


def test_channel_gather_and_slice():
    x = np.arange(10, dtype="float32").reshape(2, 5)
    np.testing.assert_array_equal(ChannelGather([4, 0, 0])(x), x[:, [4, 0, 0]])
    np.testing.assert_array_equal(ChannelSlice(1, 4)(x), x[:, 1:4])
    with pytest.raises(ValueError, match=r"Expected indices < 5 \(the channels\). Received: max\(indices\)=7"):
        ChannelGather([7])(x)
    with pytest.raises(TypeError, match="Expected `indices` to be a non-empty list of non-negative ints"):
        ChannelGather([])
    with pytest.raises(ValueError, match=r"Expected `stop` >= 3. Received: stop=2"):
        ChannelSlice(2, 2)


def test_block_mask_constraint():
    mask = BlockMask([0, 1, 1], [1, 0], constraint=keras.constraints.NonNeg())
    w = np.random.default_rng(4).normal(size=(3, 3, 2)).astype("float32")
    ref = np.maximum(w, 0) * (np.array([0, 1, 1])[:, None] == np.array([1, 0])[None, :])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mask(w)), ref)
    config = mask.get_config()
    assert config["input_groups"] == [0, 1, 1] and config["constraint"]["class_name"] == "NonNeg"
    again = BlockMask.from_config(config)
    np.testing.assert_array_equal(again.mask, mask.mask)
    with pytest.raises(ValueError, match=r"Expected a kernel whose last two axes are \(3, 2\) \(C_in, C_out\). Received: w.shape=\(2, 2\)"):
        mask(np.zeros((2, 2), "float32"))
    with pytest.raises(TypeError, match="BlockMask: Expected `output_groups` to be a list of ints. Received: output_groups=.ab."):
        BlockMask([0], "ab")


