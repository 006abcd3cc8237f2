"""fit_groups and GroupStructure: planted structure recovery, formulas against NumPy, bad input."""

import itertools
import json
import logging

import keras
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from tf_groupsparse.grouping.em import connection_profiles, fit_groups, input_groups, output_groups
from tf_groupsparse.grouping.structure import GroupStructure, LayerGroups

L = keras.layers


def planted(c_in, c_out, k, spatial=(), seed=0):
    """Kernel (*spatial, c_in, c_out) with k strong diagonal blocks + noise, rows/cols permuted."""
    rng = np.random.default_rng(seed)
    ci, go = np.repeat(np.arange(k), c_in // k), np.repeat(np.arange(k), c_out // k)
    block = (ci[:, None] == go[None, :]).astype("float32")
    w = rng.normal(0, 0.05, spatial + (c_in, c_out)) + block * rng.normal(0, 1, spatial + (c_in, c_out))
    pi, po = rng.permutation(c_in), rng.permutation(c_out)
    return w[..., pi, :][..., po].astype("float32"), ci[pi], go[po]


def dense_model(c_in=48, c_out=40):
    return keras.Sequential([keras.Input((c_in,)), L.Dense(c_out, name="fc1"), L.Dense(24, name="fc2"),
                             L.Dense(3, name="head")], name="mlp")


@pytest.mark.parametrize("features", ["abs", "signed"])
def test_recovers_planted_dense_groups(features):
    model = dense_model()
    w, ci, go = planted(48, 40, 4)
    model.get_layer("fc1").kernel.assign(w)
    s = fit_groups(model, 4, layers=["fc1"], features=features, seed=0)
    assert adjusted_rand_score(ci, s["fc1"].input_groups) >= 0.95
    assert adjusted_rand_score(go, s["fc1"].output_groups) >= 0.95


@pytest.mark.parametrize("representative", ["range", "l2"])
def test_recovers_planted_conv_groups(representative):
    model = keras.Sequential([keras.Input((6, 6, 24)), L.Conv2D(32, 3, name="conv"), L.Flatten(), L.Dense(2)])
    w, ci, go = planted(24, 32, 4, spatial=(3, 3), seed=1)
    model.get_layer("conv").kernel.assign(w)
    s = fit_groups(model, 4, representative=representative, seed=0)
    assert s.layer_names == ["conv"]
    assert adjusted_rand_score(ci, s["conv"].input_groups) >= 0.95
    assert adjusted_rand_score(go, s["conv"].output_groups) >= 0.95


def test_connection_profiles_match_numpy():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(3, 2, 5, 4)).astype("float32")
    ref_range = np.array([[k[..., i, o].max() - k[..., i, o].min() for o in range(4)] for i in range(5)])
    ref_l2 = np.array([[np.linalg.norm(k[..., i, o]) for o in range(4)] for i in range(5)])
    np.testing.assert_allclose(connection_profiles(k, representative="range"), ref_range, rtol=1e-6)
    np.testing.assert_allclose(connection_profiles(k, representative="l2"), ref_l2, rtol=1e-5)
    d = rng.normal(size=(5, 4)).astype("float32")
    np.testing.assert_array_equal(connection_profiles(d, "abs"), np.abs(d))
    np.testing.assert_array_equal(connection_profiles(d, "signed"), d)


def test_output_rule_matches_bruteforce():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 7))
    c = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1])
    ref = [int(np.argmax([np.abs(x[c == k, o]).mean() for k in range(3)])) for o in range(7)]
    assert output_groups(x, c, 3).tolist() == ref
    # a group without inputs is never chosen
    assert 2 not in output_groups(x, np.where(c == 2, 0, c), 3).tolist()


def test_balanced_assignment_maximizes_total_score():
    rng = np.random.default_rng(1)
    c = np.array([0, 0, 1, 1, 0, 1])
    x = rng.normal(size=(6, 6))
    g = output_groups(x, c, 2, balanced=True)
    score = np.stack([np.abs(x[c == k]).mean(0) for k in range(2)], 1)  # (C_out, K)
    best = max(score[list(sub), 0].sum() + score[[o for o in range(6) if o not in sub], 1].sum()
               for sub in itertools.combinations(range(6), 3))
    assert np.bincount(g).tolist() == [3, 3]
    assert score[np.arange(6), g].sum() == pytest.approx(best)


def test_balanced_fit_gives_equal_groups():
    model = dense_model()
    s = fit_groups(model, 4, balanced=True, seed=0)
    for e in s:
        a, b = e.block_sizes()
        assert len(set(a)) == 1 and len(set(b)) == 1 and e.equal_blocks


