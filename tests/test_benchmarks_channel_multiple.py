"""Tests for benchmarks/channel_multiple.py: rounded shrinks keep outputs; the tile nets' MACs; results."""

import json

import benchmarks.harness
from benchmarks import channel_multiple as bench


def test_rounded_shrinks_keep_outputs_and_report_latency(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    monkeypatch.setattr(benchmarks.harness, "environment", lambda: {"cpu": "test"})
    out = bench.main(["--parts", "shrink", "--rounds", "1", "--runs", "3", "--mlp-scan", "96", "101", "4"])
    assert list(out) == ["shrink"]
    scan, parts = out["shrink"]
    assert list(scan) == [96, 100] and all(v > 0 for v in scan.values())
    mlp = {r["case"]: r for r in parts["mlp"]}
    assert [mlp[c]["widths"] for c in ("no rounding", "multiple 8", "multiple 16")] == [[102, 344], [104, 344],
                                                                                         [112, 352]]
    vgg = {r["case"]: r for r in parts["vgg"]}
    assert vgg["multiple 16"]["widths"] == [16, 16, 32, 32, 48, 64]
    for rows in parts.values():
        assert all(r["max_abs_error"] < 1e-5 and r["latency_us"] > 0 for r in rows)
        assert rows[0]["speedup_vs_no_rounding"] == 1.0
        assert rows[0]["params"] < rows[1]["params"] <= rows[2]["params"]
    saved = json.loads((tmp_path / "channel_multiple.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.") and set(saved["parts"]) == {"mlp", "vgg"}
    assert "| multiple 16 | 112-352 |" in (tmp_path / "channel_multiple.md").read_text()


def test_tiles_times_every_net_against_the_dense_one(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    monkeypatch.setattr(benchmarks.harness, "environment", lambda: {"cpu": "test"})
    scan, rows = bench.main(["--parts", "tiles", "--rounds", "1", "--runs", "3", "--conv-scan", "31", "34", "2"])["tiles"]
    assert list(scan) == [31, 33] and all(v > 0 for v in scan.values())
    by_case = {r["case"]: r for r in rows}
    assert by_case["dense"]["macs"] == 29_128_448 and by_case["dense"]["speedup"] == 1.0
    # MACs of the rounded-down net, counted by hand: 784*9*16 + 784*9*16*16 + 196*9*16*32 + ...
    hand = sum(s * 9 * c * w for s, c, w in zip((784, 784, 196, 196, 49, 49), (1, 16, 16, 32, 32, 64),
                                                (16, 16, 32, 32, 64, 64))) + 64 * 10
    assert by_case["pruned, rounded down to 8 or 16"]["macs"] == hand
    assert by_case["pruned (filter_pruning_strong)"]["macs_x"] < by_case["pruned, rounded down to 8 or 16"]["macs_x"]
    saved = json.loads((tmp_path / "tile_widths.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.") and len(saved["vgg"]) == len(bench.VGG_CASES)
    md = (tmp_path / "tile_widths.md").read_text()
    assert "| pruned, rounded down to 8 or 16 | 16-16-32-32-64-64 |" in md and "| filters | 31 | 33 |" in md
