"""block_structure figure: panel data equal |W| before and after the permutation; errors."""

import keras
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from tf_groupsparse.grouping.structure import GroupStructure, LayerGroups  # noqa: E402
from tf_groupsparse.plots import block_structure  # noqa: E402

L = keras.layers


def setup():
    model = keras.Sequential([keras.Input((4, 4, 3)), L.Conv2D(4, 3, name="conv"), L.Flatten(), L.Dense(6, name="fc"), L.Dense(2)])
    s = GroupStructure([LayerGroups("conv", (3, 3, 3, 4), [1, 0, 1], [0, 1, 1, 0], 2, "conv"),
                        LayerGroups("fc", (16, 6), np.arange(16) % 2, [1, 0, 0, 1, 1, 0], 2)])
    return model, s


def test_panels_show_kernel_before_and_after(tmp_path):
    model, s = setup()
    fig = block_structure(model, s)
    assert len(fig.axes) == 4
    w = np.abs(keras.ops.convert_to_numpy(model.get_layer("fc").kernel))
    pi, po = s.permutations("fc")
    np.testing.assert_allclose(fig.axes[2].images[0].get_array(), w)
    np.testing.assert_allclose(fig.axes[3].images[0].get_array(), w[pi][:, po])
    k = keras.ops.convert_to_numpy(model.get_layer("conv").kernel)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), np.sqrt((k ** 2).sum(axis=(0, 1))), rtol=1e-5)
    one = block_structure(model.get_layer("fc"), s)
    assert len(one.axes) == 2 and one.axes[1].get_title() == "fc: |W|, grouped order"
    fig.savefig(tmp_path / "blocks.png")
    assert (tmp_path / "blocks.png").stat().st_size > 1000


def test_errors():
    model, s = setup()
    with pytest.raises(ValueError, match=r"block_structure: Expected a layer of the structure \(\['conv', 'fc'\]\). Received: layer='dense"):
        block_structure(model.layers[-1], s)
    with pytest.raises(ValueError, match=r"Expected a layer of model .*Received: layer='nope'"):
        block_structure(model, s, layer="nope")
    with pytest.raises(TypeError, match="Expected a GroupStructure. Received: structure of type dict"):
        block_structure(model, {})
