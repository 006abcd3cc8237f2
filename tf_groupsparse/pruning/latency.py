"""A latency model for budget pruning: per-layer LiteRT timings measured once (NetAdapt-style).

For every layer whose cost follows its channels (Dense, Conv, depthwise, separable, ...) the
layer alone is timed in LiteRT (XNNPack, one thread, batch 1) at its full width and at half its
input and output channels, each in its own small file timed by ``invoke()`` alone (a signature
runner would resize and allocate on every call, which costs more than a small layer); a
one-element identity measures the interpreter's own per-call overhead, which is subtracted.
Layers with the same class, configuration and input shape (repeated blocks) are timed once. The
whole model and each pruned candidate are converted without a SavedModel
(:func:`~tf_groupsparse.deploy.convert.convert_tflite_for_timing`). A pruned model's latency is
predicted as

    sum over layers of t_L(MACs_L)  +  R * (parameters kept / original parameters)

with ``t_L`` the straight line through the layer's two points (in its padded MACs, below) and
``R`` the part of the full model's measured latency that the layers alone do not explain. Timed
alone and called in a loop, a layer finds its weights in the cache; in the whole model they
stream from memory, so ``R`` follows the weights kept (on a 32x32 MobileNetV2, R is most of the
latency, and in development checks the measured latency of pruned versions followed their
parameter fraction, not their activation volume). XNNPack's kernels compute output channels in
vector-wide tiles (how many at once depends on the processor), so a channel count just past a
multiple of the tile costs about a whole tile more, and kernels often take a slower path for
the partial last tile, so it can cost more than the padding alone. Convolution and depthwise
kernels use different tiles, so the table finds one per kind, by timing a 1x1 convolution and a
3x3 depthwise convolution at 64, 68, 72, 80 and 96 channels (:func:`fit_tiles`: the width and
the partial tile's extra cost), and counts every layer's MACs with its kind's tile
(:func:`effective_channels`). Pruning with ``round_to`` set to the widest width
(``LatencyTable.vector_width``) wastes none of it. Kernels for few output channels can use a
narrower tile than the probe finds; the calibration below absorbs that. The prediction steers
the pruner; the result is then converted and timed against the original in alternating rounds,
and the measured ratio is what the report gives beside the target.

Reference: the per-layer look-up table follows NetAdapt (Yang et al., "NetAdapt: Platform-Aware
Neural Network Adaptation for Mobile Applications", ECCV 2018).

Examples:
    >>> import keras
    >>> from tf_groupsparse.pruning.latency import LatencyTable
    >>> m = keras.Sequential([keras.Input((16, 16, 8)), keras.layers.Conv2D(32, 3, name="c"),
    ...                       keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, name="d")])
    >>> table = LatencyTable(m, runs=5)
    >>> sorted(table.points)
    ['c', 'd']
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ..graph import build_graph
from ..graph.kinds import cost_for, kernel_slots
from ..metrics import _io_shapes
from .cost import CostModel

__all__ = ["KINDS", "LatencyTable", "calibrate_aim", "check_backend", "effective_channels", "fit_tiles", "padded"]

ROUNDS = 4          # measure-and-adjust rounds for a latency target
TOLERANCE = 0.02    # how far from the target a measured latency fraction counts as on it
FLOOR = 0.05        # the lowest predicted fraction the pruner is asked for
TIMING_SECONDS = 0.25  # each timing of a whole model runs at least this long (a ~1 ms model: 250 runs)
WIDTHS = (1, 4, 8, 16, 32)  # candidate vector widths: output channels a kernel computes at once
PROBE = (64, 68, 72, 80, 96)  # channels of the probe layers that find it
KINDS = ("conv", "depthwise")  # layer kinds with their own width: depthwise kernels tile channels apart


def check_backend(owner="LatencyTable"):
    """Raise RuntimeError on a backend other than TensorFlow: the per-layer timings call the
    model's layers inside ``tf.function`` to convert them for LiteRT, which needs Keras' own
    layers to run on TensorFlow tensors."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{owner}: Expected KERAS_BACKEND=tensorflow for a latency target (the per-layer LiteRT "
            "timings trace the model's layers in tf.function to convert them, which Keras layers "
            f"on another backend cannot run). Received: KERAS_BACKEND={backend}. Save the model "
            "(model.save('model.keras')) and prune it with KERAS_BACKEND=tensorflow "
            "(tf-groupsparse prune model.keras --latency F -o small.keras), or use macs= or params= on this backend"
        )


