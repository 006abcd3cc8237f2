"""Export a (shrunk) model as a SavedModel and a .tflite file, verified and timed in LiteRT.

:func:`export` writes, atomically, a directory::

    path/saved_model/    TensorFlow SavedModel (``model.export(..., format="tf_saved_model")``)
    path/model.tflite    LiteRT flatbuffer converted from that SavedModel
    path/report.json     the ExportReport as JSON
    path/report.md       the ExportReport as a markdown table

and checks the result: it runs the .tflite file in the LiteRT interpreter on `sample` (or on
generated inputs), compares with the Keras model (``max |y_tflite - y_keras|``) and with the
unshrunk `reference` model, and times one-sample inference of the exported model and of the
reference converted the same way in the same run, so that
``speedup = latency(reference) / latency(model)`` is a ratio measured on one machine at one time.

Examples:
    >>> import keras, numpy as np, tempfile
    >>> from tf_groupsparse import export
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> x = np.random.rand(8, 4).astype("float32")
    >>> report = export(model, tempfile.mkdtemp() + "/m", sample=x, latency_runs=5, verbose=0)
    >>> report.max_abs_error < 1e-5
    True
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from .._validation import check_choice, check_int, check_keras_model
from ..report import Report
from .files import check_output_dir, replace_dir
from .convert import (
    _as_inputs, _batch, _check_quantize, _input_names, _lite, _quiet_tf_logs,
    _litert_bytes, _representative, _via_saved_model, _write_saved_model,
)
from .litert import run_tflite, tflite_latency

logger = logging.getLogger(__name__)

__all__ = ["export", "ExportReport", "FORMATS", "ALL_FORMATS", "TARGETS"]

FORMATS = ("saved_model", "tflite")
#: every format `formats` may name: the defaults and "onnx" (ONNX Runtime, the `onnx` extra)
ALL_FORMATS = FORMATS + ("onnx",)
ONNX_FILE = "model.onnx"
TARGETS = ("xnnpack", "portable")
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
WRITTEN_BY = "tf_groupsparse.export"

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

    Examples:
        >>> import keras, os, tempfile
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     report = export(m, os.path.join(tmp, "m"), formats=("tflite",), latency_runs=3, verbose=0)
        >>> report.params, report.macs, report.saved_model_bytes    # no SavedModel was asked for
        (10, 8, None)
        >>> report.meta["files"]
        ['model.tflite', 'report.json', 'report.md']
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
    with _quiet_tf_logs():  # a new predict function per model: TensorFlow's retracing notice
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


GENERATED_SAMPLES = 32


def _generated_inputs(model, owner, n=GENERATED_SAMPLES):
    """`n` inputs to check and time on when no `sample` is given: standard normal for float
    inputs, zeros for integer ones; None when an input has unknown dimensions."""
    rng = np.random.default_rng(0)
    out = {}
    for t in model.inputs:
        dims = tuple(t.shape[1:])
        if any(d is None for d in dims):
            return None
        out[t.name] = rng.standard_normal((n,) + dims).astype(t.dtype) if "float" in str(t.dtype) else np.zeros((n,) + dims, t.dtype)
    return out


def _agreement(a, b):
    """``(max |a - b| / range(b), top-1 agreement)`` of two outputs (lists for several outputs);
    the agreement is None when the outputs are not class scores (last axis < 2)."""
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    relative, agree = [], []
    for x, y in zip(a, b):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        span = float(y.max() - y.min()) if y.size else 0.0
        relative.append(float(np.max(np.abs(x - y))) / span if span > 0 else 0.0)
        if y.ndim >= 2 and y.shape[-1] >= 2:
            agree.append(float(np.mean(x.argmax(axis=-1) == y.argmax(axis=-1))))
    return max(relative), (min(agree) if agree else None)


def _has_grouped_layers(model):
    """True when `model` (or a nested model) holds a layer defined in tf_groupsparse.layers."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if _has_grouped_layers(layer):
                return True
        elif type(layer).__module__ == "tf_groupsparse.layers":
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
        from ..grouping.rewrite import for_target
    except ImportError as exc:
        logger.warning("export: grouped layers kept in their current form (no for_target: %s)", exc)
        return model, False
    new = for_target(model, target)
    return new, new is not model


