"""keras-hub encoders and decoders: a tiny BertBackbone, ViTBackbone and GPT2Backbone (built from a
config, no weights) shrink with equal outputs when heads and feed-forward units are zero, an
encoder or decoder that loses heads becomes the toolkit's block with the same computation, and
the budget pruner prunes keras-hub encoder and decoder models to a MAC target."""

import keras
import numpy as np
import pytest

import tf_groupsparse as tgs
from tf_groupsparse.graph import TransformerBlock, build_graph

keras_hub = pytest.importorskip("keras_hub")
L = keras.layers


def bert(seed=0):
    keras.utils.set_random_seed(seed)
    return keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=4, hidden_dim=16,
                                         intermediate_dim=32, max_sequence_length=12)


def tokens(n=3, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, 12), bool)
    mask[1, 8:] = mask[2, 5:] = False
    return {"token_ids": rng.integers(0, 50, (n, 12)), "segment_ids": rng.integers(0, 2, (n, 12)),
            "padding_mask": mask}


def zero_heads(encoder, heads):
    mha = encoder._self_attention_layer
    for d in (mha.query_dense, mha.key_dense, mha.value_dense):
        for v, index in ((d.kernel, (slice(None), heads)), (d.bias, (heads,))):
            value = v.numpy()
            value[index] = 0
            v.assign(value)


def zero_units(encoder, units):
    ff = encoder._feedforward_intermediate_dense
    k, b = ff.kernel.numpy(), ff.bias.numpy()
    k[:, units], b[units] = 0, 0
    ff.kernel.assign(k)
    ff.bias.assign(b)


def test_bert_loses_exactly_the_zero_heads_and_units_with_equal_outputs(tmp_path):
    model = bert()
    zero_heads(model.get_layer("transformer_layer_0"), [1, 2])
    zero_units(model.get_layer("transformer_layer_1"), [3, 5, 7])
    small = tgs.shrink(model, threshold=0.0)
    first, second = small.get_layer("transformer_layer_0"), small.get_layer("transformer_layer_1")
    assert isinstance(first, TransformerBlock) and (first.num_heads, first.key_dim) == (2, 4)
    assert type(second).__name__ == "TransformerEncoder" and second.intermediate_dim == 29
    x = tokens()
    want, got = model.predict(x, verbose=0), small.predict(x, verbose=0)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5)
    assert small.count_params() == model.count_params() - 2 * (3 * (16 * 4 + 4) + 4 * 16) - 3 * (16 + 1 + 16)

    path = tmp_path / "bert.keras"
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["sequence_output"], got["sequence_output"], atol=1e-6)


def zero_dims(attention, key_dims=(), value_dims=()):
    """Zero key dims (the query's, every head) and value dims (the value's, every head)."""
    for dense, dims in ((attention.query_dense, key_dims), (attention.value_dense, value_dims)):
        k, b = dense.kernel.numpy(), dense.bias.numpy()
        k[:, :, list(dims)], b[:, list(dims)] = 0, 0
        dense.kernel.assign(k)
        dense.bias.assign(b)


