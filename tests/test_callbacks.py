import csv

import keras
import numpy as np
import pytest

from tf_groupsparse.callbacks import ProximalStep, SparsityMonitor
from tf_groupsparse import regularize, shrink
from tf_groupsparse.regularizers import GroupLasso

L = keras.layers


def frozen_model():
    """Two Dense layers with known zero structure, trained with lr=0 so the weights stay."""
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="a"), L.Dense(2, name="b")])
    wa = np.ones((4, 3), "float32")
    wa[[0, 2]] = 0.0              # input groups 0 and 2 of "a" are zero
    wa[:, 1] = 5e-4               # output group 1 of "a" below threshold
    model.get_layer("a").kernel.assign(wa)
    wb = np.ones((3, 2), "float32")
    wb[1] = 0.0                   # input group 1 of "b"
    model.get_layer("b").kernel.assign(wb)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    return model, wa, wb


def test_monitor_values_in_history_match_numpy():
    model, wa, wb = frozen_model()
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[SparsityMonitor(per_layer=True)])
    h = history.history
    zero = lambda w: (np.abs(w) < 1e-3)  # noqa: E731
    zin = zero(wa).all(1).sum() + zero(wb).all(1).sum()
    assert h["sparsity/group_sparsity"] == [pytest.approx(zin / (4 + 3))] * 2
    assert zin == 3
    assert h["sparsity/zero_weights"][0] == pytest.approx((zero(wa).sum() + zero(wb).sum()) / (12 + 6))
    # What shrink removes: a's channel 1 (nothing reads it: b's row 1 is zero) -> a's column
    # (4 weights) and bias entry, b's row (2 weights). a's zero input rows are model inputs: kept.
    assert h["sparsity/removable_params"] == [4 + 1 + 2] * 2
    assert 7 == model.count_params() - shrink(model, 1e-3).count_params()
    assert h["sparsity/removable_fraction"][0] == pytest.approx(7 / model.count_params())
    assert h["sparsity/a/group_sparsity"][0] == pytest.approx(2 / 4)
    assert h["sparsity/b/group_sparsity"][0] == pytest.approx(1 / 3)

    out = model.fit(x, y, epochs=1, verbose=0,
                    callbacks=[SparsityMonitor(threshold=0.0, axis="output", prefix="s_")]).history
    assert out["s_group_sparsity"] == [pytest.approx(0 / 5)]
    # Exact zeros only: rows 0, 2 of "a" except their column-1 entries (5e-4), and row 1 of "b".
    assert out["s_zero_weights"][0] == pytest.approx((4 + 2) / 18)


def test_monitor_before_csvlogger_writes_columns(tmp_path):
    model, _, _ = frozen_model()
    path = tmp_path / "log.csv"
    model.fit(np.ones((4, 4), "float32"), np.zeros((4, 2), "float32"), epochs=2, verbose=0,
              callbacks=[SparsityMonitor(), keras.callbacks.CSVLogger(str(path))])
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 2 and float(rows[1]["sparsity/group_sparsity"]) == pytest.approx(3 / 7)


def test_monitor_bad_arguments_and_repr():
    with pytest.raises(ValueError, match=r"SparsityMonitor: Expected `axis` to be one of 'input', 'output'\. "
                                         r"Received: axis='rows'"):
        SparsityMonitor(axis="rows")
    with pytest.raises(ValueError, match=r"SparsityMonitor: Expected `threshold` >= 0\. Received: threshold=-0.1"):
        SparsityMonitor(threshold=-0.1)
    with pytest.raises(TypeError, match=r"SparsityMonitor: Expected `prefix` to be a string\. Received: prefix=3"):
        SparsityMonitor(prefix=3)
    with pytest.raises(TypeError, match=r"SparsityMonitor: Expected `per_layer` to be True or False\. "
                                        r"Received: per_layer='yes'"):
        SparsityMonitor(per_layer="yes")
    m = SparsityMonitor(threshold=1e-2, axis="output", prefix="p/", per_layer=True)
    assert m.get_config() == {"threshold": 0.01, "axis": "output", "prefix": "p/", "per_layer": True}
    assert repr(m) == "SparsityMonitor(threshold=0.01, axis='output', prefix='p/', per_layer=True)"
    assert repr(ProximalStep(require=False)) == "ProximalStep(require=False)"
    with pytest.raises(TypeError, match=r"ProximalStep: Expected `require` to be True or False"):
        ProximalStep(require=1)


def group_shrink_reference(w, total_step):
    """Composition of group-lasso prox steps on rows: shrink each row norm by total_step."""
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return np.where(norms > 0, np.maximum(0.0, 1 - total_step / np.where(norms > 0, norms, 1)), 0.0) * w


