"""Filter pruning by loss increase: planted useless filters go, useful ones stay, exact errors."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_groupsparse.pruning import PruningReport, prune_filters
from tf_groupsparse.pruning.importance import Magnitude


def _task(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = np.argmax(x[:, :3] + 0.5 * x[:, 3:], axis=1).astype("int32")
    return x, y


def _np_loss(weights, x, y, removed=()):
    """Cross-entropy of the Dense(8, relu) -> Dense(3) model in NumPy with hidden units removed."""
    k1, b1, k2, b2 = weights
    h = np.maximum(x @ k1 + b1, 0.0)
    h[:, list(removed)] = 0.0
    z = h @ k2 + b2
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), y]))


@pytest.fixture(scope="module")
def dense_model():
    """Dense(8, relu) -> Dense(3): 5 trained hidden units and, at 1, 4, 6, three planted units
    with large random incoming weights whose outgoing rows are zero (they reach nothing)."""
    keras.utils.set_random_seed(1)
    x, y = _task()
    small = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    small.compile(keras.optimizers.Adam(3e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    small.fit(x, y, epochs=40, batch_size=64, verbose=0)
    s1, c1, s2, c2 = small.get_weights()
    useful = [0, 2, 3, 5, 7]
    rng = np.random.default_rng(5)
    k1 = rng.normal(scale=2.0, size=(6, 8)).astype("float32")
    b1 = np.ones(8, "float32")
    k2 = np.zeros((8, 3), "float32")
    k1[:, useful], b1[useful], k2[useful] = s1, c1, s2
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="h"),
                              keras.layers.Dense(3, name="out")])
    model.set_weights([k1, b1, k2, c2])
    return model, x, y


def _greedy_reference(weights, x, y, tol):
    """The acceptance rule replayed in NumPy: ascending column norm, keep if total rise <= tol."""
    base = _np_loss(weights, x, y)
    removed = []
    for f in np.argsort(np.linalg.norm(weights[0], axis=0), kind="stable"):
        if len(removed) < 7 and _np_loss(weights, x, y, removed + [int(f)]) - base <= tol:
            removed.append(int(f))
    return sorted(removed)


def test_removes_planted_useless_filters_and_keeps_useful_ones(dense_model):
    model, x, y = dense_model
    weights = [w.copy() for w in model.get_weights()]
    tol = 0.02
    pruned, report = prune_filters(model, (x, y), samples=400, tolerance=tol, search="greedy", verbose=0)
    removed = report.meta["plan"]["h"]
    assert {1, 4, 6} <= set(removed)
    base = _np_loss(weights, x, y)
    assert report.totals["loss_before"] == pytest.approx(base, abs=1e-5)
    # the accepted set stays within the budget, measured independently in NumPy
    assert _np_loss(weights, x, y, removed) - base <= tol + 1e-6
    # the same set as the rule replayed independently, and the trained units stay
    assert removed == _greedy_reference(weights, x, y, tol)
    assert len(removed) <= 4
    # physically smaller, same function as the zeroed model, user's model untouched
    assert pruned.get_layer("h").units == 8 - len(removed)
    assert report.totals["loss_after"] == pytest.approx(_np_loss(weights, x, y, removed), abs=1e-5)
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert isinstance(report, PruningReport)
    row = report.rows[0]
    assert (row["layer"], row["filters_before"], row["filters_after"]) == ("h", 8, 8 - len(removed))
    # the layer's own rows count its kernel columns and biases; totals add the consumer's rows
    assert row["params_removed"] == len(removed) * (6 + 1)
    assert report.totals["params_removed"] == len(removed) * (6 + 1 + 3)
    assert row["macs_removed"] == len(removed) * 6
    assert report.totals["macs_removed"] == len(removed) * (6 + 3)


def test_zero_tolerance_and_max_fraction(dense_model):
    model, x, y = dense_model
    _, strict = prune_filters(model, (x, y), samples=400, tolerance=0.0, search="greedy", verbose=0)
    # only filters whose removal does not raise the loss at all go (the planted ones do not)
    assert strict.totals["loss_increase"] <= 1e-6
    assert {1, 4, 6} <= set(strict.meta["plan"]["h"])
    _, capped = prune_filters(model, (x, y), samples=400, tolerance=10.0, max_fraction=0.25, search="greedy", verbose=0)
    assert capped.rows[0]["filters_after"] == 6


def test_conv_bn_flatten_model_matches_zeroed_outputs():
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(192, 6, 6, 2)).astype("float32")
    y = np.argmax(np.stack([x[..., 0].mean((1, 2)), x[..., 1].mean((1, 2)), 0.05 * np.ones(192)], 1), 1)
    y = y.astype("int32")

    def conv_model(filters):
        inputs = keras.Input((6, 6, 2))
        h = keras.layers.Conv2D(filters, 3, name="conv")(inputs)
        h = keras.layers.BatchNormalization(name="bn")(h)
        h = keras.layers.ReLU(name="relu")(h)
        return keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Flatten(name="flat")(h)))

    small = conv_model(4)
    small.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    small.fit(x, y, epochs=15, batch_size=32, verbose=0)
    model = conv_model(6)
    useful = [0, 1, 3, 4]  # channels 2 and 5 are planted: random filters feeding nothing
    kernel, cbias = (w.copy() for w in model.get_layer("conv").get_weights())
    kernel[..., useful], cbias[useful] = small.get_layer("conv").get_weights()
    model.get_layer("conv").set_weights([kernel, cbias + 0.3])
    bn = [np.full(6, v, "float32") for v in (1.5, 0.2, 0.1, 2.0)]
    for full, trained in zip(bn, small.get_layer("bn").get_weights()):
        full[useful] = trained
    model.get_layer("bn").set_weights(bn)
    rows = np.zeros((16, 6, 3), "float32")
    small_kernel, bias = small.get_layer("out").get_weights()
    rows[:, useful, :] = small_kernel.reshape(16, 4, 3)
    model.get_layer("out").set_weights([rows.reshape(96, 3), bias])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    pruned, report = prune_filters(model, ds, samples=96, tolerance=0.0, layers=["conv"],
                                   importance=Magnitude(1, roles=("produce",), normalize=None), batch_size=32,
                                   search="greedy", verbose=0)
    assert {2, 5} <= set(report.meta["plan"]["conv"])
    keep = [c for c in range(6) if c not in report.meta["plan"]["conv"]]
    # the reference: the original model with the removed channels' consumer rows set to zero
    rows[:, report.meta["plan"]["conv"], :] = 0.0
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    reference.get_layer("out").set_weights([rows.reshape(96, 3), bias])
    np.testing.assert_allclose(pruned.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-5)
    assert pruned.get_layer("conv").filters == len(keep)
    assert pruned.get_layer("bn").gamma.shape == (len(keep),)
    assert report.totals["evaluations"] <= 6  # each filter at most once


def test_callable_importance_old_candidates_callable_and_fine_tune(dense_model):
    model, x, y = dense_model
    model = keras.models.clone_model(model)
    model.set_weights(dense_model[0].get_weights())
    model.compile(keras.optimizers.SGD(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    order = []

    def reverse_index(graph, context):
        order.append(graph.model.name)
        return -np.arange(graph.n_groups, dtype="float64")

    pruned, report = prune_filters(model, (x, y), samples=200, tolerance=0.02, importance=reverse_index,
                                   fine_tune={"epochs": 2, "batch_size": 50}, verbose=0)
    assert len(order) == 1

    def reverse_layer(layer):  # the deprecated candidates callable: layer -> score per channel
        return -np.arange(layer.units, dtype="float64")

    with pytest.warns(DeprecationWarning, match="`candidates` is deprecated"):
        old, _ = prune_filters(dense_model[0], (x, y), samples=200, tolerance=0.02, candidates=reverse_layer, verbose=0)
    assert old.get_layer("h").units == prune_filters(dense_model[0], (x, y), samples=200, tolerance=0.02,
                                                     importance=reverse_index, verbose=0)[0].get_layer("h").units
    assert report.meta["loss"] == "model.compile"
    assert report.totals["loss_after_fine_tune"] < report.totals["loss_after"]


def test_fine_tune_by_distillation_from_the_unpruned_model(dense_model):
    from tf_groupsparse.pruning.distillation import distillation_loss

    model, x, y = dense_model
    model = keras.models.clone_model(model)
    model.set_weights(dense_model[0].get_weights())
    model.compile(keras.optimizers.SGD(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    teacher_weights = [w.copy() for w in model.get_weights()]
    bare, _ = prune_filters(model, (x, y), samples=200, tolerance=0.3, verbose=0)
    keras.utils.set_random_seed(0)
    pruned, report = prune_filters(model, (x, y), samples=200, tolerance=0.3, verbose=0,
                                   fine_tune={"epochs": 3, "batch_size": 50, "teacher": model, "temperature": 2.0})

    def kd(m):
        return float(distillation_loss(y, m.predict(x, verbose=0), model.predict(x, verbose=0), 2.0, 0.5))

    assert pruned.get_layer("h").units == bare.get_layer("h").units < 8
    assert kd(pruned) < kd(bare)
    for a, b in zip(teacher_weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the teacher (here the unpruned model) is untouched
    assert report.meta["fine_tune"] == {"epochs": 3, "batch_size": 50, "teacher": model.name,
                                        "temperature": 2.0, "alpha": 0.5}
    # the returned model is compiled as the original (its own loss and metrics), not as a distiller
    loss, acc = pruned.evaluate(x, y, verbose=0)
    z = pruned.predict(x, verbose=0).astype("float64")
    z -= z.max(axis=1, keepdims=True)
    ce = -np.mean(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1)))
    assert loss == pytest.approx(ce, rel=1e-4)
    assert acc == pytest.approx(np.mean(np.argmax(z, axis=1) == y))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tolerance": -1}, ValueError, "prune_filters: Expected `tolerance` >= 0. Received: tolerance=-1.0"),
        ({"samples": 0}, ValueError, "prune_filters: Expected `samples` >= 1. Received: samples=0"),
        ({"importance": "norm"}, ValueError,
         "prune_filters: Expected `importance` to be one of 'l2', 'l1', 'bn_scale', 'taylor', 'lamp', 'random', "
         "'loss'. Received: importance='norm'"),
        ({"layers": ["out"]}, ValueError,
         "prune_filters: Expected `layers` to name layers with removable filters: ['h']. Received: layers=['out']"),
        ({"max_fraction": 0}, ValueError, "prune_filters: Expected `max_fraction` > 0 and <= 1. Received: max_fraction=0.0"),
        ({"max_fraction": {"h": 1.5}}, ValueError,
         "prune_filters: Expected `max_fraction['h']` > 0 and <= 1. Received: max_fraction['h']=1.5"),
        ({"max_fraction": {"out": 0.5}}, ValueError,
         "prune_filters: Expected the keys of `max_fraction` to be layers being pruned: ['h']. Received: ['out'] "
         "(name them in `layers` too, or drop them from `max_fraction`)"),
        ({"round_to": 0}, ValueError,
         "prune_filters: Expected `round_to` >= 1. Received: round_to=0"),
        ({"rounding": "floor"}, ValueError,
         "prune_filters: Expected `rounding` to be one of 'down', 'nearest', 'up', 'blocks'. Received: rounding='floor'"),
        ({"fine_tune": {"epoch": 1}}, ValueError,
         "prune_filters: Expected `fine_tune` to be None or a dict like {'epochs': 2} (optional 'batch_size', "
         "and 'teacher' with optional 'temperature' and 'alpha' to fine-tune by distillation). "
         "Received: fine_tune={'epoch': 1}"),
        ({"fine_tune": {"epochs": 1, "temperature": 2.0}}, ValueError,
         "prune_filters: Expected fine_tune['teacher'] (a trained keras.Model) with 'temperature' or 'alpha'. "
         "Received: fine_tune={'epochs': 1, 'temperature': 2.0}; add the teacher or drop them"),
        ({"fine_tune": {"epochs": 1, "teacher": keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)],
                                                                 name="five")}}, ValueError,
         "Distiller: Expected `student` and `teacher` to score the same number of classes. Received: student "
         "'plain' -> (None, 3), teacher 'five' -> (None, 5)"),
        ({"fine_tune": {"epochs": 1}}, ValueError,
         "prune_filters: Expected a compiled model when `fine_tune` is given (the pruned model is fine-tuned "
         "with the model's compile settings). Received: model 'plain' is not compiled"),
        ({"data": np.zeros(3)}, TypeError,
         "prune_filters: Expected `data` to be an (x, y) tuple of arrays or a tf.data.Dataset of (x, y) "
         "batches. Received: data of type ndarray"),
        ({"loss": "no_such_loss"}, ValueError,
         "prune_filters: Expected `loss` to be a Keras loss name, a keras.losses.Loss or a callable "
         "(y_true, y_pred). Received: loss='no_such_loss'"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="h"), keras.layers.Dense(3, name="out")],
                             name="plain")
    args = {"data": _task(8)}
    args.update(kwargs)
    data = args.pop("data")
    with pytest.raises(error, match=re.escape(message)):
        prune_filters(model, data, verbose=0, **args)
    with pytest.raises(TypeError, match=re.escape("prune_filters: Expected `model` to be a keras.Model")):
        prune_filters("model", _task(8), verbose=0)


def _residual_model():
    """stem (4) + Add with block conv (4): the two convs' channels are coupled in one group each."""
    inputs = keras.Input((6, 6, 2))
    stem = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv1")(stem)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(h)
    h = keras.layers.ReLU(name="relu")(keras.layers.Add(name="add")([stem, h]))
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(h))