@pytest.mark.parametrize("kind", ["bert", "vit", "gpt2"])
def test_zero_key_and_value_dims_go_with_equal_outputs(kind, tmp_path):
    model, x = {"bert": (bert, tokens), "vit": (vit, images), "gpt2": (gpt2, gpt_tokens)}[kind]
    model, x = model(), x()
    if kind == "vit":
        attention = model.get_layer("vit_encoder").encoder_layers[1].mha
    else:
        attention = model.get_layer("transformer_layer_1")._self_attention_layer
    zero_dims(attention, key_dims=[0, 2], value_dims=[3])
    small = tgs.shrink(model, threshold=0.0)
    block = small.get_layer("vit_encoder").blocks[1] if kind == "vit" else small.get_layer("transformer_layer_1")
    assert (block.num_heads, block.key_dim, block.value_dim) == (4, 2, 3)
    def outputs(m):  # BERT's outputs are a dict
        y = m.predict(x, verbose=0)
        return [y[k] for k in sorted(y)] if isinstance(y, dict) else [y]

    for got, want in zip(outputs(small), outputs(model)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    path = tmp_path / "dims.keras"
    small.save(path)
    for got, want in zip(outputs(keras.saving.load_model(path, safe_mode=True)), outputs(small)):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_hidden_channels_of_bert_are_tied_to_its_outputs():
    graph = build_graph(bert())
    node = next(n for n in graph.nodes if n.name == "transformer_layer_0")
    assert set(node.internal) == {"heads", "key_dim", "value_dim", "intermediate"}
    assert graph.frozen_groups[graph.labels[node.inputs[0][0]]].all()  # hidden: an output
    assert not graph.frozen_groups[graph.labels[node.internal["heads"]]].any()


def encoder_classifier(seed=0, normalize_first=False):
    keras.utils.set_random_seed(seed)
    ids = keras.Input((12,), dtype="int32", name="ids")
    h = L.Embedding(50, 16, name="tokens")(ids)
    h = L.Add(name="embed")([h, keras_hub.layers.PositionEmbedding(12, name="positions")(h)])
    for i in range(2):
        h = keras_hub.layers.TransformerEncoder(32, 4, activation="gelu", normalize_first=normalize_first,
                                                name=f"encoder{i}")(h)
    return keras.Model(ids, L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(h)))


def test_encoder_macs_are_attention_plus_feed_forward():
    model = encoder_classifier()
    t, d, h, k, i = 12, 16, 4, 4, 32
    attention = 3 * t * d * h * k + t * t * h * 2 * k + t * h * k * d
    costs = {r["layer"]: r["macs"] for r in tgs.metrics.layer_costs(model).rows}
    assert costs["encoder0"] == costs["encoder1"] == attention + t * 2 * d * i


@pytest.mark.parametrize("normalize_first", [False, True])
def test_prune_a_keras_hub_encoder_model_to_a_mac_budget(tmp_path, normalize_first):
    model = encoder_classifier(normalize_first=normalize_first)
    before = tgs.metrics.flops(model)
    small, report = tgs.prune(model, macs=0.7, allow_untrained=True, verbose=0)
    assert tgs.metrics.flops(small) <= 0.7 * before * 1.02
    for name in ("encoder0", "encoder1"):
        layer = small.get_layer(name)
        assert 1 <= layer.num_heads <= 4 and layer.intermediate_dim >= 1
    x = np.random.default_rng(0).integers(0, 50, (4, 12))
    assert small.predict(x, verbose=0).shape == (4, 3)
    path = tmp_path / "pruned.keras"
    small.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path, safe_mode=True).predict(x, verbose=0),
                               small.predict(x, verbose=0), atol=1e-6)


def test_transformer_block_computes_what_the_keras_hub_encoder_computes():
    keras.utils.set_random_seed(3)
    encoder = keras_hub.layers.TransformerEncoder(24, 2, activation="gelu", normalize_first=True)
    x = np.random.default_rng(3).standard_normal((2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    want = encoder(x, padding_mask=mask)
    block = TransformerBlock(24, 2, key_dim=4, activation="gelu", normalize_first=True)
    block(x)
    block.set_weights(encoder.get_weights())
    np.testing.assert_allclose(block(x, padding_mask=mask), want, atol=1e-6)
    restored = TransformerBlock.from_config(block.get_config())
    assert restored.get_config() == block.get_config()
    with pytest.raises(ValueError, match="num_heads"):
        TransformerBlock(24, 0, key_dim=4)


def vit(seed=0):
    keras.utils.set_random_seed(seed)
    return keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=4,
                                        hidden_dim=16, mlp_dim=32)


def images(n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 16, 16, 3)).astype("float32")


