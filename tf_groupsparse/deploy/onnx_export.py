"""ONNX as a second edge runtime: Keras' own exporter writes the file (``model.export(...,
format="onnx")``: tf2onnx on TensorFlow, ``torch.onnx`` on PyTorch, jax2onnx on JAX), ONNX
Runtime runs and times it on one thread.

Needs the ``onnx`` extra (``pip install -e ".[onnx]"``: onnx, onnxruntime, tf2onnx).

Examples:
    >>> import keras, numpy as np, tempfile
    >>> from tf_groupsparse.deploy import convert_onnx, run_onnx
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> path = convert_onnx(m, tempfile.mkdtemp() + "/m.onnx")
    >>> run_onnx(path, np.zeros((4, 3), "float32")).shape
    (4, 2)
"""

from __future__ import annotations

import numpy as np

from .._validation import check_int, check_keras_model
from .convert import _input_names
from .litert import median_seconds

__all__ = ["convert_onnx", "run_onnx", "onnx_latency"]


def _runtime(owner):
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"{owner}: Expected onnxruntime for ONNX (pip install -e '.[onnx]'). "
                          "Received: onnxruntime is not installed") from None
    return onnxruntime


def _signature(model):
    import keras

    specs = [keras.InputSpec(shape=tuple(t.shape), dtype=t.dtype, name=name)
             for t, name in zip(model.inputs, _input_names(model))]
    return [specs[0]] if len(specs) == 1 else [specs]


def convert_onnx(model, path):
    """Write `model` as an ONNX file at `path` through Keras' exporter; returns `path`.

    Args:
        model: a built ``keras.Model``.
        path: the .onnx file to write.

    Raises:
        TypeError: `model` is not a keras.Model.
        ImportError: the backend's ONNX converter is not installed (the message names it).

    Examples:
        >>> import keras, numpy as np, os, tempfile
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> x = np.random.rand(4, 3).astype("float32")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = convert_onnx(m, os.path.join(tmp, "m.onnx"))
        ...     y = run_onnx(path, x)                 # ONNX Runtime on one thread
        >>> os.path.basename(path), np.allclose(y, m(x), atol=1e-5)
        ('m.onnx', True)
    """
    check_keras_model(model, owner="convert_onnx")
    path = str(path)
    try:
        model.export(path, format="onnx", verbose=False, input_signature=_signature(model))
    except ImportError as exc:
        raise ImportError(f"convert_onnx: Expected the ONNX converter of the Keras backend (pip install -e "
                          f"'.[onnx]'; on JAX also '.[backends]' for jax2onnx). Received: {exc}") from None
    return path


def _session(path, owner, threads=1):
    ort = _runtime(owner)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feed(session, x):
    names = [i.name for i in session.get_inputs()]
    if isinstance(x, dict):
        arrays = [x[n] for n in names] if set(x) == set(names) else list(x.values())
    else:
        arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    return {n: np.asarray(a) for n, a in zip(names, arrays)}


def run_onnx(path, x):
    """Run an ONNX file in ONNX Runtime (one thread): the output, or a list for several.

    Args:
        path: the .onnx file.
        x: an array, or a list (model input order) or dict (input names) of arrays.

    Examples:
        >>> import keras, numpy as np, tempfile
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
        >>> run_onnx(convert_onnx(m, tempfile.mkdtemp() + "/m.onnx"), np.zeros((3, 2), "float32")).shape
        (3, 1)
    """
    session = _session(path, "run_onnx")
    ys = session.run(None, _feed(session, x))
    return ys[0] if len(ys) == 1 else ys


def onnx_latency(path, x, *, runs=50, warmup=5, threads=1):
    """Median seconds of one ONNX Runtime call on `x` (as :func:`~.litert.tflite_latency`).

    Examples:
        >>> import keras, numpy as np, tempfile
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> onnx_latency(convert_onnx(m, tempfile.mkdtemp() + "/m.onnx"), np.zeros((1, 2), "float32"), runs=3) > 0
        True
    """
    owner = "onnx_latency"
    runs = check_int("runs", runs, owner, minimum=1)
    warmup = check_int("warmup", warmup, owner, minimum=0)
    session = _session(path, owner, check_int("threads", threads, owner, minimum=1))
    feed = _feed(session, x)
    return median_seconds(lambda: session.run(None, feed), runs, warmup)