def test_coupled_channels_count_for_every_layer_that_creates_them():
    keras.utils.set_random_seed(3)
    model = _residual_model()
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    y = np.arange(64) % 3
    # an unlimited tolerance accepts every candidate the limits allow: one residual channel must
    # stay (it used to be removed through conv2 after stem had reached its own limit)
    pruned, report = prune_filters(model, (x, y), tolerance=1e9, allow_untrained=True, verbose=0)
    assert pruned.get_layer("stem").filters == pruned.get_layer("conv2").filters == 1
    assert pruned.get_layer("conv1").filters == 1
    widths = {r["layer"]: r["filters_after"] for r in report.rows}
    assert widths == {"stem": 1, "conv1": 1, "conv2": 1}
    _, capped = prune_filters(model, (x, y), tolerance=1e9, max_fraction=0.5, allow_untrained=True, verbose=0)
    widths = {r["layer"]: r["filters_after"] for r in capped.rows}
    assert widths == {"stem": 2, "conv1": 2, "conv2": 2}
    # one cap per layer: conv1 (3 filters) may lose 2, the residual pair at most a quarter (1 of 4)
    # through either layer; a layer the dict does not name is not capped (nor are the others by it)
    _, per_layer = prune_filters(model, (x, y), tolerance=1e9, max_fraction={"conv1": 0.7, "stem": 0.25},
                                 allow_untrained=True, verbose=0)
    widths = {r["layer"]: r["filters_after"] for r in per_layer.rows}
    assert widths == {"stem": 3, "conv1": 1, "conv2": 3}
    _, one_layer = prune_filters(model, (x, y), tolerance=1e9, max_fraction={"conv1": 0.34},
                                 allow_untrained=True, verbose=0)
    widths = {r["layer"]: r["filters_after"] for r in one_layer.rows}
    assert widths == {"stem": 1, "conv1": 2, "conv2": 1}


