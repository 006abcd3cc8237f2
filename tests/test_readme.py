"""The README's quickstart and shell commands run as written and do what the text says."""

import re
import shlex
from pathlib import Path

import keras
import pytest

from tf_groupsparse import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _block(text, heading, language):
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_readme_is_a_short_product_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "../shared" not in text and "METHODS.md" not in text
    for link in re.findall(r"\]\(([^)#]+)", text):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
    table = text.split("## Results\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert 1 <= len(rows) <= 10
    assert all("python -m benchmarks" in row or row.rstrip().endswith("| same |") for row in rows)


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path, capsys):
    code = _block(README.read_text(encoding="utf-8"), "Quickstart", "python")[0]
    assert '"saved_models/example"' in code
    code = code.replace('"saved_models/example"', repr(str(tmp_path / "example")))
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    model, small, report = namespace["model"], namespace["small"], namespace["report"]
    assert small.count_params() < model.count_params() / 2
    assert report.totals["macs_fraction"] <= 0.5
    out = capsys.readouterr().out
    assert "Sparsity of" in out and "Export of" in out
    assert (tmp_path / "example" / "model.tflite").exists()
    assert (tmp_path / "example" / "saved_model").is_dir()


@pytest.mark.slow
def test_readme_shell_commands_run(tmp_path, monkeypatch, capsys):
    """`make demo` (its command read from the Makefile) then every line, in a scratch directory."""
    text = README.read_text(encoding="utf-8")
    lines = [line for line in _block(text, "Quickstart", "bash")[0].splitlines() if line.strip()]
    assert "make demo" in text.split("## Two commands", 1)[1]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    demo = re.search(r"^demo:.*\n\t\$\(VENV\)/bin/tf-groupsparse (.*)$", makefile, re.M).group(1)
    monkeypatch.chdir(tmp_path)
    assert cli.main(shlex.split(demo)) == 0
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/tf-groupsparse", line
        for path in argv[1:]:
            if path.startswith("saved_models/demo/"):
                assert (tmp_path / path).exists(), f"{line}: {path} is not written by make demo"
        assert cli.main(argv[1:]) == 0, line
    assert (tmp_path / "saved_models/demo_half/model.tflite").exists()
    half = keras.models.load_model(tmp_path / "saved_models/demo_half.keras", safe_mode=True)
    full = keras.models.load_model(tmp_path / "saved_models/demo/model.keras", safe_mode=True)
    assert half.count_params() < full.count_params()
    assert cli.main(lines[1].split()[1:]) == 0  # runs again: --overwrite replaces its own output
