"""The later stages on the backend KERAS_BACKEND selects (TensorFlow, JAX, PyTorch): in-training
EM grouping and block masks (masked weights stay exactly zero while training), BlockDiagonalDense
against NumPy (outputs, one SGD step, .keras round trip) and to_block_diagonal, channel planting
and the Distiller (loss against NumPy), learn_structure, SparsityTarget (the zeros reach the
budget), and the latency target of tgs.prune
(TensorFlow only: a clear error elsewhere).

`make test` runs this module (marked `backends`) once per backend, each in its own pytest
process."""

import json
import math

import keras
import numpy as np
import pytest
from _backend import BACKEND

import tf_groupsparse as tgs
from tf_groupsparse.grouping import EMGroupFreeze, add_em_penalty, strip_em_penalty
from tf_groupsparse.layers import BlockDiagonalDense
from tf_groupsparse.pruning.planting import accuracy
from tf_groupsparse.pruning.structure import _gaussian_entropy

pytestmark = pytest.mark.backends
L = keras.layers


def numpy(t):
    return keras.ops.convert_to_numpy(t)


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((12,)), L.Dense(8, activation="relu", name="fc1"),
                             L.Dense(8, activation="relu", name="fc2"), L.Dense(3, name="head")], name="mlp")


def data(n=64, features=12, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, features)).astype("float32") + np.eye(3, features, dtype="float32")[y] * 2.0
    return x, y


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# --------------------------------------------------------------------------- EM grouping, masks
PLANTED = {"fc1": 8, "fc2": 4}  # inputs in each layer's first block; outputs 0-3 / 4-7


def planted_mask(name, shape):
    mask = np.zeros(shape, "float32")
    rows = PLANTED[name]
    mask[:rows, :4] = mask[rows:, 4:] = 1.0
    return mask


def planted_blocks(model):
    """fc1 and fc2 with two strong diagonal blocks and weak off-block weights, so the grouping to
    find is the same on every backend. (The mixture starts at profiles 9 and 7 of fc1, one in
    each block: add_em_penalty's seed 0.)"""
    rng = np.random.default_rng(0)
    for name in PLANTED:
        layer = model.get_layer(name)
        mask = planted_mask(name, tuple(layer.kernel.shape))
        kernel = 0.01 * rng.normal(size=mask.shape) + mask * rng.uniform(0.5, 1.0, size=mask.shape)
        layer.kernel.assign(kernel.astype("float32"))
    return model


def test_em_penalty_trains_freezes_and_keeps_masked_weights_zero():
    x, y = data()
    model = add_em_penalty(planted_blocks(mlp()), 2, layers=["fc1", "fc2"], q=1e-3)
    model(x[:4])
    wrapper = model.get_layer("fc1_em")
    # the penalty in the loss is -q * Q, Q computed here in NumPy from the wrapper's variables
    kernel, means, log_vars, logits = (numpy(v).astype("float64") for v in
                                       (wrapper.layer.kernel, wrapper.means, wrapper.log_vars, wrapper.logits))
    joint = np.stack([-0.5 * (((kernel - means[k]) ** 2) / np.exp(log_vars[k]) + log_vars[k] + math.log(2 * math.pi)).sum(1)
                      for k in range(2)], 1) + log_softmax(logits)
    gamma = np.exp(log_softmax(joint))
    assert float(numpy(wrapper.expected_log_likelihood())) == pytest.approx(float((gamma * joint).sum()), rel=1e-4)
    expected = -1e-3 * sum(float(numpy(model.get_layer(n).expected_log_likelihood())) for n in ("fc1_em", "fc2_em"))
    assert sum(float(numpy(v)) for v in model.losses) == pytest.approx(expected, rel=1e-5)

    freeze = EMGroupFreeze(patience=1, min_delta=1e9)  # never "improves": freezes at the end of epoch 1
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[freeze])
    assert np.abs(numpy(wrapper.means) - means).max() > 1e-3  # the mixture trained with the network
    assert freeze.frozen_epoch == 1 and len(freeze.history) == 4 and len(history.history["em_q"]) == 4
    s = freeze.structure
    assert s.layer_names == ["fc1", "fc2"]
    assert s["fc1"].input_groups.shape == (12,) and s["fc1"].output_groups.shape == (8,)
    assert s["fc1"].mask().shape == (12, 8) and s["fc2"].mask().shape == (8, 8)
    np.testing.assert_array_equal(s["fc2"].input_groups, s["fc1"].output_groups)  # chained
    for entry in s:
        np.testing.assert_array_equal(entry.mask(), planted_mask(entry.name, entry.kernel_shape))  # found
        w = model.get_layer(f"{entry.name}_em")
        assert float(numpy(w.scale)) == 0.0
        kernel = numpy(w.layer.kernel)
        off = entry.mask() == 0
        assert np.all(kernel[off] == 0.0)  # exactly zero after two more epochs, masked after every batch
        assert np.all(kernel[~off] != 0.0) and np.all(np.isfinite(kernel))
    plain = strip_em_penalty(model)
    np.testing.assert_allclose(numpy(plain(x)), numpy(model(x)), atol=1e-6)
    small = tgs.to_block_diagonal(plain, s)
    np.testing.assert_allclose(numpy(small(x)), numpy(plain(x)), atol=1e-4)
    assert small.count_params() == plain.count_params() - sum(e.params_total - e.params_kept for e in s)


