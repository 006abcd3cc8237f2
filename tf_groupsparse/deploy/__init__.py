"""Stage 5: export to SavedModel and LiteRT (.tflite), checked and timed in the LiteRT interpreter.

- convert.py: Keras -> SavedModel -> .tflite (float, dynamic-range, float16, int8).
- litert.py: :func:`run_tflite`, :func:`tflite_latency` and :func:`tflite_latency_rounds` (several
  models timed against each other in alternating rounds) and :func:`paired_ratio` (their median
  per-round ratio) in ``ai-edge-litert``.
- onnx_export.py: :func:`convert_onnx`, :func:`run_onnx`, :func:`onnx_latency` (ONNX Runtime).
- exporter.py: :func:`export` (atomic directory, verification, latency against a reference)
  and :class:`ExportReport`.

Examples:
    >>> import keras, tempfile
    >>> import tf_groupsparse as tgs
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> r = tgs.export(m, tempfile.mkdtemp() + "/m", formats=("tflite",), latency_runs=3, verbose=0)
    >>> r.max_abs_error < 1e-5
    True
"""

from .convert import QUANTIZE_MODES, convert_tflite
from .exporter import FORMATS, TARGETS, ExportReport, export
from .litert import paired_ratio, run_tflite, tflite_latency, tflite_latency_rounds
from .onnx_export import convert_onnx, onnx_latency, run_onnx

__all__ = [
    "export", "ExportReport", "convert_tflite", "run_tflite", "tflite_latency", "tflite_latency_rounds", "paired_ratio",
    "convert_onnx", "run_onnx", "onnx_latency", "FORMATS", "QUANTIZE_MODES", "TARGETS",
]
