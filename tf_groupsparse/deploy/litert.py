"""Run and time a .tflite model in the LiteRT interpreter (``ai-edge-litert``).

Examples:
    >>> import keras, numpy as np
    >>> from tf_groupsparse.deploy import convert_tflite, tflite_latency
    >>> blob = convert_tflite(keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]))
    >>> tflite_latency(blob, np.ones((1, 8), "float32"), runs=5) > 0    # seconds, median of 5 calls
    True
"""

from __future__ import annotations

import os
import time

import numpy as np

from .._validation import check_int, check_number

__all__ = ["run_tflite", "tflite_latency", "tflite_latency_rounds", "paired_ratio"]



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
    """(inputs, outputs): lists of (name, tensor details), outputs in output_0, output_1 order; a
    file without a signature (converted from a traced function) gives its tensors in order."""
    if not interpreter.get_signature_list():
        return ([(d["name"], d) for d in interpreter.get_input_details()],
                [(d["name"], d) for d in interpreter.get_output_details()])
    runner = interpreter.get_signature_runner()
    inputs = runner.get_input_details()
    outputs = runner.get_output_details()
    order = sorted(inputs, key=lambda n: inputs[n]["index"])

    def out_key(name):
        tail = name.rsplit("_", 1)[-1]
        return (0, int(tail), name) if tail.isdigit() else (1, 0, name)

    return [(n, inputs[n]) for n in order], [(n, outputs[n]) for n in sorted(outputs, key=out_key)]


def _arrays(inputs, x, owner):
    """`x` as a list of arrays in the order of `inputs`."""
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
    return [np.asarray(a) for a in arrays]