def test_apply_mask_keeps_off_block_weights_zero_while_training():
    x, y = data()
    model = mlp()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    s = tgs.fit_groups(model, 2, balanced=True, seed=0, verbose=0)
    assert s.layer_names == ["fc1", "fc2"]
    for entry in s:  # balanced: every group has half the inputs and half the outputs
        a, b = entry.block_sizes()
        assert a.tolist() == [entry.kernel_shape[0] // 2] * 2 and b.tolist() == [entry.kernel_shape[1] // 2] * 2
    masked = tgs.apply_mask(model, s)
    for entry in s:
        np.testing.assert_array_equal(masked.get_layer(entry.name).get_weights()[0],
                                      model.get_layer(entry.name).get_weights()[0] * entry.mask())
    before = {e.name: masked.get_layer(e.name).get_weights()[0] for e in s}
    masked.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masked.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for entry in s:
        kernel = masked.get_layer(entry.name).get_weights()[0]
        on = entry.mask() == 1
        assert np.all(kernel[~on] == 0.0)
        assert np.mean(kernel[on] != before[entry.name][on]) > 0.5  # the blocks trained
    small = tgs.to_block_diagonal(masked, s)
    np.testing.assert_allclose(numpy(small(x)), numpy(masked(x)), atol=1e-4)


# --------------------------------------------------------------------------- BlockDiagonalDense
def dense_block_kernel(layer):
    """The full block-diagonal kernel assembled here from the layer's stored weights."""
    a_sizes, b_sizes = layer.input_groups, layer.output_groups
    if layer.equal_blocks:
        blocks = list(numpy(layer.kernel))
    else:
        stored = iter(numpy(v) for v in layer.kernels if v is not None)
        blocks = [next(stored) if a and b else np.zeros((a, b), "float32") for a, b in zip(a_sizes, b_sizes)]
    w = np.zeros((sum(a_sizes), sum(b_sizes)), "float32")
    r = c = 0
    for block, a, b in zip(blocks, a_sizes, b_sizes):
        w[r:r + a, c:c + b] = block
        r, c = r + a, c + b
    return w


@pytest.mark.parametrize("implementation,input_groups,output_groups", [
    ("batched", None, None), ("grouped_conv", None, None), ("split", None, None), ("split", [3, 0, 5], [2, 4, 0]),
])
def test_block_diagonal_dense_matches_numpy_trains_and_round_trips(tmp_path, implementation, input_groups, output_groups):
    keras.utils.set_random_seed(1)
    units = 6
    layer = BlockDiagonalDense(units, n_groups=3 if input_groups else 2, input_groups=input_groups,
                               output_groups=output_groups, implementation=implementation, activation="tanh",
                               bias_initializer="random_normal", name="bd")
    model = keras.Sequential([keras.Input((8,)), layer])
    rng = np.random.default_rng(0)
    x, target = rng.normal(size=(5, 8)).astype("float32"), rng.normal(size=(5, units)).astype("float32")
    w, bias = dense_block_kernel(layer), numpy(layer.bias)
    np.testing.assert_allclose(numpy(model(x)), np.tanh(x @ w + bias), atol=1e-5)
    # one SGD step on the mean squared error, against the gradient written out in NumPy
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.train_on_batch(x, target)
    out = np.tanh(x @ w + bias)
    grad_pre = 2.0 * (out - target) / out.size * (1.0 - out ** 2)
    mask = dense_block_kernel_mask(layer)
    np.testing.assert_allclose(dense_block_kernel(layer), (w - 0.1 * (x.T @ grad_pre)) * mask, atol=1e-5)
    np.testing.assert_allclose(numpy(layer.bias), bias - 0.1 * grad_pre.sum(0), atol=1e-5)
    assert layer.count_params() == int(mask.sum()) + units
    path = tmp_path / "bd.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.layers[-1].implementation == implementation
    np.testing.assert_allclose(numpy(loaded(x)), numpy(model(x)), atol=1e-6)


def dense_block_kernel_mask(layer):
    mask = np.zeros((sum(layer.input_groups), layer.units), "float32")
    r = c = 0
    for a, b in zip(layer.input_groups, layer.output_groups):
        mask[r:r + a, c:c + b] = 1.0
        r, c = r + a, c + b
    return mask


@pytest.mark.parametrize("balanced", [True, False])
def test_to_block_diagonal_equals_the_masked_model_and_round_trips(tmp_path, balanced):
    x, _ = data(16)
    model = mlp()
    s = tgs.fit_groups(model, 2, balanced=balanced, seed=0, verbose=0)
    masked = tgs.apply_mask(model, s)
    small = tgs.to_block_diagonal(masked, s)
    grouped = [layer for layer in small.layers if isinstance(layer, BlockDiagonalDense)]
    assert [g.name for g in grouped] == ["fc1", "fc2"]
    assert sum(g.count_params() - g.units for g in grouped) == sum(e.params_kept for e in s)
    np.testing.assert_allclose(numpy(small(x)), numpy(masked(x)), atol=1e-5)
    # and equal to the masked computation in NumPy (relu(x W1 + b1) ... with the masks applied)
    h = x
    for name, act in (("fc1", True), ("fc2", True), ("head", False)):
        w, b = model.get_layer(name).get_weights()
        h = h @ (w * s[name].mask() if name in s else w) + b
        h = np.maximum(h, 0.0) if act else h
    np.testing.assert_allclose(numpy(small(x)), h, atol=1e-5)
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(numpy(loaded(x)), numpy(small(x)), atol=1e-6)


def test_to_block_diagonal_gives_grouped_convolutions_equal_to_the_masked_model(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 4)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
                              L.Conv2D(8, 3, padding="same", activation="relu", name="c2"),
                              L.GlobalAveragePooling2D(), L.Dense(3, name="head")], name="cnn")
    s = tgs.fit_groups(model, 2, layers=["c2"], balanced=True, seed=0, verbose=0)
    masked = tgs.apply_mask(model, s)
    small = tgs.to_block_diagonal(masked, s)
    conv = [layer for layer in small.layers if isinstance(layer, L.Conv2D) and layer.groups > 1]
    assert len(conv) == 1 and conv[0].groups == 2            # a grouped convolution on this backend
    assert small.count_params() < masked.count_params()
    np.testing.assert_allclose(numpy(small(x)), numpy(masked(x)), atol=1e-5)
    path = tmp_path / "grouped.keras"
    small.save(path)
    np.testing.assert_allclose(numpy(keras.saving.load_model(path, safe_mode=True)(x)), numpy(small(x)), atol=1e-6)


