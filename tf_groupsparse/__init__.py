"""tf_groupsparse: structured (group) sparsity that makes Keras 3 models smaller and faster.

The stages, each a sub-package, each call returning a new model or a report::

    model = tgs.regularize(model, tgs.regularizers.GroupLasso(1e-3), proximal=True)  # penalties/
    model.compile(...); model.fit(..., callbacks=[tgs.callbacks.ProximalStep()])
    structure = tgs.fit_groups(model, 4)                                           # grouping/
    small = tgs.shrink(model, threshold=0.0)                                       # pruning/ (+ graph/)
    small, report = tgs.prune(model, (x, y), macs=0.5)                             # pruning/
    report = tgs.export(small, "saved_models/m", reference=model, sample=x[:64])   # deploy/

Sub-packages: penalties (also ``tgs.regularizers``; ``tgs.callbacks``), grouping, graph,
pruning (``tgs.importance``), deploy; modules layers, metrics, report, datasets, plots, cli, demo.
"""

import sys as _sys

from . import cli as _cli

if _cli.is_command(_sys.argv):  # the tf-groupsparse command: TensorFlow starts up quietly
    _cli.quiet_startup(_sys.argv)

from . import _compat, datasets, deploy, graph, grouping, layers, metrics, penalties, plots, pruning
from ._version import __version__
from .deploy import ExportReport, export
from .graph import prune_channels
from .grouping import apply_mask, fit_groups, to_block_diagonal
from .metrics import count_params, flops, layer_costs
from .penalties import callbacks, regularize
from .pruning import (
    Distiller, build_model, importance, learn_structure, plant, prune, prune_filters, shrink, sparsity_report,
)
from .report import Report

_compat.install(__import__(__name__))


def __getattr__(name):
    moved = _compat.moved_attribute(name)
    if moved is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return moved


__all__ = [
    "__version__",
    # stages and namespaces
    "penalties", "regularizers", "callbacks", "grouping", "graph", "pruning", "importance", "deploy",
    "layers", "metrics", "datasets", "plots",
    # the pipeline
    "regularize",
    "sparsity_report",
    "fit_groups",
    "apply_mask",
    "to_block_diagonal",
    "shrink",
    "prune",
    "prune_channels",
    "prune_filters",
    "plant",
    "Distiller",
    "learn_structure",
    "build_model",
    "export",
    "ExportReport",
    "count_params",
    "flops",
    "layer_costs",
    "Report",
]
