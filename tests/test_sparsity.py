import json

import keras
import numpy as np
import pytest

from tf_groupsparse import count_params, shrink
from tf_groupsparse.graph.kinds import kernel_slots
from tf_groupsparse.pruning.sparsity import kernel_stats, sparsity_report

L = keras.layers


def loop_reference(w, thr):
    """Independent per-(i, o) loop count on a standard (*S, C_in, C_out) kernel: a group is zero
    when its L2 norm is below `thr` (or it is exactly zero)."""
    c_in, c_out = w.shape[-2], w.shape[-1]
    zero = lambda a: bool(np.sqrt(np.sum(np.square(a))) < thr or np.all(a == 0))  # noqa: E731
    zk = np.array([[zero(w[..., i, o]) for o in range(c_out)] for i in range(c_in)])
    zin = [i for i in range(c_in) if zero(w[..., i, :])]
    zout = [o for o in range(c_out) if zero(w[..., :, o])]
    zw = int(sum(1 for v in w.ravel() if abs(v) < thr or v == 0))
    return dict(zero_in=len(zin), zero_out=len(zout), zero_kernels=int(zk.sum()), zero_weights=zw)


def removed_by_shrink(model, threshold):
    """{layer path: parameters shrink removes}: the reference for the `removable` column."""
    small = shrink(model, threshold)
    return {layer.name: layer.count_params() - small.get_layer(layer.name).count_params()
            for layer in model.layers if layer.weights}


def conv_bn_model():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="c1")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(5, 3, name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(2, name="fc")(x)
    return keras.Model(inp, out)


def test_hand_built_conv_kernels_match_loop_reference_and_shrink():
    model = conv_bn_model()
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(3, 3, 3, 4)).astype("float32")
    w1[:, :, 1, :] = 0.0          # zero input channel 1 (a model input: never removable)
    w1[:, :, :, 2] = 1e-5         # output channel 2: L2 norm 5e-5, below the threshold
    w1[:, :, 0, 3] = 0.0          # one extra zero kernel (0, 3)
    w1[0, 0, 2, 0] = 0.0          # a single zero weight
    model.get_layer("c1").kernel.assign(w1)
    w2 = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    w2[:, :, 2, :] = 0.0          # nothing reads c1's channel 2
    w2[:, :, 0, :] = 1e-5         # c1's channel 0 is read only by weights far below the threshold
    model.get_layer("c2").kernel.assign(w2)

    report = sparsity_report(model, threshold=1e-3)
    row1, row2 = report.row("c1"), report.row("c2")
    assert {k: row1[k] for k in ("zero_in", "zero_out", "zero_kernels", "zero_weights")} == loop_reference(w1, 1e-3)
    assert {k: row2[k] for k in ("zero_in", "zero_out", "zero_kernels", "zero_weights")} == loop_reference(w2, 1e-3)
    assert (row1["zero_in"], row1["zero_out"]) == (1, 1) and row2["zero_in"] == 2
    assert row1["params"] == 3 * 3 * 3 * 4 + 4
    assert row1["zero_frac"] == pytest.approx(row1["zero_weights"] / w1.size)

    # removable is what shrink removes: c1's channels 0 and 2 (their kernel columns and biases),
    # their BatchNormalization entries and c2's input slices.
    reference = removed_by_shrink(model, 1e-3)
    assert row1["removable"] == reference["c1"] == 2 * (3 * 3 * 3 + 1)
    assert row2["removable"] == reference["c2"] == 2 * 3 * 3 * 5
    assert report.row("bn")["removable"] == reference["bn"] == 2 * 4
    t = report.totals
    assert t["removable"] == count_params(model) - count_params(shrink(model, 1e-3))
    assert t["zero_in"] == 3 and t["zero_out"] == 1
    assert t["group_sparsity_input"] == pytest.approx(3 / (3 + 4 + 5))
    assert t["group_sparsity_output"] == pytest.approx(1 / (4 + 5 + 2))
    assert t["model_params"] == model.count_params()
    assert t["removable_fraction"] == pytest.approx(t["removable"] / model.count_params())


