"""Shared test settings: quiet TensorFlow logs, deterministic seeds, small hypothesis budgets."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "project", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("project")

if os.environ.get("TGS_REQUIRE_EXTRAS") == "1":  # `make test` installs every extra: none may be skipped
    import importlib

    def _import_or_fail(modname, *args, **kwargs):
        """pytest.importorskip that raises instead of skipping (a missing extra fails the run)."""
        return importlib.import_module(modname)

    pytest.importorskip = _import_or_fail


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    keras.backend.clear_session()
