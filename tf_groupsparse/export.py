"""Export a (shrunk) model as a SavedModel and a .tflite file, verified and timed in LiteRT.

:func:`export` writes, atomically, a directory::

    path/saved_model/    TensorFlow SavedModel (``model.export(..., format="tf_saved_model")``)
    path/model.tflite    LiteRT flatbuffer converted from that SavedModel
    path/report.json     the ExportReport as JSON
    path/report.md       the ExportReport as a markdown table

and checks the result: it runs the .tflite file in the LiteRT interpreter on `sample`, compares
with the Keras model (``max |y_tflite - y_keras|``) and with the unshrunk `reference` model, and
times one-sample inference of the exported model and of the reference converted the same way in
the same run, so that ``speedup = latency(reference) / latency(model)`` is a ratio measured on
one machine at one time.

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
quantization); the group-sparse training and shrinking that make the model small come from
Mitsuno, Miyao & Kurita (IJCNN 2020, arXiv 2004.04394) and Yi & Choi (ICDMW 2018).

Example:
    >>> import keras, numpy as np
    >>> from tf_groupsparse.export import export
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> x = np.random.rand(8, 4).astype("float32")
    >>> report = export(model, "/tmp/tgs_export_doc", sample=x, overwrite=True, latency_runs=5)
    >>> report.max_abs_error < 1e-5
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ._validation import check_choice, check_int, check_keras_model
from .report import Report

logger = logging.getLogger(__name__)

__all__ = [
    "export",
    "ExportReport",
    "convert_tflite",
    "run_tflite",
    "tflite_latency",
    "FORMATS",
    "QUANTIZE_MODES",
    "TARGETS",
]

FORMATS = ("saved_model", "tflite")
TARGETS = ("xnnpack", "portable")
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
# How many representative samples calibrate int8 quantization at most.
MAX_CALIBRATION_SAMPLES = 500


# --------------------------------------------------------------------------- conversion


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


def _write_saved_model(model, directory):
    with _quiet_tf_logs():
        model.export(directory, format="tf_saved_model", verbose=False)


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
    for `quantize` as described in this module's docstring.

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

    Example:
        >>> import keras
        >>> from tf_groupsparse.export import convert_tflite
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
    with tempfile.TemporaryDirectory(prefix="tgs-saved-model-") as tmp:
        _write_saved_model(model, tmp)
        return _convert_saved_model(tmp, quantize, representative)


# --------------------------------------------------------------------------- LiteRT


def _interpreter(tflite, threads, owner):
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(tflite, (bytes, bytearray)):
        return Interpreter(model_content=bytes(tflite), num_threads=threads)
    if isinstance(tflite, (str, os.PathLike)):
        if not os.path.isfile(tflite):
            raise FileNotFoundError(
                f"{owner}: Expected the path of an existing .tflite file. Received: path={os.fspath(tflite)!r}"
            )
        return Interpreter(model_path=os.fspath(tflite), num_threads=threads)
    raise TypeError(
        f"{owner}: Expected .tflite model bytes or a file path. "
        f"Received: tflite of type {type(tflite).__name__}"
    )


def _signature(interpreter):
    """(inputs, outputs): lists of (name, tensor details), outputs in output_0, output_1 order."""
    runner = interpreter.get_signature_runner()
    inputs = runner.get_input_details()
    outputs = runner.get_output_details()
    order = sorted(inputs, key=lambda n: inputs[n]["index"])

    def out_key(name):
        tail = name.rsplit("_", 1)[-1]
        return (0, int(tail), name) if tail.isdigit() else (1, 0, name)

    return [(n, inputs[n]) for n in order], [(n, outputs[n]) for n in sorted(outputs, key=out_key)]


def _feed(interpreter, inputs, x, owner):
    if isinstance(x, dict):
        missing = sorted(set(n for n, _ in inputs) ^ set(x))
        if missing:
            raise ValueError(
                f"{owner}: Expected `x` keys {sorted(n for n, _ in inputs)} (the model's input "
                f"names). Received: x keys {sorted(x)}"
            )
        arrays = [x[n] for n, _ in inputs]
    elif isinstance(x, (list, tuple)):
        arrays = list(x)
    else:
        arrays = [x]
    if len(arrays) != len(inputs):
        raise ValueError(
            f"{owner}: Expected one array per model input ({len(inputs)}). Received: {len(arrays)} arrays"
        )
    prepared = []
    for (name, detail), a in zip(inputs, arrays):
        a = np.asarray(a)
        dtype = detail["dtype"]
        if np.issubdtype(dtype, np.integer) and a.dtype.kind == "f":
            scale, zero = detail["quantization"]
            if scale:
                info = np.iinfo(dtype)
                a = np.clip(np.round(a / scale + zero), info.min, info.max)
        prepared.append((detail, np.asarray(a, dtype=dtype)))
    for detail, a in prepared:
        interpreter.resize_tensor_input(detail["index"], a.shape)
    interpreter.allocate_tensors()
    for detail, a in prepared:
        interpreter.set_tensor(detail["index"], a)


def _read(interpreter, detail):
    y = interpreter.get_tensor(detail["index"])
    scale, zero = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        y = (y.astype(np.float32) - zero) * scale
    return y


def run_tflite(tflite, x):
    """Run a .tflite model in the LiteRT interpreter (one thread) and return its output.

    Args:
        tflite: the model as bytes or the path of a .tflite file.
        x: an array for a one-input model, else a list of arrays in the model's input order
            or a dict keyed by input name. The batch size may differ from the converted one.
            Float data fed to an int8/uint8 input is quantized with its scale and zero point.

    Returns:
        np.ndarray: the output (dequantized if the output is integer-quantized); a list of
        arrays, in the Keras model's output order, for several outputs.

    Raises:
        TypeError: `tflite` is neither bytes nor a path.
        FileNotFoundError: the path does not exist.
        ValueError: `x` does not match the model's inputs.

    Example:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.export import convert_tflite, run_tflite
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
        >>> run_tflite(convert_tflite(m), np.zeros((5, 3), "float32")).shape
        (5, 2)
    """
    interpreter = _interpreter(tflite, 1, "run_tflite")
    inputs, outputs = _signature(interpreter)
    _feed(interpreter, inputs, x, "run_tflite")
    interpreter.invoke()
    ys = [_read(interpreter, d) for _, d in outputs]
    return ys[0] if len(ys) == 1 else ys


def tflite_latency(tflite, x, *, runs=50, warmup=5, threads=1) -> float:
    """Median wall time in seconds of one LiteRT ``invoke()`` on `x`.

    The interpreter is built once (LiteRT applies its default XNNPack delegate on CPU), `x` is
    set once, `warmup` calls are discarded, then `runs` calls are timed with
    ``time.perf_counter``. Pass a batch of one sample for single-sample latency.

    Args:
        tflite: the model as bytes or the path of a .tflite file.
        x: the input, as for :func:`run_tflite`.
        runs: timed calls (default 50), >= 1.
        warmup: untimed calls before timing (default 5), >= 0.
        threads: interpreter threads (default 1), >= 1.

    Returns:
        float: the median latency in seconds.

    Raises:
        TypeError, ValueError: bad arguments, as for :func:`run_tflite`.

    Example:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.export import convert_tflite, tflite_latency
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> tflite_latency(convert_tflite(m), np.zeros((1, 3), "float32"), runs=5) > 0
        True
    """
    owner = "tflite_latency"
    runs = check_int("runs", runs, owner, minimum=1)
    warmup = check_int("warmup", warmup, owner, minimum=0)
    threads = check_int("threads", threads, owner, minimum=1)
    interpreter = _interpreter(tflite, threads, owner)
    inputs, _ = _signature(interpreter)
    _feed(interpreter, inputs, x, owner)
    for _ in range(warmup):
        interpreter.invoke()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times[i] = time.perf_counter() - start
    return float(np.median(times))


# --------------------------------------------------------------------------- report


@dataclass
class ExportReport(Report):
    """What :func:`export` wrote and measured.

    ``rows`` has one row per model ("exported" and, with a reference, "reference") with
    ``params``, ``macs`` (multiply-adds per sample), ``saved_model_bytes``, ``tflite_bytes``,
    ``max_abs_error`` (LiteRT vs the same Keras model), ``max_abs_error_vs_reference`` (LiteRT of
    the exported model vs the Keras reference) and ``latency_ms``. ``totals`` holds the same
    figures for the exported model plus ``speedup`` and ``size_ratio`` (reference / exported).
    Values that were not measured are None. Attribute access (``report.speedup``) reads
    ``totals``.
    """

    def __getattr__(self, name):
        totals = self.__dict__.get("totals", {})
        if name in totals:
            return totals[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def path(self):
        return self.meta.get("path")

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", "", super().to_markdown(), ""]
        lines.extend(f"- {k}: {v}" for k, v in self.meta.items() if k != "files")
        lines.extend(f"- file: {f}" for f in self.meta.get("files", []))
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:  # to_markdown already carries the title as a heading
        return self.to_markdown()


def _dir_bytes(directory):
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(directory) for f in files
    )


def _max_abs(a, b):
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    return float(max(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))) for x, y in zip(a, b)))


def _keras_output(model, inputs):
    names = _input_names(model)
    x = inputs[names[0]] if len(names) == 1 else [inputs[n] for n in names]
    y = model.predict(x, verbose=0, batch_size=256)
    return [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else np.asarray(y)


def _saved_model_output(directory, inputs):
    import tensorflow as tf

    loaded = tf.saved_model.load(directory)
    fn = loaded.signatures["serving_default"]
    out = fn(**{n: tf.constant(a) for n, a in inputs.items()})
    keys = sorted(out, key=lambda k: (len(k), k))
    ys = [out[k].numpy() for k in keys]
    return ys[0] if len(ys) == 1 else ys


def _random_inputs(model, owner):
    rng = np.random.default_rng(0)
    out = {}
    for t in model.inputs:
        dims = tuple(t.shape[1:])
        if any(d is None for d in dims):
            raise ValueError(
                f"{owner}: Expected `sample` for a model whose input {t.name!r} has unknown "
                f"dimensions (needed to time inference). Received: sample=None with input shape {tuple(t.shape)}"
            )
        out[t.name] = rng.standard_normal((1,) + dims).astype(t.dtype) if "float" in str(t.dtype) else np.zeros((1,) + dims, t.dtype)
    return out


def _has_grouped_layers(model):
    """True when `model` (or a nested model) holds a layer defined in tf_groupsparse.layers."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if _has_grouped_layers(layer):
                return True
        elif type(layer).__module__ == f"{__package__}.layers":
            return True
    return False


