"""GMM/EM grouping of channels into blocks, masks and the block-diagonal rewrite (EMG method).

- :func:`fit_groups` (em.py): Gaussian-mixture grouping of a trained model's layers.
- :class:`GroupStructure` (structure.py): labels, masks, permutations, JSON.
- :func:`apply_mask`, :func:`to_block_diagonal`, :func:`for_target` (rewrite.py).
- :func:`add_em_penalty`, :class:`EMGroupFreeze`, :func:`strip_em_penalty` (training.py): the
  in-training EM group regularization.

Yi & Choi, "Learning the group structure of deep neural networks with an expectation
maximization method", ICDMW 2018.
"""

from .em import fit_groups
from .rewrite import apply_mask, for_target, to_block_diagonal
from .structure import GroupStructure, LayerGroups
from .training import EMGroupFreeze, EMGroupPenalty, add_em_penalty, strip_em_penalty

__all__ = [
    "EMGroupFreeze", "EMGroupPenalty", "GroupStructure", "LayerGroups", "add_em_penalty", "apply_mask",
    "fit_groups", "for_target", "strip_em_penalty", "to_block_diagonal",
]
