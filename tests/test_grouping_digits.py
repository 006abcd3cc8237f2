"""Must-show: a digits MLP keeps its accuracy with 4-block hidden layers holding 1/4 of their weights."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tf_groupsparse.grouping import apply_mask, fit_groups, to_block_diagonal
from tf_groupsparse.layers import BlockDiagonalDense

L = keras.layers


def compile_(model):
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_digits_mlp_four_blocks_keeps_accuracy():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    dense = compile_(keras.Sequential([keras.Input((64,)), L.Dense(256, activation="relu", name="fc1"),
                                       L.Dense(256, activation="relu", name="fc2"), L.Dense(10, name="head")]))
    dense.fit(xtr, ytr, epochs=20, batch_size=64, verbose=0)
    dense_acc = dense.evaluate(xte, yte, verbose=0)[1]

    structure = fit_groups(dense, 4, layers=["fc1", "fc2"], balanced=True, seed=0)
    masked = compile_(apply_mask(dense, structure))
    masked.fit(xtr, ytr, epochs=15, batch_size=64, verbose=0)
    small = to_block_diagonal(masked, structure)
    np.testing.assert_allclose(small(xte), masked(xte), atol=1e-4)
    small_acc = float(np.mean(np.argmax(keras.ops.convert_to_numpy(small(xte)), axis=1) == yte))

    assert dense_acc > 0.9
    assert small_acc >= dense_acc - 0.02
    for name, (c_in, c_out) in {"fc1": (64, 256), "fc2": (256, 256)}.items():
        layer = small.get_layer(name)
        assert isinstance(layer, BlockDiagonalDense)
        assert layer.count_params() - c_out == c_in * c_out // 4   # kernel holds exactly 1/4 of the weights
    assert small.count_params() == dense.count_params() - 3 * (64 * 256 + 256 * 256) // 4
