"""Channel planting: grow a small network channel by channel with knowledge distillation.

A planting step adds ``k`` output channels to one Dense/Conv2D layer ``L`` of the student and
the matching input slices to its consumer (the next Dense/Conv2D). Every weight the student had
before the step stays fixed; only the new channels (kernel columns, bias, their
BatchNormalization entries) and the consumer's new input rows are trained, with the
distillation loss

    loss = alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

where ``s`` and ``t`` are the student's and the teacher's logits and ``T`` the temperature.
The consumer's new rows start at zero, so right after planting the student's outputs are
exactly the old ones. The layer to plant in is searched: each candidate is planted and trained
for a short while, and the one with the best validation accuracy gain per added parameter is
kept. Planting stops at ``target_accuracy``, at ``param_budget`` or after ``max_steps``.

How old parameters stay fixed: while a step trains, the planted layer is two standard layers,
the old one (``trainable=False``) and a new one with ``k`` channels, and every layer between it
and its consumer runs on two paths (old channels / new channels); the consumer becomes its old
copy (frozen, linear) plus a new bias-free layer that reads the new channels (zero-initialised),
summed before the consumer's activation. The optimizer only sees the new layers, so an update
cannot touch an old weight. The new channels' BatchNormalization entries train with batch
statistics; their moving statistics are then set to the exact statistics of the training data.
After the step the two parts are merged back into standard layers, so the returned model is a
plain Keras model.

Known behaviour: the search keeps the best candidate of a step even when its gain is negative
(planting continues until a stop rule fires); the distillation objective can trade label
accuracy for agreement with the teacher on a very weak student.

Logits: a model whose last layer ends in softmax is treated as giving probabilities, and
``log(p)`` is used as its logits (equal to the logits up to a constant, which softmax ignores);
any other model's outputs are taken as logits.

Reference: Mitsuno, Nomura, Kurita, "Channel Planting for Deep Neural Networks using Knowledge
Distillation", ICPR 2020 (arXiv 2011.02390).

Examples:
    >>> import numpy as np, keras
    >>> from tf_groupsparse import plant
    >>> x = np.random.rand(64, 8).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="relu"),
    ...                             keras.layers.Dense(2)])
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
    ...                             keras.layers.Dense(2)])
    >>> grown, report = plant(student, teacher, (x, y), max_steps=1, epochs_per_step=1, verbose=0)
    >>> grown.layers[1].units
    6
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from .._validation import check_int, check_keras_model, check_number
from ..report import Report
from .data import accuracy, check_xy, fit_quietly
from .distillation import Distiller, output_kind
from .twopath import build_planted, merge, merge_identity, recalibrate, width

logger = logging.getLogger(__name__)

_OWNER = "plant"
_GROWABLE = (keras.layers.Dense, keras.layers.Conv2D)
# Layers that act on every channel alike (no per-channel weights): they run unchanged on the
# old and on the new channels.
_PASS_THROUGH = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
)


class PlantingReport(Report):
    """History of a planting run: one row per accepted step (layer, channels, params, accuracy).

    ``totals`` holds the initial and final parameter counts and accuracies and why planting
    stopped; ``meta["candidates"]`` lists every candidate tried in every step.

    Examples:
        >>> import numpy as np, keras
        >>> x = np.random.rand(64, 8).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
        >>> s = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="relu", name="h"),
        ...                       keras.layers.Dense(2)])
        >>> _, report = plant(s, s, (x, y), param_budget=30, verbose=0)  # 24 params; +4 channels: +44
        >>> report.totals["steps"], report.totals["stopped_by"]
        (0, 'param_budget')
        >>> report.meta["candidates"]
        [{'step': 1, 'layer': 'h', 'added_params': 44, 'skipped': 'param_budget'}]
    """


# --------------------------------------------------------------------------- chain handling
def _chain(model, owner=_OWNER, name="student"):
    """The layers of a single-input, single-output chain model, in order (no InputLayer)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"{owner}: Expected `{name}` to have one input and one output (a chain of layers). "
            f"Received: {len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    previous = model.inputs[0]
    for layer in layers:
        if layer.input is not previous:
            raise ValueError(
                f"{owner}: Expected `{name}` to be a chain (each layer reading the previous one's "
                f"output, as in a Sequential model). Received: layer {layer.name!r} does not read "
                "the previous layer's output"
            )
        previous = layer.output
    return layers


def _consumer_of(layers, index):
    """Index of the Dense/Conv2D reading layer `index`'s channels, or None if not plantable."""
    for j in range(index + 1, len(layers)):
        layer = layers[j]
        if isinstance(layer, _GROWABLE):
            return j
        if isinstance(layer, keras.layers.BatchNormalization) or isinstance(layer, _PASS_THROUGH):
            continue
        return None
    return None