def test_chain_inherits_groups_and_tiles_after_flatten():
    model = keras.Sequential([keras.Input((5, 5, 3)), L.Conv2D(8, 3, name="c1"), L.BatchNormalization(),
                              L.ReLU(), L.Conv2D(6, 3, name="c2"), L.Flatten(), L.Dense(10, name="fc"),
                              L.Dense(2, name="head")])
    s = fit_groups(model, 2, layers=["c1", "c2", "fc"], seed=0)
    np.testing.assert_array_equal(s["c2"].input_groups, s["c1"].output_groups)
    np.testing.assert_array_equal(s["fc"].input_groups, np.tile(s["c2"].output_groups, 1 * 1))
    s2 = fit_groups(model, 2, layers=["c1", "fc"], seed=0)  # c2 not grouped: fc fits its own
    assert s2["fc"].input_groups.size == 6


def test_chain_tiles_spatial_positions():
    model = keras.Sequential([keras.Input((4, 4, 2)), L.Conv2D(6, 1, name="c1"), L.MaxPooling2D(),
                              L.Flatten(), L.Dense(8, name="fc"), L.Dense(2)])
    s = fit_groups(model, 2, seed=0)
    g = s["c1"].output_groups
    c = s["fc"].input_groups
    assert c.size == 2 * 2 * 6
    for p in range(4):
        for ch in range(6):
            assert c[p * 6 + ch] == g[ch]


def test_bic_picks_planted_k():
    model = dense_model(48, 48)
    w, ci, _ = planted(48, 48, 3, seed=2)
    model.get_layer("fc1").kernel.assign(w)
    s = fit_groups(model, "bic", layers=["fc1"], seed=0, bic_range=(2, 5))
    assert s.n_groups("fc1") == 3
    assert adjusted_rand_score(ci, s["fc1"].input_groups) >= 0.95


def test_dict_n_groups_and_empty_component(caplog):
    x = np.array([[1, 0, 0]] * 3 + [[0, 1, 1]] * 3, "float32")
    with caplog.at_level(logging.WARNING):
        labels, k = input_groups(x, 3, name="dup", seed=0)
    assert k == 2 and sorted(set(labels.tolist())) == [0, 1]
    assert adjusted_rand_score([0, 0, 0, 1, 1, 1], labels) == 1.0
    assert "took no channel" in caplog.text and "'dup'" in caplog.text
    model = dense_model()
    s = fit_groups(model, {"fc1": 2, "fc2": 3}, chain=False, seed=0)
    assert (s.n_groups("fc1"), s.n_groups("fc2")) == (2, 3)


def test_not_converged_warns_with_layer_name():
    model = dense_model()
    model.get_layer("fc1").kernel.assign(np.random.default_rng(0).normal(size=(48, 40)).astype("float32"))
    with pytest.warns(ConvergenceWarning, match=r"layer 'fc1' \(K=4\) did not converge in max_iter=1 .*larger reg_covar"):
        fit_groups(model, 4, layers=["fc1"], max_iter=1, n_init=1, seed=0)