def test_consumer_magnitude_sums_every_reader_of_a_channel():
    from tf_groupsparse.graph import build_graph
    from tf_groupsparse.pruning.importance import Magnitude, channel_scores

    inputs = keras.Input((5, 5, 2))
    stem = keras.layers.Conv2D(3, 3, padding="same", name="stem")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(3, 3, padding="same", name="conv1")(stem))
    h = keras.layers.Add(name="add")([stem, keras.layers.Conv2D(3, 1, name="conv2")(h)])
    out = keras.layers.Dense(4, name="out")(keras.layers.GlobalAveragePooling2D(name="gap")(h))
    model = keras.Model(inputs, out)
    graph = build_graph(model)
    scores = Magnitude(2, roles=("consume",), normalize=None)(graph)
    score = lambda layer: channel_scores(scores, graph, layer.name)  # noqa: E731
    k1 = model.get_layer("conv1").kernel.numpy()
    k2 = model.get_layer("conv2").kernel.numpy()
    kd = model.get_layer("out").kernel.numpy()
    # conv1's channel o is read by conv2 only; stem's channel i (coupled with conv2's by the Add)
    # is read by conv1 and by the Dense head
    np.testing.assert_allclose(score(model.get_layer("conv1")), np.sqrt(np.sum(k2[0, 0] ** 2, axis=1)), rtol=1e-5)
    expected = np.sqrt(np.sum(k1 ** 2, axis=(0, 1, 3)) + np.sum(kd ** 2, axis=1))
    np.testing.assert_allclose(score(model.get_layer("stem")), expected, rtol=1e-5)
    np.testing.assert_allclose(score(model.get_layer("conv2")), expected, rtol=1e-5)


