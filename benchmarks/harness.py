"""The one harness every benchmark uses: data, models, training, figures, timing, results.

A benchmark module computes rows (dicts of figures) with these helpers and hands them to
:func:`write_results` (or :func:`publish`, which also prints them), which writes
``results/<name>.json`` and ``results/<name>.md`` with the command that produced them, the date,
the library versions and the machine. Timing is always relative: the library's
``tf_groupsparse.deploy.tflite_latency_rounds`` times several LiteRT models in turn, round after
round, so that a ratio compares figures measured seconds apart (on a shared machine the CPU's
speed drifts within minutes), and ``tf_groupsparse.deploy.paired_ratio`` takes the median of the
per-round ratios.
"""

from __future__ import annotations

import gzip
import json
import numbers
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- provenance


def dist_version(dist):
    """The installed version of distribution `dist`, or "not installed"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def environment() -> dict:
    """Versions and machine facts that make a figure reproducible."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"python": platform.python_version(),
            **{name: dist_version(name) for name in ("tensorflow", "keras", "numpy", "scikit-learn", "ai-edge-litert")},
            "cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def command() -> str:
    """The command line that produced the results, as a user would type it."""
    module = Path(sys.argv[0]).stem
    return f"python -m benchmarks.{module}" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")


def write_results(name: str, payload: dict, markdown: str, extra_versions=()) -> tuple[Path, Path]:
    """Write results/<name>.json and results/<name>.md; both carry the command and the machine.
    `extra_versions` names more distributions whose versions to record (a peer's, say). Under
    ``make bench-quick`` (``TGS_BENCH_QUICK=1``) the files are ``<name>_quick.*`` (git-ignored),
    so a smoke run never replaces a recorded result."""
    if os.environ.get("TGS_BENCH_QUICK") == "1" and not name.endswith("_quick"):
        name += "_quick"
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {**environment(), **{dist: dist_version(dist) for dist in extra_versions}}
    payload = {"command": command(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "environment": env, **payload}
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    md = [markdown.rstrip(), "", f"Command: `{payload['command']}`  ", f"Date: {payload['date']}  ",
          "Machine: " + ", ".join(f"{k} {v}" for k, v in env.items())]
    md_path = RESULTS / f"{name}.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return json_path, md_path


def publish(name: str, payload: dict, lines, quick=False, extra_versions=()) -> tuple[Path, Path]:
    """:func:`write_results` of the markdown `lines` under `name` (``<name>_quick`` when `quick`),
    then print the markdown and the paths written."""
    text = "\n".join(lines)
    paths = write_results(name + ("_quick" if quick else ""), payload, text, extra_versions)
    print(text)
    print("written:", *paths)
    return paths


def mean_sd(values, fmt="{:.2f}") -> str:
    """``mean ± sample standard deviation`` of `values` (None skipped; the mean alone for one
    value, ``-`` for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    text = fmt.format(statistics.mean(values))
    return text + (" ± " + fmt.format(statistics.stdev(values)) if len(values) > 1 else "")


def md_table(header, rows) -> list:
    """Markdown table lines: the column titles `header`, then one line per row of cell texts."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def cell(value) -> str:
    """A figure as a table cell: integers with thousands separators; floats to 4 decimals below 1 (in
    e-notation below 1e-3) and 2 above; lists joined by "-" (widths) or ", "; booleans yes / no; None empty."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return {None: "", True: "yes", False: "no"}[None if value is None else bool(value)]
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        size = abs(value)
        return f"{value:.2e}" if 0 < size < 1e-3 else f"{value:.4f}" if size < 1 else f"{value:,.2f}"
    if isinstance(value, (list, tuple)):
        return ("-" if all(isinstance(v, numbers.Integral) for v in value) else ", ").join(map(str, value))
    return str(value)


def render(title, *blocks) -> list:
    """The markdown lines of a results page: ``# title``, then each block in turn: a text (a heading
    when it starts with "#"), a list of row dicts (a table of all their keys, cells by :func:`cell`)
    or a dict (a name | value table). :func:`write_results` adds the command, date and machine."""
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, dict):
            block = [{"name": k, "value": v} for k, v in block.items()]
        if isinstance(block, str):
            lines += [block, ""] if block else []
        elif block:
            columns = list(dict.fromkeys(k for row in block for k in row))
            lines += [*md_table(columns, [[cell(r.get(c)) for c in columns] for r in block]), ""]
    return lines


def verdict(met) -> str:
    """A goal's outcome as the results pages write it."""
    return "**met**" if met else "**not met**"


# --------------------------------------------------------------------------- data