def test_fit_groups_does_not_change_the_model():
    model = dense_model()
    before = [w.copy() for w in model.get_weights()]
    fit_groups(model, 2, seed=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_groups": 0}, ValueError, r"fit_groups \(layer 'fc1'\): Expected `n_groups` >= 1. Received: n_groups=0"),
        ({"n_groups": 41}, ValueError, r"Expected n_groups <= min\(C_in, C_out\) = 40 for layer 'fc1'.*Received: n_groups=41"),
        ({"n_groups": "many"}, ValueError, r"Expected `n_groups` to be one of 'bic'. Received: n_groups='many'"),
        ({"n_groups": 2.5}, TypeError, r"Expected `n_groups` to be an int, a dict of ints or 'bic'. Received: n_groups=2.5"),
        ({"n_groups": {"fc1": 2}}, ValueError, r"Expected an n_groups entry for every grouped layer. Received: no entry for 'fc2'"),
        ({"n_groups": 2, "layers": ["nope"]}, ValueError, r"Expected layer names of model 'mlp'.*Received: layers item 'nope'"),
        ({"n_groups": 2, "layers": "fc1"}, TypeError, r"Expected `layers` to be a list of layer names"),
        ({"n_groups": 3, "balanced": True}, ValueError,
         r"Expected C_out of layer 'fc1' to be divisible by the number of groups for balanced=True; choose K dividing 40 or balanced=False. Received: C_out=40, n_groups=3"),
        ({"n_groups": 3, "balanced": True, "layers": ["fc2"]}, ValueError,
         r"Expected C_in of layer 'fc2' to be divisible.*Received: C_in=40, n_groups=3"),
        ({"n_groups": 2, "features": "sign"}, ValueError, r"Expected `features` to be one of 'abs', 'signed'. Received: features='sign'"),
        ({"n_groups": 2, "representative": "max"}, ValueError, r"Expected `representative` to be one of 'range', 'l2'"),
        ({"n_groups": {"fc1": 2, "fc2": 3}}, ValueError, r"Expected layer 'fc2' to have the n_groups of its producer 'fc1' \(2\) with chain=True; pass chain=False"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fit_groups(dense_model(), seed=0, **kwargs)


def test_bad_models():
    with pytest.raises(TypeError, match="fit_groups: Expected `model` to be a keras.Model"):
        fit_groups("model", 2)
    m = keras.Sequential([keras.Input((4, 4, 3)), L.DepthwiseConv2D(3, name="dw"), L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match=r"Expected a chain of .*Received: layer 'dw' of type DepthwiseConv2D"):
        fit_groups(m, 2)
    with pytest.raises(ValueError, match=r"Expected a Dense, Conv1D or Conv2D layer to group. Received: layer 'dw' of type DepthwiseConv2D"):
        fit_groups(m, 2, layers=["dw"], chain=False)
    separable = keras.Sequential([keras.Input((4, 4, 3)), L.DepthwiseConv2D(3, name="dw"), L.Conv2D(4, 1, name="pc"),
                                  L.Flatten(), L.Dense(2)])
    assert fit_groups(separable, 2, chain=False, seed=0).layer_names == ["pc"]  # default skips other kinds
    inp = keras.Input((6,))
    a, b = L.Dense(4, name="a")(inp), L.Dense(4, name="b")(inp)
    branched = keras.Model(inp, L.Add()([a, b]))
    with pytest.raises(ValueError, match=r"Expected a linear chain .*Received: layer 'b' does not read"):
        fit_groups(branched, 2)
    s = fit_groups(branched, 2, layers=["a", "b"], chain=False, seed=0)
    assert s.layer_names == ["a", "b"]


# ---------------------------------------------------------------- GroupStructure

def small_structure():
    return GroupStructure([
        LayerGroups("fc1", (4, 3), [1, 0, 1, 0], [0, 1, 1], 2),
        LayerGroups("conv", (3, 3, 2, 4), [0, 1], [1, 1, 0, 0], 2, kind="conv"),
    ])


def test_mask_and_permutations_match_numpy():
    s = small_structure()
    c, g = np.array([1, 0, 1, 0]), np.array([0, 1, 1])
    np.testing.assert_array_equal(s.mask("fc1"), (c[:, None] == g[None, :]).astype("float32"))
    pi, po = s.permutations("fc1")
    assert pi.tolist() == [1, 3, 0, 2] and po.tolist() == [0, 1, 2]
    w = np.arange(12, dtype="float32").reshape(4, 3) * s.mask("fc1")
    bd = w[pi][:, po]
    assert np.count_nonzero(bd[:2, 1:]) == 0 and np.count_nonzero(bd[2:, :1]) == 0
    assert s["conv"].params_kept == 9 * 4 and s["conv"].params_total == 72
    assert s.n_groups("conv") == 2


def test_json_round_trip(tmp_path):
    s = small_structure()
    assert GroupStructure.from_json(s.to_json()) == s
    path = tmp_path / "groups.json"
    s.to_json(path)
    loaded = GroupStructure.from_json(str(path))
    assert loaded == s and loaded["conv"].kind == "conv" and loaded["conv"].kernel_shape == (3, 3, 2, 4)
    assert json.loads(path.read_text())["format"] == "tf_groupsparse.GroupStructure"
    with pytest.raises(ValueError, match="Expected a JSON object with format='tf_groupsparse.GroupStructure'"):
        GroupStructure.from_json('{"layers": []}')
    with pytest.raises(FileNotFoundError, match="Expected JSON text or an existing file"):
        GroupStructure.from_json(str(tmp_path / "missing.json"))


def test_str_summary():
    text = str(small_structure())
    assert "GroupStructure (2 layers)" in text
    assert "fc1: K=2 kernel=(4, 3) inputs/group=[2, 2] outputs/group=[1, 2] kept=6/12 (50.0%)" in text


def test_check_against_model():
    model = dense_model()
    s = fit_groups(model, 2, seed=0)
    assert s.check(model) is model
    other = dense_model(48, 32)
    with pytest.raises(ValueError, match=r"Expected layer 'fc1' to have kernel shape \(48, 40\).*Received: kernel.shape=\(48, 32\)"):
        s.check(other)
    renamed = keras.Sequential([keras.Input((48,)), L.Dense(40, name="x"), L.Dense(3)])
    with pytest.raises(ValueError, match=r"Expected a layer named 'fc1' in model"):
        s.check(renamed)


def test_layer_groups_validation():
    with pytest.raises(ValueError, match=r"Expected input_groups of length 4 \(the kernel's channels\). Received: len\(input_groups\)=3"):
        LayerGroups("fc", (4, 2), [0, 1, 0], [0, 1], 2)
    with pytest.raises(ValueError, match=r"Expected output_groups in 0..1 \(n_groups=2\). Received: output_groups range 0..2"):
        LayerGroups("fc", (4, 3), [0, 1, 0, 1], [0, 1, 2], 2)
    with pytest.raises(ValueError, match="Expected unique layer names. Received: 'fc' twice"):
        GroupStructure([LayerGroups("fc", (2, 2), [0, 1], [0, 1], 2)] * 2)
    with pytest.raises(KeyError, match="Expected one of the grouped layers"):
        small_structure()["nope"]