def assert_equal_and_reloads(small, model, x, path):
    """`small` computes what `model` does on `x`, and saves and loads with safe_mode."""
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small.predict(x, verbose=0), atol=1e-6)


def test_vit_loses_exactly_the_zero_heads_and_units_with_equal_outputs(tmp_path):
    model = vit()
    blocks = model.get_layer("vit_encoder").encoder_layers
    mha = blocks[0].mha
    for d in (mha.query_dense, mha.key_dense, mha.value_dense):
        for v, index in ((d.kernel, (slice(None), [0, 3])), (d.bias, ([0, 3],))):
            value = v.numpy()
            value[index] = 0
            v.assign(value)
    dense = blocks[1].mlp.dense_1
    k, b = dense.kernel.numpy(), dense.bias.numpy()
    k[:, :5], b[:5] = 0, 0
    dense.kernel.assign(k)
    dense.bias.assign(b)

    report = tgs.sparsity_report(model, threshold=0.0)
    assert report.row("vit_encoder")["heads"] == 8 and report.row("vit_encoder")["zero_heads"] == 2
    small = tgs.shrink(model, threshold=0.0)
    stack = small.get_layer("vit_encoder")
    assert isinstance(stack, tgs.graph.TransformerStack)
    assert [(b.num_heads, b.intermediate_dim) for b in stack.blocks] == [(2, 32), (4, 27)]
    assert_equal_and_reloads(small, model, images(), tmp_path / "vit.keras")


def test_prune_a_small_vit_to_half_its_macs_with_valid_head_counts(tmp_path):
    model = vit()
    before = tgs.flops(model)
    small, _ = tgs.prune(model, macs=0.5, allow_untrained=True, verbose=0)
    assert tgs.flops(small) <= 0.5 * before * 1.02
    stack = small.get_layer("vit_encoder")
    assert all(1 <= b.num_heads <= 4 and 1 <= b.key_dim <= 4 and 1 <= b.value_dim <= 4 and b.intermediate_dim >= 1
               for b in stack.blocks)
    x = images()
    path = tmp_path / "vit_half.keras"
    small.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path, safe_mode=True).predict(x, verbose=0),
                               small.predict(x, verbose=0), atol=1e-6)
    # and again: a TransformerStack prunes like the encoder it came from
    smaller, _ = tgs.prune(small, macs=0.8, allow_untrained=True, verbose=0)
    assert tgs.flops(smaller) <= 0.8 * tgs.flops(small) * 1.02


def test_head_lasso_on_a_vit_classifier_zeroes_heads_that_shrink_removes():
    backbone = vit()
    mha = backbone.get_layer("vit_encoder").encoder_layers[0].mha  # heads 1 and 2 start weak
    for kernel, index in ((mha.query_dense.kernel, (slice(None), [1, 2])), (mha.key_dense.kernel, (slice(None), [1, 2])),
                          (mha.value_dense.kernel, (slice(None), [1, 2])), (mha.output_dense.kernel, ([1, 2],))):
        value = kernel.numpy()
        value[index] *= 0.01
        kernel.assign(value)
    model = keras.Model(backbone.input, L.Dense(3, name="classes")(backbone.output[:, 0, :]))
    r = tgs.regularize(model, tgs.regularizers.GroupLasso(0.5, axis="head"), proximal=True)
    prox = r.get_layer("classes").kernel.constraint
    assert prox.n_groups == 8  # one per head of each block
    x, y = images(16), np.arange(16) % 3
    r.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    r.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[tgs.callbacks.ProximalStep()])
    assert tgs.sparsity_report(r, threshold=0.0).row("vit_encoder")["zero_heads"] == 2
    small = tgs.shrink(r, threshold=0.0)
    assert [b.num_heads for b in small.get_layer("vit_encoder").blocks] == [2, 4]
    np.testing.assert_allclose(small.predict(x, verbose=0), r.predict(x, verbose=0), atol=1e-5)


