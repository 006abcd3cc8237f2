"""In-training EM penalty: Q against a SciPy reference, training updates, freeze callback, round trip."""

import keras
import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import norm

from tf_groupsparse.grouping.rewrite import to_block_diagonal
from tf_groupsparse.grouping.training import EMGroupFreeze, EMGroupPenalty, add_em_penalty, strip_em_penalty

L = keras.layers


def mlp():
    return keras.Sequential([keras.Input((20,)), L.Dense(16, activation="relu", name="fc1"),
                             L.Dense(12, activation="relu", name="fc2"), L.Dense(3, name="head")], name="mlp")


def reference_q(x, means, log_vars, logits):
    log_pi = logits - logsumexp(logits)
    joint = np.stack([norm.logpdf(x, means[k], np.exp(0.5 * log_vars[k])).sum(1) for k in range(len(logits))], 1) + log_pi
    return float((softmax(joint, axis=1) * joint).sum())


@pytest.mark.parametrize("kind", ["dense", "conv_range", "conv_l2"])
def test_q_matches_scipy(kind):
    rng = np.random.default_rng(0)
    if kind == "dense":
        wrapper = EMGroupPenalty(L.Dense(6), n_groups=3, q=1e-3)
        wrapper.build((None, 8))
    else:
        wrapper = EMGroupPenalty(L.Conv2D(6, 3), n_groups=3, representative=kind.split("_")[1])
        wrapper.build((None, 5, 5, 8))
    wrapper.layer.kernel.assign(rng.normal(size=wrapper.layer.kernel.shape).astype("float32"))
    wrapper.means.assign(rng.normal(size=(3, 6)).astype("float32"))
    wrapper.log_vars.assign(rng.normal(0, 0.3, size=(3, 6)).astype("float32"))
    wrapper.logits.assign(np.array([0.2, -0.1, 0.5], "float32"))
    k = keras.ops.convert_to_numpy(wrapper.layer.kernel).astype("float64")
    if kind == "dense":
        x = k
    elif kind == "conv_range":
        x = k.max(axis=(0, 1)) - k.min(axis=(0, 1))
    else:
        x = np.sqrt((k ** 2).sum(axis=(0, 1)))
    ref = reference_q(x, *(keras.ops.convert_to_numpy(v).astype("float64") for v in (wrapper.means, wrapper.log_vars, wrapper.logits)))
    assert float(wrapper.expected_log_likelihood()) == pytest.approx(ref, rel=1e-4)
    assert wrapper.q == (1e-3 if kind == "dense" else 1e-6)


@pytest.mark.slow
def test_penalty_is_in_the_loss_and_mixture_trains():
    keras.utils.set_random_seed(0)
    model = add_em_penalty(mlp(), 2, q=1e-3)
    wrapper = model.get_layer("fc1_em")
    x = np.random.default_rng(0).normal(size=(8, 20)).astype("float32")
    model(x)
    penalty = sum(float(v) for v in model.losses)
    expected = -1e-3 * sum(float(model.get_layer(n).expected_log_likelihood()) for n in ("fc1_em", "fc2_em"))
    assert penalty == pytest.approx(expected, rel=1e-5)
    means = keras.ops.convert_to_numpy(wrapper.means).copy()
    assert any(v is wrapper.means for v in model.trainable_variables)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, np.arange(8) % 3, epochs=2, verbose=0)
    assert np.abs(keras.ops.convert_to_numpy(wrapper.means) - means).max() > 1e-3


@pytest.mark.slow
def test_freeze_masks_and_rewrites(tmp_path):
    keras.utils.set_random_seed(0)
    base = mlp()
    model = add_em_penalty(base, 2, q=1e-3)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 20)).astype("float32"), rng.integers(0, 3, 64)
    freeze = EMGroupFreeze(patience=2, min_delta=1e9)   # never "improves": freezes after 2 epochs
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[freeze])
    assert freeze.frozen_epoch == 2 and len(freeze.history) == 4 and "em_q" in history.history
    s = freeze.structure
    assert s.layer_names == ["fc1", "fc2"]
    np.testing.assert_array_equal(s["fc2"].input_groups, s["fc1"].output_groups)  # chained
    for entry in s:
        wrapper = model.get_layer(f"{entry.name}_em")
        assert float(wrapper.scale) == 0.0
        kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
        assert np.count_nonzero(kernel * (1 - entry.mask())) == 0
    plain = strip_em_penalty(model)
    assert not any(isinstance(layer, EMGroupPenalty) for layer in plain.layers)
    np.testing.assert_allclose(plain(x), model(x), atol=1e-6)
    np.testing.assert_allclose(to_block_diagonal(plain, s)(x), plain(x), atol=1e-4)
    model.save(tmp_path / "em.keras")
    loaded = keras.models.load_model(tmp_path / "em.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.get_layer("fc1_em").get_config()["q"] == 1e-3


def test_errors():
    with pytest.raises(ValueError, match=r"EMGroupPenalty\('em'\): Expected a Dense, Conv1D or Conv2D layer to group. Received: layer 'ln' of type LayerNormalization"):
        EMGroupPenalty(L.LayerNormalization(name="ln"), 2, name="em")
    with pytest.raises(ValueError, match=r"Expected `q` >= 0. Received: q=-1.0"):
        EMGroupPenalty(L.Dense(3), 2, q=-1.0)
    with pytest.raises(ValueError, match=r"Expected `features` to be one of 'signed', 'abs'. Received: features='sign'"):
        EMGroupPenalty(L.Dense(3), 2, features="sign")
    with pytest.raises(ValueError, match=r"Expected n_groups <= C_in = 4 of layer 'd'; lower n_groups. Received: n_groups=5"):
        EMGroupPenalty(L.Dense(3, name="d"), 5).build((None, 4))
    with pytest.raises(ValueError, match=r"add_em_penalty: Expected layer names of model 'mlp'.*Received: layers item 'x'"):
        add_em_penalty(mlp(), 2, layers=["x"])
    with pytest.raises(ValueError, match=r"Expected `patience` >= 1. Received: patience=0"):
        EMGroupFreeze(patience=0)
    model = mlp()
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"EMGroupFreeze: Expected a model with EMGroupPenalty layers"):
        model.fit(np.zeros((4, 20)), np.zeros((4, 3)), epochs=1, verbose=0, callbacks=[EMGroupFreeze()])
