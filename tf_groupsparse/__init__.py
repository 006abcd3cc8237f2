"""tf_groupsparse: structured (group) sparsity that makes Keras 3 models smaller and faster.

The five stages, each a function or Keras object that returns a new model::

    model = tgs.regularize(model, tgs.regularizers.HierarchicalGroupSparse(1e-4))   # penalties / prox
    model.compile(...); model.fit(..., callbacks=[tgs.callbacks.SparsityMonitor()])
    structure = tgs.grouping.fit_groups(model, 4)                                   # GMM/EM grouping
    small = tgs.shrink(model, threshold=1e-3)                                       # physically smaller
    report = tgs.export(small, "saved_models/m", reference=model, sample=x[:64])    # SavedModel + TFLite

Sub-modules: regularizers, proximal, callbacks, grouping, graph, layers, metrics, datasets,
plots, distillation, planting, pruning, structure_learning.
"""

from . import (
    callbacks,
    datasets,
    distillation,
    graph,
    grouping,
    layers,
    metrics,
    planting,
    plots,
    proximal,
    pruning,
    regularizers,
    structure_learning,
)
from ._version import __version__
from .distillation import Distiller
from .export import ExportReport, export
from .grouping import apply_mask, fit_groups, to_block_diagonal
from .metrics import count_params, flops, layer_costs
from .planting import plant
from .pruning import prune_filters
from .regularize import regularize
from .report import Report
from .shrinking import shrink
from .sparsity import sparsity_report
from .structure_learning import build_model, learn_structure
from .surgery import prune_channels

__all__ = [
    "__version__",
    # sub-modules
    "callbacks",
    "datasets",
    "distillation",
    "graph",
    "grouping",
    "layers",
    "metrics",
    "planting",
    "plots",
    "proximal",
    "pruning",
    "regularizers",
    "structure_learning",
    # the pipeline
    "regularize",
    "sparsity_report",
    "fit_groups",
    "apply_mask",
    "to_block_diagonal",
    "shrink",
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
