"""The README's example runs as written and does what the text around it says."""

import re
from pathlib import Path

import keras

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, capsys):
    text = README.read_text(encoding="utf-8")
    code = re.search(r"## Example\n\n```python\n(.*?)```", text, re.S).group(1)
    assert '"saved_models/example"' in code
    code = code.replace('"saved_models/example"', repr(str(tmp_path / "example")))
    keras.utils.set_random_seed(0)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    model, small = namespace["model"], namespace["small"]
    assert small.count_params() < model.count_params() / 2
    out = capsys.readouterr().out
    assert "Sparsity of" in out and "Export of" in out
    assert (tmp_path / "example" / "model.tflite").exists()
    assert (tmp_path / "example" / "saved_model").is_dir()
