"""The comparison benchmark suite run by ``python -m benchmarks.run_all`` (docs/benchmarks/suite.md).
No module imports Keras at import time, so that the tfmot peer (a legacy Keras process) can share
:mod:`.models`."""
