"""Head groups (``axis="head"``): one group per attention head over its slices of the query,
key, value and output projections; the proximal step drives whole heads to exact zero, shrink
removes exactly them and sparsity_report lists them."""

import keras
import numpy as np
import pytest

import tf_groupsparse as tgs
from test_attention import block, sample

L = keras.layers


def gqa_block(query_heads=4, kv_heads=2, head_dim=4, d_model=8, seq=6, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((seq, 12), name="x")
    h = L.Dense(d_model, name="embed")(x)
    a = L.GroupQueryAttention(head_dim, query_heads, kv_heads, name="gqa")(h, h)
    h = L.LayerNormalization(name="ln")(L.Add(name="res")([h, a]))
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(h)))


def head_norms(mha):
    """Per head: the l2 norm of its query/key/value kernel and bias slices and output rows."""
    parts = []
    for d in (mha.query_dense, mha.key_dense, mha.value_dense):
        k, b = d.kernel.numpy(), d.bias.numpy()
        parts.append(np.moveaxis(k, 1, 0).reshape(k.shape[1], -1))
        parts.append(b.reshape(b.shape[0], -1))
    o = mha.output_dense.kernel.numpy()
    parts.append(o.reshape(o.shape[0], -1))
    return np.sqrt(sum((p ** 2).sum(axis=1) for p in parts))


@pytest.mark.parametrize("scale_by_size", [False, True])
def test_head_penalty_equals_numpy_sum_of_head_norms(scale_by_size):
    m = block(heads=4, key_dim=4, d_model=8)
    r = tgs.regularize(m, tgs.regularizers.GroupLasso(0.01, axis="head", scale_by_size=scale_by_size))
    mha = r.get_layer("mha")
    size = 3 * (8 * 4 + 4) + 4 * 8  # q, k, v kernel columns and biases; output rows
    c = np.sqrt(size) if scale_by_size else 1.0
    expected = 0.01 * c * head_norms(mha).sum()
    np.testing.assert_allclose(float(sum(keras.ops.convert_to_numpy(v) for v in r.losses)), expected, rtol=1e-5)


def test_proximal_head_lasso_zeroes_weak_heads_and_shrink_removes_exactly_them(tmp_path):
    m = block(heads=4, key_dim=4, d_model=8)
    mha = m.get_layer("mha")
    for d in (mha.query_dense, mha.key_dense, mha.value_dense):  # heads 1 and 3 start weak
        k = d.kernel.numpy()
        k[:, [1, 3]] *= 0.01
        d.kernel.assign(k)
    o = mha.output_dense.kernel.numpy()
    o[[1, 3]] *= 0.01
    mha.output_dense.kernel.assign(o)

    r = tgs.regularize(m, tgs.regularizers.GroupLasso(0.1, axis="head"), proximal=True)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 6, 12)).astype("float32"), rng.integers(0, 3, 64)
    r.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    r.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[tgs.callbacks.ProximalStep()])

    norms = head_norms(r.get_layer("mha"))
    assert (norms[[1, 3]] == 0).all() and (norms[[0, 2]] > 0).all(), norms
    report = tgs.sparsity_report(r, threshold=0.0)
    assert report.row("mha")["heads"] == 4 and report.row("mha")["zero_heads"] == 2
    assert report.totals["zero_heads"] == 2

    small = tgs.shrink(r, threshold=0.0)
    assert small.get_layer("mha").num_heads == 2
    np.testing.assert_allclose(small.predict(x[:8], verbose=0), r.predict(x[:8], verbose=0), atol=1e-5)

    path = tmp_path / "heads.keras"
    r.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("embed").kernel.constraint).__name__ == "CoupledProx"
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), r.predict(x[:8], verbose=0), atol=1e-6)


def test_gqa_head_groups_are_key_value_heads_with_their_query_heads():
    m = gqa_block()
    r = tgs.regularize(m, tgs.regularizers.GroupLasso(1e3, axis="head"), proximal=True)
    coupled = r.get_layer("embed").kernel.constraint
    assert coupled.n_groups == 2  # one per key/value head
    x = sample(r)[0]
    r.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    # a huge strength zeroes every head in one step; shrink then still keeps one (never the last)
    r.fit(x, np.zeros(len(x)), epochs=1, verbose=0, callbacks=[tgs.callbacks.ProximalStep()])
    gqa = r.get_layer("gqa")
    assert not np.any(gqa._query_dense.kernel.numpy()) and not np.any(gqa._key_dense.kernel.numpy())
    report = tgs.sparsity_report(r, threshold=0.0)
    assert report.row("gqa")["heads"] == 4
    small = tgs.shrink(r, threshold=0.0)
    g = small.get_layer("gqa")
    assert g.num_key_value_heads >= 1 and g.num_query_heads % g.num_key_value_heads == 0
    np.testing.assert_allclose(small.predict(x, verbose=0), r.predict(x, verbose=0), atol=1e-5)


def test_layers_picks_attention_layers_and_names_them_in_errors():
    m = block(heads=2, key_dim=4, d_model=8)
    r = tgs.regularize(m, tgs.regularizers.GroupLasso(0.01, axis="head"), layers=["mha"])
    assert r.get_layer("embed").kernel.regularizer.n_groups == 2
    with pytest.raises(ValueError, match=r"attention layers.*'mha'.*layers=\['ff1'\]"):
        tgs.regularize(m, tgs.regularizers.GroupLasso(0.01, axis="head"), layers=["ff1"])
    dense_only = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    with pytest.raises(ValueError, match="MultiHeadAttention"):
        tgs.regularize(dense_only, tgs.regularizers.GroupLasso(0.01, axis="head"))


def test_head_axis_on_one_kernel_is_a_clear_error():
    penalty = tgs.regularizers.GroupLasso(0.1, axis="head")
    with pytest.raises(ValueError, match="tgs.regularize"):
        penalty(keras.ops.ones((4, 3)))
    with pytest.raises(ValueError, match="tgs.regularize"):
        penalty.to_constraint()
    with pytest.raises(ValueError, match="axis"):
        tgs.regularizers.ExclusiveSparsity(0.1, axis="head")  # no head form
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(penalty)).axis == "head"
