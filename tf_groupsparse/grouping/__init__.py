"""GMM/EM grouping of channels into blocks, masks and the block-diagonal rewrite (EMG method).

Yi & Choi, "Learning the group structure of deep neural networks with an expectation
maximization method", ICDMW 2018.
"""

from .em import fit_groups
from .structure import GroupStructure, LayerGroups

__all__ = ["GroupStructure", "LayerGroups", "fit_groups"]