FASHION_HINT = ("Fashion-MNIST is needed and was not found. Install it with "
                "`sudo apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist) "
                "or put the four idx files in ~/.keras/datasets/fashion-mnist, then run the benchmark again.")


def _datasets():
    from tf_groupsparse import datasets

    return datasets


def _fashion():
    return _datasets().load_fashion_mnist(download=False)


#: dataset name -> loader returning ((x_train, y_train), (x_test, y_test))
LOADERS = {"digits": lambda: _datasets().load_digits(), "fashion": lambda: _fashion(),
           "mnist1d": lambda: _datasets().load_mnist1d(n_samples=10000, seed=0)}


def load(name, train_samples=None):
    """``(x_train, y_train, x_test, y_test)`` of dataset `name`; the first `train_samples`
    training samples when given."""
    if name not in LOADERS:
        raise ValueError(f"load: Expected a dataset in {sorted(LOADERS)}. Received: name={name!r}")
    (x, y), (xt, yt) = LOADERS[name]()
    if train_samples is not None:
        x, y = x[:train_samples], y[:train_samples]
    return x, y, xt, yt


def require(*names):
    """Stop with the install hint, before any training, when a dataset is not on this machine."""
    if "fashion" in names:
        try:
            _fashion()
        except FileNotFoundError:
            raise SystemExit(FASHION_HINT) from None


# --------------------------------------------------------------------------- models and training


def cnn(input_shape, widths, classes=10, seed=0, name="cnn"):
    """Sequential 3x3 'same' ReLU convolutions ``conv1, conv2, ...`` of `widths` (an entry
    ``"pool"`` is a 2x2 max-pool), global average pooling, Dense ``logits``; initial weights from
    `seed` (None: the global random state as it is)."""
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    layers, i = [keras.Input(input_shape)], 0
    for w in widths:
        if w == "pool":
            layers.append(keras.layers.MaxPooling2D())
        else:
            i += 1
            layers.append(keras.layers.Conv2D(w, 3, padding="same", activation="relu", name=f"conv{i}"))
    return keras.Sequential([*layers, keras.layers.GlobalAveragePooling2D(name="gap"),
                             keras.layers.Dense(classes, name="logits")], name=name)


def make_optimizer(name, learning_rate, steps, *, cosine=True, momentum=0.9, weight_decay=None, keras=None,
                   cosine_span=None):
    """A fresh Adam (``"adam"``), AdamW with `weight_decay` (``"adamw"``) or SGD with `momentum`
    (``"sgd"``) whose learning rate decays to 0 along a cosine over `steps` unless ``cosine=False``;
    of the Keras module `keras` (default Keras 3; the tfmot peer passes tf_keras). With
    ``cosine_span=(offset, total)`` the optimizer's steps continue one cosine over `total` steps from
    step `offset` (one schedule across several ``fit`` calls)."""
    if keras is None:
        import keras

    lr = learning_rate
    if cosine and cosine_span:
        lr = _cosine_segment(keras, learning_rate, *cosine_span)
    elif cosine:
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=momentum)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=weight_decay)
    return keras.optimizers.Adam(lr)


_SEGMENTS = {}  # the schedule class per Keras module, registered once (a pruned clone recompiles from config)


def _cosine_segment(keras, learning_rate, offset, total):
    """`learning_rate` on a cosine to 0 over `total` optimizer steps, starting at step `offset`."""
    if keras not in _SEGMENTS:
        ops = keras.ops

        @keras.saving.register_keras_serializable(package="benchmarks")
        class CosineSegment(keras.optimizers.schedules.LearningRateSchedule):
            def __init__(self, learning_rate, offset, total):
                self.learning_rate, self.offset, self.total = float(learning_rate), int(offset), int(total)

            def __call__(self, step):
                t = ops.minimum(ops.cast(step, "float32") + float(self.offset), float(self.total))
                return 0.5 * self.learning_rate * (1.0 + ops.cos(np.pi * t / float(max(self.total, 1))))

            def get_config(self):
                return {"learning_rate": self.learning_rate, "offset": self.offset, "total": self.total}

        _SEGMENTS[keras] = CosineSegment
    return _SEGMENTS[keras](learning_rate, offset, total)


