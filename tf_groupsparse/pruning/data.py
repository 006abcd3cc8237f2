"""Data, loss and fine-tuning helpers shared by the pruners (``prune``, ``prune_filters``, ``plant``).

Training data is ``(x, y)`` arrays or a ``tf.data.Dataset`` of ``(x, y)`` batches. The loss of
a model on a fixed sample is evaluated with the model's compiled predict function
(``predict_on_batch``), so it runs on every Keras backend and sees weights changed in place.

Examples:
    >>> import numpy as np, keras
    >>> from tf_groupsparse.pruning.data import LossEvaluator
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> x = np.zeros((4, 3), "float32"); y = np.array([0, 1, 0, 1])
    >>> f = LossEvaluator(m, keras.losses.SparseCategoricalCrossentropy(from_logits=True), x, y)
    >>> round(f(), 4)        # zero inputs and zero biases: uniform over 2 classes
    0.6931
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from .._validation import check_int
from .distillation import Distiller, check_distillation, output_kind

logger = logging.getLogger(__name__)


def is_dataset(data):
    """Whether `data` is a ``tf.data.Dataset`` (without importing TensorFlow for other data)."""
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "element_spec")


def check_xy(data, owner, name="data"):
    """`data` as ``(x, y)`` NumPy arrays of equal length, or the dataset itself."""
    if is_dataset(data):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"{owner}: Expected `{name}` to hold as many labels as samples (and at least one). "
                f"Received: {name} with {len(x)} samples and {len(y)} labels"
            )
        return x, y
    raise TypeError(
        f"{owner}: Expected `{name}` to be an (x, y) tuple of arrays or a tf.data.Dataset of (x, y) "
        f"batches. Received: {name} of type {type(data).__name__}"
    )


def check_inputs(model, x, owner, name="data"):
    """Raise ValueError naming both shapes when `x` does not fit `model`'s (single) input."""
    if len(model.inputs) != 1:
        return
    expected = tuple(model.inputs[0].shape[1:])
    got = tuple(np.shape(x)[1:])
    if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise ValueError(
            f"{owner}: Expected the samples of `{name}` to have the model's input shape "
            f"(batch, *{expected}) ({model.name!r} input {model.inputs[0].name!r}). Received: "
            f"{name} samples of shape {np.shape(x)}; reshape them or pass the matching data"
        )


def draw_samples(data, samples, seed, owner):
    """`samples` (x, y) pairs: a random draw from arrays, the first ones of a dataset."""
    data = check_xy(data, owner)
    if is_dataset(data):
        xs, ys, count = [], [], 0
        for x, y in data:
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
            count += len(xs[-1])
            if count >= samples:
                break
        if not xs:
            raise ValueError(f"{owner}: Expected `data` to yield at least one (x, y) batch. Received: an empty dataset")
        return np.concatenate(xs)[:samples], np.concatenate(ys)[:samples]
    x, y = data
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x), size=min(samples, len(x)), replace=False))
    return x[idx], y[idx]


def resolve_loss(model, loss, owner):
    """``(loss function, where it came from)``: the argument, the compiled loss, or sparse
    categorical cross-entropy (from logits unless the model ends in softmax)."""
    if loss is not None:
        try:
            return keras.losses.get(loss), "argument"
        except (ValueError, TypeError):
            raise ValueError(
                f"{owner}: Expected `loss` to be a Keras loss name, a keras.losses.Loss or a "
                f"callable (y_true, y_pred). Received: loss={loss!r}"
            ) from None
    compiled = getattr(model, "loss", None)
    if compiled is not None and not isinstance(compiled, (dict, list, tuple)):
        return keras.losses.get(compiled), "model.compile"
    from_logits = output_kind(model) == "logits"
    logger.info("%s: no loss given or compiled; using sparse categorical cross-entropy (from_logits=%s)",
                owner, from_logits)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), "default"