def _feed(interpreter, inputs, x, owner):
    arrays = _arrays(inputs, x, owner)
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
            or a dict keyed by input name. The batch size may differ from the converted one (a
            model converted with a fixed batch, such as a recurrent one, runs it in slices).
            Float data fed to an int8/uint8 input is quantized with its scale and zero point.

    Returns:
        np.ndarray: the output (dequantized if the output is integer-quantized); a list of
        arrays, in the Keras model's output order, for several outputs.

    Raises:
        TypeError: `tflite` is neither bytes nor a path.
        FileNotFoundError: the path does not exist.
        ValueError: `x` does not match the model's inputs.

    Examples:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.deploy import convert_tflite, run_tflite
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
        >>> run_tflite(convert_tflite(m), np.zeros((5, 3), "float32")).shape
        (5, 2)
    """
    interpreter = _interpreter(tflite, 1, "run_tflite")
    inputs, outputs = _signature(interpreter)
    fixed = _fixed_batch(inputs)
    if fixed is None:
        _feed(interpreter, inputs, x, "run_tflite")
        interpreter.invoke()
        ys = [_read(interpreter, d) for _, d in outputs]
    else:  # converted with a fixed batch (recurrent models): run the batch in slices of it
        arrays = _arrays(inputs, x, "run_tflite")
        n = len(arrays[0])
        if n % fixed:
            raise ValueError(f"run_tflite: Expected a batch that is a multiple of {fixed} (the model was "
                             f"converted with a fixed batch of {fixed}). Received: a batch of {n}")
        parts = []
        for start in range(0, n, fixed):
            _feed(interpreter, inputs, [a[start:start + fixed] for a in arrays], "run_tflite")
            interpreter.invoke()
            parts.append([_read(interpreter, d) for _, d in outputs])
        ys = [np.concatenate(p, axis=0) for p in zip(*parts)]
    return ys[0] if len(ys) == 1 else ys


def _fixed_batch(inputs):
    """The batch size the model was converted with, or None when it is dynamic."""
    sizes = {int(d["shape_signature"][0]) for _, d in inputs if len(d["shape_signature"])}
    return None if not sizes or -1 in sizes else max(sizes)


def tflite_latency(tflite, x, *, runs=50, warmup=5, threads=1, min_seconds=0.0) -> float:
    """Median wall time in seconds of one LiteRT ``invoke()`` on `x`.

    The interpreter is built once (LiteRT applies its default XNNPack delegate on CPU), `x` is
    set once, `warmup` calls are discarded, then `runs` calls are timed with
    ``time.perf_counter`` (more if they take less than `min_seconds` together). Pass a batch of
    one sample for single-sample latency.

    Args:
        tflite: the model as bytes or the path of a .tflite file.
        x: the input, as for :func:`run_tflite`.
        runs: timed calls (default 50), >= 1.
        warmup: untimed calls before timing (default 5), >= 0.
        threads: interpreter threads (default 1), >= 1.
        min_seconds: keep timing calls until they add up to at least this long (default 0: exactly
            `runs` calls); a short model's median then averages over more of the machine's noise.

    Returns:
        float: the median latency in seconds.

    Raises:
        TypeError, ValueError: bad arguments, as for :func:`run_tflite`.

    Examples:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.deploy import convert_tflite, tflite_latency
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> tflite_latency(convert_tflite(m), np.zeros((1, 3), "float32"), runs=5) > 0
        True
    """
    owner = "tflite_latency"
    runs = check_int("runs", runs, owner, minimum=1)
    warmup = check_int("warmup", warmup, owner, minimum=0)
    threads = check_int("threads", threads, owner, minimum=1)
    min_seconds = check_number("min_seconds", min_seconds, owner)
    interpreter = _interpreter(tflite, threads, owner)
    inputs, _ = _signature(interpreter)
    _feed(interpreter, inputs, x, owner)
    return median_seconds(interpreter.invoke, runs, warmup, min_seconds)


def tflite_latency_rounds(models, x, *, rounds=3, runs=50, warmup=5, threads=1, min_seconds=0.0) -> dict:
    """Time several .tflite models against each other in rounds: ``{name: [seconds per round]}``.

    Each round times every model once with :func:`tflite_latency`; odd rounds go in reverse
    order, so that no model is always timed first (the first timing of a round can read
    differently, and a machine's speed drifts within minutes). Compare two models by the median
    of their per-round ratios rather than by one timing each.

    Args:
        models: ``{name: .tflite bytes or path}``, at least one.
        x: the input every model takes, as for :func:`run_tflite`.
        rounds: timing rounds (default 3), >= 1.
        runs, warmup, threads, min_seconds: per timing, as for :func:`tflite_latency`.

    Returns:
        dict: ``{name: list of `rounds` median latencies in seconds}``, in the order of `models`.

    Raises:
        TypeError, ValueError: `models` is empty or an argument is out of range (the message
            names it); as :func:`tflite_latency` for a model or input it cannot run.

    Examples:
        >>> import keras, numpy as np
        >>> from tf_groupsparse.deploy import convert_tflite, paired_ratio, tflite_latency_rounds
        >>> wide = convert_tflite(keras.Sequential([keras.Input((64,)), keras.layers.Dense(256)]))
        >>> narrow = convert_tflite(keras.Sequential([keras.Input((64,)), keras.layers.Dense(16)]))
        >>> t = tflite_latency_rounds({"wide": wide, "narrow": narrow}, np.ones((1, 64), "float32"), rounds=3, runs=5)
        >>> [len(v) for v in t.values()]
        [3, 3]
        >>> ratio = paired_ratio(t["wide"], t["narrow"])   # wide / narrow, round by round
    """
    owner = "tflite_latency_rounds"
    rounds = check_int("rounds", rounds, owner, minimum=1)
    runs = check_int("runs", runs, owner, minimum=1)
    warmup = check_int("warmup", warmup, owner, minimum=0)
    threads = check_int("threads", threads, owner, minimum=1)
    min_seconds = check_number("min_seconds", min_seconds, owner)
    if not models:
        raise ValueError(f"{owner}: Expected at least one model in `models`. Received: models={models!r}")
    names = list(models)
    samples = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            samples[name].append(tflite_latency(models[name], x, runs=runs, warmup=warmup, threads=threads,
                                                min_seconds=min_seconds))
    return samples


def paired_ratio(numerator, denominator) -> float:
    """The median over rounds of ``numerator / denominator`` timed in the same round.

    The way to compare two models timed by :func:`tflite_latency_rounds`: each round's ratio
    cancels the machine's speed during that round, and the median ignores a round a background
    task disturbed. ``paired_ratio(t["dense"], t["pruned"])`` is the speed-up of the pruned
    model; the inverse order gives its fraction of the dense latency.

    Args:
        numerator, denominator: sequences of the same length (>= 1) of positive seconds, one per
            round (the lists :func:`tflite_latency_rounds` returns).

    Returns:
        float: the median of the per-round ratios.

    Raises:
        ValueError: the sequences are empty, of different lengths, or hold a value that is not
            positive and finite (the message names the argument).

    Examples:
        >>> from tf_groupsparse.deploy import paired_ratio
        >>> paired_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 2.0])   # rounds read 2, 4 and 3
        3.0
    """
    a = np.asarray(numerator, dtype="float64").ravel()
    b = np.asarray(denominator, dtype="float64").ravel()
    if a.size == 0 or a.size != b.size:
        raise ValueError(f"paired_ratio: Expected `numerator` and `denominator` to hold one time per round, as "
                         f"many of each (>= 1). Received: {a.size} and {b.size} values")
    for name, v in (("numerator", a), ("denominator", b)):
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise ValueError(f"paired_ratio: Expected `{name}` to hold positive, finite seconds. Received: {name}="
                             f"{v.tolist()!r}")
    return float(np.median(a / b))


def median_seconds(call, runs, warmup, min_seconds=0.0):
    """Median wall time of ``call()`` over at least `runs` timed calls after `warmup` untimed
    ones, and more while the timed calls add up to less than `min_seconds`."""
    for _ in range(warmup):
        call()
    times, total = [], 0.0
    while len(times) < runs or total < min_seconds:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        total += times[-1]
    return float(np.median(times))
