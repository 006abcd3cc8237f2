"""Output paths that never lose data: what a command may replace, and atomic replacement.

A call that writes a directory (``export``, ``run_demo``) replaces an existing `path` only when
asked to (``overwrite=True``) AND the directory is empty or a previous output of the same tool,
recognized by the ``report.json`` it wrote (its ``meta["written_by"]``). It never replaces a
plain file, a foreign directory, or a directory holding one of the input files. A call that
writes a ``.keras`` file replaces only another Keras model file, never its own input.

Examples:
    >>> import os, tempfile
    >>> from tf_groupsparse.deploy.files import check_output_dir
    >>> d = tempfile.mkdtemp()
    >>> open(os.path.join(d, "notes.txt"), "w").close()
    >>> check_output_dir(d, True, "tf_groupsparse.export", "export")
    Traceback (most recent call last):
    ...
    FileExistsError: export: Expected `path` to be a new directory, an empty one or a previous output of tf_groupsparse.export (overwrite=True replaces only those). Received: path=... holds other files (notes.txt); choose another path or remove it yourself
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile

REPORT = "report.json"


def _legacy(tool, data):
    """Outputs of earlier releases, which had no ``written_by`` marker."""
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    if tool == "tf_groupsparse.export":
        return str(data.get("title", "")).startswith("Export of") and {"formats", "latency_runs"} <= set(meta)
    if tool == "tf_groupsparse.demo":
        return {"settings", "sparsity", "files"} <= set(data)
    return False


def written_by(path, tool):
    """Whether directory `path` holds a report.json written by `tool`."""
    try:
        with open(os.path.join(path, REPORT), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    marker = data.get("written_by") or (data.get("meta") or {}).get("written_by")
    return marker == tool or _legacy(tool, data)


def _inside(inner, outer):
    inner, outer = os.path.realpath(inner), os.path.realpath(outer)
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _p(owner):
    return f"{owner}: " if owner else ""


def check_output_dir(path, overwrite, tool, owner, protect=(), name="path"):
    """Raise unless `path` may be (re)written by `tool`; returns whether it exists already.
    `owner` (may be None) prefixes the messages; `name` is how the caller calls the path."""
    if not os.path.lexists(path):
        return False
    if not overwrite:
        raise FileExistsError(
            f"{_p(owner)}Expected `{name}` not to exist; pass overwrite=True to replace a previous "
            f"output. Received: {name}={path!r}"
        )
    for input_path in protect:
        if input_path and os.path.exists(input_path) and _inside(input_path, path):
            raise FileExistsError(
                f"{_p(owner)}Expected `{name}` not to hold the input {input_path!r}: replacing it would "
                f"delete the input. Received: {name}={path!r}; choose another output path"
            )
    if os.path.islink(path) or not os.path.isdir(path):
        raise FileExistsError(
            f"{_p(owner)}Expected `{name}` to be a directory to write; it is a file, which is never "
            f"replaced. Received: {name}={path!r}; choose another path"
        )
    entries = sorted(os.listdir(path))
    if entries and not written_by(path, tool):
        listed = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise FileExistsError(
            f"{_p(owner)}Expected `{name}` to be a new directory, an empty one or a previous output of "
            f"{tool} (overwrite=True replaces only those). Received: {name}={path!r} holds other "
            f"files ({listed}); choose another path or remove it yourself"
        )
    return True


def replace_dir(tmp, path):
    """Move directory `tmp` to `path`, swapping out an existing `path` atomically enough that an
    error leaves the old one in place."""
    if not os.path.lexists(path):
        os.replace(tmp, path)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=os.path.dirname(path))
    old_target = os.path.join(old, "old")
    os.replace(path, old_target)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old_target, path)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def is_keras_file(path):
    """Whether `path` is a Keras 3 ``.keras`` archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "config.json" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def check_output_file(path, overwrite, owner, protect=(), name="output"):
    """Raise unless the ``.keras`` file `path` may be written (replacing only another model)."""
    if not str(path).endswith(".keras"):
        raise ValueError(f"{_p(owner)}Expected the output file to end in .keras. Received: {name}={path!r}")
    for input_path in protect:
        if input_path and os.path.exists(input_path) and os.path.exists(path) and os.path.samefile(input_path, path):
            raise FileExistsError(
                f"{_p(owner)}Expected the output to differ from the input model; writing it would replace "
                f"the input. Received: {name}={path!r}"
            )
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise FileExistsError(f"{_p(owner)}Expected a new output file; pass --overwrite to replace it. Received: {name}={path!r}")
    if os.path.isdir(path) or not is_keras_file(path):
        raise FileExistsError(
            f"{_p(owner)}Expected the output to be a new file or a Keras model to replace. Received: "
            f"{name}={path!r}, which is {'a directory' if os.path.isdir(path) else 'not a .keras model'}"
        )
