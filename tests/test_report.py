import json

from tf_groupsparse.report import Report


def test_report_renders_table_markdown_and_json(tmp_path):
    r = Report("Sparsity", [{"layer": "conv1", "params": 1200, "zero": 0.5},
                            {"layer": "dense", "params": 10, "extra": "x"}],
               totals={"params": 1210}, meta={"threshold": 1e-3})
    text = str(r)
    assert text.splitlines()[0] == "Sparsity"
    assert "conv1" in text and "1,200" in text and "params: 1,210" in text
    md = r.to_markdown().splitlines()
    assert md[0] == "| layer | params | zero | extra |"
    assert md[3] == "| dense | 10 |  | x |"
    path = tmp_path / "r.json"
    r.to_json(path)
    loaded = json.loads(path.read_text())
    assert loaded["rows"][0]["params"] == 1200 and loaded["meta"]["threshold"] == 1e-3