def _half(layer, input_shape):
    """A copy of `layer` for half its input and output channels, and that input shape, or None."""
    config = layer.get_config()
    config["name"] = f"{layer.name}_half"
    for key in ("filters", "units"):
        if key in config:
            config[key] = max(1, math.ceil(int(config[key]) / 2))
    if int(config.get("groups", 1) or 1) != 1:
        return None, None
    shape = tuple(input_shape[:-1]) + (max(1, math.ceil(int(input_shape[-1]) / 2)),)
    try:
        copy = layer.__class__.from_config(config)
        copy.build((1,) + tuple(shape[1:]))
    except (ValueError, TypeError):
        return None, None
    return copy, shape


def _same_cost(layer, input_shape):
    """What a layer's timing depends on: its class, its configuration but the name, its input."""
    config = {k: v for k, v in layer.get_config().items() if k != "name"}
    return type(layer).__name__, repr(sorted(config.items())), tuple(input_shape[1:])


def _copy(layer, input_shape):
    config = layer.get_config()
    copy = layer.__class__.from_config(config)
    copy.build((1,) + tuple(input_shape[1:]))
    copy.set_weights(layer.get_weights())
    return copy


def _layer_tflite(layer, shape):
    """A float32 .tflite of `layer` alone on a batch-1 input of `shape`, or None if it does not convert."""
    import tensorflow as tf

    from ..deploy.convert import frozen_tflite

    try:
        return frozen_tflite(layer, tf.TensorSpec((1,) + tuple(shape[1:]), tf.float32))
    except Exception:  # a layer the converter cannot take alone: its time stays in the residual
        return None


def padded(channels, width):
    """`channels` rounded up to a multiple of `width` (what a kernel computing `width` output
    channels at once actually computes).

    Examples:
        >>> padded(17, 16), padded(16, 16), padded(5, 1)
        (32, 16, 5)
    """
    return -(-int(channels) // int(width)) * int(width)


def _kind(layer):
    """The probe kind whose tile applies to `layer`: ``"depthwise"`` when the kernel that makes
    its output channels has the depthwise layout in the layer-kind registry (depthwise
    convolutions), ``"conv"`` for the rest (Dense, convolutions, separable convolutions, whose
    pointwise kernel makes their output channels)."""
    output = [slot for slot in kernel_slots(layer) if slot.output]
    return "depthwise" if output and output[0].layout == "depthwise" else "conv"


def _probe_layers():
    """Layers on a 16x16 input with :data:`PROBE` channels, as ``(key, layer, input shape)`` for
    :func:`_time_layers`: for ``"conv"`` 1x1 convolutions of 64 input channels, for
    ``"depthwise"`` 3x3 depthwise convolutions."""
    layers = []
    for n in PROBE:
        conv = keras.layers.Conv2D(n, 1, use_bias=False, name=f"probe_conv_{n}")
        conv.build((1, 16, 16, 64))
        depthwise = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"probe_depthwise_{n}")
        depthwise.build((1, 16, 16, n))
        layers += [(f"probe_conv_{n}", conv, (None, 16, 16, 64)), (f"probe_depthwise_{n}", depthwise, (None, 16, 16, n))]
    return layers


