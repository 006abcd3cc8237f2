"""Tests for benchmarks/shrink_speed.py: its helpers on tiny models, and a --quick run into a tmp dir."""

import json

import keras
import numpy as np
import pytest

import benchmarks.harness
from benchmarks import shrink_speed as bench


def _cnn_macs(h, w, c_in, widths, n_classes):
    """MACs of build_cnn for one sample: 3x3 'same' convs, two 2x2 pools, GAP, Dense."""
    w1, w2, w3, w4, w5 = widths
    total = h * w * 9 * (c_in * w1 + w1 * w2)
    h, w = h // 2, w // 2
    total += h * w * 9 * (w2 * w3 + w3 * w4)
    h, w = h // 2, w // 2
    total += h * w * 9 * w4 * w5
    return total + w5 * n_classes


def test_build_cnn_layers_and_macs():
    from tf_groupsparse.metrics import flops

    model = bench.build_cnn((28, 28, 1))
    assert bench.channel_widths(model) == {"conv1": 32, "conv2": 32, "conv3": 64, "conv4": 64, "conv5": 128,
                                           "logits": 10}
    assert bench.penalized_layers(model) == ["conv2", "conv3", "conv4", "conv5"]
    assert flops(model) == _cnn_macs(28, 28, 1, (32, 32, 64, 64, 128), 10) == 21_903_104


def test_tile_padded_macs_rounds_output_channels_up():
    model = bench.build_cnn((8, 8, 1), (17, 16, 30, 33, 8), n_classes=3)
    # per layer: H*W*9*C_in*C_out with C_out rounded up to a multiple of 16 (C_in is not)
    expected = 64 * 9 * (1 * 32 + 17 * 16) + 16 * 9 * (16 * 32 + 30 * 48) + 4 * 9 * 33 * 16 + 8 * 16
    assert bench.tile_padded_macs(model, tile=16) == expected
    assert bench.tile_padded_macs(model, tile=1) == _cnn_macs(8, 8, 1, (17, 16, 30, 33, 8), 3)


def test_threshold_row_counts_near_zero_groups_and_their_output_error():
    model = bench.build_cnn((8, 8, 1), (4, 4, 4, 4, 4), n_classes=3)
    kernel = model.get_layer("conv3").kernel.numpy()
    kernel[:, :, 0, :] = 0.0  # an exact-zero input group
    kernel[:, :, 1, :] = 0.0
    kernel[0, 0, 1, 0] = 5e-4  # a group of norm 5e-4: below 1e-3, not zero
    model.get_layer("conv3").kernel.assign(kernel)
    norms = bench.input_group_norms(model, ["conv3"])["conv3"]
    np.testing.assert_allclose(norms, np.sqrt(np.sum(np.moveaxis(kernel, 2, 0).reshape(4, -1) ** 2, axis=1)))
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32") * 10
    exact = bench.threshold_row(model, 1e-9, x, ["conv3"])
    loose = bench.threshold_row(model, 1e-3, x, ["conv3"])
    assert (exact["exact_zero_input_groups"], exact["nonzero_input_groups_below_threshold"]) == (1, 0)
    assert (loose["exact_zero_input_groups"], loose["nonzero_input_groups_below_threshold"]) == (1, 1)
    assert (exact["groups_removed"], loose["groups_removed"]) == (1, 2)
    # removing an exact-zero group changes outputs only by float32 summation order (the smaller
    # conv may be blocked differently); removing the 5e-4 group changes them for real
    assert exact["max_abs_error"] < 1e-6
    assert loose["max_abs_error"] > 1e-5
    assert exact["macs"] - loose["macs"] == 8 * 8 * 9 * 4 * 1 + 4 * 4 * 9 * 1 * 4  # conv2 filter (4 inputs) + conv3 input


def test_zero_random_filters_zeroes_whole_filters_of_a_copy():
    model = bench.build_tiny_resnet(width=8, blocks=1)
    before = [w.copy() for w in model.get_weights()]
    zeroed_model, zeroed = bench.zero_random_filters(model, 0.5, seed=3)
    for a, b in zip(before, model.get_weights()):  # the input model is unchanged
        np.testing.assert_array_equal(a, b)
    count = 0
    for layer in model.layers:
        if type(layer) is not keras.layers.Conv2D:
            continue
        k0, b0 = layer.get_weights()
        k1, b1 = zeroed_model.get_layer(layer.name).get_weights()
        dead = np.all(k1 == 0, axis=(0, 1, 2))
        np.testing.assert_array_equal(b1[dead], 0.0)
        np.testing.assert_array_equal(k1[..., ~dead], k0[..., ~dead])
        np.testing.assert_array_equal(b1[~dead], b0[~dead])
        count += int(dead.sum())
    assert count == zeroed
    total = sum(layer.filters for layer in model.layers if type(layer) is keras.layers.Conv2D)
    assert 0.3 * total < zeroed < 0.7 * total


