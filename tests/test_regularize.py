import warnings

import keras
import numpy as np
import pytest

from tf_groupsparse import penalties as prox_mod
from tf_groupsparse import regularize
from tf_groupsparse.regularizers import (
    CombinedGroupExclusive,
    GroupLasso,
    HierarchicalGroupSparse,
    cges_mu_schedule,
)

L = keras.layers


def cnn():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(4, 3, name="c1"),
        L.BatchNormalization(name="bn"),
        L.Conv2D(6, 3, name="c2", kernel_regularizer=None),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(3, name="fc"),
    ], name="cnn")


def nested():
    inner = keras.Sequential([keras.Input((5,)), L.Dense(4, name="d1"), L.Dense(4, name="d2")], name="inner")
    inp = keras.Input((5,), name="x")
    out = L.Dense(2, name="head")(inner(inp))
    return keras.Model(inp, out, name="outer")


def group_lasso_ref(w, strength, axis="input"):
    rows = np.moveaxis(w, -2 if axis == "input" else -1, 0).reshape(w.shape[-2 if axis == "input" else -1], -1)
    return strength * np.sqrt((rows.astype("float64") ** 2).sum(axis=1)).sum()


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, n)


def test_original_untouched_weights_copied_and_outputs_equal():
    model = cnn()
    before = [w.copy() for w in model.get_weights()]
    reg = GroupLasso(1e-2, axis="output")
    reg_config = reg.get_config()
    new = regularize(model, reg)
    assert new is not model and new.name == model.name
    for layer in model.layers:
        assert getattr(layer, "kernel_regularizer", None) is None
    assert model.losses == [] and reg.get_config() == reg_config
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(before, new.get_weights()))
    x, _ = data(8)
    np.testing.assert_array_equal(model.predict(x, verbose=0), new.predict(x, verbose=0))
    regs = [new.get_layer(n).kernel_regularizer for n in ("c1", "c2", "fc")]
    assert all(isinstance(r, GroupLasso) and r.get_config() == reg_config for r in regs)
    assert len({id(r) for r in regs} | {id(reg)}) == 4        # no object shared
    assert new.get_layer("bn").get_config() == model.get_layer("bn").get_config()


def test_losses_hold_the_penalty_value_and_fit_uses_it():
    model = cnn()
    new = regularize(model, GroupLasso(0.05), layers=["c1", "fc"])
    expected = sum(group_lasso_ref(model.get_layer(n).get_weights()[0], 0.05) for n in ("c1", "fc"))
    assert len(new.losses) == 2
    assert float(sum(np.asarray(v) for v in new.losses)) == pytest.approx(expected, rel=1e-5)

    new.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    x, y = data()
    probs = new.predict(x, verbose=0).astype("float64")
    logits_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=False)
    ce = float(logits_ce(y, probs))
    total = new.evaluate(x, y, verbose=0, batch_size=32)
    assert total == pytest.approx(ce + expected, rel=1e-4)
    history = new.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Training changed the new model only.
    assert not np.array_equal(new.get_layer("c1").get_weights()[0], model.get_layer("c1").get_weights()[0])


@pytest.mark.parametrize(
    "layers, expected",
    [
        ("c2", ["c2"]),
        (["fc", "c1"], ["fc", "c1"]),
        (L.Conv2D, ["c1", "c2"]),
        ((L.Dense, L.Conv2D), ["c1", "c2", "fc"]),
        (lambda layer: layer.name.endswith("2"), ["c2"]),
    ],
)
def test_layer_selection_modes(layers, expected):
    new, report = regularize(cnn(), keras.regularizers.L2(1e-3), layers=layers, return_report=True)
    assert [r["layer"] for r in report.rows] == expected
    for name in ("c1", "c2", "fc"):
        attached = new.get_layer(name).kernel_regularizer
        assert (attached is not None) == (name in expected)
    assert report.totals == {"layers": len(expected), "attached": len(expected)}
    assert report.rows[0]["argument"] == "kernel_regularizer"
    assert report.rows[0]["attached"] == "L2(l2=0.001)"


def test_nested_models_by_path_and_by_model_name():
    model = nested()
    new = regularize(model, GroupLasso(1e-3), layers="inner")
    inner = new.get_layer("inner")
    assert isinstance(inner.get_layer("d1").kernel_regularizer, GroupLasso)
    assert isinstance(inner.get_layer("d2").kernel_regularizer, GroupLasso)
    assert new.get_layer("head").kernel_regularizer is None
    assert model.get_layer("inner").get_layer("d1").kernel_regularizer is None
    new2 = regularize(model, GroupLasso(1e-3), layers=["inner/d2", "head"])
    assert new2.get_layer("inner").get_layer("d1").kernel_regularizer is None
    assert new2.get_layer("inner").get_layer("d2").kernel_regularizer is not None
    x = np.random.default_rng(0).random((4, 5), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), new2.predict(x, verbose=0))
    assert len(new.losses) == 2


