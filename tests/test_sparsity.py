import json

import keras
import numpy as np
import pytest

from tf_groupsparse.sparsity import kernel_slots, kernel_stats, sparsity_report

L = keras.layers


def loop_reference(w, thr):
    """Independent per-(i, o) loop count on a standard (*S, C_in, C_out) kernel."""
    c_in, c_out = w.shape[-2], w.shape[-1]
    zero = lambda a: bool(np.all((np.abs(a) < thr) | (a == 0)))  # noqa: E731
    zk = np.array([[zero(w[..., i, o]) for o in range(c_out)] for i in range(c_in)])
    zin = [i for i in range(c_in) if zk[i].all()]
    zout = [o for o in range(c_out) if zk[:, o].all()]
    k = w[..., 0, 0].size
    removable = sum(k for i in range(c_in) for o in range(c_out) if i in zin or o in zout)
    zw = int(sum(1 for v in w.ravel() if abs(v) < thr or v == 0))
    return dict(zero_in=len(zin), zero_out=len(zout), zero_kernels=int(zk.sum()),
                removable=removable, zero_weights=zw), zout


def conv_bn_model():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="c1")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(5, 3, name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(2, name="fc")(x)
    return keras.Model(inp, out)


def test_hand_built_conv_kernels_match_loop_reference():
    model = conv_bn_model()
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(3, 3, 3, 4)).astype("float32")
    w1[:, :, 1, :] = 0.0          # zero input channel 1
    w1[:, :, :, 2] = 5e-4         # output channel 2 below threshold
    w1[:, :, 0, 3] = 0.0          # one extra zero kernel (0, 3)
    w1[0, 0, 2, 0] = 0.0          # a single zero weight
    model.get_layer("c1").kernel.assign(w1)
    w2 = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    w2[:, :, 2, :] = 0.0
    w2[:, :, 0, :] = 1e-4
    model.get_layer("c2").kernel.assign(w2)

    report = sparsity_report(model, threshold=1e-3)
    expected1, zout1 = loop_reference(w1, 1e-3)
    row1 = report.row("c1")
    for key, value in expected1.items():
        if key == "removable":
            value += len(zout1) * 1 + len(zout1) * 4   # bias + BN gamma/beta/mean/var
        assert row1[key] == value, key
    assert (row1["zero_in"], row1["zero_out"], row1["zero_kernels"]) == (1, 1, 4 + 3 - 1 + 1)
    # c1: input slice (1 x 4 kernels) + output slice (3 kernels), overlap 1 -> 6 kernels of 9
    # weights, + bias 1 + BN 4.
    assert row1["removable"] == 6 * 9 + 1 + 4
    assert row1["params"] == 3 * 3 * 3 * 4 + 4
    assert row1["zero_frac"] == pytest.approx(expected1["zero_weights"] / w1.size)

    expected2, _ = loop_reference(w2, 1e-3)
    row2 = report.row("c2")
    assert {k: row2[k] for k in expected2} == expected2
    assert row2["zero_in"] == 2 and row2["removable"] == 2 * 5 * 9

    t = report.totals
    assert t["zero_in"] == 3 and t["zero_out"] == 1
    assert t["group_sparsity_input"] == pytest.approx(3 / (3 + 4 + 5))
    assert t["group_sparsity_output"] == pytest.approx(1 / (4 + 5 + 2))
    assert t["model_params"] == model.count_params()
    assert t["removable"] == row1["removable"] + row2["removable"] + report.row("fc")["removable"]
    assert t["removable_fraction"] == pytest.approx(t["removable"] / model.count_params())


def test_threshold_zero_counts_exact_zeros_only():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, use_bias=False, name="fc")])
    model.get_layer("fc").kernel.assign(np.array([[0.0, 1e-9], [0.0, 0.0], [1.0, 2.0]], "float32"))
    exact = sparsity_report(model, threshold=0).row("fc")
    assert (exact["zero_weights"], exact["zero_in"], exact["zero_out"]) == (3, 1, 0)
    loose = sparsity_report(model, threshold=1e-3).row("fc")
    assert (loose["zero_weights"], loose["zero_in"], loose["zero_out"]) == (4, 2, 0)
    assert loose["removable"] == 4   # two zero rows of two weights; no bias


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
    assert row["removable"] == 3 * 9 + 3        # three zero kernels + their bias entries
    trow = report.row("tr")
    assert (trow["in_channels"], trow["out_channels"], trow["zero_in"], trow["zero_out"]) == (3, 2, 1, 0)
    assert trow["removable"] == 2
    assert report.row("sep/depthwise_kernel")["params"] == 1 * 1 * 4 * 1
    assert report.row("sep/pointwise_kernel")["params"] == 4 * 3 + 3
    assert [r["layer"] for r in report.rows] == [
        "inner/dw", "sep/depthwise_kernel", "sep/pointwise_kernel", "tr"]

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
        w[..., rng.random(shape[-1]) > 0.7] = 0
        stats = kernel_stats(w, 1e-3)
        expected, _ = loop_reference(w, 1e-3)
        assert stats["removable_kernel"] == expected["removable"]
        assert {k: stats[k] for k in ("zero_in", "zero_out", "zero_kernels", "zero_weights")} == {
            k: expected[k] for k in ("zero_in", "zero_out", "zero_kernels", "zero_weights")}


def test_report_renders_and_serializes():
    model = conv_bn_model()
    report = sparsity_report(model, threshold=1e-2)
    text = str(report)
    assert text.splitlines()[0] == "Sparsity of " + model.name + " (|w| < 0.01 counts as zero)"
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


def test_bad_inputs():
    with pytest.raises(TypeError, match=r"sparsity_report: Expected `model` to be a keras.Model \(Sequential or "
                                        r"functional\). Received: model of type dict"):
        sparsity_report({})
    model = conv_bn_model()
    with pytest.raises(ValueError, match=r"sparsity_report: Expected `threshold` >= 0. Received: threshold=-1.0"):
        sparsity_report(model, threshold=-1)
    with pytest.raises(TypeError, match=r"Expected `threshold` to be a real number. Received: threshold='1'"):
        sparsity_report(model, threshold="1")
