"""Structure learning: prox and entropy against references, planted connectivity, depth rule."""

import json
import math
import re

import keras
import numpy as np
import pytest
from scipy import optimize, stats

from tf_groupsparse.pruning.structure import (
    LearnedStructure,
    _gaussian_entropy,
    _prox_sparse_group,
    build_model,
    learn_structure,
)


def _planted_data(informative=12, silent=8, n=1024, seed=0):
    """Input whose first `informative` features carry a 3-d latent signal; the rest are ~silent."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    a = np.tanh(z @ rng.normal(size=(3, informative)))
    return np.concatenate([a, 1e-3 * rng.normal(size=(n, silent))], axis=1).astype("float32")


def test_prox_matches_a_generic_solver():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(5, 3)) * np.array([[2.0], [0.05], [1.0], [0.1], [1.5]])
    sizes, unit_t, source_t = [2, 3], 0.2, 0.3
    got = _prox_sparse_group(v.copy(), sizes, unit_t, source_t)

    def objective(flat):
        w = flat.reshape(v.shape)
        penalty = unit_t * np.linalg.norm(w, axis=1).sum()
        penalty += source_t * (math.sqrt(2) * np.linalg.norm(w[:2]) + math.sqrt(3) * np.linalg.norm(w[2:]))
        return 0.5 * np.sum((w - v) ** 2) + penalty

    ref = optimize.minimize(objective, v.ravel(), method="Powell", options={"xtol": 1e-10, "ftol": 1e-12, "maxiter": 200000})
    assert objective(got.ravel()) <= ref.fun + 1e-7
    np.testing.assert_allclose(got, ref.x.reshape(v.shape), atol=2e-3)
    # the weak row is exactly zero
    assert np.all(got[1] == 0) and np.all(got[3] != 0)


def test_gaussian_entropy_matches_scipy():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(500, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 0.5, 0.2], [0.0, 0.0, 0.8]])
    joint, per_unit = _gaussian_entropy(h)
    cov = np.cov(h, rowvar=False) + 1e-3 * np.eye(3)
    assert joint == pytest.approx(stats.multivariate_normal(cov=cov).entropy() / 3, rel=1e-9)
    np.testing.assert_allclose(per_unit, [stats.norm(scale=math.sqrt(c)).entropy() for c in np.diag(cov)], rtol=1e-9)


def test_finds_planted_input_connectivity_and_stops_when_entropy_stops_rising():
    x = _planted_data()
    s = learn_structure(x, max_depth=3, width=8, epochs=60, entropy_tol=0.05, verbose=0)
    # layer 1 reads exactly the informative features: h1 = f(x[:, :12])
    assert s.connections[0] == [0]
    assert s.unit_connections[0] == {0: list(range(12))}
    # depth stops once a new layer does not raise the entropy by more than entropy_tol
    assert s.depth == 1
    assert s.rejected_entropy is not None
    assert s.rejected_entropy - s.entropy[0] <= 0.05
    # the stored kernel holds only connected sources and reproduces the layer's code
    assert s.weights[0]["kernel"].shape == (20, 8)
    assert np.all(s.weights[0]["kernel"][12:] == 0)


def test_deeper_layers_drop_redundant_sources_exactly():
    # every learned layer only re-encodes the input, which is itself the cheapest source of the
    # information to keep: with a strong group penalty later layers connect to the input only
    x = _planted_data(informative=24)
    s = learn_structure(x, max_depth=3, width=8, epochs=60, entropy_tol=-10.0, group_strength=0.1, verbose=0)
    assert s.depth == 3
    assert s.connections == [[0], [0], [0]]
    assert s.source_norms[1][1] == 0.0 and s.source_norms[2][1:] == [0.0, 0.0]
    assert all(s.unit_connections[d][0] == list(range(24)) for d in range(3))
    # a weak penalty keeps more connections (the decision is the penalty's, not hard-wired)
    weak = learn_structure(x, max_depth=2, width=8, epochs=30, entropy_tol=-10.0, group_strength=1e-3, verbose=0)
    assert weak.connections[1] == [0, 1]


def test_build_model_wires_the_connections():
    s = LearnedStructure(input_dim=5, widths=[4, 3, 2], connections=[[0], [0, 1], [1, 2]], entropy=[1.0, 1.2, 1.3])
    model = build_model(s, 3, activation="tanh")
    layers = {layer.name: layer for layer in model.layers}
    assert layers["layer1"].kernel.shape == (5, 4)
    assert layers["layer2"].kernel.shape == (9, 3)
    assert layers["layer3"].kernel.shape == (7, 2)
    assert layers["head"].kernel.shape == (2, 3)
    assert model.count_params() == (5 * 4 + 4) + (9 * 3 + 3) + (7 * 2 + 2) + (2 * 3 + 3)
    # layer3 really reads layer1 and layer2: equal to a NumPy forward pass
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    w = {n: layers[n].get_weights() for n in ("layer1", "layer2", "layer3", "head")}
    h1 = np.tanh(x @ w["layer1"][0] + w["layer1"][1])
    h2 = np.tanh(np.concatenate([x, h1], 1) @ w["layer2"][0] + w["layer2"][1])
    h3 = np.tanh(np.concatenate([h1, h2], 1) @ w["layer3"][0] + w["layer3"][1])
    np.testing.assert_allclose(model.predict(x, verbose=0), h3 @ w["head"][0] + w["head"][1], atol=1e-5)


def test_learned_structure_builds_trains_and_serializes(tmp_path):
    x = _planted_data(n=512)
    s = learn_structure(x, max_depth=2, width=6, epochs=20, entropy_tol=-10.0, verbose=0)
    d = json.loads(s.to_json(include_weights=True))
    assert d["connections"] == s.connections and d["depth"] == 2
    assert np.asarray(d["weights"][1]["kernel"]).shape == s.weights[1]["kernel"].shape
    assert "layer2: 6 units <- [" in str(s)
    y = (x[:, 0] > np.median(x[:, 0])).astype("int32")
    model = build_model(s, 2)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.85
    path = tmp_path / "s.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "x, kwargs, error, message",
    [
        (np.zeros(5), {}, ValueError,
         "learn_structure: Expected `x` to be a finite 2-D array with at least 2 samples and 1 feature. Received: x.shape=(5,)"),
        ("abc", {}, TypeError,
         "learn_structure: Expected `x` to be a numeric array of shape (n_samples, n_features). Received: x of type str"),
        (np.zeros((4, 2)), {"max_depth": 0}, ValueError, "learn_structure: Expected `max_depth` >= 1. Received: max_depth=0"),
        (np.zeros((4, 2)), {"group_strength": -1}, ValueError,
         "learn_structure: Expected `group_strength` >= 0. Received: group_strength=-1.0"),
        (np.zeros((4, 2)), {"width": 2.5}, TypeError,
         "learn_structure: Expected `width` to be an integer. Received: width=2.5 of type float"),
    ],
)
def test_bad_arguments(x, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        learn_structure(x, verbose=0, **kwargs)


def test_build_model_bad_arguments():
    s = LearnedStructure(input_dim=2, widths=[2], connections=[[0]], entropy=[0.0])
    with pytest.raises(TypeError, match=re.escape(
        "build_model: Expected `structure` to be a LearnedStructure (from learn_structure). Received: structure of type dict"
    )):
        build_model({}, 2)
    with pytest.raises(ValueError, match=re.escape("build_model: Expected `n_outputs` >= 1. Received: n_outputs=0")):
        build_model(s, 0)
    with pytest.raises(ValueError, match=re.escape(
        "build_model: Expected `activation` to be a Keras activation name. Received: activation='nope'"
    )):
        build_model(s, 2, activation="nope")


