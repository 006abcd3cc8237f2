"""MultiHeadAttention in the dependency graph: heads, key dims and value dims shrink exactly,
their MACs are counted exactly, and the budget pruner prunes transformer blocks."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tf_groupsparse as tgs
from tf_groupsparse.graph import build_graph, remove_groups
from tf_groupsparse.pruning.cost import CostModel

L = keras.layers


def block(heads=4, key_dim=8, value_dim=None, d_model=16, ff=32, seq=6, cross=False, mask=False, seed=0):
    """Embedding projection, (cross-)attention with a residual add and LayerNorm, a feed-forward
    block with a residual add, pooling and a classifier head."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((seq, 12), name="x")
    inputs = [x]
    h = L.Dense(d_model, name="embed")(x)
    kwargs = {}
    if mask:
        m = keras.Input((seq, seq + 2 if cross else seq), dtype="bool", name="mask")
        inputs.append(m)
        kwargs["attention_mask"] = m
    if cross:
        c = keras.Input((seq + 2, 10), name="context")
        inputs.insert(1, c)
        ctx = L.Dense(20, name="context_proj")(c)
        a = L.MultiHeadAttention(heads, key_dim, value_dim=value_dim, name="mha")(h, ctx, **kwargs)
    else:
        a = L.MultiHeadAttention(heads, key_dim, value_dim=value_dim, name="mha")(h, h, **kwargs)
    h = L.LayerNormalization(name="ln1")(L.Add(name="res1")([h, a]))
    f = L.Dense(d_model, name="ff2")(L.Dense(ff, activation="gelu", name="ff1")(h))
    h = L.Add(name="res2")([h, f])
    return keras.Model(inputs, L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(h)))