def test_consumer_norm_candidates_remove_the_channel_nobody_reads():
    keras.utils.set_random_seed(0)
    model = _residual_model()
    # conv1's channel 2 has a large filter but conv2 reads it with zero weights: by consumer
    # norm it is the weakest channel (by its own filter norm it is the strongest)
    k1 = model.get_layer("conv1").kernel.numpy()
    k1[..., 2] *= 100.0
    model.get_layer("conv1").kernel.assign(k1)
    k2 = model.get_layer("conv2").kernel.numpy()
    k2[:, :, 2, :] = 0.0
    model.get_layer("conv2").kernel.assign(k2)
    x = np.random.default_rng(0).normal(size=(32, 6, 6, 2)).astype("float32")
    y = np.arange(32) % 3
    with pytest.warns(DeprecationWarning, match="`candidates` is deprecated; use `importance`"):
        pruned, report = prune_filters(model, (x, y), tolerance=0.0, candidates="consumer_norm", layers=["conv1"],
                                       max_fraction=0.34, allow_untrained=True, verbose=0)
    assert report.rows[0]["filters_after"] == 2 and report.meta["importance"] == "l2"
    again, _ = prune_filters(model, (x, y), tolerance=0.0, layers=["conv1"], max_fraction=0.34, verbose=0,
                             allow_untrained=True, importance=Magnitude(2, roles=("consume",), normalize=None))
    assert again.get_layer("conv1").filters == 2
    np.testing.assert_allclose(pruned.get_layer("conv1").kernel.numpy(), k1[..., :2], rtol=1e-6)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="consumer_norm"), pytest.warns(DeprecationWarning):
        prune_filters(model, (x, y), candidates="consumer", verbose=0)