def test_proximal_step_binds_and_applies_prox_after_each_step():
    rng = np.random.default_rng(0)
    base = keras.Sequential([keras.Input((5,)), L.Dense(3, use_bias=False, name="fc")])
    w0 = rng.normal(size=(5, 3)).astype("float32")
    w0[1] *= 0.01                      # a small row that will reach exactly zero
    base.get_layer("fc").kernel.assign(w0)
    model = regularize(base, GroupLasso(0.5), proximal=True)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    # Zero inputs and targets: the data gradient is 0, so each step is just the prox.
    x, y = np.zeros((12, 5), "float32"), np.zeros((12, 3), "float32")
    step = ProximalStep()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[step])   # 3 optimizer steps
    assert step.bound == 1
    got = model.get_layer("fc").kernel.numpy()
    np.testing.assert_allclose(got, group_shrink_reference(w0.astype("float64"), 3 * 0.1 * 0.5), atol=1e-6)
    assert np.all(got[1] == 0.0)
    np.testing.assert_array_equal(base.get_layer("fc").kernel.numpy(), w0)


def test_proximal_step_reads_a_changed_learning_rate():
    base = keras.Sequential([keras.Input((2,)), L.Dense(2, use_bias=False, name="fc")])
    w0 = np.array([[3.0, 4.0], [0.6, 0.8]], "float32")
    base.get_layer("fc").kernel.assign(w0)
    model = regularize(base, GroupLasso(1.0), proximal=True)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x, y = np.zeros((2, 2), "float32"), np.zeros((2, 2), "float32")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[ProximalStep()])
    model.optimizer.learning_rate.assign(0.5)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[ProximalStep()])
    # Row norms 5 and 1: shrink by 0.1 then 0.5 -> 4.4 and 0.4.
    np.testing.assert_allclose(model.get_layer("fc").kernel.numpy(),
                               group_shrink_reference(w0.astype("float64"), 0.6), atol=1e-6)


def test_proximal_step_requires_constraints():
    model = keras.Sequential([keras.Input((2,)), L.Dense(2)])
    model.compile("sgd", "mse")
    x = np.zeros((2, 2), "float32")
    with pytest.raises(ValueError, match=r"ProximalStep: Expected the model to have proximal constraints \(build it "
                                         r"with tf_groupsparse.regularize\(model, regularizer, proximal=True\)\)\. "
                                         r"Received: a model 'sequential.*' without any ProximalConstraint"):
        model.fit(x, x, epochs=1, verbose=0, callbacks=[ProximalStep()])
    step = ProximalStep(require=False)
    model.fit(x, x, epochs=1, verbose=0, callbacks=[step])
    assert step.bound == 0


def _digits_mlp(proximal):
    from tf_groupsparse.datasets import load_digits

    (x, y), (xt, yt) = load_digits()
    x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((64,)), L.Dense(128, activation="relu", name="h1"),
                          L.Dense(64, activation="relu", name="h2"), L.Dense(10, name="out")])
    m = regularize(m, GroupLasso(1e-3, axis="input"), layers=["h2", "out"], proximal=proximal)
    m.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    return m, (x, y), (xt, yt)


@pytest.mark.parametrize("target", [0.4, 0.6])
def test_sparsity_target_reaches_the_macs_budget_with_proximal_training(target):
    from tf_groupsparse import flops
    from tf_groupsparse.callbacks import SparsityTarget

    model, (x, y), (xt, yt) = _digits_mlp(proximal=True)
    controller = SparsityTarget(macs=target, interval=10)
    history = model.fit(x, y, epochs=20, batch_size=32, verbose=0, callbacks=[ProximalStep(), controller])
    kept = flops(shrink(model, threshold=0.0)) / flops(model)
    assert abs(kept - target) <= controller.margin, (kept, controller.history[-5:])
    assert controller.kept() == pytest.approx(kept)          # its measurement is shrink's
    assert model.evaluate(xt, yt, verbose=0)[1] > 0.9
    assert controller.scale > 1 and history.history["sparsity_target/scale"][-1] == controller.scale
    (effective,) = controller.used_strengths.values()
    assert effective["strength"] == pytest.approx(1e-3 * controller.scale)
    # the configured strengths are left as they were (the scale is a variable read in the step)
    assert model.get_layer("h2").kernel_constraint.get_config()["strength"] == 1e-3


def test_scale_variable_multiplies_a_loss_penalty_and_a_proximal_step():
    w = np.array([[3.0, 4.0], [0.0, 0.0]], "float32")
    penalty = GroupLasso(1.0)
    penalty.scale = keras.Variable(2.0, trainable=False)
    assert float(penalty(w)) == pytest.approx(10.0)
    from tf_groupsparse.penalties import ProxGroupLasso

    constraint = ProxGroupLasso(1.0)
    constraint.bind(keras.optimizers.SGD(0.5))
    constraint.scale = keras.Variable(2.0, trainable=False)     # step lr * strength * scale = 1.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(constraint(w)), [[2.4, 3.2], [0.0, 0.0]], rtol=1e-6)


def test_sparsity_target_needs_penalties_and_one_budget():
    from tf_groupsparse.callbacks import SparsityTarget

    with pytest.raises(ValueError, match=r"SparsityTarget: Expected exactly one of `macs`, `params`"):
        SparsityTarget()
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"SparsityTarget: Expected the model to carry tf_groupsparse penalties"):
        model.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0, callbacks=[SparsityTarget(params=0.5)])
