"""The end-to-end demo: a small CNN on the digits, trained with hierarchical group sparsity.

:func:`run_demo` trains :func:`digits_cnn` on scikit-learn's 8x8 digits (no download) with
``HierarchicalGroupSparse`` in the HGSR setting (squared group l1/2 mixed half and half with l1,
feature-wise groups), measures the per-layer sparsity and the test accuracy, shrinks the model
physically (:func:`tf_groupsparse.shrink`), exports the shrunk model to a SavedModel and a
.tflite file checked in LiteRT (:func:`tf_groupsparse.export`, with the trained model as the
reference), and writes ``model.keras``, ``model_shrunk.keras``, ``export/``, ``report.json`` and
``report.md`` to the output directory. It runs in well under two minutes on two CPU cores
(``tf-groupsparse demo`` calls it).

Examples:
    >>> import tempfile
    >>> from tf_groupsparse.demo import run_demo
    >>> result = run_demo(tempfile.mkdtemp() + "/demo", epochs=1, verbose=0)
    >>> result.shrink.totals["params_after"] <= result.shrink.totals["params_before"]
    True
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from ._validation import check_int
from .deploy import ExportReport
from .deploy.files import check_output_dir, replace_dir
from .pruning.shrink import ShrinkReport
from .pruning.sparsity import SparsityReport, sparsity_report

logger = logging.getLogger(__name__)
WRITTEN_BY = "tf_groupsparse.demo"

#: Training settings of the demo. Tuned on seed 0: test accuracy 0.980 (0.982 unregularized),
#: 18 of conv3's 32 input groups and 25 of conv2's 32 filters below 1e-3, 74 % of the parameters
#: removable. Squared group l1/2 zeroes few of conv2's own input groups (conv1's channels); the
#: square-rooted variants do (see tests/test_training.py). Strengths above ~1e-4 can collapse
#: training to chance level on some seeds.
DEMO_SETTINGS = {
    "widths": [16, 32, 32],
    "regularized_layers": ["conv2", "conv3"],
    "variant": "squared_group_l12",
    "l1_mix": 0.5,
    "strength": 7e-5,
    "learning_rate": 0.05,
    "momentum": 0.9,
    "batch_size": 32,
    "epochs": 30,
    "late_epochs": 6,
    "late_factor": 0.1,
    "threshold": 1e-3,
}


def digits_cnn(widths=(16, 32, 32), seed=None, name="digits_cnn"):
    """The demo's CNN for ``(8, 8, 1)`` digits: three 3x3 convs, global pooling, Dense(10) logits.

    ``conv1(w1) -> conv2(w2) -> maxpool -> conv3(w3) -> global average pool -> fc(10)``, ReLU,
    ``padding="same"``; the output is logits (train with ``from_logits=True``).

    Args:
        widths: output channels of conv1, conv2, conv3 (default (16, 32, 32)).
        seed: if not None, ``keras.utils.set_random_seed(seed)`` before building, so the
            initial weights are reproducible (default None).
        name: model name (default "digits_cnn").

    Returns:
        An uncompiled ``keras.Sequential``.

    Examples:
        >>> digits_cnn(seed=0).count_params()
        14378
    """
    widths = [check_int("widths", w, "digits_cnn", minimum=1) for w in widths]
    if len(widths) != 3:
        raise ValueError(f"digits_cnn: Expected 3 widths. Received: widths={tuple(widths)!r}")
    if seed is not None:
        keras.utils.set_random_seed(check_int("seed", seed, "digits_cnn"))
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(widths[0], 3, padding="same", activation="relu", name="conv1"),
            L.Conv2D(widths[1], 3, padding="same", activation="relu", name="conv2"),
            L.MaxPooling2D(name="pool"),
            L.Conv2D(widths[2], 3, padding="same", activation="relu", name="conv3"),
            L.GlobalAveragePooling2D(name="gap"),
            L.Dense(10, name="fc"),
        ],
        name=name,
    )


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: sparsity, shrink and export reports, accuracies, files.

    ``str()`` is the per-layer sparsity table, the accuracy lines, the shrink summary and the
    export report (sizes, LiteRT error and latency of the shrunk model against the trained one).
    """

    sparsity: SparsityReport
    test_accuracy: float
    train_accuracy: float
    output: Path
    shrunk_test_accuracy: float | None = None
    shrink: ShrinkReport | None = None
    export: ExportReport | None = None
    files: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)

    def to_dict(self):
        return {
            "test_accuracy": self.test_accuracy,
            "train_accuracy": self.train_accuracy,
            "output": str(self.output),
            "files": {k: str(v) for k, v in self.files.items()},
            "settings": self.settings,
            "history": self.history,
            "sparsity": self.sparsity.to_dict(),
            "shrunk_test_accuracy": self.shrunk_test_accuracy,
            "shrink": None if self.shrink is None else self.shrink.to_dict(),
            "export": None if self.export is None else self.export.to_dict(),
        }

    def to_markdown(self):
        s = self.settings
        return "\n".join([
            "# tf_groupsparse demo: digits CNN with hierarchical group sparsity",
            "",
            f"HierarchicalGroupSparse({s['strength']:g}, variant={s['variant']!r}, axis='input', "
            f"l1_mix={s['l1_mix']}) on {', '.join(s['regularized_layers'])}; SGD lr {s['learning_rate']} "
            f"(x{s['late_factor']} for the last {s['late_epochs']} epochs), momentum {s['momentum']}, "
            f"batch {s['batch_size']}, {s['epochs']} epochs, seed {s['seed']}.",
            "",
            f"- test accuracy: {self.test_accuracy:.4f}",
            f"- train accuracy: {self.train_accuracy:.4f}",
            "",
            "## " + self.sparsity.title,
            "",
            self.sparsity.to_markdown(),
            "",
            *self._shrink_export_markdown(),
        ])

    def _shrink_export_markdown(self):
        if self.shrink is None:
            return []
        lines = ["## " + self.shrink.title, "", self.shrink.to_markdown(), "",
                 f"- shrunk test accuracy: {self.shrunk_test_accuracy:.4f}", ""]
        if self.export is not None:
            lines += ["#" + self.export.to_markdown()]  # its own heading, one level down
        return lines

    def __str__(self):
        return "\n".join([
            str(self.sparsity),
            f"test accuracy: {self.test_accuracy:.4f}",
            f"train accuracy: {self.train_accuracy:.4f}",
            *self._shrink_export_lines(),
            f"saved: {', '.join(str(p) for p in self.files.values())}",
        ])

    def _shrink_export_lines(self):
        if self.shrink is None:
            return []
        t = self.shrink.totals
        lines = [
            f"shrunk: {t['params_before']} -> {t['params_after']} parameters "
            f"({t['params_removed_fraction']:.0%} removed), test accuracy {self.shrunk_test_accuracy:.4f}",
        ]
        if self.export is not None:
            lines += ["", str(self.export)]
        return lines