def test_time_shrink_removes_zeroed_internal_channels_with_equal_outputs():
    model = bench.build_tiny_resnet(width=8, blocks=1)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    _, untouched = bench.time_shrink(model, x)
    assert untouched["groups_removed"] == 0 and untouched["params_after"] == untouched["params_before"]
    assert untouched["max_abs_error"] == 0.0

    zeroed_model, _ = bench.zero_random_filters(model, 0.5, seed=3)
    small, row = bench.time_shrink(zeroed_model, x)
    dead = {layer.name: np.all(layer.kernel.numpy() == 0, axis=(0, 1, 2)) for layer in zeroed_model.layers
            if type(layer) is keras.layers.Conv2D}
    # a channel inside the block goes when its filter is zero; a residual channel (written by the
    # stem and by block1_3_conv through Add) only when both of its producers are zero
    residual = dead["stem_conv"] & dead["block1_3_conv"]
    assert small.get_layer("block1_1_conv").filters == 8 - dead["block1_1_conv"].sum()
    assert small.get_layer("block1_2_conv").filters == 8 - dead["block1_2_conv"].sum()
    assert small.get_layer("block1_3_conv").filters == small.get_layer("stem_conv").filters == 32 - residual.sum()
    assert 0 < residual.sum() < min(dead["stem_conv"].sum(), dead["block1_3_conv"].sum())
    assert row["groups_removed"] == dead["block1_1_conv"].sum() + dead["block1_2_conv"].sum() + residual.sum()
    assert row["params_before"] - row["params_after"] > 0
    assert row["max_abs_error"] < 1e-5
    np.testing.assert_allclose(small.predict(x, verbose=0), zeroed_model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_quick_run_writes_results(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    payload = bench.main(["--quick"])
    data = json.loads((tmp_path / "shrink_speed_quick.json").read_text())
    assert (tmp_path / "shrink_speed_quick.md").read_text().startswith("# Shrink speed (digits)")
    assert data["command"] and data["environment"]["cores"] >= 1 and data["data"] == "digits"
    cnn = data["cnn"]
    assert cnn == json.loads(json.dumps(payload["cnn"]))
    assert cnn["max_abs_error_keras"] < 1e-4 and cnn["max_abs_error_tflite_vs_keras"] < 1e-4
    assert [t["threshold"] for t in cnn["thresholds"]] == [1e-9, 1e-3]
    assert cnn["thresholds"][0]["groups_removed"] == cnn["groups_removed"]
    assert cnn["thresholds"][0]["max_abs_error"] == pytest.approx(cnn["max_abs_error_keras"], abs=1e-7)
    assert cnn["thresholds"][0]["nonzero_input_groups_below_threshold"] == 0
    widths_dense, widths_shrunk = cnn["widths_dense"], cnn["widths_shrunk"]
    assert widths_dense == {"conv1": 8, "conv2": 8, "conv3": 16, "conv4": 16, "conv5": 32, "logits": 10}
    assert all(widths_shrunk[k] <= widths_dense[k] for k in widths_dense) and widths_shrunk["logits"] == 10
    shrunk = [widths_shrunk[f"conv{i}"] for i in range(1, 6)]
    assert cnn["macs"] == {"dense": _cnn_macs(8, 8, 1, (8, 8, 16, 16, 32), 10),
                           "shrunk": _cnn_macs(8, 8, 1, shrunk, 10)}
    assert cnn["flop_ratio"] == pytest.approx(cnn["macs"]["dense"] / cnn["macs"]["shrunk"], abs=1e-4)
    assert cnn["met"] == (cnn["speedup"] >= 0.8 * cnn["flop_ratio"])
    assert cnn["test_accuracy"]["shrunk"] == pytest.approx(cnn["test_accuracy"]["sparse"], abs=1e-3)
    assert all(len(v) == 3 for v in cnn["latency_rounds_us"].values())
    assert set(cnn["load_average_1min"]) == {"before", "after"}
    rows = data["resnet"]["rows"]
    assert [r["case"] for r in rows] == ["nothing to remove", "random 30% of Conv2D filters zeroed"]
    assert rows[0]["groups_removed"] == 0 and rows[0]["params_after"] == rows[0]["params_before"]
    assert rows[1]["groups_removed"] > 0 and rows[1]["params_after"] < rows[1]["params_before"]
    assert all(r["max_abs_error"] < 1e-4 and r["met"] == (r["seconds"] < 30.0) for r in rows)
