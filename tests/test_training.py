"""End-to-end training: group sparsity appears without losing accuracy, and under tf.distribute.

(a) the digits CNN unregularized, (b) with HierarchicalGroupSparse (square-rooted group lasso,
the variant whose outer square root makes whole groups zero) on conv2/conv3 (conv1's only input
group is the image), (c) with proximal GroupLasso on conv2/conv3 through regularize(proximal=True)
+ ProximalStep; all three with the demo's optimizer, schedule (SGD momentum 0.9, lr 0.05, x0.1 for
the last 6 of 30 epochs), epochs and initial weights. The demo's own HGSR setting (squared group
l1/2 + l1) sparsifies conv3's input groups but few of conv2's, so it is not the one asserted here.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from tf_groupsparse.callbacks import ProximalStep, SparsityMonitor
from tf_groupsparse.datasets import load_digits
from tf_groupsparse.demo import DEMO_SETTINGS, digits_cnn, learning_rate_schedule
from tf_groupsparse import regularize
from tf_groupsparse.regularizers import GroupLasso, HierarchicalGroupSparse
from tf_groupsparse.pruning.sparsity import sparsity_report

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = DEMO_SETTINGS["epochs"]
REGULARIZED = ["conv2", "conv3"]
# Tuned on seed 0 (seed 1 gives the same picture): per-layer strengths through the dict form of
# regularize(); conv3 (twice the input groups) gets the weaker penalty.
HGSR = {"conv2": HierarchicalGroupSparse(9e-3, "sqrt_group_lasso", axis="input"),
        "conv3": HierarchicalGroupSparse(6e-3, "sqrt_group_lasso", axis="input")}
PROX = {"conv2": GroupLasso(0.12, axis="input"), "conv3": GroupLasso(0.09, axis="input")}
# A loss penalty leaves groups small, not exactly zero. Zero means a group's L2 norm below the
# threshold (shrink's test); for conv2/conv3's input groups of 288 / 576 weights, 2e-2 is an RMS of
# about 1e-3 per weight, HGSR's per-weight zero threshold.
HGSR_THRESHOLD = 2e-2


def train(kind, data):
    (x, y), (xt, yt) = data
    model = digits_cnn(DEMO_SETTINGS["widths"], seed=0)
    callbacks = [SparsityMonitor(threshold=0.0 if kind == "prox" else HGSR_THRESHOLD, per_layer=True)]
    if kind == "hgsr":
        model = regularize(model, HGSR)
    elif kind == "prox":
        model = regularize(model, PROX, proximal=True)
        callbacks.insert(0, ProximalStep())
    schedule = learning_rate_schedule(DEMO_SETTINGS, len(x))
    model.compile(keras.optimizers.SGD(schedule, momentum=DEMO_SETTINGS["momentum"]),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(x, y, epochs=EPOCHS, batch_size=DEMO_SETTINGS["batch_size"], verbose=0,
                        callbacks=callbacks)
    accuracy = float(model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"])
    return model, accuracy, history.history


@pytest.fixture(scope="module")
def trained():
    data = load_digits()
    return {kind: train(kind, data) for kind in ("base", "hgsr", "prox")}


def zero_input_fraction(model, name, threshold):
    """Independent count: input channels i whose group W[..., i, :] has an L2 norm below the
    threshold (or is exactly zero), the test shrink and sparsity_report use."""
    w = model.get_layer(name).kernel.numpy()
    norms = np.sqrt(np.sum(np.square(w), axis=(0, 1, 3)))
    dead = (norms < threshold) | np.all(w == 0, axis=(0, 1, 3))
    return dead.mean()


@pytest.mark.slow
def test_hgsr_and_proximal_group_lasso_zero_half_the_input_groups_at_equal_accuracy(trained):
    _, base_acc, _ = trained["base"]
    hgsr, hgsr_acc, hgsr_hist = trained["hgsr"]
    prox, prox_acc, prox_hist = trained["prox"]
    summary = {k: (round(v[1], 4),) for k, v in trained.items()}
    assert base_acc >= 0.95, summary
    for name in REGULARIZED:
        assert zero_input_fraction(hgsr, name, HGSR_THRESHOLD) >= 0.5, (name, summary)
        assert zero_input_fraction(prox, name, 0.0) >= 0.5, (name, summary)   # exact zeros
    assert hgsr_acc >= base_acc - 0.02, summary
    assert prox_acc >= base_acc - 0.02, summary
    # The unregularized model has no zero groups; the report and the monitor agree with the count.
    assert zero_input_fraction(trained["base"][0], "conv2", HGSR_THRESHOLD) == 0.0
    report = sparsity_report(prox, threshold=0.0)
    for name in REGULARIZED:
        row = report.row(name)
        assert row["zero_in"] / row["in_channels"] == zero_input_fraction(prox, name, 0.0)
        assert prox_hist[f"sparsity/{name}/group_sparsity"][-1] == pytest.approx(zero_input_fraction(prox, name, 0.0))
        assert hgsr_hist[f"sparsity/{name}/group_sparsity"][-1] == pytest.approx(
            zero_input_fraction(hgsr, name, HGSR_THRESHOLD))
    # Sparsity grows during training.
    assert prox_hist["sparsity/group_sparsity"][-1] > prox_hist["sparsity/group_sparsity"][0]


@pytest.mark.slow
def test_full_demo_keeps_accuracy_and_sparsifies_conv3(trained, tmp_path):
    from tf_groupsparse.demo import run_demo

    base_acc = trained["base"][1]
    result = run_demo(tmp_path / "demo", verbose=0)       # default settings, seed 0
    model = keras.models.load_model(tmp_path / "demo" / "model.keras", safe_mode=True)
    assert result.test_accuracy >= base_acc - 0.02, (result.test_accuracy, base_acc)
    assert zero_input_fraction(model, "conv3", 1e-3) >= 0.5
    assert result.sparsity.totals["removable_fraction"] >= 0.5


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from tf_groupsparse.callbacks import ProximalStep
    from tf_groupsparse import regularize
    from tf_groupsparse.regularizers import GroupLasso

    L = keras.layers
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 2)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")

    def build():
        return keras.Sequential([keras.Input((6, 2)), L.Conv1D(8, 3, activation="tanh", name="conv"),
                                 L.Flatten(), L.Dense(3, name="fc")])

    keras.utils.set_random_seed(0)
    init = build().get_weights()

    def train(strategy, proximal):
        with strategy.scope():
            model = build()
            model.set_weights(init)
            model = regularize(model, GroupLasso(0.5 if proximal else 0.01), proximal=proximal)
            model.compile(keras.optimizers.SGD(0.05), "mse")
        callbacks = [ProximalStep()] if proximal else []
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
        return model.get_weights()

    def zero_groups(w):
        return int(np.all(w[0] == 0, axis=(0, 2)).sum() + np.all(w[2] == 0, axis=1).sum())

    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {"replicas": mirrored.num_replicas_in_sync}
    for proximal in (False, True):
        w1, w2 = train(one, proximal), train(mirrored, proximal)
        out["proximal" if proximal else "regularizer"] = {
            "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2)),
            "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(w1, init)),
            "zero_groups": [zero_groups(w1), zero_groups(w2)],
        }
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(line[-1][len("RESULT "):])
    assert result["replicas"] == 2
    for key in ("regularizer", "proximal"):
        assert result[key]["moved"] > 0.05, result           # training really changed the weights
        assert result[key]["max_abs_diff"] < 1e-5, result
    one, mirrored = result["proximal"]["zero_groups"]
    assert one == mirrored and one > 0, result               # the prox step zeroes the same groups
