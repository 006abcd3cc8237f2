"""MkDocs hook: publish files that live outside docs/ without copying them into the repository:
the executed notebooks (rendered by mkdocs-jupyter from their stored outputs) and CONTRIBUTING.md."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]


def on_files(files, config):
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(File(f"notebooks/{notebook.name}", src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    files.append(File("CONTRIBUTING.md", src_dir=str(ROOT), dest_dir=config["site_dir"],
                      use_directory_urls=config["use_directory_urls"]))
    return files
