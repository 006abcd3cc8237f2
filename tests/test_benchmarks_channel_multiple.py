"""Tests for benchmarks/channel_multiple.py: rounded widths, unchanged outputs, written results."""

import json

import benchmarks.harness
from benchmarks import channel_multiple as bench


def test_rounded_shrinks_keep_outputs_and_report_latency(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks.harness, "RESULTS", tmp_path)
    monkeypatch.setattr(benchmarks.harness, "environment", lambda: {"cpu": "test"})
    scan, parts = bench.main(["--rounds", "1", "--runs", "3", "--scan", "96", "101", "4"])
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
