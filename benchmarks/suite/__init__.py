"""The comparison benchmark suite: (data, model, method) jobs against the dense baseline and tfmot.

Run it with ``python -m benchmarks.run_all`` (``make bench``) or ``--quick`` (``make bench-quick``).
Modules: :mod:`.models` (architectures for Keras 3 and tf_keras), :mod:`.data`, :mod:`.methods`
(one function per method, in a dispatch table), :mod:`.measure` (params, FLOPs, TFLite bytes and
latency), :mod:`.jobs` (the job table, resumable runs), :mod:`.verdicts` (headline targets),
:mod:`.report` (markdown and plots). This package imports no Keras at import time so that the
tfmot peer (legacy Keras process) can share :mod:`.models`.
"""
