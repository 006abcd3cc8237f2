"""The stored notebooks match their generator, are valid nbformat 4, and carry error-free outputs.

Executing them is nbmake's job (`pytest --nbmake notebooks` in `make test`); this file checks what a
reader sees on GitHub: the saved notebook is the one `notebooks/_generate.py` describes, executed.
"""

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ["01_quickstart.ipynb", "02_regularizers.ipynb", "03_em_grouping.ipynb",
            "04_filter_pruning_and_planting.ipynb", "05_compare_with_tfmot.ipynb",
            "06_prune_mobilenetv2_to_half_the_macs.ipynb"]


def _generator():
    spec = importlib.util.spec_from_file_location("notebooks_generate", NOTEBOOKS / "_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


def test_generator_lists_the_six_notebooks():
    assert sorted(GENERATOR.CELLS) == EXPECTED
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_stored_notebook_matches_generator_and_has_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    cells = GENERATOR.CELLS[name]
    assert [(c.cell_type, c.source) for c in nb.cells] == [(kind, src) for kind, src in cells]
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code_cells), "saved without executing"
    outputs = [o for c in code_cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("data" in o for o in outputs), "no table or figure in the saved outputs"
    assert all(len(o.get("text", "")) < 20_000 for o in outputs), "a huge log was saved"


def test_every_notebook_sets_inline_plots_and_cites_a_source():
    for name, cells in GENERATOR.CELLS.items():
        first_code = next(src for kind, src in cells if kind == "code")
        assert first_code.startswith("%matplotlib inline"), name
        assert cells[0][0] == "markdown" and any(year in cells[0][1] for year in ("2017", "2018", "2020", "2023")), name