def _for_target(model, target):
    """``grouping.rewrite.for_target(model, target)`` when the model has grouped layers.

    Returns ``(model, rewritten)``; the import is lazy so that plain models never load the
    grouping code.
    """
    if model is None or not _has_grouped_layers(model):
        return model, False
    try:
        from .grouping.rewrite import for_target
    except ImportError as exc:
        logger.warning("export: grouped layers kept in their current form (no for_target: %s)", exc)
        return model, False
    new = for_target(model, target)
    return new, new is not model


def _macs(model):
    from .metrics import flops

    try:
        return flops(model)
    except ValueError as exc:
        logger.warning("export: multiply-adds not counted: %s", exc)
        return None


def _check_formats(formats, owner):
    if isinstance(formats, str) or not isinstance(formats, (list, tuple)):
        raise TypeError(
            f"{owner}: Expected `formats` to be a tuple of names from {FORMATS}, e.g. "
            f"formats=('tflite',). Received: formats={formats!r}"
        )
    if not formats or len(set(formats)) != len(formats):
        raise ValueError(
            f"{owner}: Expected `formats` to be a non-empty tuple of distinct names from {FORMATS}. "
            f"Received: formats={formats!r}"
        )
    for f in formats:
        check_choice("formats", f, FORMATS, owner)
    return tuple(formats)