def learning_rate_schedule(settings, n_samples):
    """Constant learning rate, times `late_factor` for the last `late_epochs` epochs."""
    steps = -(-n_samples // settings["batch_size"])
    boundary = max(settings["epochs"] - settings["late_epochs"], 1) * steps
    lr = settings["learning_rate"]
    return keras.optimizers.schedules.PiecewiseConstantDecay([boundary], [lr, lr * settings["late_factor"]])


class _EpochBar(keras.callbacks.Callback):
    """One keras.utils.Progbar over the epochs (instead of Keras' per-batch bar)."""

    def __init__(self, epochs):
        super().__init__()
        self.bar = keras.utils.Progbar(epochs, unit_name="epoch", stateful_metrics=["loss", "accuracy"])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.bar.update(epoch + 1, [(k, logs[k]) for k in ("loss", "accuracy") if k in logs])


def run_demo(output="saved_models/demo", epochs=None, seed=0, overwrite=False, verbose=1):
    """Train the digits CNN with hierarchical group sparsity, report, shrink, export it.

    The loss is ``CE + sum_{l in conv2, conv3} lambda * ((1 - a) * sum_i (sum_o sqrt(||K_io||_1))^2
    + a * sum |w|)`` (HGSR's squared group l1/2 with feature-wise groups ``i`` and l1 mix
    ``a = 0.5``), trained by SGD with momentum whose learning rate drops tenfold for the last
    epochs (so weights settle below the zero threshold); settings in :data:`DEMO_SETTINGS`. conv1 is left
    unregularized: its only input group is the image itself. A weight counts as zero below 1e-3.

    The trained model is then shrunk at the same threshold (channel groups whose slices are all
    below 1e-3 go; the small weights they held move the outputs slightly, which the export report
    shows as the error against the trained model) and the shrunk model is exported to
    ``output/export`` (SavedModel, float .tflite run in LiteRT on the test images, latency of both
    models with XNNPack on one thread).

    Args:
        output: directory to create for ``model.keras``, ``model_shrunk.keras``, ``export/``,
            ``report.json``, ``report.md`` and ``data.npz`` (the training digits as arrays ``x``
            and ``y``, for ``tf-groupsparse prune --data``) (default "saved_models/demo").
        epochs: training epochs, >= 1 (default None: ``DEMO_SETTINGS["epochs"]``).
        seed: seed of the weights and batch order (default 0).
        overwrite: replace `output` when it is empty or a previous output of the demo (its
            report.json says so); anything else is never replaced (default False).
        verbose: 1 shows a progress bar over the epochs, 0 is silent (default 1).

    Returns:
        :class:`DemoResult`; ``print(result)`` shows the sparsity table and the accuracies.

    Raises:
        FileExistsError: `output` exists and `overwrite` is False, or it is not a previous
            demo output.
        TypeError / ValueError: bad `epochs`, `seed` or `verbose`.

    Reference: Mitsuno, Miyao & Kurita, "Hierarchical Group Sparse Regularization for Deep
    Convolutional Neural Networks", IJCNN 2020 (arXiv 2004.04394).

    Examples:
        >>> import tempfile
        >>> r = run_demo(tempfile.mkdtemp() + "/demo", epochs=1, verbose=0)
        >>> sorted(r.files)
        ['data', 'export', 'model', 'report_json', 'report_md', 'shrunk_model']
    """
    owner = "run_demo"
    settings = dict(DEMO_SETTINGS)
    if epochs is not None:
        settings["epochs"] = check_int("epochs", epochs, owner, minimum=1)
    settings["seed"] = check_int("seed", seed, owner, minimum=0)
    verbose = check_int("verbose", verbose, owner, minimum=0, maximum=2)
    if not isinstance(overwrite, bool):
        raise TypeError(f"{owner}: Expected `overwrite` to be True or False. Received: overwrite={overwrite!r}")
    out = Path(output)
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{owner}: Expected `output` to be a new directory. Received: output={str(out)!r}, which "
            "exists; pass overwrite=True (or --overwrite) to replace a previous demo output, "
            "or choose another directory."
        )
    check_output_dir(out, overwrite, WRITTEN_BY, owner, name="output")

    from .datasets import load_digits
    from .penalties import HierarchicalGroupSparse, regularize
    from .penalties.callbacks import SparsityMonitor
    from .pruning.shrink import shrink

    (x, y), (x_test, y_test) = load_digits()
    base = digits_cnn(settings["widths"], seed=settings["seed"])
    penalty = HierarchicalGroupSparse(
        settings["strength"], settings["variant"], axis="input", l1_mix=settings["l1_mix"]
    )
    model = regularize(base, penalty, layers=settings["regularized_layers"])
    model.compile(
        keras.optimizers.SGD(learning_rate_schedule(settings, len(x)), momentum=settings["momentum"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callbacks = [SparsityMonitor(settings["threshold"])]
    if verbose:
        callbacks.append(_EpochBar(settings["epochs"]))
    logger.info("run_demo: training %d epochs with %r", settings["epochs"], penalty)
    history = model.fit(x, y, epochs=settings["epochs"], batch_size=settings["batch_size"], verbose=0,
                        callbacks=callbacks)
    test_accuracy = float(model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
    train_accuracy = float(model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"])
    report = sparsity_report(model, settings["threshold"])

    logger.info("run_demo: shrinking at threshold %g", settings["threshold"])
    small, shrink_report = shrink(model, settings["threshold"], return_report=True)
    small_logits = small.predict(x_test, verbose=0, batch_size=256)
    shrunk_accuracy = float((small_logits.argmax(axis=1) == y_test).mean())

    # everything is written to a temporary directory beside `output`, then moved into place
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    files = {"model": out / "model.keras", "shrunk_model": out / "model_shrunk.keras",
             "export": out / "export", "report_json": out / "report.json", "report_md": out / "report.md",
             "data": out / "data.npz"}
    try:
        np.savez(tmp / "data.npz", x=x, y=y)  # the training digits, for `tf-groupsparse prune --data`
        export_report = _write(tmp, model, small, x_test, settings, report, test_accuracy, train_accuracy,
                               shrunk_accuracy, shrink_report, history, files, out)
        replace_dir(str(tmp), str(out))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("run_demo: test accuracy %.4f, wrote %s", test_accuracy, out)
    return export_report


def _write(tmp, model, small, x_test, settings, report, test_accuracy, train_accuracy, shrunk_accuracy,
           shrink_report, history, files, out):
    """Write the demo's files into `tmp` (named as they will be under `out`); returns the result."""
    from .deploy import export

    logger.info("run_demo: exporting the shrunk model")
    export_report = export(small, tmp / "export", sample=x_test, reference=model, verbose=0)
    result = DemoResult(
        sparsity=report,
        test_accuracy=test_accuracy,
        train_accuracy=train_accuracy,
        output=out,
        files=files,
        settings=settings,
        history={k: [float(v) for v in vals] for k, vals in history.history.items()},
        shrunk_test_accuracy=shrunk_accuracy,
        shrink=shrink_report,
        export=export_report,
    )
    model.save(tmp / "model.keras")
    small.save(tmp / "model_shrunk.keras")
    data = {"written_by": WRITTEN_BY, **result.to_dict()}
    (tmp / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (tmp / "report.md").write_text(result.to_markdown(), encoding="utf-8")
    return result
