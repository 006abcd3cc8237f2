"""Conversion of a Keras model to a SavedModel and a LiteRT (.tflite) flatbuffer.

Quantization modes (:data:`QUANTIZE_MODES`, one converter setup per mode):

- ``None``: float32.
- ``"dynamic"``: dynamic-range quantization (``Optimize.DEFAULT``): int8 weights, float
  activations. The converter leaves small tensors (under 1024 elements) in float.
- ``"float16"``: ``Optimize.DEFAULT`` with ``supported_types=[tf.float16]``: float16 weights.
- ``"int8"``: full-integer quantization calibrated on `representative_data`; every op runs in
  int8. The model's inputs and outputs are KEPT FLOAT32 (quantize/dequantize ops sit at the
  ends) so the exported file is a drop-in replacement for the float one; :func:`run_tflite` also
  accepts models with int8/uint8 inputs and outputs and (de)quantizes with their scale and
  zero point.

The quantization methods are those of the TensorFlow Lite converter (post-training
quantization). On the PyTorch backend without torch_xla (which Keras needs for a SavedModel),
float32 files come from Keras' own LiteRT exporter through litert-torch instead (the `backends`
extra), traced with a batch of one; quantized files need the TensorFlow or JAX backend.

Recurrent layers (LSTM, GRU, SimpleRNN, Bidirectional) run as a while loop over tensor lists,
which the converter can lower to LiteRT's builtin ``WHILE`` only when the batch size is known.
When the conversion of the dynamic-batch SavedModel fails for that reason, the model is exported
again with a batch of one and converted with builtin ops only (no Select TF ops, which the LiteRT
runtime does not carry); :func:`~tf_groupsparse.deploy.run_tflite` then runs larger batches one
slice at a time. The SavedModel written for the user keeps its dynamic batch.

Examples:
    >>> import keras
    >>> from tf_groupsparse.deploy import convert_tflite
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> convert_tflite(m)[4:8]
    b'TFL3'
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings

import numpy as np

from .._validation import check_keras_model

__all__ = ["convert_tflite", "QUANTIZE_MODES"]

# How many representative samples calibrate int8 quantization at most.
MAX_CALIBRATION_SAMPLES = 500


def _float(converter, representative):
    return converter


def _dynamic(converter, representative):
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter


def _float16(converter, representative):
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter


def _int8(converter, representative):
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # inference_input_type / inference_output_type stay tf.float32: float in, float out.
    return converter


# quantize mode -> converter setup
QUANTIZE_MODES = {None: _float, "dynamic": _dynamic, "float16": _float16, "int8": _int8}


def _check_quantize(quantize, representative_data, owner):
    if quantize not in QUANTIZE_MODES:
        names = ", ".join(repr(q) for q in QUANTIZE_MODES)
        raise ValueError(
            f"{owner}: Expected `quantize` to be one of {names}. Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            f"{owner}: Expected `representative_data` (a few hundred typical inputs) for "
            "quantize='int8': full-integer quantization calibrates activation ranges on it. "
            "Pass representative_data=x_train[:200], or use quantize='dynamic'. "
            "Received: representative_data=None"
        )
    if quantize != "int8" and representative_data is not None:
        raise ValueError(
            f"{owner}: Expected `representative_data` only with quantize='int8' (the other modes "
            "do not calibrate). Drop it or set quantize='int8'. "
            f"Received: quantize={quantize!r} with representative_data"
        )


def _input_names(model):
    return [t.name for t in model.inputs]


def _as_inputs(model, x, name, owner):
    """`x` as a dict {signature input name: float/int array} matching `model`'s inputs."""
    names = _input_names(model)
    if isinstance(x, dict):
        if sorted(x) != sorted(names):
            raise ValueError(
                f"{owner}: Expected `{name}` to have the keys {sorted(names)} (the model's input "
                f"names). Received: {name} keys {sorted(x)}"
            )
        arrays = [x[n] for n in names]
    elif isinstance(x, (list, tuple)):
        if len(x) != len(names):
            raise ValueError(
                f"{owner}: Expected `{name}` to hold one array per model input ({len(names)}). "
                f"Received: {name} with {len(x)} arrays"
            )
        arrays = list(x)
    elif len(names) == 1:
        arrays = [x]
    else:
        raise TypeError(
            f"{owner}: Expected `{name}` to be a list or dict of arrays for a model with "
            f"{len(names)} inputs. Received: {name} of type {type(x).__name__}"
        )
    out = {}
    for n, a, t in zip(names, arrays, model.inputs):
        try:
            a = np.asarray(a, dtype=t.dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{owner}: Expected `{name}` to be numeric arrays. Received: {name} ({exc})"
            ) from None
        expected = tuple(t.shape[1:])
        if a.ndim != len(expected) + 1 or any(
            e is not None and e != s for e, s in zip(expected, a.shape[1:])
        ):
            raise ValueError(
                f"{owner}: Expected `{name}` with shape (batch, *{expected}) for input {n!r}. "
                f"Received: {name}.shape={a.shape}"
            )
        if a.shape[0] < 1:
            raise ValueError(f"{owner}: Expected `{name}` to hold at least one sample. Received: {name}.shape={a.shape}")
        out[n] = a
    return out


