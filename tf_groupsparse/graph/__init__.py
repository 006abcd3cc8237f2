"""Channel dependency graph: which channel slices of a model must be removed together.

See :func:`build_graph` (tracing), :mod:`.handlers` (one handler per layer kind, extensible
with :func:`register_handler`) and :mod:`.model` (Node, Dependency, Group, DependencyGraph).
"""

from .build import build_graph, evaluate
from .handlers import Handler, Unsupported, handler_for, register_handler
from .model import Dependency, DependencyGraph, Group, Node, Slice, WeightSlice

__all__ = [
    "build_graph", "evaluate", "Handler", "Unsupported", "handler_for", "register_handler",
    "Dependency", "DependencyGraph", "Group", "Node", "Slice", "WeightSlice",
]