def test_patch_embedding_computes_what_vit_patching_computes():
    layer = vit().get_layer("vit_patching_and_embedding")
    mine = tgs.graph.PatchEmbedding((16, 16), (4, 4), 16)
    x = images()
    mine(x)
    mine.set_weights(layer.get_weights())
    np.testing.assert_allclose(mine(x), layer(x), atol=1e-6)


def test_a_pruned_vit_exports_to_litert_with_equal_outputs(tmp_path):
    backbone = vit()
    model = keras.Model(backbone.input, L.Dense(3, name="classes")(backbone.output[:, 0, :]))
    small, _ = tgs.prune(model, macs=0.5, allow_untrained=True, verbose=0)
    report = tgs.export(small, tmp_path / "vit", sample=images(4), reference=model, latency_runs=3, verbose=0)
    assert report.max_abs_error <= 1e-4 and report.saved_model_max_abs_error <= 1e-4
    assert report.speedup > 0 and report.rows[0]["macs"] < report.rows[1]["macs"]


# --------------------------------------------------------------------------- decoders


def gpt2(seed=0):
    keras.utils.set_random_seed(seed)
    return keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=4, hidden_dim=16,
                                         intermediate_dim=32, max_sequence_length=12)


def gpt_tokens(n=3, seed=0):
    mask = np.ones((n, 12), bool)
    mask[1, 8:] = mask[2, 5:] = False
    return {"token_ids": np.random.default_rng(seed).integers(0, 50, (n, 12)), "padding_mask": mask}


def test_gpt2_loses_exactly_the_zero_heads_and_units_with_equal_outputs(tmp_path):
    model = gpt2()
    first, second = (model.get_layer(f"transformer_layer_{i}") for i in (0, 1))
    zero_heads(first, [1, 2])
    zero_units(second, list(range(9)))
    small = tgs.shrink(model, threshold=0.0)
    a, b = small.get_layer("transformer_layer_0"), small.get_layer("transformer_layer_1")
    assert isinstance(a, tgs.graph.TransformerDecoderBlock) and (a.num_heads, a.key_dim) == (2, 4)
    assert type(b).__name__ == "TransformerDecoder" and b.intermediate_dim == 23  # keras-hub can say it
    assert_equal_and_reloads(small, model, gpt_tokens(), tmp_path / "gpt2.keras")


def test_prune_a_gpt_style_decoder_model_to_half_its_macs_with_valid_head_counts(tmp_path):
    keras.utils.set_random_seed(0)  # MACs need a fixed sequence length (GPT2Backbone's inputs have none)
    ids = keras.Input((12,), dtype="int32")
    x = L.Embedding(50, 16)(ids)
    for i in range(2):
        x = keras_hub.layers.TransformerDecoder(32, 4, normalize_first=True, name=f"decoder_{i}")(x)
    model = keras.Model(ids, L.Dense(50)(L.LayerNormalization()(x)))
    small, _ = tgs.prune(model, macs=0.5, allow_untrained=True, verbose=0)
    assert tgs.flops(small) <= 0.5 * tgs.flops(model) * 1.02
    for i in (0, 1):
        block = small.get_layer(f"decoder_{i}")
        assert 1 <= block.num_heads <= 4 and block.intermediate_dim >= 1
    x = gpt_tokens()["token_ids"]
    path = tmp_path / "decoder_half.keras"
    small.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path, safe_mode=True).predict(x, verbose=0),
                               small.predict(x, verbose=0), atol=1e-6)


def test_a_nested_keras_hub_backbone_is_named_with_the_fix():
    backbone = gpt2()
    ids, mask = keras.Input((12,), dtype="int32"), keras.Input((12,), dtype="bool")
    model = keras.Model([ids, mask], backbone({"token_ids": ids, "padding_mask": mask}))
    with pytest.raises(ValueError, match="nested model 'gpt2_backbone'.*Pass that model itself"):
        tgs.shrink(model)