# --------------------------------------------------------------------------- planting, distillation
def teacher_for(x, y, features):
    keras.utils.set_random_seed(1)
    teacher = keras.Sequential([keras.Input(features), L.Flatten(), L.Dense(16, activation="relu"), L.Dense(3)],
                               name="teacher")
    teacher.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=5, batch_size=32, verbose=0)
    return teacher


def test_plant_grows_the_chosen_layer_and_keeps_old_weights():
    x, y = data(64, 6)
    teacher = teacher_for(x, y, (6,))
    keras.utils.set_random_seed(2)
    student = keras.Sequential([keras.Input((6,)), L.Dense(2, activation="relu", name="h"), L.Dense(3, name="out")])
    old = {name: [w.copy() for w in student.get_layer(name).get_weights()] for name in ("h", "out")}
    grown, report = tgs.plant(student, teacher, (x, y), channels_per_step=3, max_steps=1, epochs_per_step=1,
                              learning_rate=1e-2, batch_size=16, verbose=0)
    assert grown.get_layer("h").units == 5 and student.get_layer("h").units == 2
    kernel, bias = grown.get_layer("h").get_weights()
    np.testing.assert_array_equal(kernel[:, :2], old["h"][0])
    np.testing.assert_array_equal(bias[:2], old["h"][1])
    out_kernel, out_bias = grown.get_layer("out").get_weights()
    np.testing.assert_array_equal(out_kernel[:2], old["out"][0])
    np.testing.assert_array_equal(out_bias, old["out"][1])
    assert np.abs(out_kernel[2:]).max() > 0.0  # the new rows trained away from their zero start
    assert grown.count_params() == student.count_params() + 3 * 6 + 3 + 3 * 3 == report.totals["params_after"]
    assert report.totals["steps"] == 1 and report.rows[0]["layer"] == "h"
    expected = np.maximum(x @ kernel + bias, 0.0) @ out_kernel + out_bias
    np.testing.assert_allclose(numpy(grown(x)), expected, atol=1e-5)
    assert report.totals["accuracy_after"] == pytest.approx(float(np.mean(expected.argmax(1) == y)))