def test_residual_coupled_zero_filters_are_not_removable():
    """Zeroed 1x1 shortcut filters whose channels are added to a branch that carries signal
    (the Xception case): shrink removes nothing there, and the report agrees."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="stem")(inp)
    short = L.Conv2D(8, 1, name="shortcut")(x)
    branch = L.Conv2D(8, 3, padding="same", name="branch")(L.ReLU()(x))
    y = L.Add()([short, branch])
    out = L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(y))
    model = keras.Model(inp, out)
    k = model.get_layer("shortcut").kernel.numpy()
    k[..., :4] = 0.0
    model.get_layer("shortcut").kernel.assign(k)
    report = sparsity_report(model, threshold=1e-3)
    assert report.row("shortcut")["zero_out"] == 4
    assert report.row("shortcut")["removable"] == 0
    assert report.totals["removable"] == 0 == count_params(model) - count_params(shrink(model, 1e-3))


def test_threshold_zero_counts_exact_zeros_only():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, use_bias=False, name="fc")])
    model.get_layer("fc").kernel.assign(np.array([[0.0, 1e-9], [0.0, 0.0], [1.0, 2.0]], "float32"))
    exact = sparsity_report(model, threshold=0).row("fc")
    assert (exact["zero_weights"], exact["zero_in"], exact["zero_out"]) == (3, 1, 0)
    loose = sparsity_report(model, threshold=1e-3).row("fc")
    assert (loose["zero_weights"], loose["zero_in"], loose["zero_out"]) == (4, 2, 0)
    assert loose["removable"] == 0   # the zero rows read the model's inputs: never removed


def test_depthwise_transposed_separable_embedding_and_nested_rows():
    inner = keras.Sequential([keras.Input((6, 6, 2)), L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")],
                             name="inner")
    inp = keras.Input((6, 6, 2))
    x = inner(inp)
    x = L.SeparableConv2D(3, 1, name="sep")(x)
    x = L.Conv2DTranspose(2, 1, name="tr")(x)
    model = keras.Model(inp, x)

    dw = np.ones((3, 3, 2, 2), "float32")
    dw[..., 1, :] = 0.0          # channel 1: both kernels zero
    dw[..., 0, 1] = 0.0          # kernel (0, 1)
    inner.get_layer("dw").kernel.assign(dw)
    tr = np.ones((1, 1, 2, 3), "float32")   # stored (S, C_out=2, C_in=3)
    tr[..., :, 0] = 0.0                      # input channel 0 unused
    model.get_layer("tr").kernel.assign(tr)

    report = sparsity_report(model)
    row = report.row("inner/dw")
    assert (row["in_channels"], row["out_channels"], row["kernels"]) == (2, 4, 4)
    assert (row["zero_in"], row["zero_out"], row["zero_kernels"]) == (1, 3, 3)
    trow = report.row("tr")
    assert (trow["in_channels"], trow["out_channels"], trow["zero_in"], trow["zero_out"]) == (3, 2, 1, 0)
    assert report.row("sep/depthwise_kernel")["params"] == 1 * 1 * 4 * 1
    assert report.row("sep/pointwise_kernel")["params"] == 4 * 3 + 3
    assert [r["layer"] for r in report.rows] == [
        "inner/dw", "sep/depthwise_kernel", "sep/pointwise_kernel", "tr"]
    # the depthwise channels are the model's input channels (frozen): only tr's unused input
    # channel 0 goes, with sep's filter 0 that computes it.
    small = shrink(model, 1e-3)
    assert report.totals["removable"] == count_params(model) - count_params(small) > 0
    assert small.get_layer("sep").filters == 2

    emb = keras.Sequential([keras.Input((2,), dtype="int32"), L.Embedding(5, 3, name="emb")])
    e = np.ones((5, 3), "float32")
    e[[1, 4]] = 0
    emb.get_layer("emb").embeddings.assign(e)
    assert sparsity_report(emb).row("emb")["zero_in"] == 2


def test_kernel_stats_matches_reference_on_random_kernels():
    rng = np.random.default_rng(7)
    for shape in [(5, 4), (3, 6, 5), (2, 3, 4, 6)]:
        w = rng.normal(size=shape) * (rng.random(size=shape) > 0.4)
        w[..., rng.random(shape[-2]) > 0.6, :] = 0
        w[..., rng.random(shape[-1]) > 0.7] = 1e-5
        for norm in ("l2", "l1"):
            stats = kernel_stats(w, 1e-3, norm=norm)
            expected = loop_reference(w, 1e-3) if norm == "l2" else None
            if expected:
                assert {k: stats[k] for k in expected} == expected
        assert kernel_stats(w, 1e-3, norm="l1")["zero_out"] <= kernel_stats(w, 1e-3)["zero_out"]


def test_report_renders_and_serializes():
    model = conv_bn_model()
    report = sparsity_report(model, threshold=1e-2)
    text = str(report)
    assert text.splitlines()[0] == "Sparsity of " + model.name + " (l2 norm of a group < 0.01 counts as zero)"
    assert "group_sparsity_input" in text
    md = report.to_markdown().splitlines()
    assert md[0].startswith("| layer | type | params | zero_weights |")
    data = json.loads(report.to_json())
    assert data["meta"]["threshold"] == 0.01 and [r["layer"] for r in data["rows"]] == ["c1", "c2", "fc"]
    with pytest.raises(KeyError, match="No row for layer 'nope'"):
        report.row("nope")


def test_unsupported_kernels_listed_as_skipped():
    model = keras.Sequential([keras.Input((4, 3)), L.EinsumDense("abc,cd->abd", output_shape=(4, 2), name="ein"),
                              L.LayerNormalization(name="ln")])
    report = sparsity_report(model)
    assert report.rows == [] and report.meta["skipped"] == ["ein", "ln"]
    assert kernel_slots(L.BatchNormalization()) == ()


def test_subclassed_model_reports_kernels_without_removable():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2, name="d")

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    report = sparsity_report(sub)
    assert report.rows[0]["removable"] is None and report.totals["removable"] is None
    assert "subclassed" in report.meta["removable_note"]


def test_bad_inputs():
    with pytest.raises(TypeError, match=r"sparsity_report: Expected `model` to be a keras.Model \(Sequential or "
                                        r"functional\). Received: model of type dict"):
        sparsity_report({})
    model = conv_bn_model()
    with pytest.raises(ValueError, match=r"sparsity_report: Expected `threshold` >= 0. Received: threshold=-1.0"):
        sparsity_report(model, threshold=-1)
    with pytest.raises(TypeError, match=r"Expected `threshold` to be a real number. Received: threshold='1'"):
        sparsity_report(model, threshold="1")
    with pytest.raises(ValueError, match=r"sparsity_report: Expected `norm` to be one of 'l2', 'l1'. Received: norm='l3'"):
        sparsity_report(model, norm="l3")