class LossEvaluator:
    """Mean loss of `model`'s current weights on a fixed sample ``(x, y)``; call it to evaluate.

    Uses ``model.predict_on_batch`` (the model's compiled predict function, traced once), so the
    weights may be changed in place between calls, on any backend. ``calls`` counts evaluations.
    """

    def __init__(self, model, loss_fn, x, y, batch_size=256):
        self.model, self.loss_fn = model, loss_fn
        self.batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        self.calls = 0

    def predictions(self):
        tf_logger = logging.getLogger("tensorflow")
        level = tf_logger.level
        tf_logger.setLevel(logging.ERROR)  # TensorFlow's notice when a new model's predict function traces
        try:
            return [np.asarray(self.model.predict_on_batch(xb)) for xb, _ in self.batches]
        finally:
            tf_logger.setLevel(level)

    def __call__(self):
        self.calls += 1
        total = count = 0
        for (xb, yb), pred in zip(self.batches, self.predictions()):
            value = keras.ops.convert_to_numpy(self.loss_fn(keras.ops.convert_to_tensor(yb),
                                                            keras.ops.convert_to_tensor(pred)))
            total += float(np.mean(value)) * len(xb)
            count += len(xb)
        return total / count

    def accuracy(self):
        """Top-1 accuracy on the sample (integer or one-hot labels)."""
        pred = np.concatenate([p.argmax(axis=-1) for p in self.predictions()])
        y = np.concatenate([yb for _, yb in self.batches])
        labels = y.argmax(axis=-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1)
        return float(np.mean(pred == labels))


_FINE_TUNE_KEYS = ("epochs", "batch_size", "teacher", "temperature", "alpha")
#: further ``fit`` arguments a fine-tune dict may carry (tgs.prune)
FIT_KEYS = ("callbacks", "validation_data", "shuffle", "verbose")


def check_fine_tune(fine_tune, model, owner, extra_keys=()):
    """Validate a ``fine_tune`` dict (epochs, batch_size, teacher, temperature, alpha, and the
    `extra_keys` passed on to ``fit``) or None."""
    if fine_tune is None:
        return None
    allowed = set(_FINE_TUNE_KEYS) | set(extra_keys)
    if not isinstance(fine_tune, dict) or set(fine_tune) - allowed or "epochs" not in fine_tune:
        raise ValueError(
            f"{owner}: Expected `fine_tune` to be None or a dict like {{'epochs': 2}} (optional "
            "'batch_size', and 'teacher' with optional 'temperature' and 'alpha' to fine-tune by "
            f"distillation). Received: fine_tune={fine_tune!r}"
        )
    out = {"epochs": check_int("fine_tune['epochs']", fine_tune["epochs"], owner, minimum=1)}
    out.update({k: fine_tune[k] for k in extra_keys if k in fine_tune})
    if "batch_size" in fine_tune:
        out["batch_size"] = check_int("fine_tune['batch_size']", fine_tune["batch_size"], owner, minimum=1)
    if fine_tune.get("teacher") is None:
        if {"temperature", "alpha"} & set(fine_tune):
            raise ValueError(
                f"{owner}: Expected fine_tune['teacher'] (a trained keras.Model) with 'temperature' "
                f"or 'alpha'. Received: fine_tune={fine_tune!r}; add the teacher or drop them"
            )
    else:
        out["teacher"] = fine_tune["teacher"]
        out["temperature"], out["alpha"] = check_distillation(
            model, out["teacher"], fine_tune.get("temperature", 4.0), fine_tune.get("alpha", 0.5))
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"{owner}: Expected a compiled model when `fine_tune` is given (the pruned model is "
            f"fine-tuned with the model's compile settings). Received: model {model.name!r} is not compiled"
        )
    return out


def fine_tune_meta(fine_tune):
    """The fine-tune settings as plain values for a report (the teacher by name)."""
    if fine_tune is None:
        return None
    out = dict(fine_tune)
    if "teacher" in out:
        out["teacher"] = out["teacher"].name
    return out


def fine_tune_model(pruned, model, data, fine_tune, batch_size, owner):
    """Fit `pruned` with `model`'s compile settings, on the labels or by distillation."""
    pruned.compile_from_config(model.get_compile_config())
    trained = pruned
    if "teacher" in fine_tune:
        config = keras.saving.deserialize_keras_object(model.get_compile_config())
        config = {k: v for k, v in config.items() if k not in ("loss", "loss_weights")}
        trained = Distiller(pruned, fine_tune["teacher"], fine_tune["temperature"], fine_tune["alpha"],
                            name=f"{owner}_fine_tune")
        trained.compile(**config)
    kwargs = {"epochs": fine_tune["epochs"], "verbose": 0}
    kwargs.update({k: fine_tune[k] for k in FIT_KEYS if k in fine_tune})
    if isinstance(data, (tuple, list)):
        trained.fit(np.asarray(data[0]), np.asarray(data[1]), batch_size=fine_tune.get("batch_size", batch_size),
                    **kwargs)
    else:
        trained.fit(data, **kwargs)


