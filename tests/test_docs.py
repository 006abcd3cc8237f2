"""The documentation site builds with --strict, has its pages, and refers only inside the project."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = (
    "index.html", "getting-started/index.html", "guides/penalties/index.html", "guides/grouping/index.html",
    "guides/pruning/index.html", "guides/export/index.html", "how-to/index.html", "methods/index.html",
    "benchmarks/budget/index.html", "benchmarks/suite/index.html", "api/pruning/index.html",
    "notebooks/06_prune_mobilenetv2_to_half_the_macs/index.html", "CONTRIBUTING/index.html",
)


def _project_texts():
    for folder, pattern in (("docs", "*.md"), ("tf_groupsparse", "*.py"), ("benchmarks", "*.py"),
                            ("notebooks", "*.ipynb"), (".", "*.md")):
        for path in (ROOT / folder).glob(pattern if folder == "." else f"**/{pattern}"):
            yield path, path.read_text(encoding="utf-8")


def test_nothing_points_outside_the_repository():
    for path, text in _project_texts():
        assert "../shared" not in text and "METHODS.md" not in text and "DESIGN.md" not in text, path


def test_every_guide_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("**/*.md"):
        assert str(page.relative_to(ROOT / "docs")) in nav, page


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for page in PAGES:
        assert (tmp_path / page).is_file(), page
    api = (tmp_path / "api/pruning/index.html").read_text(encoding="utf-8")
    assert "Prune <code>model</code> to a fraction of its MACs" in api or re.search(r"Prune\s+.*model.*to a fraction", api)
