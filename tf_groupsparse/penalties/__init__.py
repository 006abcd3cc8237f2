"""Stage 1: group-sparse penalties, their exact proximal steps, and attaching them to a model.

- groups.py: how a kernel ``(*S, C_in, C_out)`` splits into groups (``axis="input"`` /
  ``"output"``) and zero-safe norms.
- regularizers.py, hierarchical.py: the penalties as ``keras.regularizers.Regularizer``
  classes (L1, group lasso, exclusive sparsity, group l1/2, sparse group lasso, l1,1 + l1,2,
  CGES, the six HGSR variants, block-diagonal); each names its proximal constraint, or None.
- prox.py: the proximal operators (keras.ops, vectorized over groups).
- constraints.py: Keras constraints applying them after every optimizer step, and ``bind``.
- attach.py: :func:`regularize`, which puts a penalty (or its constraint) on a model's kernels.
- coupled.py: penalties over the dependency graph's coupled groups (``regularize(coupled=True)``).
- callbacks.py: ``SparsityMonitor`` and ``ProximalStep`` (also ``tgs.callbacks``).

``tgs.regularizers`` is this package under the name Keras users expect.

Examples:
    >>> import keras
    >>> import tf_groupsparse as tgs
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    >>> r = tgs.regularize(m, tgs.regularizers.GroupLasso(1e-2), proximal=True)
    >>> r.get_layer("fc").kernel_constraint
    ProxGroupLasso(strength=0.01, axis='input', scale_by_size=False)
"""

from . import callbacks, groups
from .attach import regularize
from .base import to_constraint
from .coupled import CoupledPenalty, CoupledProx
from .constraints import (
    ProxCGES, ProxCombinedL11L12, ProxExclusive, ProxGroupLasso, ProximalConstraint, ProxL1,
    ProxSparseGroupLasso, bind,
)
from .hierarchical import HGSR_VARIANTS, BlockDiagonal, HierarchicalGroupSparse
from .prox import (
    prox_cges, prox_exclusive, prox_group_exclusive, prox_group_lasso, prox_l1, prox_l1_exclusive,
    prox_sparse_group_lasso,
)
from .regularizers import (
    L1, CombinedGroupExclusive, CombinedL11L12, ExclusiveSparsity, GroupL12, GroupLasso,
    SparseGroupLasso, cges_mu_schedule,
)

__all__ = [
    "L1", "GroupLasso", "ExclusiveSparsity", "GroupL12", "SparseGroupLasso", "CombinedL11L12",
    "CombinedGroupExclusive", "HierarchicalGroupSparse", "BlockDiagonal", "cges_mu_schedule",
    "HGSR_VARIANTS", "to_constraint",
    "prox_l1", "prox_group_lasso", "prox_sparse_group_lasso", "prox_exclusive", "prox_l1_exclusive",
    "prox_group_exclusive", "prox_cges",
    "ProximalConstraint", "ProxL1", "ProxGroupLasso", "ProxSparseGroupLasso", "ProxExclusive",
    "ProxCombinedL11L12", "ProxCGES", "bind",
    "regularize", "callbacks", "groups", "CoupledPenalty", "CoupledProx",
]
