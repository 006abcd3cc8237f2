"""Stage 4: make the model smaller: shrink, prune, plant, distil, learn structure.

- shrink.py: :func:`shrink`, remove the channel groups through which nothing flows.
- sparsity.py: :func:`sparsity_report` and the one zero test shrink uses.
- budget.py: :func:`prune`, budget-driven pruning to a fraction of the MACs, parameters or
  LiteRT latency (cost.py: exact costs of removals; latency.py: the per-layer latency table).
- plan.py: :class:`~tf_groupsparse.pruning.plan.ChannelPlan`, the removed groups, per-layer
  caps and width rounding shared by every pruner.
- importance.py: importance criteria (``tgs.importance``).
- filters.py: :func:`prune_filters`, filter pruning by loss increase (HFP).
- planting.py, twopath.py: :func:`plant`, channel planting with distillation (PLANT).
- distillation.py: :class:`Distiller` and the distillation loss.
- structure.py: :func:`learn_structure` and :func:`build_model` (LSDNN, interpreted).
- data.py: data, loss and fine-tuning helpers the pruners share.

Examples:
    >>> import keras
    >>> import tf_groupsparse as tgs
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="h"),
    ...                       keras.layers.Dense(2, name="out")])
    >>> tgs.shrink(m).get_layer("h").units      # nothing is zero: nothing removed
    6
"""

from . import importance
from .budget import PruneReport, prune
from .distillation import Distiller, distillation_loss
from .filters import PruningReport, prune_filters
from .planting import PlantingReport, plant
from .shrink import ShrinkReport, shrink
from .sparsity import SparsityReport, sparsity_report
from .structure import LearnedStructure, build_model, learn_structure

__all__ = [
    "prune", "PruneReport", "shrink", "ShrinkReport", "sparsity_report", "SparsityReport", "prune_filters", "PruningReport",
    "plant", "PlantingReport", "Distiller", "distillation_loss", "learn_structure", "build_model",
    "LearnedStructure", "importance",
]