def fit_tiles(seconds):
    """The tile that best explains probe timings ``{channels: seconds}`` of one layer at several
    channel counts: ``(width, extra)``. Each candidate width of :data:`WIDTHS` predicts times
    proportional to :func:`effective_channels`, the channels rounded up to the width plus `extra`
    channels' worth when the last tile is partial (kernels often take a slower path for it); the
    scale and ``extra >= 0`` are fitted by least squares, and the width with the least relative
    squared error wins, the narrower on a tie.

    Examples:
        >>> fit_tiles({64: 1.0, 68: 1.25, 72: 1.25, 80: 1.25, 96: 1.5})   # 16 at a time
        (16, 0.0)
        >>> w, extra = fit_tiles({64: 1.0, 68: 1.5, 72: 1.5, 80: 1.25, 96: 1.5})  # 68, 72: slow partial tile
        >>> w, round(extra, 3)
        (16, 16.0)
        >>> fit_tiles({64: 1.0, 68: 1.0625, 72: 1.125, 80: 1.25, 96: 1.5})  # proportional
        (1, 0.0)
    """
    n = np.array(sorted(seconds), dtype=float)
    t = np.array([seconds[k] for k in sorted(seconds)], dtype=float)
    if len(n) < 2 or not np.all(t > 0):
        return 1, 0.0
    fits = []
    for width in WIDTHS:
        p = np.array([padded(k, width) for k in n], dtype=float)
        partial = np.array([k % width != 0 for k in n], dtype=float)
        scale, extra = float(p @ t) / float(p @ p), 0.0
        if partial.any() and not partial.all():
            (a, b), *_ = np.linalg.lstsq(np.stack([p, partial], axis=1), t, rcond=None)
            if a > 0 and b > 0:
                scale, extra = float(a), float(b / a)
        error = float(np.sum((t - scale * (p + extra * partial)) ** 2) / np.sum(t ** 2))
        fits.append((round(error, 6), width, extra))
    _, width, extra = min(fits)
    return width, extra


def effective_channels(channels, width, extra=0.0):
    """What `channels` output channels cost in a kernel computing `width` at once: the channels
    rounded up to the width, plus `extra` when the last tile is partial.

    Examples:
        >>> effective_channels(17, 16), effective_channels(16, 16, 8.0), effective_channels(17, 16, 8.0)
        (32.0, 16.0, 40.0)
    """
    channels = int(channels)
    return float(padded(channels, width)) + (float(extra) if channels % int(width) else 0.0)


def _time_layers(layers, runs):
    """Median seconds of each ``(key, layer, input shape)``, each converted to its own small file
    and timed by ``invoke()`` alone, minus the interpreter's per-call overhead (measured on a
    one-element identity). Layers that do not convert alone are left out."""
    from ..deploy import tflite_latency

    rng = np.random.default_rng(0)

    def seconds_of(layer, shape):  # None when the layer does not convert alone
        blob = _layer_tflite(layer, shape)
        x = rng.standard_normal((1,) + tuple(shape[1:])).astype("float32")
        return None if blob is None else tflite_latency(blob, x, runs=runs, warmup=3)

    overhead = seconds_of(keras.layers.Identity(), (None, 1)) or 0.0
    timed = {key: seconds_of(layer, shape) for key, layer, shape in layers}
    return {key: max(value - overhead, 0.0) for key, value in timed.items() if value is not None}


def calibrate_aim(measure_at, target, rounds=ROUNDS, tolerance=TOLERANCE, floor=FLOOR):
    """Find the predicted latency fraction ("aim") whose pruned model measures at `target`.

    ``measure_at(aim)`` prunes to `aim` of the table's predicted latency and returns the measured
    fraction. The first trial aims at `target`. Trials that measure above ``target + tolerance``
    are too slow, the others fast enough; once there is one of each, the next aim interpolates
    between the slowest fast-enough and the fastest too-slow aim (kept inside the middle half of
    that bracket), so one noisy reading cannot push the aim down for good. With too-slow trials
    only, the aim moves by the measured ratio (``aim * target / measured``, down to `floor`); with
    fast-enough trials only, along the line from the last trial to the unpruned model (aim 1
    measures 1), so a first reading far below the target does not jump to no pruning at all. The
    search stops when a trial measures within `tolerance` of the target or after `rounds` trials.

    Args:
        measure_at: ``aim -> measured latency fraction``.
        target: the latency fraction to reach, in (0, 1].
        rounds: the most trials (default 4).
        tolerance: a measured fraction within this of `target` ends the search (default 0.02).
        floor: the lowest aim tried (default 0.05).

    Returns:
        ``(aim, trials)``: the largest fast-enough aim (the least pruning that met the target),
        or when no trial was fast enough the next aim the search would have tried; and the
        ``[aim, measured]`` pairs in order.

    Examples:
        >>> readings = iter([0.70, 0.30, 0.47, 0.49])   # the first reading is an outlier
        >>> aim, trials = calibrate_aim(lambda aim: next(readings), 0.5)
        >>> [round(a, 3) for a, _ in trials], round(aim, 3)
        ([0.5, 0.357, 0.429, 0.446], 0.446)
    """
    trials, fast, slow, aim = [], None, None, target   # fast, slow: (aim, measured) of the bracket
    for _ in range(rounds):
        measured = float(measure_at(aim))
        trials.append([aim, measured])
        if measured > target + tolerance:
            slow = min(slow or (aim, measured), (aim, measured))
        else:
            fast = max(fast or (aim, measured), (aim, measured))
            if measured >= target - tolerance:
                break
        if fast and slow:
            share = (target - fast[1]) / (slow[1] - fast[1]) if slow[1] > fast[1] else 0.5
            aim = fast[0] + min(max(share, 0.25), 0.75) * (slow[0] - fast[0])
        elif slow:
            if aim <= floor:
                break
            aim = max(aim * target / max(measured, 1e-12), floor)
        else:  # towards the unpruned model, which measures 1 at aim 1
            aim = aim + (target - measured) * (1.0 - aim) / max(1.0 - measured, 1e-12)
    return (fast[0] if fast else aim), trials