def sample(model, n=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for t in model.inputs:
        shape = (n,) + tuple(t.shape[1:])
        out.append(rng.random(shape) > 0.3 if t.dtype == "bool" else rng.standard_normal(shape).astype("float32"))
    return out


def zero_units(model, heads=(), key_dims=(), value_dims=(), key_kernel_only=False):
    """Zero attention units of layer "mha" in place: heads (q, k, v and biases), key dims (query
    kernel and bias, or with `key_kernel_only` just the key kernel), value dims (value kernel and bias)."""
    mha = model.get_layer("mha")

    def zero(variable, index):
        value = variable.numpy()
        value[index] = 0.0
        variable.assign(value)

    for h in heads:
        for d in (mha.query_dense, mha.key_dense, mha.value_dense):
            zero(d.kernel, (slice(None), h))
            zero(d.bias, (h,))
    for j in key_dims:
        if key_kernel_only:
            zero(mha.key_dense.kernel, (slice(None), slice(None), j))
        else:
            zero(mha.query_dense.kernel, (slice(None), slice(None), j))
            zero(mha.query_dense.bias, (slice(None), j))
    for j in value_dims:
        zero(mha.value_dense.kernel, (slice(None), slice(None), j))
        zero(mha.value_dense.bias, (slice(None), j))


def test_zero_heads_and_dims_go_and_outputs_stay(tmp_path):
    model = block()
    zero_units(model, heads=[1], key_dims=[2], value_dims=[5])
    small, report = tgs.shrink(model, threshold=0.0, return_report=True)
    mha = small.get_layer("mha")
    assert (mha.num_heads, mha.key_dim, mha.value_dim) == (3, 7, 7)
    (row,) = [r for r in report.rows if r["layer"] == "mha"]
    assert (row["heads_before"], row["heads_after"], row["key_dim_after"], row["value_dim_after"]) == (4, 3, 7, 7)
    x = sample(model)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    small.save(tmp_path / "small.keras")
    back = keras.models.load_model(tmp_path / "small.keras", safe_mode=True)
    np.testing.assert_array_equal(back.predict(x, verbose=0), small.predict(x, verbose=0))


def test_a_key_dim_whose_key_kernel_is_zero_goes_although_its_query_is_not():
    model = block()
    zero_units(model, key_dims=[0, 3], key_kernel_only=True)  # scores shift by a constant per query
    small = tgs.shrink(model, threshold=0.0)
    assert small.get_layer("mha").key_dim == 6
    x = sample(model)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_a_head_with_a_nonzero_value_bias_stays():
    model = block()
    zero_units(model, heads=[2])
    bias = model.get_layer("mha").value_dense.bias
    value = bias.numpy()
    value[2, 0] = 0.5  # the head now adds a constant to the output: not removed by shrink
    bias.assign(value)
    assert tgs.shrink(model, threshold=0.0).get_layer("mha").num_heads == 4


def test_cross_attention_with_a_mask_shrinks_both_streams():
    model = block(cross=True, mask=True, value_dim=6)
    zero_units(model, heads=[0, 3], value_dims=[1])
    proj = model.get_layer("context_proj")  # two context channels that nothing reads any more
    mha = model.get_layer("mha")
    for d in (mha.key_dense, mha.value_dense):
        k = d.kernel.numpy()
        k[[4, 9]] = 0.0
        d.kernel.assign(k)
    small = tgs.shrink(model, threshold=0.0)
    assert (small.get_layer("mha").num_heads, small.get_layer("mha").value_dim) == (2, 5)
    assert small.get_layer("context_proj").units == proj.units - 2
    x = sample(model)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_heads_are_groups_with_a_readable_name():
    graph = build_graph(block())
    heads = graph.groups("mha:heads")
    assert len(heads) == 4
    assert str(heads[1]) == "prune heads of mha [1]"  # a head's slices all belong to mha
    assert len(graph.groups("mha:key_dim")) == 8 and len(graph.groups("mha:value_dim")) == 8


def _attention_macs(t, s, dq, dk, dv, h, kd, vd, do):
    return t * dq * h * kd + s * dk * h * kd + s * dv * h * vd + t * s * h * (kd + vd) + t * h * vd * do


def test_attention_macs_follow_the_formula_and_the_cost_model_after_removals():
    model = block(cross=True, value_dim=6)
    costs = {r["layer"]: r["macs"] for r in tgs.layer_costs(model).rows}
    assert costs["mha"] == _attention_macs(6, 8, 16, 20, 20, 4, 8, 6, 16)
    graph = build_graph(model)
    rng = np.random.default_rng(0)
    groups = [g for g in graph.groups() if not g.lossy]
    for _ in range(3):
        chosen = [groups[i] for i in rng.choice(len(groups), 6, replace=False)]
        cost = CostModel(graph)
        cost.remove(chosen)
        small = remove_groups(graph, chosen)
        assert cost.macs == tgs.flops(small) and cost.params == small.count_params()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads=st.integers(1, 4), key_dim=st.integers(1, 6), value_dim=st.integers(1, 6), data=st.data())
def test_random_blocks_shrink_exactly(heads, key_dim, value_dim, data):
    model = block(heads=heads, key_dim=key_dim, value_dim=value_dim, seed=heads * 100 + key_dim)
    zh = data.draw(st.lists(st.integers(0, heads - 1), unique=True, max_size=heads - 1))
    zk = data.draw(st.lists(st.integers(0, key_dim - 1), unique=True, max_size=key_dim - 1))
    zv = data.draw(st.lists(st.integers(0, value_dim - 1), unique=True, max_size=value_dim - 1))
    zf = data.draw(st.lists(st.integers(0, 31), unique=True, max_size=31))  # feed-forward units
    zero_units(model, heads=zh, key_dims=zk, value_dims=zv)
    zero_columns(model.get_layer("ff1"), zf)
    small = tgs.shrink(model, threshold=0.0)
    mha = small.get_layer("mha")
    assert (mha.num_heads, mha.key_dim, mha.value_dim) == (heads - len(zh), key_dim - len(zk), value_dim - len(zv))
    assert small.get_layer("ff1").units == 32 - len(zf)
    x = sample(model)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
    restored = _reloaded(small)
    np.testing.assert_allclose(restored.predict(x, verbose=0), small.predict(x, verbose=0), atol=1e-6)


