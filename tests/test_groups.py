import keras
import numpy as np
import pytest
from _backend import value_and_grad

from tf_groupsparse.penalties import groups

pytestmark = pytest.mark.backends  # also run under JAX and PyTorch by `make test`


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5), (3, 3, 4, 5), (2, 2, 2, 3, 4)])
@pytest.mark.parametrize("axis", ["input", "output"])
def test_grouped_rows_are_channel_slices_and_invert(shape, axis):
    w = np.random.randn(*shape).astype("float32")
    rows = np.asarray(groups.grouped(w, axis))
    idx = -2 if axis == "input" else -1
    assert rows.shape[0] == shape[idx]
    for g in range(shape[idx]):
        expected = np.take(w, g, axis=len(shape) + idx)
        np.testing.assert_array_equal(np.sort(rows[g]), np.sort(expected.ravel()))
        assert np.isclose(np.linalg.norm(rows[g]), np.linalg.norm(expected))
    back = np.asarray(groups.ungrouped(rows, shape, axis))
    np.testing.assert_array_equal(back, w)


def test_kernel_blocks_layout():
    w = np.random.randn(3, 3, 4, 5).astype("float32")
    blocks = np.asarray(groups.kernel_blocks(w))
    assert blocks.shape == (4, 5, 9)
    np.testing.assert_array_equal(blocks[2, 3], w[:, :, 2, 3].ravel())


def test_safe_norms_have_zero_gradient_at_zero():
    ops = keras.ops
    _, grad = value_and_grad(
        lambda x: ops.sum(groups.safe_l2(x, axis=1)) + ops.sum(groups.safe_sqrt(groups.l1(x))), np.zeros((3, 4), "float32"))
    assert np.all(np.isfinite(grad)) and np.all(grad == 0)


def test_bad_kernel_and_axis():
    with pytest.raises(ValueError, match=r"Expected a kernel of rank >= 2.*Received: kernel.shape=\(5,\)"):
        groups.grouped(np.zeros(5, "float32"), "input")
    with pytest.raises(ValueError, match=r"Expected `axis` to be one of 'input', 'output'. Received: axis='rows'"):
        groups.check_axis("rows")