def fit_quietly(model, data, epochs, batch_size):
    """``model.fit`` on arrays (shuffled batches) or a dataset, silently."""
    if is_dataset(data):
        model.fit(data, epochs=epochs, verbose=0, shuffle=False)
    else:
        model.fit(data[0], data[1], epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)


def accuracy(model, data, batch_size=256):
    """Top-1 accuracy of `model` on `data` ((x, y) arrays or a dataset of (x, y) batches)."""
    if is_dataset(data):
        correct = total = 0
        for x, y in data:
            pred = np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), axis=-1)
            y = np.asarray(y)
            labels = np.argmax(y, axis=-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1)
            correct += int(np.sum(pred == labels))
            total += len(labels)
        return correct / max(total, 1)
    x, y = data
    # eager batches: no predict function is traced for each of the many candidate models
    outputs = [keras.ops.convert_to_numpy(model(x[i:i + batch_size], training=False))
               for i in range(0, len(x), batch_size)]
    pred = np.argmax(np.concatenate(outputs), axis=-1)
    labels = np.argmax(y, axis=-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1)
    return float(np.mean(pred == labels))


def check_trained(evaluate, model, owner, allow_untrained):
    """Raise ValueError when `model` looks untrained on the evaluation sample: for C >= 2 classes,
    a mean loss within 5% of chance (``log C``) or an accuracy below ``1.5 / C``. Returns
    ``(loss, accuracy)`` (accuracy None for other outputs)."""
    loss = evaluate()
    classes = int(model.outputs[0].shape[-1]) if len(model.outputs) == 1 and model.outputs[0].shape[-1] else 0
    if classes < 2:
        return loss, None
    accuracy = evaluate.accuracy()
    chance = float(np.log(classes))
    if not allow_untrained and (abs(loss - chance) <= 0.05 * chance or accuracy < 1.5 / classes):
        raise ValueError(
            f"{owner}: Expected a trained model: on the {sum(len(b[0]) for b in evaluate.batches)} "
            f"evaluation samples its loss is {loss:.4f} (chance for {classes} classes: log {classes} = "
            f"{chance:.4f}) and its accuracy {accuracy:.4f} (chance: {1 / classes:.4f}). Pruning an "
            "untrained model ranks channels by noise and reports meaningless losses; train it first, "
            "or pass allow_untrained=True if this is intended (a structure-only test, say)."
        )
    return loss, accuracy


def gradients(model, loss_fn, x, y, batch_size=256):
    """``{id(variable): dL/dw as NumPy}`` of the mean loss on ``(x, y)`` in inference mode, for
    every trainable variable (TensorFlow, JAX and PyTorch backends)."""
    backend = keras.backend.backend()
    variables = list(model.trainable_variables)
    total = [np.zeros(tuple(v.shape), "float32") for v in variables]
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        share = len(xb) / len(x)
        if backend == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                value = tf.reduce_mean(loss_fn(yb, model(xb, training=False)))
            grads = tape.gradient(value, [v.value for v in variables])
        elif backend == "jax":
            import jax

            fixed = [v.value for v in model.non_trainable_variables]

            def value(trainable):
                pred, _ = model.stateless_call(trainable, fixed, xb, training=False)
                return keras.ops.mean(loss_fn(yb, pred))

            grads = jax.grad(value)([v.value for v in variables])
        elif backend == "torch":
            for v in variables:
                v.value.grad = None
            value = keras.ops.mean(loss_fn(keras.ops.convert_to_tensor(yb), model(xb, training=False)))
            value.backward()
            grads = [v.value.grad for v in variables]
        else:  # pragma: no cover - Keras has no other training backend
            raise ValueError(f"gradients: Expected the tensorflow, jax or torch backend. Received: {backend!r}")
        for t, g in zip(total, grads):
            if g is not None:
                t += share * np.asarray(keras.ops.convert_to_numpy(g), "float32")
    return {id(v): t for v, t in zip(variables, total)}