def zero_columns(dense, units):
    """Zero output units of a Dense layer (kernel columns and biases) in place."""
    k, b = dense.kernel.numpy(), dense.bias.numpy()
    k[:, units], b[units] = 0.0, 0.0
    dense.kernel.assign(k)
    dense.bias.assign(b)


def _reloaded(model):
    """`model` saved as .keras and loaded back with safe_mode (in a directory removed after)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tgs-test-") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        return keras.saving.load_model(path, safe_mode=True)


def gqa_ff_block(query_heads, kv_heads, head_dim, seed):
    keras.utils.set_random_seed(seed)
    x = keras.Input((5, 12), name="x")
    h = L.Dense(16, name="embed")(x)
    a = L.GroupQueryAttention(head_dim, query_heads, kv_heads, name="gqa")(h, h)
    h = L.LayerNormalization(name="ln")(L.Add(name="res")([h, a]))
    f = L.Dense(16, name="ff2")(L.Dense(24, activation="relu", name="ff1")(h))
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling1D()(L.Add()([h, f]))))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kv_heads=st.integers(1, 3), ratio=st.integers(1, 2), head_dim=st.integers(1, 5), data=st.data())
def test_random_gqa_blocks_shrink_exactly(kv_heads, ratio, head_dim, data):
    model = gqa_ff_block(kv_heads * ratio, kv_heads, head_dim, seed=kv_heads * 10 + head_dim)
    w = _gqa_weights(model.get_layer("gqa"))
    zkv = data.draw(st.lists(st.integers(0, kv_heads - 1), unique=True, max_size=kv_heads - 1))
    zf = data.draw(st.lists(st.integers(0, 23), unique=True, max_size=23))
    out = w["attention_output/kernel"].numpy()
    for g in zkv:  # a kv head goes when the output rows of all its query heads are zero
        out[g * ratio:(g + 1) * ratio] = 0.0
    w["attention_output/kernel"].assign(out)
    zero_columns(model.get_layer("ff1"), zf)
    small = tgs.shrink(model, threshold=0.0)
    gqa = small.get_layer("gqa")
    assert (gqa.num_key_value_heads, gqa.num_query_heads) == (kv_heads - len(zkv), (kv_heads - len(zkv)) * ratio)
    assert small.get_layer("ff1").units == 24 - len(zf)
    x = sample(model)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
    restored = _reloaded(small)
    np.testing.assert_allclose(restored.predict(x, verbose=0), small.predict(x, verbose=0), atol=1e-6)


@pytest.mark.slow
def test_prune_a_trained_transformer_to_half_its_macs_and_export(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 6, 12)).astype("float32")
    y = (x[:, :, 0].mean(axis=1) > 0).astype("int64") + (x[:, :, 1].mean(axis=1) > 0).astype("int64")
    model = block(heads=4, key_dim=8, d_model=32, ff=64)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    small, report = tgs.prune(model, (x, y), macs=0.5, importance="taylor", verbose=0)
    assert report.totals["macs_fraction"] <= 0.5
    assert tgs.flops(small) <= 0.5 * tgs.flops(model)
    (row,) = [r for r in report.rows if r["layer"] == "mha:heads"]
    assert row["channels_after"] <= row["channels_before"]
    exported = tgs.export(small, str(tmp_path / "export"), sample=x[:32], verbose=0, latency_runs=5)
    assert exported.max_abs_error <= 1e-4


def gqa_block(query_heads=4, kv_heads=2, head_dim=6, d_model=16, seq=5, gate=False, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((seq, 12), name="x")
    h = L.Dense(d_model, name="embed")(x)
    a = L.GroupQueryAttention(head_dim, query_heads, kv_heads, use_gate=gate, name="gqa")(h, h)
    h = L.LayerNormalization(name="ln")(L.Add(name="res")([h, a]))
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(h)))


def _gqa_weights(layer):
    return {"/".join(w.path.split("/")[-2:]): w for w in layer.weights}


@pytest.mark.parametrize("gate", [False, True])
def test_group_query_attention_loses_whole_kv_groups_and_head_dims(gate):
    model = gqa_block(query_heads=6, kv_heads=3, gate=gate)
    w = _gqa_weights(model.get_layer("gqa"))

    def zero(name, index):
        value = w[name].numpy()
        value[index] = 0.0
        w[name].assign(value)

    # kv head 1 serves query heads 2 and 3: their output rows go, so the whole kv group is unused
    zero("attention_output/kernel", (slice(2, 4),))
    # head dim 4: zero in the key kernel (scores shift by a constant) and in the output rows
    zero("key/kernel", (slice(None), slice(None), 4))
    zero("attention_output/kernel", (slice(None), 4))
    small = tgs.shrink(model, threshold=0.0)
    gqa = small.get_layer("gqa")
    assert (gqa.num_query_heads, gqa.num_key_value_heads, gqa.head_dim) == (4, 2, 5)
    x = sample(model)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    graph = build_graph(model)
    assert len(graph.groups("gqa:kv_heads")) == 3
    costs = {r["layer"]: r["macs"] for r in tgs.layer_costs(model).rows}
    t = s = 5
    extra = t * 16 * 6 * 6 if gate else 0
    assert costs["gqa"] == t * 16 * 6 * 6 + 2 * s * 16 * 3 * 6 + extra + 2 * t * s * 6 * 6 + t * 6 * 6 * 16
    cost = CostModel(graph)
    chosen = graph.groups("gqa:kv_heads")[:1] + graph.groups("gqa:head_dim")[:2]
    cost.remove(chosen)
    assert cost.macs == tgs.flops(remove_groups(graph, chosen))


@pytest.mark.parametrize("equation, output_shape, bias_axes", [
    ("abc,cd->abd", (5, 10), "d"),
    ("...b,bc->...c", 10, "c"),
    ("abc,cde->abde", (5, 3, 10), "de"),
])
def test_einsum_dense_shrinks_like_dense(equation, output_shape, bias_axes):
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 8), name="x")
    h = L.EinsumDense(equation, output_shape=output_shape, bias_axes=bias_axes, activation="relu", name="e1")(x)
    if len(h.shape) == 4:
        h = L.Reshape((5, 3 * 10), name="merge")(h)
    y = L.EinsumDense("abc,cd->abd", output_shape=(5, 4), bias_axes="d", name="e2")(h)
    model = keras.Model(x, y)
    e2 = model.get_layer("e2")
    k = e2.kernel.numpy()
    dead = [1, 7] if h.shape[-1] == 10 else [1, 7, 11, 17, 21, 27]  # after the reshape: channel c of every head
    k[dead] = 0.0
    e2.kernel.assign(k)
    small = tgs.shrink(model, threshold=0.0)
    assert small.get_layer("e1").kernel.shape[-1] == 8
    xs = np.random.default_rng(0).standard_normal((3, 5, 8)).astype("float32")
    np.testing.assert_allclose(small.predict(xs, verbose=0), model.predict(xs, verbose=0), atol=1e-5)
    assert tgs.flops(small) < tgs.flops(model)


def test_einsum_dense_with_another_contraction_is_a_clear_error():
    x = keras.Input((5, 8))
    y = L.EinsumDense("abc,bd->acd", output_shape=(8, 4), name="odd")(x)
    with pytest.raises(ValueError, match=r"layer 'odd' of class EinsumDense: equation 'abc,bd->acd'"):
        build_graph(keras.Model(x, y))