def _macs(model):
    from ..metrics import flops

    try:
        return flops(model)
    except ValueError as exc:
        logger.warning("export: multiply-adds not counted: %s", exc)
        return None


def _check_formats(formats, owner):
    if isinstance(formats, str) or not isinstance(formats, (list, tuple)):
        raise TypeError(
            f"{owner}: Expected `formats` to be a tuple of names from {ALL_FORMATS}, e.g. "
            f"formats=('tflite',). Received: formats={formats!r}"
        )
    if not formats or len(set(formats)) != len(formats):
        raise ValueError(
            f"{owner}: Expected `formats` to be a non-empty tuple of distinct names from {ALL_FORMATS}. "
            f"Received: formats={formats!r}"
        )
    for f in formats:
        check_choice("formats", f, ALL_FORMATS, owner)
    return tuple(formats)


def _check_path(path, owner):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"{owner}: Expected `path` to be a directory path. Received: path={path!r}")
    return os.path.abspath(os.fspath(path))


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
    verbose=1,
) -> ExportReport:
    """Write a SavedModel and a .tflite file for `model`, verify them and time them.

    Everything is built in a temporary directory beside `path` and moved into place with one
    ``os.replace`` at the end: an error midway leaves nothing at `path` (and an existing
    directory untouched). Checks and figures, for the exported model ``M`` and the reference
    ``R`` (both converted with the same settings):

    - ``max_abs_error = max |LiteRT(M)(x) - M(x)|``; ``relative_error`` is it divided by the
      range of ``M(x)`` (the scale an int8 error should be read against), ``top1_agreement`` the
      fraction of inputs whose largest output is the same (class scores)
    - ``max_abs_error_vs_reference = max |LiteRT(M)(x) - R(x)|`` and
      ``top1_agreement_vs_reference``
    - ``saved_model_max_abs_error = max |SavedModel(M)(sample) - M(sample)|``
    - ``latency`` = median over `latency_runs` LiteRT invokes (after 5 warm-up calls) on
      ``x[:1]`` with one thread; ``speedup = latency(R) / latency(M)``.

    ``x`` is `sample`, or 32 generated standard-normal inputs when no sample is given (the
    report says which in ``meta["check_input"]``): outputs are always checked.

    Args:
        model: the built ``keras.Model`` to export (not modified).
        path: the directory to create.
        formats: tuple of "saved_model", "tflite" and/or "onnx" (default the first two).
            "onnx" writes ``model.onnx`` through Keras' exporter and checks and times it in
            ONNX Runtime like the .tflite file (``onnx_max_abs_error``, ``onnx_latency_ms``,
            ``onnx_speedup``); it works from the PyTorch backend too.
        quantize: None, "dynamic", "float16" or "int8" for the .tflite file (default None);
            see the module docstring. "int8" keeps float32 inputs and outputs.
        representative_data: calibration inputs, required for and only for quantize="int8".
        sample: inputs to verify against (array, or list/dict for several inputs). Default
            None: 32 generated standard-normal inputs (real data gives a more telling error).
        reference: the unshrunk ``keras.Model`` with the same inputs and outputs, or None.
        target: "xnnpack" (default) or "portable": the form that grouped layers of
            ``tf_groupsparse`` take, applied with ``grouping.rewrite.for_target`` when the model
            has such layers.
        overwrite: replace an existing `path` (default False) when it is empty or a previous
            export (it holds the report.json an export wrote); a plain file, a foreign
            directory or anything else is never replaced.
        latency_runs: timed LiteRT calls per model (default 50); 0 skips timing.
        verbose: 1 (default) progress bar, 0 silent.

    Returns:
        ExportReport: also written as ``path/report.json`` and ``path/report.md``.

    Raises:
        TypeError: `model` or `reference` is not a keras.Model, or `formats`/`path` has the
            wrong type.
        ValueError: a bad option, int8 without `representative_data`, or `sample` that does not
            match the model's inputs.
        FileExistsError: `path` exists and `overwrite` is False, or it is not a previous export.

    Examples:
        >>> import keras, numpy as np, tempfile
        >>> from tf_groupsparse import export
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> path = tempfile.mkdtemp() + "/m"
        >>> r = export(m, path, formats=("tflite",), sample=np.ones((3, 4), "float32"),
        ...            latency_runs=3, verbose=0)
        >>> sorted(r.meta["files"]), r.top1_agreement
        (['model.tflite', 'report.json', 'report.md'], 1.0)
        >>> r = export(m, path, formats=("tflite",), overwrite=True, latency_runs=3, verbose=0)
        >>> r.meta["check_input"].startswith("generated")   # outputs checked without a sample
        True
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
    check_output_dir(path, overwrite, WRITTEN_BY, owner)
    if sample is not None:
        inputs, check_input = _as_inputs(model, sample, "sample", owner), "sample"
    else:
        inputs = _generated_inputs(model, owner)
        check_input = None if inputs is None else f"generated: {GENERATED_SAMPLES} standard-normal samples (pass `sample` to check on real data)"
    if inputs is None and latency_runs:
        raise ValueError(
            f"{owner}: Expected `sample` for a model whose inputs have unknown dimensions (needed to "
            f"check and time inference). Received: sample=None with input shapes "
            f"{[tuple(t.shape) for t in model.inputs]}"
        )
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
    steps = 2 + with_tflite * (2 + (reference is not None)) + ("onnx" in formats)
    progress = keras.utils.Progbar(steps, verbose=verbose, unit_name="step")

    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        row = {"model": "exported", "params": int(exported.count_params()), "macs": _macs(exported),
               "saved_model_bytes": None, "tflite_bytes": None, "max_abs_error": None, "relative_error": None,
               "top1_agreement": None, "max_abs_error_vs_reference": None, "top1_agreement_vs_reference": None,
               "latency_ms": None}
        ref_row = None
        if reference is not None:
            ref_row = dict(row, model="reference", params=int(reference_exported.count_params()),
                           macs=_macs(reference_exported))
        totals = {"saved_model_max_abs_error": None}

        # The SavedModel is the conversion source (PyTorch without torch_xla: Keras' LiteRT
        # exporter instead); written beside the result when asked for.
        via_saved_model = _via_saved_model()
        saved_dir = os.path.join(tmp, SAVED_MODEL_DIR)
        if (with_tflite and via_saved_model) or "saved_model" in formats:
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
            tflite = _litert_bytes(exported, saved_dir, quantize, calibration, owner)
            tflite_path = os.path.join(tmp, TFLITE_FILE)
            with open(tflite_path, "wb") as f:
                f.write(tflite)
            row["tflite_bytes"] = os.path.getsize(tflite_path)
            progress.add(1)
            ref_tflite = None
            if reference is not None:
                logger.info("export: converting the reference the same way")
                with tempfile.TemporaryDirectory(prefix=".ref-", dir=tmp) as ref_dir:
                    if via_saved_model:
                        _write_saved_model(reference_exported, ref_dir)
                    if "saved_model" in formats:
                        ref_row["saved_model_bytes"] = _dir_bytes(ref_dir)
                    ref_tflite = _litert_bytes(reference_exported, ref_dir, quantize, ref_calibration, owner)
                ref_row["tflite_bytes"] = len(ref_tflite)
                progress.add(1)
            if inputs is not None:
                y_lite = run_tflite(tflite, _lite(inputs))
                y_keras = _keras_output(exported, inputs)
                row["max_abs_error"] = _max_abs(y_lite, y_keras)
                row["relative_error"], row["top1_agreement"] = _agreement(y_lite, y_keras)
                if reference is not None:
                    y_ref = _keras_output(reference, ref_inputs)
                    row["max_abs_error_vs_reference"] = _max_abs(y_lite, y_ref)
                    row["top1_agreement_vs_reference"] = _agreement(y_lite, y_ref)[1]
                    y_ref_lite = run_tflite(ref_tflite, _lite(ref_inputs))
                    ref_row["max_abs_error"] = _max_abs(y_ref_lite, y_ref)
                    ref_row["relative_error"], ref_row["top1_agreement"] = _agreement(y_ref_lite, y_ref)
            if latency_runs:
                one = _batch(inputs, 0, 1)
                row["latency_ms"] = 1e3 * tflite_latency(tflite, _lite(one), runs=latency_runs)
                if reference is not None:
                    ref_one = dict(zip(_input_names(reference_exported), one.values()))
                    ref_row["latency_ms"] = 1e3 * tflite_latency(ref_tflite, _lite(ref_one), runs=latency_runs)
            progress.add(1)

        if "onnx" in formats:
            _export_onnx(exported, reference_exported, tmp, inputs, ref_inputs, row, ref_row, latency_runs)
            progress.add(1)

        if "saved_model" not in formats and os.path.isdir(saved_dir):
            shutil.rmtree(saved_dir)

        totals = {**{k: v for k, v in row.items() if k != "model"}, **totals}
        totals["speedup"] = (
            ref_row["latency_ms"] / row["latency_ms"]
            if ref_row is not None and row["latency_ms"] and ref_row["latency_ms"] is not None
            else None
        )
        totals["onnx_speedup"] = (
            ref_row["onnx_latency_ms"] / row["onnx_latency_ms"]
            if ref_row is not None and row.get("onnx_latency_ms") and ref_row.get("onnx_latency_ms") else None
        )
        totals["size_ratio"] = (
            ref_row["tflite_bytes"] / row["tflite_bytes"]
            if ref_row is not None and row["tflite_bytes"] else None
        )
        files = sorted(os.listdir(tmp)) + ["report.json", "report.md"]
        meta = {
            "path": path, "formats": list(formats), "quantize": quantize, "target": target,
            "grouped_rewrite": rewritten, "latency_runs": latency_runs, "threads": 1,
            "latency_input": "the first checked input, batch 1", "check_input": check_input,
            "sample_size": None if inputs is None else int(len(next(iter(inputs.values())))),
            "tensorflow": _version("tensorflow"), "keras": keras.__version__,
            "ai_edge_litert": _version("ai-edge-litert"), "files": sorted(files), "written_by": WRITTEN_BY,
        }
        rows = [row] + ([ref_row] if ref_row is not None else [])
        report = ExportReport(f"Export of {model.name!r}", rows, totals=totals, meta=meta)
        report.to_json(os.path.join(tmp, "report.json"))
        with open(os.path.join(tmp, "report.md"), "w", encoding="utf-8") as f:
            f.write(report.to_markdown())
        progress.add(1)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("export: wrote %s", path)
    return report


def _export_onnx(model, reference, tmp, inputs, ref_inputs, row, ref_row, latency_runs):
    """Write model.onnx, check it against Keras and time it (and the reference) in ONNX Runtime."""
    from .onnx_export import convert_onnx, onnx_latency, run_onnx

    logger.info("export: writing the ONNX file")
    models = [(model, row, inputs, os.path.join(tmp, ONNX_FILE))]
    if reference is not None:
        models.append((reference, ref_row, ref_inputs, os.path.join(tmp, ".reference.onnx")))
    for keras_model, figures, x, file in models:
        convert_onnx(keras_model, file)
        figures["onnx_bytes"] = os.path.getsize(file)
        figures["onnx_max_abs_error"] = figures["onnx_latency_ms"] = None
        if x is not None:
            figures["onnx_max_abs_error"] = _max_abs(run_onnx(file, list(x.values())), _keras_output(keras_model, x))
            if latency_runs:
                one = [a[:1] for a in x.values()]
                figures["onnx_latency_ms"] = 1e3 * onnx_latency(file, one, runs=latency_runs)
    if reference is not None:
        os.remove(models[1][3])


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