def _check_layer_kind(layer):
    if isinstance(layer, keras.layers.Conv2D):
        if type(layer) is not keras.layers.Conv2D:
            return f"{type(layer).__name__} is not a plain Conv2D"
        if layer.data_format != "channels_last" or layer.groups != 1:
            return "only channels_last Conv2D with groups=1 can be planted"
    if isinstance(layer, keras.layers.BatchNormalization) and layer.axis not in (-1, len(layer.input.shape) - 1):
        return "BatchNormalization must normalize the last axis"
    return None


def _candidates(layers):
    """{layer index: consumer index} for every layer that can grow."""
    found = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, _GROWABLE):
            continue
        j = _consumer_of(layers, i)
        if j is None:
            continue
        if any(_check_layer_kind(layers[m]) for m in range(i, j + 1)):
            continue
        if isinstance(layer, keras.layers.Dense) and len(layer.input.shape) != 2:
            continue
        found[i] = j
    return found


def _make_optimizer(optimizer, learning_rate):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = optimizer.get_config()
        config["learning_rate"] = learning_rate
        return optimizer.__class__.from_config(config)
    return keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}})


# --------------------------------------------------------------------------- public entry
def plant(
    student,
    teacher,
    data,
    *,
    validation_data=None,
    layers=None,
    channels_per_step=4,
    max_steps=5,
    epochs_per_step=2,
    target_accuracy=None,
    param_budget=None,
    temperature=4.0,
    alpha=0.5,
    optimizer="adam",
    learning_rate=1e-3,
    batch_size=64,
    verbose=1,
):
    """Grow `student` by planting channels trained with distillation from `teacher`.

    Each step plants ``channels_per_step`` new output channels in every candidate layer in
    turn, trains only the new parameters for ``epochs_per_step`` epochs on
    ``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``, and keeps the
    candidate with the largest ``(val_accuracy - current_val_accuracy) / added_params``.
    Parameters trained in earlier steps (and the student's original ones) never change.

    Args:
        student: built chain model (Sequential or functional chain) of Dense / Conv2D
            (channels_last, groups=1) layers with BatchNormalization (last axis), activations,
            dropout, pooling and Flatten between them. Not modified.
        teacher: built keras.Model with the same input and number of classes. Not modified.
        data: training data, ``(x, y)`` arrays (integer or one-hot labels) or a tf.data.Dataset
            of ``(x, y)`` batches.
        validation_data: data (same forms) on which candidates are compared and accuracy is
            reported; default None uses `data`.
        layers: names of the layers allowed to grow; default None allows every Dense/Conv2D
            that has a Dense/Conv2D consumer.
        channels_per_step: channels added per step, k >= 1 (default 4).
        max_steps: maximum number of accepted steps (default 5).
        epochs_per_step: training epochs for each candidate (default 2).
        target_accuracy: stop once validation accuracy reaches it (default None).
        param_budget: never exceed this many parameters in total (default None).
        temperature: distillation temperature T > 0 (default 4.0).
        alpha: weight of the label cross-entropy in [0, 1] (default 0.5).
        optimizer: optimizer name or keras.optimizers.Optimizer (a fresh copy is made for each
            candidate; default "adam").
        learning_rate: learning rate (default 1e-3).
        batch_size: batch size for array data (default 64).
        verbose: 1 shows a progress bar over the steps, 0 is silent (default 1).

    Returns:
        ``(model, report)``: a new plain Keras functional model (saves as ``.keras``) and a
        :class:`PlantingReport`.

    Raises:
        TypeError: a model or data argument has the wrong type.
        ValueError: a model is not a supported chain, a named layer cannot grow, or a number is
            out of range.

    Reference: Mitsuno, Nomura, Kurita, "Channel Planting for Deep Neural Networks using
    Knowledge Distillation", ICPR 2020 (arXiv 2011.02390).

    Examples:
        >>> import numpy as np, keras
        >>> x = np.random.rand(64, 8).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
        >>> s = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="relu"),
        ...                       keras.layers.Dense(2)])
        >>> model, report = plant(s, s, (x, y), max_steps=1, epochs_per_step=1, verbose=0)
        >>> report.totals["steps"]
        1
    """
    check_keras_model(student, _OWNER, "student")
    check_keras_model(teacher, _OWNER, "teacher")
    chain = _chain(student)
    k = check_int("channels_per_step", channels_per_step, _OWNER, minimum=1)
    max_steps = check_int("max_steps", max_steps, _OWNER, minimum=1)
    epochs_per_step = check_int("epochs_per_step", epochs_per_step, _OWNER, minimum=1)
    batch_size = check_int("batch_size", batch_size, _OWNER, minimum=1)
    temperature = check_number("temperature", temperature, _OWNER, strict=True)
    alpha = check_number("alpha", alpha, _OWNER, maximum=1.0)
    learning_rate = check_number("learning_rate", learning_rate, _OWNER, strict=True)
    if target_accuracy is not None:
        target_accuracy = check_number("target_accuracy", target_accuracy, _OWNER, maximum=1.0)
    if param_budget is not None:
        param_budget = check_int("param_budget", param_budget, _OWNER, minimum=1)
    if not (isinstance(optimizer, keras.optimizers.Optimizer) or isinstance(optimizer, str)):
        raise TypeError(
            f"{_OWNER}: Expected `optimizer` to be an optimizer name or a keras.optimizers.Optimizer. "
            f"Received: optimizer of type {type(optimizer).__name__}"
        )
    _make_optimizer(optimizer, learning_rate)  # fails early on unknown names
    data = check_xy(data, _OWNER, "data")
    validation_data = data if validation_data is None else check_xy(validation_data, _OWNER, "validation_data")
    if tuple(student.input_shape) != tuple(teacher.input_shape) or student.output_shape[-1] != teacher.output_shape[-1]:
        raise ValueError(
            f"{_OWNER}: Expected `student` and `teacher` to share input shape and number of classes. "
            f"Received: student {student.input_shape} -> {student.output_shape}, "
            f"teacher {teacher.input_shape} -> {teacher.output_shape}"
        )
    candidates = _candidates(chain)
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise TypeError(
                f"{_OWNER}: Expected `layers` to be a list of layer names. Received: layers={layers!r}"
            )
        names = {chain[i].name: i for i in candidates}
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(
                f"{_OWNER}: Expected `layers` to name layers that can grow (a Dense/Conv2D followed "
                f"by a Dense/Conv2D consumer): {sorted(names)}. Received: layers={unknown!r}"
            )
        candidates = {names[n]: candidates[names[n]] for n in layers}
    if not candidates:
        raise ValueError(
            f"{_OWNER}: Expected `student` to have a Dense/Conv2D layer followed (through "
            "BatchNormalization, activation, dropout, pooling or Flatten) by a Dense/Conv2D consumer. "
            f"Received: a student with layers {[layer.name for layer in chain]}"
        )

    student_outputs = output_kind(student)
    teacher_outputs = output_kind(teacher)
    input_shape = tuple(student.input_shape[1:])
    names = [layer.name for layer in chain]
    current = merge_identity(chain, input_shape, student.name)
    current_acc = accuracy(current, validation_data)
    start_params, start_acc = current.count_params(), current_acc
    rows, tried = [], []
    stop = "max_steps"
    progbar = keras.utils.Progbar(max_steps, verbose=verbose, unit_name="step")
    for step in range(1, max_steps + 1):
        if target_accuracy is not None and current_acc >= target_accuracy:
            stop = "target_accuracy"
            break
        chain_now = _chain(current)
        best = None
        for index, consumer in candidates.items():
            planted = build_planted(chain_now, input_shape, index, consumer, k)
            added = sum(int(np.prod(v.shape)) for v in planted.model.trainable_weights)
            if param_budget is not None and current.count_params() + added > param_budget:
                tried.append({"step": step, "layer": names[index], "added_params": added, "skipped": "param_budget"})
                continue
            distiller = Distiller(planted.model, teacher, temperature, alpha, student_outputs, teacher_outputs)
            distiller.compile(optimizer=_make_optimizer(optimizer, learning_rate))
            fit_quietly(distiller, data, epochs_per_step, batch_size)
            recalibrate(planted, data, batch_size)
            merged = merge(chain_now, input_shape, planted, k, student.name)
            acc = accuracy(merged, validation_data)
            score = (acc - current_acc) / added
            tried.append({"step": step, "layer": names[index], "added_params": added, "accuracy": acc, "gain_per_param": score})
            logger.info("plant step %d: %s +%d params -> accuracy %.4f", step, names[index], added, acc)
            if best is None or score > best[0]:
                best = (score, index, merged, acc, added)
        if best is None:
            stop = "param_budget"
            break
        score, index, current, current_acc, added = best
        rows.append({
            "step": step,
            "layer": names[index],
            "channels_added": k,
            "channels": width(_chain(current)[index]),
            "params_added": added,
            "params": current.count_params(),
            "accuracy": current_acc,
        })
        progbar.update(step, values=[("accuracy", current_acc)])
    else:
        if target_accuracy is not None and current_acc >= target_accuracy:
            stop = "target_accuracy"
    report = PlantingReport(
        "Channel planting",
        rows,
        totals={
            "steps": len(rows),
            "params_before": start_params,
            "params_after": current.count_params(),
            "accuracy_before": start_acc,
            "accuracy_after": current_acc,
            "stopped_by": stop,
        },
        meta={
            "candidates": tried,
            "channels_per_step": k,
            "temperature": temperature,
            "alpha": alpha,
            "student_outputs": student_outputs,
            "teacher_outputs": teacher_outputs,
        },
    )
    return current, report