def _check_path(path, owner):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"{owner}: Expected `path` to be a directory path. Received: path={path!r}")
    return os.path.abspath(os.fspath(path))


def _replace(tmp, path, overwrite, owner):
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(
                f"{owner}: Expected `path` not to exist; pass overwrite=True to replace it. "
                f"Received: path={path!r}"
            )
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=os.path.dirname(path))
        old_target = os.path.join(old, "old")
        os.replace(path, old_target)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old_target, path)
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def export(
    model,
    path,
    *,
    formats=FORMATS,
    quantize=None,
    representative_data=None,
    sample=None,
    reference=None,
    target="xnnpack",
    overwrite=False,
    latency_runs=50,
    verbose=0,
) -> ExportReport:
    """Write a SavedModel and a .tflite file for `model`, verify them and time them.

    Everything is built in a temporary directory beside `path` and moved into place with one
    ``os.replace`` at the end: an error midway leaves nothing at `path` (and an existing
    directory untouched). Checks and figures, for the exported model ``M`` and the reference
    ``R`` (both converted with the same settings):

    - ``max_abs_error = max |LiteRT(M)(sample) - M(sample)|``
    - ``max_abs_error_vs_reference = max |LiteRT(M)(sample) - R(sample)|``
    - ``saved_model_max_abs_error = max |SavedModel(M)(sample) - M(sample)|``
    - ``latency`` = median over `latency_runs` LiteRT invokes (after 5 warm-up calls) on
      ``sample[:1]`` with one thread; ``speedup = latency(R) / latency(M)``.

    Args:
        model: the built ``keras.Model`` to export (not modified).
        path: the directory to create.
        formats: tuple of "saved_model" and/or "tflite" (default both).
        quantize: None, "dynamic", "float16" or "int8" for the .tflite file (default None);
            see the module docstring. "int8" keeps float32 inputs and outputs.
        representative_data: calibration inputs, required for and only for quantize="int8".
        sample: inputs to verify against (array, or list/dict for several inputs). Without it
            no error is measured and latency is timed on one standard-normal input.
        reference: the unshrunk ``keras.Model`` with the same inputs and outputs, or None.
        target: "xnnpack" (default) or "portable": the form that grouped layers of
            ``tf_groupsparse`` take, applied with ``grouping.rewrite.for_target`` when the model
            has such layers.
        overwrite: replace an existing `path` (default False).
        latency_runs: timed LiteRT calls per model (default 50); 0 skips timing.
        verbose: 0 silent (default), 1 progress bar.

    Returns:
        ExportReport: also written as ``path/report.json`` and ``path/report.md``.

    Raises:
        TypeError: `model` or `reference` is not a keras.Model, or `formats`/`path` has the
            wrong type.
        ValueError: a bad option, int8 without `representative_data`, or `sample` that does not
            match the model's inputs.
        FileExistsError: `path` exists and `overwrite` is False.

    Example:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.export import export
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> r = export(m, "/tmp/tgs_export_doc2", formats=("tflite",), overwrite=True,
        ...            sample=np.ones((3, 4), "float32"), latency_runs=3)
        >>> sorted(r.meta["files"])
        ['model.tflite', 'report.json', 'report.md']
    """
    import keras

    owner = "export"
    check_keras_model(model, owner=owner)
    if reference is not None:
        check_keras_model(reference, owner=owner, name="reference")
    path = _check_path(path, owner)
    formats = _check_formats(formats, owner)
    _check_quantize(quantize, representative_data, owner)
    check_choice("target", target, TARGETS, owner)
    if not isinstance(overwrite, bool):
        raise TypeError(f"{owner}: Expected `overwrite` to be True or False. Received: overwrite={overwrite!r}")
    latency_runs = check_int("latency_runs", latency_runs, owner, minimum=0)
    verbose = check_int("verbose", verbose, owner, minimum=0, maximum=2)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"{owner}: Expected `path` not to exist; pass overwrite=True to replace it. Received: path={path!r}"
        )
    inputs = _as_inputs(model, sample, "sample", owner) if sample is not None else None
    calibration = ref_calibration = None
    if representative_data is not None:
        arrays = _as_inputs(model, representative_data, "representative_data", owner)
        calibration = _representative(arrays)
        if reference is not None:
            ref_calibration = _representative(dict(zip(_input_names(reference), arrays.values())))
    ref_inputs = None
    if reference is not None and inputs is not None:
        # Matched by position: the reference has the same inputs under its own names.
        ref_inputs = _as_inputs(reference, list(inputs.values()), "sample", owner + " (reference)")

    exported, rewritten = _for_target(model, target)
    reference_exported, _ = _for_target(reference, target)
    with_tflite = "tflite" in formats
    steps = 2 + with_tflite * (2 + (reference is not None))
    progress = keras.utils.Progbar(steps, verbose=verbose, unit_name="step")

    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        row = {"model": "exported", "params": int(exported.count_params()), "macs": _macs(exported),
               "saved_model_bytes": None, "tflite_bytes": None, "max_abs_error": None,
               "max_abs_error_vs_reference": None, "latency_ms": None}
        ref_row = None
        if reference is not None:
            ref_row = dict(row, model="reference", params=int(reference_exported.count_params()),
                           macs=_macs(reference_exported))
        totals = {"saved_model_max_abs_error": None}

        # The SavedModel is the conversion source; written beside the result when asked for.
        saved_dir = os.path.join(tmp, SAVED_MODEL_DIR)
        logger.info("export: writing the SavedModel")
        _write_saved_model(exported, saved_dir)
        if "saved_model" in formats:
            row["saved_model_bytes"] = _dir_bytes(saved_dir)
            if inputs is not None:
                totals["saved_model_max_abs_error"] = _max_abs(
                    _saved_model_output(saved_dir, inputs), _keras_output(exported, inputs)
                )
        progress.add(1)

        if with_tflite:
            logger.info("export: converting to .tflite (quantize=%s)", quantize)
            tflite = _convert_saved_model(saved_dir, quantize, calibration)
            tflite_path = os.path.join(tmp, TFLITE_FILE)
            with open(tflite_path, "wb") as f:
                f.write(tflite)
            row["tflite_bytes"] = os.path.getsize(tflite_path)
            progress.add(1)
            ref_tflite = None
            if reference is not None:
                logger.info("export: converting the reference the same way")
                with tempfile.TemporaryDirectory(prefix=".ref-", dir=tmp) as ref_dir:
                    _write_saved_model(reference_exported, ref_dir)
                    if "saved_model" in formats:
                        ref_row["saved_model_bytes"] = _dir_bytes(ref_dir)
                    ref_tflite = _convert_saved_model(ref_dir, quantize, ref_calibration)
                ref_row["tflite_bytes"] = len(ref_tflite)
                progress.add(1)
            if inputs is not None:
                y_lite = run_tflite(tflite, _lite(inputs))
                row["max_abs_error"] = _max_abs(y_lite, _keras_output(exported, inputs))
                if reference is not None:
                    y_ref = _keras_output(reference, ref_inputs)
                    row["max_abs_error_vs_reference"] = _max_abs(y_lite, y_ref)
                    ref_row["max_abs_error"] = _max_abs(run_tflite(ref_tflite, _lite(ref_inputs)), y_ref)
            if latency_runs:
                one = _batch(inputs, 0, 1) if inputs is not None else _random_inputs(exported, owner)
                row["latency_ms"] = 1e3 * tflite_latency(tflite, _lite(one), runs=latency_runs)
                if reference is not None:
                    ref_one = dict(zip(_input_names(reference_exported), one.values()))
                    ref_row["latency_ms"] = 1e3 * tflite_latency(ref_tflite, _lite(ref_one), runs=latency_runs)
            progress.add(1)

        if "saved_model" not in formats:
            shutil.rmtree(saved_dir)

        totals = {**{k: v for k, v in row.items() if k != "model"}, **totals}
        totals["speedup"] = (
            ref_row["latency_ms"] / row["latency_ms"]
            if ref_row is not None and row["latency_ms"] and ref_row["latency_ms"] is not None
            else None
        )
        totals["size_ratio"] = (
            ref_row["tflite_bytes"] / row["tflite_bytes"]
            if ref_row is not None and row["tflite_bytes"] else None
        )
        files = sorted(os.listdir(tmp)) + ["report.json", "report.md"]
        meta = {
            "path": path, "formats": list(formats), "quantize": quantize, "target": target,
            "grouped_rewrite": rewritten, "latency_runs": latency_runs, "threads": 1,
            "latency_input": "sample[:1]" if inputs is not None else "standard normal, batch 1",
            "sample_size": None if inputs is None else int(len(next(iter(inputs.values())))),
            "tensorflow": _version("tensorflow"), "keras": keras.__version__,
            "ai_edge_litert": _version("ai-edge-litert"), "files": sorted(files),
        }
        rows = [row] + ([ref_row] if ref_row is not None else [])
        report = ExportReport(f"Export of {model.name!r}", rows, totals=totals, meta=meta)
        report.to_json(os.path.join(tmp, "report.json"))
        with open(os.path.join(tmp, "report.md"), "w", encoding="utf-8") as f:
            f.write(report.to_markdown())
        progress.add(1)
        _replace(tmp, path, overwrite, owner)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("export: wrote %s", path)
    return report


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
