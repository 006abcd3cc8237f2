"""Tests for benchmarks/tile_widths.py: the nets it times, their MACs, and the written results."""

import json

import benchmarks.harness
from benchmarks import tile_widths as bench


def test_tile_widths_times_every_net_against_the_dense_one(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    monkeypatch.setattr(benchmarks.harness, "environment", lambda: {"cpu": "test"})
    scan, rows = bench.main(["--rounds", "1", "--runs", "3", "--scan", "31", "34", "2"])
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
    assert "| pruned, rounded down to 8 or 16 | 16-16-32-32-64-64 |" in (tmp_path / "tile_widths.md").read_text()