def test_dict_maps_layers_to_regularizers_with_cges_schedule():
    model = cnn()
    names = ["c1", "c2", "fc"]
    mus = cges_mu_schedule(len(names))
    mapping = {n: CombinedGroupExclusive(1e-3, mu=mu) for n, mu in zip(names, mus)}
    new = regularize(model, mapping)
    assert [new.get_layer(n).kernel_regularizer.mu for n in names] == pytest.approx([0.8, 0.6, 0.4])
    assert all(new.get_layer(n).kernel_regularizer is not mapping[n] for n in names)
    with pytest.raises(ValueError, match=r"regularize: Expected layers=None when `regularizer` is a dict"):
        regularize(model, mapping, layers="c1")
    with pytest.raises(ValueError, match=r"Available layers with kernels: \['c1', 'c2', 'fc'\]\. "
                                         r"Received: layers name 'c9'"):
        regularize(model, {"c9": GroupLasso(1e-3)})


def test_proximal_attaches_constraints_and_one_per_layer():
    model = cnn()
    new, report = regularize(model, GroupLasso(2e-3, axis="output", scale_by_size=True), proximal=True,
                             return_report=True)
    constraints = [new.get_layer(n).kernel_constraint for n in ("c1", "c2", "fc")]
    assert all(isinstance(c, prox_mod.ProxGroupLasso) for c in constraints)
    assert constraints[0].get_config() == {"strength": 2e-3, "axis": "output", "scale_by_size": True}
    assert len({id(c) for c in constraints}) == 3
    assert all(new.get_layer(n).kernel_regularizer is None for n in ("c1", "c2", "fc"))
    assert report.meta["proximal"] is True and report.rows[1]["argument"] == "kernel_constraint"
    assert model.get_layer("c1").kernel_constraint is None
    with pytest.raises(ValueError, match=r"to_constraint: Expected a penalty with a closed-form proximal "
                                         r"operator .* HierarchicalGroupSparse has none here"):
        regularize(model, HierarchicalGroupSparse(1e-3), proximal=True)
    with pytest.raises(ValueError, match=r"regularize: Expected bias=False with proximal=True"):
        regularize(model, GroupLasso(1e-3), proximal=True, bias=True)


def test_bias_penalty():
    model = cnn()
    new = regularize(model, keras.regularizers.L1(1e-2), layers="fc", bias=True)
    assert isinstance(new.get_layer("fc").bias_regularizer, keras.regularizers.L1)
    new2 = regularize(model, GroupLasso(1e-2), layers="fc", bias=keras.regularizers.L2(0.5))
    b = np.arange(3, dtype="float32")
    new2.get_layer("fc").bias.assign(b)
    w = new2.get_layer("fc").kernel.numpy()
    assert float(sum(np.asarray(v) for v in new2.losses)) == pytest.approx(
        group_lasso_ref(w, 1e-2) + 0.5 * (b ** 2).sum(), rel=1e-5)
    with pytest.raises(ValueError, match=r"regularize: Expected a bias penalty that accepts the 1-D bias of "
                                         r"layer 'fc'; GroupLasso needs a kernel"):
        regularize(model, GroupLasso(1e-2), layers="fc", bias=True)
    with pytest.raises(TypeError, match=r"Expected `bias` to be True, False or a keras.regularizers.Regularizer. "
                                        r"Received: bias='yes'"):
        regularize(model, GroupLasso(1e-2), bias="yes")


def test_depthwise_separable_embedding_slots():
    inp = keras.Input((6, 6, 2))
    x = L.DepthwiseConv2D(3, name="dw")(inp)
    x = L.SeparableConv2D(3, 1, name="sep")(x)
    model = keras.Model(inp, x)
    new = regularize(model, GroupLasso(1e-3))
    assert isinstance(new.get_layer("dw").depthwise_regularizer, GroupLasso)
    assert isinstance(new.get_layer("sep").depthwise_regularizer, GroupLasso)
    assert isinstance(new.get_layer("sep").pointwise_regularizer, GroupLasso)
    dw = model.get_layer("dw").kernel.numpy()
    sd, sp = (model.get_layer("sep").depthwise_kernel.numpy(), model.get_layer("sep").pointwise_kernel.numpy())
    expected = sum(group_lasso_ref(w, 1e-3) for w in (dw, sd, sp))
    assert float(sum(np.asarray(v) for v in new.losses)) == pytest.approx(expected, rel=1e-5)
    emb = keras.Sequential([keras.Input((3,), dtype="int32"), L.Embedding(7, 4, name="emb")])
    new_emb = regularize(emb, GroupLasso(1e-3), proximal=True)
    assert isinstance(new_emb.get_layer("emb").embeddings_constraint, prox_mod.ProxGroupLasso)