def _conv_chain(widths=(12, 10)):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 6, 2))
    h = inputs
    for i, w in enumerate(widths, 1):
        h = keras.layers.Conv2D(w, 3, padding="same", activation="relu", name=f"c{i}")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(h))


def _assert_computes_the_zeroed_model(model, pruned, plan, x):
    """`pruned` computes `model` with the planned filters' kernel columns and biases zeroed."""
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    for name, channels in plan.items():
        kernel, bias = reference.get_layer(name).get_weights()
        kernel[..., channels], bias[channels] = 0.0, 0.0
        reference.get_layer(name).set_weights([kernel, bias])
    np.testing.assert_allclose(pruned.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("tolerance, rounding, widths", [
    (0.0, "down", [4, 4]), (0.0, "nearest", [8, 4]), (0.0, "up", [8, 4]),  # greedy pass: [6, 4]
    (0.03, "down", [4, 4]), (0.03, "nearest", [4, 4]), (0.03, "up", [8, 4]),  # greedy pass: [5, 2]
])
def test_channel_multiple_rounds_the_pruned_widths(tolerance, rounding, widths):
    model = _conv_chain()
    kernel, bias = model.get_layer("out").get_weights()
    model.get_layer("out").set_weights([20 * kernel, bias])  # confident: removing filters costs loss
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)  # labels the model gets right
    _, free = prune_filters(model, (x, y), tolerance=tolerance, search="greedy", verbose=0)
    pruned, report = prune_filters(model, (x, y), tolerance=tolerance, round_to=4, rounding=rounding,
                                   search="greedy", verbose=0)
    assert [r["filters_after"] for r in report.rows] == widths
    for row, before in zip(report.rows, free.rows):
        w, full, was = row["filters_after"], row["filters_before"], before["filters_after"]
        assert pruned.get_layer(row["layer"]).filters == w
        assert w == full or w % 4 == 0, (row, rounding)
        # down: the multiple below (at least 4); up: the multiple above (or all); nearest: the closer one
        below, above = max(4, was - was % 4), min(full, was + (-was) % 4)
        expected = {"down": below if was != full else full, "up": above,
                    "nearest": below if was % 4 and was % 4 < 2 and was > 4 else above}[rounding]
        assert w == expected, (row, was, rounding)
    assert report.totals["filters_rounded"] == sum(b["filters_after"] for b in free.rows) - sum(
        r["filters_after"] for r in report.rows)
    assert report.meta["round_to"] == 4
    # the model rewrite still computes the original model with the planned filters removed
    _assert_computes_the_zeroed_model(model, pruned, report.meta["plan"], x)
    assert abs(report.totals["loss_after"] - report.totals["loss_before"] - report.totals["loss_increase"]) < 1e-6


