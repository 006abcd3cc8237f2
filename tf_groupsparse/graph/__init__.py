"""The channel dependency graph of a model, and the surgery that removes channel groups.

- :func:`build_graph` (build.py): trace a Sequential or functional model into a
  :class:`DependencyGraph` of nodes, dependencies and coupled channel :class:`Group` objects
  (model.py).
- handlers.py: one handler per layer kind (how it creates, maps and couples channels);
  kinds.py: the registry of what the toolkit knows per layer kind (handler, kernels, MAC cost,
  grouping kind, constant folding), extensible with :func:`register_layer_kind` /
  :func:`register_handler`.
- hub.py: keras-hub's encoders and decoders (TransformerEncoder, TransformerDecoder, ViTEncoder,
  their embeddings); transformer.py: :class:`TransformerBlock`, :class:`TransformerDecoderBlock`
  and :class:`TransformerStack`, the layers pruned keras-hub blocks become.
- surgery.py: :func:`prune_channels` and the group API (:func:`plan_groups`,
  :func:`remove_groups`, :func:`zero_slices`, :func:`zero_channels`).

Reference: the graph view of structured pruning follows Fang et al., "DepGraph: Towards Any
Structural Pruning", CVPR 2023.
"""

from .build import build_graph, evaluate
from .handlers import Handler, Unsupported
from .transformer import PatchEmbedding, TransformerBlock, TransformerDecoderBlock, TransformerStack
from .kinds import (
    KernelSlot, LayerKind, handler_for, iter_layers, kernel_slots, kind_for, register_handler,
    register_layer_kind,
)
from .model import Dependency, DependencyGraph, Group, Node, Slice, WeightSlice
from .surgery import plan_groups, prune_channels, remove_groups, zero_channels, zero_slices

__all__ = [
    "build_graph", "evaluate", "Handler", "Unsupported", "handler_for", "register_handler",
    "register_layer_kind", "kind_for", "kernel_slots", "iter_layers", "KernelSlot", "LayerKind",
    "Dependency", "DependencyGraph", "Group", "Node", "Slice", "WeightSlice",
    "TransformerBlock", "TransformerDecoderBlock", "TransformerStack", "PatchEmbedding",
    "prune_channels", "plan_groups", "remove_groups", "zero_channels", "zero_slices",
]