def test_plant_in_a_conv_layer_recalibrates_batch_norm():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 48)
    x = (rng.normal(size=(48, 6, 6, 1)) + y[:, None, None, None]).astype("float32")
    teacher = teacher_for(x, y, (6, 6, 1))
    keras.utils.set_random_seed(2)
    student = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(2, 3, activation="relu", name="c1"),
                                L.BatchNormalization(name="bn"), L.Flatten(name="flat"), L.Dense(3, name="out")])
    grown, report = tgs.plant(student, teacher, (x, y), layers=["c1"], channels_per_step=2, max_steps=1,
                              epochs_per_step=1, batch_size=16, verbose=0)
    assert grown.get_layer("c1").filters == 4 and grown.get_layer("out").get_weights()[0].shape == (16 * 4, 3)
    h = numpy(keras.Model(grown.inputs[0], grown.get_layer("c1").output)(x)).reshape(-1, 4)
    bn = grown.get_layer("bn")
    np.testing.assert_allclose(numpy(bn.moving_mean)[2:], h[:, 2:].mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(numpy(bn.moving_variance)[2:], h[:, 2:].var(0), rtol=1e-3, atol=1e-6)
    outputs = numpy(grown(x))
    assert np.all(np.isfinite(outputs))
    assert report.totals["accuracy_after"] == pytest.approx(accuracy(grown, (x, y)))


def test_distiller_loss_matches_numpy_and_only_the_student_trains():
    x, y = data(64, 6)
    teacher = teacher_for(x, y, (6,))
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    keras.utils.set_random_seed(3)
    student = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu"), L.Dense(3)], name="student")
    distiller = tgs.Distiller(student, teacher, temperature=3.0, alpha=0.25)
    s, t = numpy(student(x)), numpy(teacher(x))
    pt = np.exp(log_softmax(t / 3.0))
    per_sample = (0.25 * -log_softmax(s)[np.arange(len(y)), y]
                  + 0.75 * 9.0 * (pt * (log_softmax(t / 3.0) - log_softmax(s / 3.0))).sum(1))
    np.testing.assert_allclose(float(numpy(distiller.compute_loss(x, y, student(x)))), per_sample.mean(), rtol=1e-4)
    student_before = [w.copy() for w in student.get_weights()]
    distiller.compile(keras.optimizers.Adam(1e-2))
    history = distiller.fit(x, y, epochs=3, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    for a, b in zip(teacher.get_weights(), teacher_weights):
        np.testing.assert_array_equal(a, b)
    assert all(np.abs(a - b).max() > 0 for a, b in zip(student.get_weights(), student_before))


# --------------------------------------------------------------------------- structure learning
def test_learn_structure_report_and_model():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(256, 2))
    x = np.concatenate([np.tanh(z @ rng.normal(size=(2, 6))), 1e-3 * rng.normal(size=(256, 4))], 1).astype("float32")
    s = tgs.learn_structure(x, max_depth=2, width=4, epochs=20, batch_size=64, entropy_tol=-10.0, seed=0, verbose=0)
    assert s.depth == 2 and s.widths == [4, 4] and s.input_dim == 10
    assert len(s.connections) == len(s.entropy) == len(s.weights) == len(s.source_norms) == 2
    assert s.connections[0] == [0]
    # the stored weights reproduce the entropy the report gives: layer 1 = tanh(x0 W + b) in NumPy
    x0 = (x.astype("float64") - x.mean(0)) / x.astype("float64").std()
    h1 = np.tanh(x0 @ s.weights[0]["kernel"] + s.weights[0]["bias"])
    assert s.entropy[0] == pytest.approx(_gaussian_entropy(h1)[0], rel=1e-4)
    # a source is connected exactly when its weight group is not zero
    for norms, connected in zip(s.source_norms, s.connections):
        assert connected == [i for i, n in enumerate(norms) if n > 0.0]
    report = json.loads(s.to_json())
    assert report["depth"] == 2 and report["connections"] == [list(c) for c in s.connections]
    assert "layer2: 4 units" in str(s)
    model = tgs.build_model(s, 3)
    assert model.output_shape == (None, 3)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labels = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    history = model.fit(x, labels, epochs=2, batch_size=64, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert np.all(np.isfinite(numpy(model(x))))


# --------------------------------------------------------------------------- sparsity budget in training
def test_sparsity_target_drives_the_zeros_to_the_budget():
    # the strength multiplier must reach the compiled train step on every backend (JAX compiles it
    # with the value as a constant, so the callback compiles it again when the strength moves)
    (x, y), (xt, yt) = tgs.datasets.load_digits()
    x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), L.Dense(64, activation="relu", name="h1"),
                              L.Dense(32, activation="relu", name="h2"), L.Dense(10, name="out")])
    model = tgs.regularize(model, tgs.regularizers.GroupLasso(1e-3, axis="input"), layers=["h2", "out"],
                           proximal=True)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    controller = tgs.callbacks.SparsityTarget(macs=0.5, interval=10)
    model.fit(x, y, epochs=10, batch_size=32, verbose=0, callbacks=[tgs.callbacks.ProximalStep(), controller])
    kept = tgs.flops(tgs.shrink(model, threshold=0.0)) / tgs.flops(model)
    assert controller.kept() == pytest.approx(kept)          # it measured the trained weights
    assert controller.scale > 1
    assert abs(kept - 0.5) <= 2 * controller.margin, (kept, controller.history[-4:])
    assert model.evaluate(xt, yt, verbose=0)[1] > 0.85


# --------------------------------------------------------------------------- latency budgets
@pytest.mark.skipif(BACKEND == "tensorflow", reason="latency targets run on TensorFlow (tests/test_prune.py)")
def test_latency_target_says_which_backend_it_needs():
    model = mlp()
    with pytest.raises(RuntimeError, match=rf"prune: Expected KERAS_BACKEND=tensorflow .*Received: KERAS_BACKEND={BACKEND}\."):
        tgs.prune(model, latency=0.5, verbose=0)
    with pytest.raises(RuntimeError, match=r"KERAS_BACKEND=tensorflow"):
        tgs.pruning.latency.LatencyTable(model)
    small, report = tgs.prune(model, macs=0.5, verbose=0)  # the other targets work here
    assert report.totals["macs_fraction"] <= 0.5 and small.count_params() < model.count_params()