def cross_decoder(seed=0):
    keras.utils.set_random_seed(seed)
    decoder_in, encoder_in = keras.Input((6, 16), name="decoder_in"), keras.Input((4, 12), name="encoder_in")
    encoded = L.Dense(12, name="encode")(encoder_in)
    y = keras_hub.layers.TransformerDecoder(24, 2, name="decoder")(decoder_in, encoded)
    return keras.Model([decoder_in, encoder_in], L.Dense(3, name="out")(y))


def test_decoder_macs_count_self_and_cross_attention_and_feed_forward():
    # self: q, k, v 3*6*16*16, scores and values 6*6*2*(8+8), output 6*16*16; cross: query 6*16*16,
    # key and value over the 4 encoder positions 2*4*12*16, 6*4*2*(8+8), output 6*16*16;
    # feed-forward 2*6*16*24; encode 4*12*12; out 6*16*3
    want = (4608 + 1152 + 1536) + (1536 + 1536 + 768 + 1536) + 4608 + 576 + 288
    assert tgs.flops(cross_decoder()) == want


def test_cross_attention_heads_go_apart_and_read_the_encoder_channels():
    model = cross_decoder()
    cross = model.get_layer("decoder")._cross_attention_layer
    for d in (cross.query_dense, cross.key_dense, cross.value_dense):
        k, b = d.kernel.numpy(), d.bias.numpy()
        k[:, 0], b[0] = 0, 0
        d.kernel.assign(k)
        d.bias.assign(b)
    encode = model.get_layer("encode")  # encoder channels 0 and 5 read by nothing but cross key/value
    k, b = encode.kernel.numpy(), encode.bias.numpy()
    k[:, [0, 5]], b[[0, 5]] = 0, 0
    encode.kernel.assign(k)
    encode.bias.assign(b)
    small = tgs.shrink(model, threshold=0.0)
    block = small.get_layer("decoder")
    assert isinstance(block, tgs.graph.TransformerDecoderBlock)
    assert (block.num_heads, block.cross_num_heads, small.get_layer("encode").units) == (2, 1, 10)
    rng = np.random.default_rng(0)
    x = [rng.random((2, 6, 16)).astype("float32"), rng.random((2, 4, 12)).astype("float32")]
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert tgs.flops(small) < tgs.flops(model)


@pytest.mark.parametrize("normalize_first", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_decoder_block_computes_what_the_keras_hub_decoder_computes(normalize_first, cross):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x, e = rng.standard_normal((2, 5, 8)).astype("float32"), rng.standard_normal((2, 3, 6)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    hub = keras_hub.layers.TransformerDecoder(12, 2, normalize_first=normalize_first)
    mine = tgs.graph.TransformerDecoderBlock(12, 2, key_dim=4, normalize_first=normalize_first)
    args = (x, e) if cross else (x,)
    want = hub(*args, decoder_padding_mask=mask)
    mine(*args, decoder_padding_mask=mask)
    mine.set_weights(hub.get_weights())
    np.testing.assert_allclose(mine(*args, decoder_padding_mask=mask), want, atol=1e-5)
    np.testing.assert_allclose(mine(*args, use_causal_mask=False), hub(*args, use_causal_mask=False), atol=1e-5)
    restored = tgs.graph.TransformerDecoderBlock.from_config(mine.get_config())
    assert restored.get_config() == mine.get_config()
    with pytest.raises(ValueError, match="key/value cache"):
        mine(*args, self_attention_cache=np.zeros((2, 2, 5, 2, 4), "float32"))
    other = (x,) if cross else (x, e)   # called without (with) the encoder sequence it was built with (without)
    with pytest.raises(ValueError, match=rf"Expected the encoder sequence it was built with \({'one' if cross else 'none'}\)"
                                         rf"\. Received: encoder_sequence={'None' if cross else 'a tensor'}"):
        mine(*other)