def _lite(inputs):
    """What to feed LiteRT: the array itself for one input (no name to match), else the dict."""
    return next(iter(inputs.values())) if len(inputs) == 1 else inputs


def _batch(inputs, start, stop):
    return {n: a[start:stop] for n, a in inputs.items()}


def _representative(inputs):
    count = min(MAX_CALIBRATION_SAMPLES, min(len(a) for a in inputs.values()))

    def generate():
        for i in range(count):
            yield {n: a[i : i + 1].astype(np.float32) if a.dtype.kind == "f" else a[i : i + 1]
                   for n, a in inputs.items()}

    return generate


@contextlib.contextmanager
def _quiet_tf_logs():
    """Silence TensorFlow's Python logger during conversion (its C++ chatter goes to stderr)."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf_logger.setLevel(level)


def _has_torch_xla():
    import importlib.util

    return importlib.util.find_spec("torch_xla") is not None


def _via_saved_model():
    """Whether LiteRT files come from a SavedModel (TensorFlow, JAX, PyTorch with torch_xla);
    otherwise (PyTorch) from Keras' own LiteRT exporter through litert-torch."""
    import keras

    return keras.backend.backend() != "torch" or _has_torch_xla()


def _check_backend(owner="export"):
    """Keras writes a SavedModel from PyTorch through torch_xla only: say so, and what to do."""
    if not _via_saved_model():
        raise RuntimeError(
            f"{owner}: Expected the TensorFlow or JAX backend, or torch_xla with PyTorch, for a SavedModel. "
            "Received: KERAS_BACKEND=torch without torch_xla. For LiteRT and ONNX files from PyTorch pass "
            "formats=('tflite', 'onnx') (no SavedModel); for a SavedModel save the model (model.save("
            "'model.keras')) and export it with KERAS_BACKEND=tensorflow (tf-groupsparse export model.keras OUT)"
        )