def train(model, x, y, *, epochs, batch_size=128, optimizer="adam", learning_rate=1e-3, cosine=True,
          momentum=0.9, weight_decay=None, loss=None, metrics=("accuracy",), callbacks=(), seed=0,
          validation_data=None, jit_compile="auto", teacher=None, temperature=2.0, alpha=0.5, cosine_span=None):
    """Compile `model` with a fresh :func:`make_optimizer` over this phase's steps (or its
    `cosine_span`) and sparse cross-entropy from logits (unless `loss`; with a `teacher` model,
    ``tgs.Distiller``'s distillation loss at `temperature` and `alpha`), then fit it with shuffled
    batches from `seed`; returns the seconds spent in ``fit``."""
    import keras

    opt = make_optimizer(optimizer, learning_rate, epochs * -(-len(x) // batch_size), cosine=cosine,
                         momentum=momentum, weight_decay=weight_decay, cosine_span=cosine_span)
    if teacher is None:
        model.compile(opt, loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=list(metrics), jit_compile=jit_compile)
    else:
        from tf_groupsparse.pruning.distillation import Distiller

        model = Distiller(model, teacher, temperature, alpha, student_outputs="logits", teacher_outputs="logits")
        model.compile(optimizer=opt)
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True, callbacks=list(callbacks),
              validation_data=validation_data)
    return time.perf_counter() - start


def kd_targets(y, teacher_logits, temperature=4.0, alpha=0.5):
    """``(targets, loss)`` to distill from precomputed teacher logits with :func:`train` (``loss=``):
    column 0 of the targets is the label, the others the logits; the loss is ``distillation_loss``."""
    from tf_groupsparse.pruning.distillation import distillation_loss

    def distillation(packed, logits):
        return distillation_loss(packed[:, 0], logits, packed[:, 1:], temperature, alpha)

    packed = np.concatenate([np.reshape(y, (-1, 1)).astype("float32"), np.asarray(teacher_logits, "float32")], 1)
    return packed, distillation


def plain_copy(model):
    """The same architecture and weights without regularizers or constraints (for plain
    fine-tuning and for loss evaluation without the penalty)."""
    import keras

    def clone_fn(layer):
        config = layer.get_config()
        for key in list(config):
            if key.endswith("_regularizer") or key.endswith("_constraint"):
                config[key] = None
        return layer.__class__.from_config(config)

    new = keras.models.clone_model(model, clone_function=clone_fn)
    new.set_weights(model.get_weights())
    return new


# --------------------------------------------------------------------------- figures of a model


def gzip_bytes(blob: bytes) -> int:
    """Size of `blob` after gzip at level 9 (mtime 0, deterministic)."""
    return len(gzip.compress(blob, compresslevel=9, mtime=0))


def nonzero_params(model) -> int:
    """Number of weight scalars that are not exactly zero."""
    return int(sum(np.count_nonzero(w) for w in model.get_weights()))


def accuracy(model, x, y, batch=512) -> float:
    """Top-1 accuracy on ``(x, y)`` of a Keras model, or of .tflite bytes / a path run in LiteRT."""
    if isinstance(model, (bytes, str, Path)):
        from tf_groupsparse.deploy import run_tflite

        pred = np.concatenate([np.asarray(run_tflite(model, x[i : i + batch])) for i in range(0, len(x), batch)])
    else:
        pred = model.predict(x, batch_size=batch, verbose=0)
    return float((np.asarray(pred).argmax(-1) == np.asarray(y)).mean())


def tflite_figures(row, label, blob, path, x, y, runs) -> dict:
    """`row` with the figures of the .tflite `blob` (`label` "float" or "int8") written to `path`: the
    file, its bytes raw and gzipped, its LiteRT latency on ``x[:1]`` (`runs` invokes, one thread) and,
    for int8, its accuracy on ``(x, y)``. When LiteRT fails, the file's figures are in `row` already."""
    from tf_groupsparse.deploy import tflite_latency

    Path(path).write_bytes(blob)
    row.update({f"tflite_{label}": str(path), f"tflite_{label}_bytes": len(blob),
                f"tflite_{label}_gzip_bytes": gzip_bytes(blob)})
    row[f"latency_{label}_s"] = tflite_latency(blob, x[:1], runs=runs)
    if label == "int8":
        row["accuracy_int8"] = accuracy(blob, x, y)
    return row


def max_abs_error(a, b, x, batch=256) -> float:
    """Largest ``|a(x) - b(x)|`` of two Keras models over the samples of `x`."""
    return float(np.max(np.abs(a.predict(x, batch_size=batch, verbose=0) - b.predict(x, batch_size=batch, verbose=0))))


# --------------------------------------------------------------------------- timing


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds it took)``."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def median_us(samples: dict) -> dict:
    """``{name: median microseconds}`` of ``tflite_latency_rounds``' per-round seconds."""
    return {name: 1e6 * statistics.median(v) for name, v in samples.items()}