def test_channel_multiple_rounds_coupled_residual_channels_once():
    keras.utils.set_random_seed(3)
    model = _residual_model()
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    y = np.arange(64) % 3
    pruned, report = prune_filters(model, (x, y), tolerance=1e9, round_to=2, rounding="up", allow_untrained=True, verbose=0)
    # the greedy pass leaves 1 channel per layer; "up" gives one back, to the coupled stem/conv2 once
    widths = {r["layer"]: r["filters_after"] for r in report.rows}
    assert widths == {"stem": 2, "conv1": 2, "conv2": 2}
    assert pruned.get_layer("stem").filters == pruned.get_layer("conv2").filters == 2
    assert report.totals["filters_rounded"] == -2


def _block_reference(weights, x, y, tol, multiple):
    """``rounding="blocks"`` replayed in NumPy on the one hidden layer: the width % multiple
    weakest units, then `multiple` at a time (never the last `multiple`), each block kept if the
    total rise stays <= tol; the first rejected block ends the layer."""
    base = _np_loss(weights, x, y)
    order = [int(f) for f in np.argsort(np.linalg.norm(weights[0], axis=0), kind="stable")]
    width = len(order)
    edges = [0] + list(range(width % multiple or multiple, width - multiple + 1, multiple))
    removed, evaluations = [], 0
    for lo, hi in zip(edges, edges[1:]):
        evaluations += 1
        if _np_loss(weights, x, y, removed + order[lo:hi]) - base > tol:
            break
        removed += order[lo:hi]
    return sorted(removed), evaluations


@pytest.mark.parametrize("multiple", [2, 3])
@pytest.mark.parametrize("tolerance", [0.0, 0.05, 0.5, 1e9])
def test_blocks_rounding_matches_a_numpy_replay_and_bounds_the_loss(dense_model, multiple, tolerance):
    model, x, y = dense_model
    pruned, report = prune_filters(model, (x, y), samples=len(x), tolerance=tolerance, round_to=multiple,
                                   rounding="blocks", verbose=0)
    expected, evaluations = _block_reference(model.get_weights(), x, y, tolerance, multiple)
    assert report.meta["plan"].get("h", []) == expected
    width = pruned.get_layer("h").units
    assert width == 8 - len(expected) and (width == 8 or width % multiple == 0) and width >= multiple
    # unlike "down"/"up", the tolerance still bounds the pruned model's loss; nothing rounded afterwards
    assert report.totals["loss_increase"] <= tolerance + 1e-5
    assert report.totals["filters_rounded"] == 0
    assert report.meta["rounding"] == "blocks"
    assert report.totals["evaluations"] == evaluations  # one per block, up to the first rejected one


def test_blocks_rounding_on_convs_keeps_whole_tiles_and_equal_outputs():
    model = _conv_chain((12, 10))
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    pruned, report = prune_filters(model, (x, y), tolerance=1e9, round_to=4, rounding="blocks", verbose=0)
    # c1: 12 -> blocks of 4 down to 4; c2: 10 -> the 2 weakest, then 4 -> 4 left
    assert [pruned.get_layer(n).filters for n in ("c1", "c2")] == [4, 4]
    assert report.totals["evaluations"] == 4
    _assert_computes_the_zeroed_model(model, pruned, report.meta["plan"], x)


def test_bisection_needs_log_many_evaluations_and_keeps_the_tolerance():
    import math

    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="c1")(inputs)
    h = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name="c2")(h)
    out = keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(5)
    for name, width in (("c1", 64), ("c2", 48)):     # half of each layer's filters barely matter
        kernel, bias = model.get_layer(name).get_weights()
        weak = rng.permutation(width)[: width // 2]
        kernel[..., weak] *= 1e-4
        bias[weak] = 0.0
        model.get_layer(name).set_weights([kernel, bias])
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    y = np.arange(64) % 3
    fast, report = prune_filters(model, (x, y), tolerance=0.01, allow_untrained=True, verbose=0)
    bound = 3 * (math.ceil(math.log2(64 + 48 + 1)) + 1) + 2     # (layers + 1) * log(filters)
    assert report.totals["evaluations"] <= bound, report.totals["evaluations"]
    assert report.totals["loss_increase"] <= 0.01 + 1e-6
    assert fast.get_layer("c1").filters <= 32 and fast.get_layer("c2").filters <= 24
    slow, greedy_report = prune_filters(model, (x, y), tolerance=0.01, allow_untrained=True, search="greedy",
                                        verbose=0)
    assert greedy_report.totals["evaluations"] >= 64 + 48 - 2 > 3 * report.totals["evaluations"]
    assert abs(slow.get_layer("c1").filters - fast.get_layer("c1").filters) <= 8