def _torch_litert(model, quantize, owner="export"):
    """A float32 .tflite of `model` from the PyTorch backend through Keras' LiteRT exporter
    (litert-torch traces the model with a batch of one)."""
    import os

    if quantize is not None:
        raise ValueError(
            f"{owner}: Expected quantize=None on KERAS_BACKEND=torch (Keras' LiteRT exporter writes float32 "
            f"from PyTorch). Received: quantize={quantize!r}. Save the model and export it with "
            "KERAS_BACKEND=tensorflow for a quantized file")
    with tempfile.TemporaryDirectory(prefix="tgs-litert-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        try:
            with _quiet_tf_logs(), contextlib.redirect_stdout(io.StringIO()):
                model.export(path, format="litert", verbose=False)
        except ImportError as exc:
            raise ImportError(f"{owner}: Expected litert-torch for LiteRT files from PyTorch (pip install -e "
                              f"'.[backends]'). Received: {exc}") from None
        with open(path, "rb") as f:
            return f.read()


def _litert_bytes(model, directory, quantize, representative, owner="export"):
    """The .tflite of `model`: converted from the SavedModel in `directory`, or on PyTorch
    without torch_xla written by Keras' LiteRT exporter (no SavedModel needed)."""
    if not _via_saved_model():
        return _torch_litert(model, quantize, owner)
    return _convert(model, directory, quantize, representative)


def _write_saved_model(model, directory, batch=None):
    """Export `model` as a SavedModel; `batch` fixes the batch size of every input."""
    _check_backend()
    kwargs = {}
    if batch is not None:
        import keras
        import tensorflow as tf

        def spec(t):
            return tf.TensorSpec((batch,) + tuple(t.shape[1:]), t.dtype, name=getattr(t, "name", None))

        struct = getattr(model, "_inputs_struct", None)
        if struct is None:
            struct = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        kwargs["input_signature"] = [keras.tree.map_structure(spec, struct)]
    with _quiet_tf_logs():
        model.export(directory, format="tf_saved_model", verbose=False, **kwargs)


def _is_tensor_list_failure(exc):
    return "tensor list" in str(exc).lower()


def _convert(model, directory, quantize, representative):
    """Convert the SavedModel in `directory` (written from `model`); on the converter's tensor
    list failure (recurrent layers with a dynamic batch), convert a batch-1 export instead."""
    try:
        return _convert_saved_model(directory, quantize, representative)
    except Exception as exc:  # the converter raises its own ConverterError
        if not _is_tensor_list_failure(exc):
            raise
    with tempfile.TemporaryDirectory(prefix="tgs-saved-model-batch1-") as tmp:
        _write_saved_model(model, tmp, batch=1)
        return _convert_saved_model(tmp, quantize, representative)


def _convert_saved_model(directory, quantize, representative):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(directory)
    QUANTIZE_MODES[quantize](converter, representative)
    with _quiet_tf_logs(), warnings.catch_warnings():
        # int8 calibration runs TensorFlow's own (deprecated) interpreter internally.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
        return converter.convert()


def convert_tflite(model, *, quantize=None, representative_data=None) -> bytes:
    """Convert a Keras model to a LiteRT (.tflite) flatbuffer.

    The model is exported to a temporary SavedModel and converted with
    ``tf.lite.TFLiteConverter.from_saved_model`` (the conversion path for Keras 3 models), set up
    for `quantize` as described in this module's docstring. Recurrent models that the
    converter cannot lower with a dynamic batch are converted with a batch of one (see the
    module docstring).

    Args:
        model: a built ``keras.Model``.
        quantize: None (float32, default), "dynamic", "float16" or "int8".
        representative_data: calibration inputs for "int8" (an array, or a list/dict of arrays
            for several inputs; at most 500 samples are used). Required for "int8", refused
            otherwise. Default None.

    Returns:
        The .tflite model as bytes.

    Raises:
        TypeError: `model` is not a keras.Model.
        ValueError: bad `quantize`, int8 without `representative_data`, or data that does not
            match the model's inputs.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.deploy import convert_tflite
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> convert_tflite(m, quantize="float16")[4:8]
        b'TFL3'
    """
    owner = "convert_tflite"
    check_keras_model(model, owner=owner)
    _check_quantize(quantize, representative_data, owner)
    representative = None
    if representative_data is not None:
        representative = _representative(
            _as_inputs(model, representative_data, "representative_data", owner)
        )
    if not _via_saved_model():
        return _torch_litert(model, quantize, owner)
    with tempfile.TemporaryDirectory(prefix="tgs-saved-model-") as tmp:
        _write_saved_model(model, tmp)
        return _convert(model, tmp, quantize, representative)


def frozen_tflite(call, spec) -> bytes:
    """A float32 .tflite of ``call`` (a function of one tensor) traced for `spec`, its variables
    frozen into constants, without a SavedModel and without a signature; raises what the
    converter raises. The conversion behind :func:`convert_tflite_for_timing` and the per-layer
    files of :class:`~tf_groupsparse.pruning.latency.LatencyTable`.

    Examples:
        >>> import keras, tensorflow as tf
        >>> layer = keras.layers.Dense(3)
        >>> frozen_tflite(layer, tf.TensorSpec((1, 4), tf.float32))[4:8]
        b'TFL3'
    """
    import tensorflow as tf

    function = tf.function(call, input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    with _quiet_tf_logs(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter suggests passing a trackable object
        return converter.convert()


def convert_tflite_for_timing(model, x) -> bytes:
    """A float32 .tflite of a one-input `model` for timing it, converted without a SavedModel.

    The model is traced once for the shape of `x` and converted with its variables frozen into
    constants (``TFLiteConverter.from_concrete_functions`` with no trackable object), which skips
    writing and reading a SavedModel, most of a small model's conversion time. The file
    has no signature (:func:`~tf_groupsparse.deploy.run_tflite` and the timing functions read its
    input and output tensors instead). Its output on `x` is compared with the model's; when the
    conversion fails or disagrees, or the backend is not TensorFlow, the result of
    :func:`convert_tflite` is returned instead. For the files users keep, use :func:`convert_tflite`.

    Args:
        model: a built one-input ``keras.Model``.
        x: one input batch of the shape to convert for (usually a batch of one), float32.

    Returns:
        The .tflite model as bytes.

    Examples:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.deploy import run_tflite
        >>> from tf_groupsparse.deploy.convert import convert_tflite_for_timing
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> x = np.ones((1, 4), "float32")
        >>> bool(np.allclose(run_tflite(convert_tflite_for_timing(m, x), x), m(x), atol=1e-5))
        True
    """
    import keras

    check_keras_model(model, owner="convert_tflite_for_timing")
    if keras.backend.backend() != "tensorflow" or len(model.inputs) != 1:
        return convert_tflite(model)
    import tensorflow as tf

    from .litert import run_tflite

    x = np.asarray(x, dtype="float32")
    try:
        blob = frozen_tflite(lambda t: model(t, training=False), tf.TensorSpec(x.shape, tf.float32))
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        got = run_tflite(blob, x)
    except Exception:  # any failure of the shortcut: the SavedModel path below
        return convert_tflite(model)
    scale = max(1.0, float(np.max(np.abs(expected))))
    if not isinstance(got, np.ndarray) or got.shape != expected.shape or not np.allclose(
            got, expected, rtol=1e-3, atol=1e-3 * scale):
        return convert_tflite(model)
    return blob
