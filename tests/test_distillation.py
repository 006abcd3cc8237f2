"""Distiller and distillation_loss: the loss against NumPy, only the student trains, save/load."""


import keras
import numpy as np
import pytest

from tf_groupsparse.pruning import distillation
from tf_groupsparse.pruning.distillation import Distiller, distillation_loss


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_per_sample(y, s, t, temp, alpha):
    ce = -_np_log_softmax(s)[np.arange(len(y)), y]
    pt = np.exp(_np_log_softmax(t / temp))
    kl = (pt * (_np_log_softmax(t / temp) - _np_log_softmax(s / temp))).sum(-1)
    return alpha * ce + (1 - alpha) * temp**2 * kl


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1).astype("int32")
    return x, y


def _mlp(width, seed, softmax=False, name=None, regularizer=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(width, activation="relu", kernel_regularizer=regularizer),
        keras.layers.Dense(3, activation="softmax" if softmax else None),
    ], name=name)


def _teacher(x, y):
    teacher = _mlp(32, 1, name="teacher")
    teacher.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=20, batch_size=32, verbose=0)
    return teacher


def test_distillation_loss_matches_numpy():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(6, 5)).astype("float32")
    t = rng.normal(size=(6, 5)).astype("float32")
    y = rng.integers(0, 5, size=6)
    expected = np.mean(_np_per_sample(y, s, t, 3.0, 0.3))
    np.testing.assert_allclose(float(distillation_loss(y, s, t, 3.0, 0.3)), expected, rtol=1e-5)
    onehot = np.eye(5, dtype="float32")[y]
    np.testing.assert_allclose(float(distillation_loss(onehot, s, t, 3.0, 0.3)), expected, rtol=1e-5)


def test_compute_loss_matches_numpy_with_sample_weights_and_the_students_penalty():
    x, y = _data()
    teacher = _teacher(x, y)
    student = _mlp(4, 2, regularizer=keras.regularizers.L2(1e-2))
    distiller = Distiller(student, teacher, temperature=3.0, alpha=0.25)
    s, t = np.asarray(student(x)), np.asarray(teacher(x))
    per_sample = _np_per_sample(y, s, t, 3.0, 0.25)
    penalty = 1e-2 * float(np.sum(student.layers[0].kernel.numpy() ** 2))
    w = np.random.default_rng(3).uniform(0, 2, size=len(x)).astype("float32")
    got = float(distillation.ops.convert_to_numpy(distiller.compute_loss(x, y, student(x), sample_weight=w)))
    np.testing.assert_allclose(got, np.sum(per_sample * w) / np.sum(w) + penalty, rtol=1e-4)
    got = float(distillation.ops.convert_to_numpy(distiller.compute_loss(x, y, student(x))))
    np.testing.assert_allclose(got, per_sample.mean() + penalty, rtol=1e-4)


def test_only_the_student_trains_and_moves_towards_the_teacher():
    x, y = _data()
    teacher = _teacher(x, y)
    before = [w.copy() for w in teacher.get_weights()]
    student = _mlp(8, 2)
    distiller = Distiller(student, teacher, temperature=2.0, alpha=0.0)
    assert [id(v) for v in distiller.trainable_variables] == [id(v) for v in student.trainable_variables]
    assert {id(v) for v in teacher.weights} <= {id(v) for v in distiller.non_trainable_weights}

    def kl():
        return float(distillation_loss(y, np.asarray(student(x)), np.asarray(teacher(x)), 2.0, 0.0))

    start = kl()
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert kl() < 0.5 * start
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert "accuracy" in history.history
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert teacher.trainable  # the user's flag is left alone


def test_softmax_models_give_the_same_loss_as_their_logits():
    x, y = _data()
    teacher = _teacher(x, y)
    soft_teacher = _mlp(32, 1, softmax=True)
    soft_teacher.set_weights(teacher.get_weights())
    student = _mlp(4, 2)
    soft_student = _mlp(4, 2, softmax=True)
    soft_student.set_weights(student.get_weights())
    plain = Distiller(student, teacher, 2.0, 0.5)
    soft = Distiller(soft_student, soft_teacher, 2.0, 0.5)
    assert (plain.student_outputs, soft.student_outputs, soft.teacher_outputs) == ("logits", "probabilities", "probabilities")
    a = float(plain.compute_loss(x, y, student(x)))
    b = float(soft.compute_loss(x, y, soft_student(x)))
    assert b == pytest.approx(a, rel=1e-4)
    forced = Distiller(soft_student, soft_teacher, 2.0, 0.5, student_outputs="logits", teacher_outputs="logits")
    assert float(forced.compute_loss(x, y, soft_student(x))) != pytest.approx(a, rel=1e-2)


def test_save_and_load_with_safe_mode_keeps_both_models_and_the_optimizer(tmp_path):
    x, y = _data()
    teacher = _teacher(x, y)
    distiller = Distiller(_mlp(4, 2), teacher, temperature=3.0, alpha=0.4)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, Distiller)
    assert (loaded.temperature, loaded.alpha) == (3.0, 0.4)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), distiller.predict(x, verbose=0))
    np.testing.assert_array_equal(loaded.teacher.predict(x, verbose=0), teacher.predict(x, verbose=0))
    assert int(loaded.optimizer.iterations) == int(distiller.optimizer.iterations) == 6
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), distiller.evaluate(x, y, verbose=0), rtol=1e-6)
    loaded.fit(x, y, epochs=1, batch_size=32, verbose=0)  # trains on after loading
    assert int(loaded.optimizer.iterations) == 9


@pytest.mark.parametrize("kwargs, error, message", [
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"alpha": 1.5}, ValueError, "alpha"),
    ({"student_outputs": "logit"}, ValueError, "student_outputs"),
    ({"teacher": "model"}, TypeError, "teacher"),
])
def test_bad_arguments(kwargs, error, message):
    args = {"student": _mlp(4, 2), "teacher": _mlp(8, 1)}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        Distiller(**args)


def test_rejects_mismatched_classes_a_compiled_loss_and_missing_labels():
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)], name="five")
    with pytest.raises(ValueError, match="same number of classes.*five"):
        Distiller(_mlp(4, 2), other)
    distiller = Distiller(_mlp(4, 2), _mlp(8, 1))
    with pytest.raises(ValueError, match="no `loss` in compile"):
        distiller.compile(optimizer="adam", loss="mse")
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="labels `y`"):
        distiller.fit(_data()[0], epochs=1, verbose=0)


