"""Under `make test` (TGS_REQUIRE_EXTRAS=1) a test whose extra is missing fails instead of skipping."""

import os

import pytest


def test_a_missing_extra_fails_under_make_test_and_skips_elsewhere():
    if os.environ.get("TGS_REQUIRE_EXTRAS") == "1":
        with pytest.raises(ImportError, match="tgs_no_such_extra"):
            pytest.importorskip("tgs_no_such_extra", reason="an extra")
    else:
        with pytest.raises(pytest.skip.Exception):
            pytest.importorskip("tgs_no_such_extra", reason="an extra")