def test_unsupported_layers_warn_or_raise():
    inp = keras.Input((4, 3))
    x = L.EinsumDense("abc,cd->abd", output_shape=(4, 2), name="ein")(inp)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Dense(2, name="fc")(x)
    model = keras.Model(inp, x)
    with pytest.warns(UserWarning, match=r"regularize: these layers have kernels that cannot take the penalty "
                                         r"and are left unregularized: ein \(EinsumDense\)\."):
        new = regularize(model, GroupLasso(1e-3))
    assert new.get_layer("fc").kernel_regularizer is not None
    with pytest.raises(ValueError, match=r"kernel layout is not in the layer-kind registry \(tf_groupsparse.graph.register_layer_kind\)\. Remove it "
                                         r"from `layers`\. Received: layer 'ein' of type EinsumDense"):
        regularize(model, GroupLasso(1e-3), layers=["fc", "ein"])
    with pytest.raises(ValueError, match=r"its weights are not a kernel\. .* Received: layer 'bn' of type "
                                         r"BatchNormalization"):
        regularize(cnn(), GroupLasso(1e-3), layers="bn")
    with pytest.raises(ValueError, match=r"it has no weights\. .* Received: layer 'gap'"):
        regularize(cnn(), GroupLasso(1e-3), layers=lambda layer: layer.name in ("gap", "fc"))
    tr = keras.Sequential([keras.Input((4, 4, 2)), L.Conv2DTranspose(3, 2, name="tr")])
    with pytest.raises(ValueError, match=r"its kernel is stored \(\*S, C_out, C_in\)"):
        regularize(tr, GroupLasso(1e-3), layers=L.Conv2DTranspose)


def test_bad_inputs():
    model = cnn()
    with pytest.raises(TypeError, match=r"regularize: Expected `model` to be a keras.Model \(Sequential or "
                                        r"functional\)\. Received: model of type str"):
        regularize("model", GroupLasso(1e-3))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match=r"regularize: Expected `model` to be a Sequential or functional keras.Model "
                                        r"\(a graph of layers\)\. Received: a subclassed model of type Sub.*"
                                        r"functional API \(keras.Model\(inputs, outputs\)\)"):
        regularize(sub, GroupLasso(1e-3), layers=L.Dense)
    with pytest.raises(TypeError, match=r"regularize: Expected `regularizer` to be a keras.regularizers.Regularizer "
                                        r"\(e.g. .*\)\. Received: regularizer of type float"):
        regularize(model, 0.1)
    with pytest.raises(ValueError, match=r"regularize: Expected `layers` to name layers of the model\. Available "
                                         r"layers with kernels: \['c1', 'c2', 'fc'\]\. Received: layers name 'conv1'"):
        regularize(model, GroupLasso(1e-3), layers=["c1", "conv1"])
    with pytest.raises(ValueError, match=r"regularize: Expected `layers` to select at least one layer\. "
                                         r"Available layers with kernels: \['c1', 'c2', 'fc'\]"):
        regularize(model, GroupLasso(1e-3), layers=L.Conv1D)
    with pytest.raises(TypeError, match=r"regularize: Expected `layers` to be None, a layer name, a list of names, "
                                        r"a layer class or tuple of classes, or a callable\(layer\) -> bool\. "
                                        r"Received: layers=3"):
        regularize(model, GroupLasso(1e-3), layers=3)
    with pytest.raises(TypeError, match=r"Expected `proximal` to be True or False\. Received: proximal=1"):
        regularize(model, GroupLasso(1e-3), proximal=1)


def test_existing_regularizer_is_replaced_with_a_warning():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="fc", kernel_regularizer=keras.regularizers.L2(1.0))])
    with pytest.warns(UserWarning, match=r"regularize: layer 'fc' already has kernel_regularizer=L2\(l2=1.0\); the new "
                                         r"model replaces it with GroupLasso\(strength=0.1"):
        new, report = regularize(model, GroupLasso(0.1), return_report=True)
    assert isinstance(new.get_layer("fc").kernel_regularizer, GroupLasso)
    assert isinstance(model.get_layer("fc").kernel_regularizer, keras.regularizers.L2)
    assert report.rows[0]["replaced"] == "L2(l2=1.0)"


def test_keras_save_load_round_trip_safe_mode(tmp_path):
    model = cnn()
    reg = HierarchicalGroupSparse(3e-3, variant="sqrt_exclusive", axis="output", l1_mix=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = regularize(model, reg, layers=L.Conv2D)
    path = tmp_path / "m.keras"
    new.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    got = loaded.get_layer("c2").kernel_regularizer
    assert isinstance(got, HierarchicalGroupSparse) and got.get_config() == reg.get_config()
    x, _ = data(4)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), new.predict(x, verbose=0), rtol=1e-6)
    assert float(sum(np.asarray(v) for v in loaded.losses)) == pytest.approx(
        float(sum(np.asarray(v) for v in new.losses)), rel=1e-6)

    prox = regularize(model, GroupLasso(4e-3, axis="output", scale_by_size=True), proximal=True)
    prox.save(tmp_path / "p.keras")
    loaded_p = keras.models.load_model(tmp_path / "p.keras", safe_mode=True)
    c = loaded_p.get_layer("fc").kernel_constraint
    assert isinstance(c, prox_mod.ProxGroupLasso)
    assert c.get_config() == {"strength": 4e-3, "axis": "output", "scale_by_size": True}
