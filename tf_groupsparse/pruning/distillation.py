"""Knowledge distillation: train a (pruned, shrunk or planted) student against a teacher.

The loss per sample is

    alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

with ``s`` and ``t`` the student's and the teacher's logits and ``T`` the temperature (Hinton,
Vinyals, Dean, "Distilling the Knowledge in a Neural Network", arXiv 1503.02531; the ``T^2``
factor keeps the soft term's gradients on the scale of the label term's). :class:`Distiller`
wraps a student and a teacher in one Keras model, so distillation runs through the user's own
``compile`` / ``fit`` with any optimizer, callbacks and metrics; the student's own losses (for
example the penalties attached by :func:`tf_groupsparse.regularize`) are added to it. Planting
(:func:`tf_groupsparse.plant`) trains its new channels with the same loss.

Logits: a model whose last layer ends in softmax gives probabilities; ``log(p)`` is then used as
its logits (equal to the logits up to a constant per sample, which softmax ignores). Any other
model's outputs are taken as logits.

Examples:
    >>> import numpy as np, keras
    >>> from tf_groupsparse import Distiller
    >>> x = np.random.rand(64, 8).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    >>> distiller = Distiller(student, teacher, temperature=2.0, alpha=0.5)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> len(distiller.trainable_weights) == len(student.trainable_weights)
    True
"""

from __future__ import annotations

import keras
from keras import ops

from .._validation import check_choice, check_keras_model, check_number

_EPS = 1e-7
_OUTPUTS = ("auto", "logits", "probabilities")


def output_kind(model):
    """``"probabilities"`` when `model`'s last layer ends in softmax, else ``"logits"``.

    Examples:
        >>> import keras
        >>> output_kind(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")]))
        'probabilities'
    """
    last = model.layers[-1]
    softmax = isinstance(last, keras.layers.Softmax) or getattr(last, "activation", None) is keras.activations.softmax
    return "probabilities" if softmax else "logits"


def to_logits(outputs, probabilities):
    """`outputs` as logits: ``log(p)`` (clipped at 1e-7) for probabilities, else unchanged."""
    if probabilities:
        return ops.log(ops.clip(outputs, _EPS, 1.0))
    return outputs


def _per_sample_loss(y, student_logits, teacher_logits, temperature, alpha):
    classes = student_logits.shape[-1]
    y = ops.convert_to_tensor(y)
    if len(y.shape) == 2 and y.shape[-1] == classes and classes != 1:
        onehot = ops.cast(y, student_logits.dtype)
    else:
        onehot = ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), classes, dtype=student_logits.dtype)
    ce = -ops.sum(onehot * ops.log_softmax(student_logits, axis=-1), axis=-1)
    log_ps = ops.log_softmax(student_logits / temperature, axis=-1)
    log_pt = ops.log_softmax(teacher_logits / temperature, axis=-1)
    kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=-1)
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


def distillation_loss(y, student_logits, teacher_logits, temperature=4.0, alpha=0.5):
    """Mean of ``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``.

    Args:
        y: integer labels ``(batch,)`` (or ``(batch, 1)``) or one-hot ``(batch, classes)``.
        student_logits: ``(batch, classes)`` logits ``s``.
        teacher_logits: ``(batch, classes)`` logits ``t``.
        temperature: ``T > 0`` (default 4.0).
        alpha: weight of the label term in ``[0, 1]`` (default 0.5).

    Returns:
        A scalar tensor (keras.ops only, usable in a compiled train step).

    Examples:
        >>> import numpy as np
        >>> s = np.array([[2.0, 0.0]], "float32"); t = np.array([[2.0, 0.0]], "float32")
        >>> round(float(distillation_loss(np.array([0]), s, t, 4.0, 0.0)), 6)
        0.0
    """
    return ops.mean(_per_sample_loss(y, student_logits, teacher_logits, temperature, alpha))


def check_distillation(student, teacher, temperature, alpha, owner="Distiller"):
    """Check a student / teacher pair and the loss's settings as :class:`Distiller` needs them
    (built models with one output each, scoring the same number of classes; ``temperature > 0``,
    ``alpha`` in [0, 1]); returns ``(temperature, alpha)`` as floats. Errors name `owner`."""
    check_keras_model(student, owner, "student")
    check_keras_model(teacher, owner, "teacher")
    temperature = check_number("temperature", temperature, owner, strict=True)
    alpha = check_number("alpha", alpha, owner, maximum=1.0)
    if len(student.outputs or ()) != 1 or len(teacher.outputs or ()) != 1:
        raise ValueError(
            f"{owner}: Expected `student` and `teacher` to have one output each (class scores). "
            f"Received: {len(student.outputs or ())} and {len(teacher.outputs or ())} outputs; "
            "wrap a multi-output model in one that returns the classification head"
        )
    if student.output_shape[-1] != teacher.output_shape[-1]:
        raise ValueError(
            f"{owner}: Expected `student` and `teacher` to score the same number of classes. "
            f"Received: student {student.name!r} -> {student.output_shape}, teacher "
            f"{teacher.name!r} -> {teacher.output_shape}"
        )
    return temperature, alpha