class LatencyTable:
    """Per-layer LiteRT timings of `model` and a latency prediction for pruned versions of it.

    Args:
        model: the built keras.Model to prune (fixed input shape).
        graph: its dependency graph (built when None).
        runs: timed calls per model (default 30; per layer at least 50, as a layer's call is
            short); a whole model is timed at least ``TIMING_SECONDS`` (0.25 s) at a time when
            its calls are shorter.

    Attributes:
        full_seconds: measured latency of the whole model (median of `runs` calls).
        vector_widths: ``{kind: channels}``, how many output channels the processor's kernels
            compute at once for each of :data:`KINDS` (one of :data:`WIDTHS`; 1 when the probe
            timings follow the channels proportionally).
        vector_width: the widest of them, a ``round_to`` that fills every kernel's tiles.
        tiles: ``{kind: (width, extra)}`` of :func:`fit_tiles`: the width and what a partial last
            tile costs beyond the padding, in channels.
        points: ``{layer: ((macs, seconds) at full width, (macs, seconds) at half width)}``, the
            MACs counted with the layer's kind's tile (:func:`effective_channels`).
        widths: ``{layer: output channels at full width}``.
        kinds: ``{layer: kind}``, which of :data:`vector_widths` applies.
        residual: the part of ``full_seconds`` the layers do not explain, counted in proportion
            to the parameters kept.
        params: the model's parameter count.
    """

    def __init__(self, model, graph=None, runs=30):
        from ..deploy import tflite_latency
        from ..deploy.convert import convert_tflite_for_timing

        check_backend()
        self.model, self.runs = model, runs
        graph = build_graph(model) if graph is None else graph
        x = np.random.default_rng(0).standard_normal((1,) + tuple(model.inputs[0].shape[1:])).astype("float32")
        self.reference = convert_tflite_for_timing(model, x)
        self.full_seconds = tflite_latency(self.reference, x, runs=max(runs, 20))
        cost = CostModel(graph)
        channels = cost.output_channels()  # along the axis the pruner cuts (a depthwise kernel's input channels)
        timed, macs, seen = [], {}, {}
        for node in graph.nodes:
            layer = node.layer
            if node.name not in set(cost.layer_of.values()) or cost_for(layer) is None:
                continue
            input_shape, output_shape = _io_shapes(layer)
            if isinstance(input_shape, list):
                continue
            same = _same_cost(layer, input_shape)
            if same in seen:  # a layer like one already timed (repeated blocks): share its timings
                macs[node.name] = seen[same]
                continue
            key = f"l{len(seen)}"
            timed.append((key + "_full", _copy(layer, input_shape), input_shape))
            width = int(channels.get(node.name, output_shape[-1]))
            macs[node.name] = [(key + "_full", int(cost_for(layer)(layer, input_shape, output_shape)), width)]
            half, shape = _half(layer, input_shape)
            if half is not None:
                timed.append((key + "_half", half, shape))
                macs[node.name].append((key + "_half", int(cost_for(half)(half, shape, half.compute_output_shape(shape))),
                                        max(1, math.ceil(width / 2))))
            seen[same] = macs[node.name]
        seconds = _time_layers(timed + _probe_layers(), max(runs, 50)) if timed else {}
        self.tiles = {kind: fit_tiles({n: seconds[f"probe_{kind}_{n}"] for n in PROBE if f"probe_{kind}_{n}" in seconds})
                      for kind in KINDS}
        self.points, self.widths, self.kinds = {}, {}, {}
        for name, entries in macs.items():
            if entries[0][0] not in seconds:  # not timed alone: part of the residual
                continue
            kind = _kind(graph.node(name).layer)
            pts = [(self._padded_macs(m, w, kind), seconds[k]) for k, m, w in entries if k in seconds]
            if len(pts) == 1:  # no half-width copy: time proportional to MACs
                pts.append((0, 0.0))
            self.points[name], self.widths[name], self.kinds[name] = tuple(pts), entries[0][2], kind
        explained = sum(p[0][1] for p in self.points.values())
        self.residual = max(self.full_seconds - explained, 0.0)
        self.params = max(cost.params_full, 1)
        self.predicted_full = explained + self.residual

    @property
    def vector_widths(self):
        """``{kind: channels}``: the width of each kind's tile."""
        return {kind: width for kind, (width, _) in self.tiles.items()}

    @property
    def vector_width(self):
        """The widest tile, a ``round_to`` that fills every kernel's tiles."""
        return max(width for width, _ in self.tiles.values())

    def _padded_macs(self, macs, channels, kind):
        """`macs` of a layer of `kind` with `channels` output channels, counted as the kernels of
        that kind compute them (:func:`effective_channels` with the kind's tile)."""
        if channels <= 0:
            return 0.0
        return macs * effective_channels(channels, *self.tiles[kind]) / channels

    def _layer_seconds(self, name, macs, channels=None):
        (m1, t1), (m0, t0) = self.points[name]
        macs = self._padded_macs(macs, self.widths[name] if channels is None else channels, self.kinds[name])
        if m1 == m0:
            return t1
        return max(t0 + (t1 - t0) * (macs - m0) / (m1 - m0), 0.0)

    def predict(self, layer_macs, params, channels=None):
        """Predicted seconds for the given per-layer MACs, number of parameters and (optionally)
        per-layer output channels (``{layer: channels}``; the full width where left out), which
        decide how much of their vector-wide tiles the kernels fill."""
        channels = channels or {}
        layers = sum(self._layer_seconds(n, m, channels.get(n)) for n, m in layer_macs.items() if n in self.points)
        return layers + self.residual * params / self.params

    def fraction(self, cost):
        """The predicted latency fraction of the model a :class:`~.cost.CostModel` describes (the
        original or a pruned version of it; layers are matched by name)."""
        return self.predict(cost.layer_macs(), cost.params, cost.output_channels()) / max(self.predicted_full, 1e-12)

    def _times(self, pruned, rounds):
        """Per-round seconds of the original and of `pruned`, timed in rounds that alternate which
        of the two goes first, each timing at least ``TIMING_SECONDS`` long."""
        from ..deploy import tflite_latency_rounds
        from ..deploy.convert import convert_tflite_for_timing

        x = np.random.default_rng(1).standard_normal((1,) + tuple(self.model.inputs[0].shape[1:])).astype("float32")
        after = convert_tflite_for_timing(pruned, x)
        times = tflite_latency_rounds({"before": self.reference, "after": after}, x, rounds=rounds,
                                      runs=max(self.runs, 20), min_seconds=TIMING_SECONDS)
        return times["before"], times["after"]

    def measured_fraction(self, pruned, rounds=4):
        """`pruned`'s measured LiteRT latency over the original's (median of the per-round ratios)."""
        from ..deploy import paired_ratio

        before, after = self._times(pruned, rounds)
        return paired_ratio(after, before)

    def report(self, pruned, rounds=5):
        """The figures for the report: both latencies (median over rounds), the measured fraction
        (median of the per-round ratios, pruned / original, as :meth:`measured_fraction`) and the
        table's predicted fraction."""
        from ..deploy import paired_ratio

        before, after = self._times(pruned, rounds)
        predicted = self.fraction(CostModel(build_graph(pruned)))
        b, a = float(np.median(before)), float(np.median(after))
        return {"latency_ms_before": 1e3 * b, "latency_ms_after": 1e3 * a,
                "latency_fraction": paired_ratio(after, before),
                "latency_fraction_predicted": predicted}
