"""Settings for the docstring examples (``pytest --doctest-modules tf_groupsparse``): the
directories they make with ``tempfile.mkdtemp()`` go under the example's pytest temporary
directory, which pytest prunes, instead of piling up in the system's."""

import tempfile

import pytest


@pytest.fixture(autouse=True)
def _examples_write_under_pytests_tmp(request):
    if isinstance(request.node, pytest.DoctestItem):
        request.getfixturevalue("monkeypatch").setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