def _without(variables, excluded):
    excluded = {id(v) for v in excluded}
    return [v for v in variables if id(v) not in excluded]


@keras.saving.register_keras_serializable(package="tf_groupsparse")
class Distiller(keras.Model):
    """A student trained on the distillation loss against a fixed teacher, as one Keras model.

    Calling the distiller calls the student, so compiled metrics (``"accuracy"``) and
    ``evaluate`` / ``predict`` measure the student; ``compute_loss`` is the distillation loss
    (weighted by ``sample_weight`` when given) plus the student's own losses. Only the student
    trains: the teacher is called with ``training=False`` and its weights are neither trainable
    through the distiller nor changed (its own ``trainable`` flag is left as it was). Saving the
    distiller as ``.keras`` saves both models; ``distiller.student`` is the trained model to keep.

    Args:
        student: built keras.Model to train (trained in place).
        teacher: built keras.Model with the same number of outputs per sample.
        temperature: ``T > 0`` of the soft term (default 4.0).
        alpha: weight of the label term in ``[0, 1]`` (default 0.5; 0 is pure distillation).
        student_outputs, teacher_outputs: ``"auto"`` (probabilities when the model's last layer
            ends in softmax, else logits), ``"logits"`` or ``"probabilities"``.
        name: model name (default ``"distiller"``).

    Examples:
        >>> import numpy as np, keras
        >>> x = np.random.rand(32, 4).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
        >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        >>> distiller = Distiller(student, teacher, temperature=2.0)
        >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> _ = distiller.fit(x, y, epochs=1, verbose=0)
        >>> distiller.student_outputs
        'probabilities'
    """

    def __init__(self, student, teacher, temperature=4.0, alpha=0.5, student_outputs="auto",
                 teacher_outputs="auto", name="distiller", **kwargs):
        temperature, alpha = check_distillation(student, teacher, temperature, alpha)
        check_choice("student_outputs", student_outputs, _OUTPUTS, "Distiller")
        check_choice("teacher_outputs", teacher_outputs, _OUTPUTS, "Distiller")
        super().__init__(name=name, **kwargs)
        self.student = student
        self.teacher = teacher  # tracked (saved with the distiller), never trained: see trainable_weights
        self.temperature = temperature
        self.alpha = alpha
        self.student_outputs = output_kind(student) if student_outputs == "auto" else student_outputs
        self.teacher_outputs = output_kind(teacher) if teacher_outputs == "auto" else teacher_outputs

    # Only the student's variables train; the teacher's count as non-trainable here whatever
    # its own flag says (so the user's teacher object is not modified).
    @property
    def trainable_weights(self):
        return self.student.trainable_weights if self.trainable else []

    @property
    def trainable_variables(self):
        return self.trainable_weights

    @property
    def non_trainable_weights(self):
        return _without(self.weights, self.trainable_weights)

    @property
    def non_trainable_variables(self):
        return _without(self.variables, self.trainable_weights)

    def call(self, x, training=False):
        return self.student(x, training=training)

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """Keras' ``compile`` without a loss: the loss is the distillation loss."""
        if loss is not None:
            raise ValueError(
                f"Distiller {self.name!r}: Expected no `loss` in compile (the loss is the distillation "
                f"loss set by `temperature` and `alpha`). Received: loss={loss!r}; drop it, or train "
                "the student itself with model.compile(loss=...)"
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Compile a loaded distiller as it was saved (optimizer state included)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y is None:
            raise ValueError(
                f"Distiller {self.name!r}: Expected labels `y` for the label term. Received: y=None; "
                "pass (x, y) to fit/evaluate (use alpha=0 to ignore them, but they are still read)"
            )
        s = to_logits(y_pred, self.student_outputs == "probabilities")
        t = to_logits(ops.stop_gradient(self.teacher(x, training=False)), self.teacher_outputs == "probabilities")
        per_sample = _per_sample_loss(y, s, ops.cast(t, s.dtype), self.temperature, self.alpha)
        if sample_weight is None:
            loss = ops.mean(per_sample)
        else:
            w = ops.reshape(ops.cast(sample_weight, per_sample.dtype), (-1,))
            loss = ops.sum(per_sample * w) / ops.maximum(ops.sum(w), _EPS)
        if self.student.losses:
            loss = loss + ops.sum(ops.stack(self.student.losses))
        return loss

    def get_config(self):
        return {
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "student_outputs": self.student_outputs,
            "teacher_outputs": self.teacher_outputs,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)
