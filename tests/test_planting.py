"""Channel planting: frozen old parameters, distillation loss, layer search, budget, errors."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_groupsparse.datasets import load_digits
from tf_groupsparse.pruning.planting import PlantingReport, _chain, accuracy, plant
from tf_groupsparse.pruning.twopath import build_planted


@pytest.fixture(scope="module")
def digits():
    keras.utils.set_random_seed(0)
    (xt, yt), (xv, yv) = load_digits()
    teacher = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
         keras.layers.Dense(10, activation="softmax")]
    )
    teacher.compile("adam", "sparse_categorical_crossentropy")
    teacher.fit(xt, yt, epochs=15, verbose=0)
    return (xt, yt), (xv, yv), teacher


def _student(trained_on=None):
    model = keras.Sequential(
        [keras.Input((8, 8, 1)),
         keras.layers.Conv2D(2, 3, activation="relu", name="c1"),
         keras.layers.BatchNormalization(name="bn"),
         keras.layers.MaxPooling2D(name="pool"),
         keras.layers.Flatten(name="flat"),
         keras.layers.Dense(4, activation="relu", name="d1"),
         keras.layers.Dense(10, name="out")]
    )
    if trained_on is not None:
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(*trained_on, epochs=2, verbose=0)
    return model


def test_planted_model_starts_with_unchanged_outputs(digits):
    (xt, yt), (xv, _), _ = digits
    student = _student((xt, yt))
    chain = _chain(student)
    for index, consumer in ((0, 4), (4, 5)):
        planted = build_planted(chain, (8, 8, 1), index, consumer, 3)
        np.testing.assert_allclose(
            planted.model.predict(xv, verbose=0), student.predict(xv, verbose=0), atol=1e-6, rtol=0
        )
        # only the new channels, their BN entries and the consumer's new rows are trainable
        names = sorted(v.path.split("/")[0] for v in planted.model.trainable_variables)
        expected = {0: ["bn__planted"] * 2 + ["c1__planted"] * 2 + ["d1__planted"],
                    4: ["d1__planted"] * 2 + ["out__planted"]}[index]
        assert names == expected


@pytest.mark.slow
def test_old_parameters_bit_identical_and_accuracy_rises(digits):
    (xt, yt), (xv, yv), teacher = digits
    student = _student((xt, yt))
    original = {layer.name: [w.copy() for w in layer.get_weights()] for layer in student.layers}
    grown, report = plant(
        student, teacher, (xt, yt), validation_data=(xv, yv), channels_per_step=4, max_steps=2,
        epochs_per_step=3, learning_rate=1e-2, verbose=0,
    )
    # the user's model is untouched
    for layer in student.layers:
        for a, b in zip(original[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert isinstance(report, PlantingReport)
    assert report.totals["steps"] == 2
    assert report.totals["accuracy_after"] > report.totals["accuracy_before"] + 0.05
    assert report.totals["accuracy_after"] == pytest.approx(accuracy(grown, (xv, yv)))
    layers = {layer.name: layer for layer in grown.layers}
    c = layers["c1"].filters
    u = layers["d1"].units
    assert c + u == 2 + 4 + 2 * 4
    # old slices are bit-identical: grown layer's columns, BN entries, consumer rows
    k1, b1 = layers["c1"].get_weights()
    np.testing.assert_array_equal(k1[..., :2], original["c1"][0])
    np.testing.assert_array_equal(b1[:2], original["c1"][1])
    for new, old in zip(layers["bn"].get_weights(), original["bn"]):
        np.testing.assert_array_equal(new[:2], old)
    kd, bd = layers["d1"].get_weights()
    spatial = 9
    np.testing.assert_array_equal(
        kd.reshape(spatial, c, u)[:, :2, :4], original["d1"][0].reshape(spatial, 2, 4)
    )
    np.testing.assert_array_equal(bd[:4], original["d1"][1])
    ko, bo = layers["out"].get_weights()
    np.testing.assert_array_equal(ko[:4], original["out"][0])
    np.testing.assert_array_equal(bo, original["out"][1])
    # every step kept the candidate with the best gain per parameter
    for row in report.rows:
        tried = [r for r in report.meta["candidates"] if r["step"] == row["step"]]
        assert row["layer"] == max(tried, key=lambda r: r["gain_per_param"])["layer"]
    assert {r["layer"] for r in report.meta["candidates"]} == {"c1", "d1"}


@pytest.mark.slow
def test_plant_stops_at_param_budget_and_saves(digits, tmp_path):
    (xt, yt), (xv, yv), teacher = digits
    student = _student((xt, yt))
    start = student.count_params()  # 154
    budget = start + 150  # room for one d1 step (116 params), never for a c1 step (192)
    ds = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(64)
    grown, report = plant(
        student, teacher, ds, validation_data=(xv, yv), max_steps=3, epochs_per_step=1,
        param_budget=budget, verbose=0,
    )
    assert report.totals["stopped_by"] == "param_budget"
    assert [row["layer"] for row in report.rows] == ["d1"]
    assert grown.count_params() == start + 116 <= budget
    path = tmp_path / "planted.keras"
    grown.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(xv, verbose=0), grown.predict(xv, verbose=0), atol=1e-6)


def test_stops_at_target_accuracy_before_any_step(digits):
    (xt, yt), (xv, yv), teacher = digits
    student = _student()
    grown, report = plant(student, teacher, (xt[:64], yt[:64]), validation_data=(xv, yv),
                          target_accuracy=0.0, verbose=0)
    assert report.rows == [] and report.totals["stopped_by"] == "target_accuracy"
    assert grown is not student and grown.count_params() == student.count_params()
    np.testing.assert_array_equal(grown.predict(xv[:5], verbose=0), student.predict(xv[:5], verbose=0))


def test_functional_student_ending_in_softmax(digits):
    (xt, yt), (xv, yv), teacher = digits
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten(name="flat")(inputs)
    h = keras.layers.Dense(3, activation="relu", name="hidden")(h)
    h = keras.layers.Dropout(0.1, name="drop")(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    student = keras.Model(inputs, outputs)
    before = [w.copy() for w in student.get_weights()]
    grown, report = plant(student, teacher, (xt[:256], yt[:256]), validation_data=(xv, yv),
                          channels_per_step=2, max_steps=1, epochs_per_step=1, verbose=0)
    assert report.meta["student_outputs"] == "probabilities"
    assert report.meta["teacher_outputs"] == "probabilities"
    assert grown.get_layer("hidden").units == 5
    assert grown.get_layer("probs").activation is keras.activations.softmax
    np.testing.assert_allclose(grown.predict(xv[:4], verbose=0).sum(axis=1), 1.0, rtol=1e-5)
    kernel, bias, out_kernel, out_bias = grown.get_weights()
    np.testing.assert_array_equal(kernel[:, :3], before[0])
    np.testing.assert_array_equal(out_kernel[:3], before[2])
    np.testing.assert_array_equal(out_bias, before[3])


def test_layers_argument_restricts_search(digits):
    (xt, yt), (xv, yv), teacher = digits
    student = _student()
    _, report = plant(student, teacher, (xt[:128], yt[:128]), layers=["c1"], max_steps=1,
                      epochs_per_step=1, verbose=0)
    assert [r["layer"] for r in report.meta["candidates"]] == ["c1"]
    assert report.rows[0]["channels"] == 6


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"channels_per_step": 0}, ValueError, "plant: Expected `channels_per_step` >= 1. Received: channels_per_step=0"),
        ({"alpha": 1.5}, ValueError, "plant: Expected `alpha` >= 0 and <= 1. Received: alpha=1.5"),
        ({"temperature": 0}, ValueError, "plant: Expected `temperature` > 0. Received: temperature=0.0"),
        ({"layers": ["out"]}, ValueError,
         "plant: Expected `layers` to name layers that can grow (a Dense/Conv2D followed by a "
         "Dense/Conv2D consumer): ['c1', 'd1']. Received: layers=['out']"),
        ({"data": [1, 2, 3]}, TypeError,
         "plant: Expected `data` to be an (x, y) tuple of arrays or a tf.data.Dataset of (x, y) "
         "batches. Received: data of type list"),
        ({"optimizer": 3}, TypeError,
         "plant: Expected `optimizer` to be an optimizer name or a keras.optimizers.Optimizer. "
         "Received: optimizer of type int"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    student = _student()
    x = np.zeros((4, 8, 8, 1), "float32")
    y = np.zeros(4, "int32")
    args = {"data": (x, y)}
    args.update(kwargs)
    data = args.pop("data")
    with pytest.raises(error, match=re.escape(message)):
        plant(student, student, data, verbose=0, **args)


def test_rejects_non_chain_and_mismatched_teacher():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.Dense(3, name="b")(inputs)
    branched = keras.Model(inputs, keras.layers.Add(name="add")([a, b]))
    data = (np.zeros((4, 4), "float32"), np.zeros(4, "int32"))
    with pytest.raises(ValueError, match=re.escape(
        "plant: Expected `student` to be a chain (each layer reading the previous one's output, "
        "as in a Sequential model). Received: layer 'b' does not read the previous layer's output"
    )):
        plant(branched, branched, data, verbose=0)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=re.escape(
        "plant: Expected `student` and `teacher` to share input shape and number of classes."
    )):
        plant(student, teacher, data, verbose=0)


def test_accuracy_on_arrays_and_datasets_matches_numpy():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="d")])
    x = np.random.default_rng(0).normal(size=(50, 3)).astype("float32")
    logits = x @ model.get_layer("d").kernel.numpy() + model.get_layer("d").bias.numpy()
    y = np.random.default_rng(1).integers(0, 4, size=50)
    y[:20] = np.argmax(logits[:20], axis=1)
    expected = float(np.mean(np.argmax(logits, axis=1) == y))
    assert accuracy(model, (x, y), batch_size=16) == pytest.approx(expected)
    assert accuracy(model, (x, np.eye(4)[y])) == pytest.approx(expected)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    assert accuracy(model, ds) == pytest.approx(expected)
