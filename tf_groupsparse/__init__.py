"""tf_groupsparse: structured (group) sparsity for Keras 3 models that makes them smaller and faster."""

from ._version import __version__

__all__ = ["__version__"]
