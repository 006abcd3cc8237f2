"""GroupStructure: per-layer group assignments of input and output channels, and their masks.

For a layer with kernel ``W`` of shape ``(*S, C_in, C_out)`` and ``K`` groups, the structure
holds the input labels ``c`` (length ``C_in``) and output labels ``g`` (length ``C_out``), both
in ``0..K-1``. The block mask is ``M_io = [c_i == g_o]``; sorting inputs by ``c`` and outputs by
``g`` (stable) makes ``W * M`` block diagonal with block ``k`` of shape
``(#{i: c_i = k}, #{o: g_o = k})``. A block may be empty on one side (a group whose inputs feed
no output, or outputs fed by no input).

Method: Yi & Choi, "Learning the group structure of deep neural networks with an expectation
maximization method", ICDMW 2018.

Examples:
    >>> from tf_groupsparse.grouping.structure import GroupStructure, LayerGroups
    >>> s = GroupStructure([LayerGroups("fc", (4, 2), [0, 1, 0, 1], [1, 0], 2)])
    >>> s.mask("fc").tolist()
    [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    >>> [p.tolist() for p in s.permutations("fc")]
    [[0, 2, 1, 3], [1, 0]]
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

FORMAT = "tf_groupsparse.GroupStructure"


def layer_kind(layer, owner="GroupStructure"):
    """Return "dense" or "conv" for a layer the grouping can split (its ``grouping`` entry in the
    layer-kind registry, :mod:`tf_groupsparse.graph.kinds`), else raise ValueError naming it."""
    from ..graph.kinds import grouping_kind

    kind = grouping_kind(layer)
    if kind is None:
        raise ValueError(
            f"{owner}: Expected a Dense, Conv1D or Conv2D layer to group. "
            f"Received: layer {layer.name!r} of type {type(layer).__name__}"
        )
    if kind == "conv" and layer.groups != 1:
        raise ValueError(
            f"{owner}: Expected a Conv layer with groups=1 (it is grouped already). "
            f"Received: layer {layer.name!r} with groups={layer.groups}"
        )
    if kind == "conv" and layer.data_format != "channels_last":
        raise ValueError(
            f"{owner}: Expected data_format='channels_last'; rebuild the model with "
            f"channels_last. Received: layer {layer.name!r} with data_format={layer.data_format!r}"
        )
    return kind


@dataclass
class LayerGroups:
    """Group labels of one layer.

    Args:
        name: layer name.
        kernel_shape: the kernel's shape ``(*S, C_in, C_out)``.
        input_groups: label in ``0..n_groups-1`` per input channel.
        output_groups: label in ``0..n_groups-1`` per output channel.
        n_groups: number of groups K.
        kind: "dense" or "conv".

    Examples:
        >>> g = LayerGroups("conv", (3, 3, 4, 6), [0, 0, 1, 1], [0, 0, 0, 1, 1, 1], 2, kind="conv")
        >>> [sizes.tolist() for sizes in g.block_sizes()], g.equal_blocks
        ([[2, 2], [3, 3]], True)
        >>> g.params_kept, g.params_total        # 3 * 3 * (2 * 3 + 2 * 3) of 3 * 3 * 4 * 6
        (108, 216)
    """

    name: str
    kernel_shape: tuple
    input_groups: np.ndarray
    output_groups: np.ndarray
    n_groups: int
    kind: str = "dense"

    def __post_init__(self):
        self.kernel_shape = tuple(int(d) for d in self.kernel_shape)
        self.input_groups = np.asarray(self.input_groups, dtype=np.int64).reshape(-1)
        self.output_groups = np.asarray(self.output_groups, dtype=np.int64).reshape(-1)
        self.n_groups = int(self.n_groups)
        owner = f"LayerGroups({self.name!r})"
        if len(self.kernel_shape) < 2:
            raise ValueError(f"{owner}: Expected kernel_shape of rank >= 2. Received: kernel_shape={self.kernel_shape}")
        c_in, c_out = self.kernel_shape[-2:]
        for label, arr, size in (("input_groups", self.input_groups, c_in), ("output_groups", self.output_groups, c_out)):
            if arr.size != size:
                raise ValueError(
                    f"{owner}: Expected {label} of length {size} (the kernel's channels). Received: len({label})={arr.size}"
                )
            if arr.size and (arr.min() < 0 or arr.max() >= self.n_groups):
                raise ValueError(
                    f"{owner}: Expected {label} in 0..{self.n_groups - 1} (n_groups={self.n_groups}). "
                    f"Received: {label} range {arr.min()}..{arr.max()}"
                )

    def mask(self) -> np.ndarray:
        """Float32 mask ``(C_in, C_out)``, ``M_io = [c_i == g_o]`` (broadcasts against a conv kernel)."""
        return (self.input_groups[:, None] == self.output_groups[None, :]).astype(np.float32)

    def permutations(self):
        """``(input_perm, output_perm)``: stable argsorts of the labels; ``W[..., pi, :][..., po]`` is block diagonal."""
        return (np.argsort(self.input_groups, kind="stable"), np.argsort(self.output_groups, kind="stable"))

    def block_sizes(self):
        """``(input_sizes, output_sizes)``: channels per group, each of length ``n_groups``."""
        k = self.n_groups
        return (np.bincount(self.input_groups, minlength=k), np.bincount(self.output_groups, minlength=k))

    @property
    def equal_blocks(self) -> bool:
        """True when every group has the same number of inputs and the same number of outputs."""
        a, b = self.block_sizes()
        return bool(np.all(a == a[0]) and np.all(b == b[0]))

    @property
    def params_kept(self) -> int:
        """Kernel weights inside the blocks: ``prod(S) * sum_k in_k * out_k``."""
        a, b = self.block_sizes()
        return int(math.prod(self.kernel_shape[:-2]) * np.dot(a, b))

    @property
    def params_total(self) -> int:
        return int(math.prod(self.kernel_shape))

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "kernel_shape": list(self.kernel_shape),
            "n_groups": self.n_groups, "input_groups": self.input_groups.tolist(),
            "output_groups": self.output_groups.tolist(),
        }


class GroupStructure:
    """Block structure of several layers of one model, keyed by layer name.

    Args:
        layers: iterable of :class:`LayerGroups` (order is kept: the model's layer order).

    Use :meth:`mask`, :meth:`permutations`, :meth:`n_groups` per layer, :meth:`check` against a
    model, :meth:`to_json` / :meth:`from_json` to save and load.

    Raises:
        ValueError: two entries have the same layer name.

    Examples:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
        >>> s = GroupStructure([LayerGroups("fc", (4, 2), [0, 1, 0, 1], [1, 0], 2)])
        >>> s.check(m) is m, GroupStructure.from_json(s.to_json()) == s
        (True, True)
        >>> print(s)
        GroupStructure (1 layers)
          fc: K=2 kernel=(4, 2) inputs/group=[2, 2] outputs/group=[1, 1] kept=4/8 (50.0%)
    """

    def __init__(self, layers=()):
        self._layers = {}
        for entry in layers:
            if not isinstance(entry, LayerGroups):
                raise TypeError(
                    f"GroupStructure: Expected LayerGroups entries. Received: {type(entry).__name__}"
                )
            if entry.name in self._layers:
                raise ValueError(f"GroupStructure: Expected unique layer names. Received: {entry.name!r} twice")
            self._layers[entry.name] = entry

    # mapping-like access
    @property
    def layer_names(self) -> list:
        return list(self._layers)

    def __contains__(self, name):
        return name in self._layers

    def __iter__(self):
        return iter(self._layers.values())

    def __len__(self):
        return len(self._layers)

    def __getitem__(self, name) -> LayerGroups:
        if name not in self._layers:
            raise KeyError(
                f"GroupStructure: Expected one of the grouped layers {self.layer_names}. Received: layer={name!r}"
            )
        return self._layers[name]

    def mask(self, name) -> np.ndarray:
        """Mask ``(C_in, C_out)`` of layer `name` (float32, 1 inside the blocks)."""
        return self[name].mask()

    def permutations(self, name):
        """``(input_perm, output_perm)`` of layer `name`."""
        return self[name].permutations()

    def n_groups(self, name) -> int:
        return self[name].n_groups

    def input_groups(self, name) -> np.ndarray:
        return self[name].input_groups

    def output_groups(self, name) -> np.ndarray:
        return self[name].output_groups

    def check(self, model):
        """Raise ValueError unless every grouped layer exists in `model` with the same kernel shape."""
        from .._validation import check_keras_model

        check_keras_model(model, "GroupStructure.check")
        names = [layer.name for layer in model.layers]
        for entry in self:
            if entry.name not in names:
                raise ValueError(
                    f"GroupStructure.check: Expected a layer named {entry.name!r} in model {model.name!r} "
                    f"(the structure was fitted on another model?). Received: layers {names}"
                )
            layer = model.get_layer(entry.name)
            layer_kind(layer, "GroupStructure.check")
            shape = tuple(int(d) for d in layer.kernel.shape)
            if shape != entry.kernel_shape:
                raise ValueError(
                    f"GroupStructure.check: Expected layer {entry.name!r} to have kernel shape "
                    f"{entry.kernel_shape} as in the structure; refit the structure on this model. "
                    f"Received: kernel.shape={shape}"
                )
        return model

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "layers": [e.to_dict() for e in self]}

    def to_json(self, path=None, indent=None) -> str:
        """The structure as JSON text; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data) -> "GroupStructure":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(
                f"GroupStructure.from_json: Expected a JSON object with format={FORMAT!r}. "
                f"Received: {str(data)[:80]!r}"
            )
        return cls(LayerGroups(**entry) for entry in data["layers"])

    @classmethod
    def from_json(cls, text_or_path) -> "GroupStructure":
        """Load from JSON text or from a file path written by :meth:`to_json`."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            if not os.path.exists(text):
                raise FileNotFoundError(f"GroupStructure.from_json: Expected JSON text or an existing file. Received: {text!r}")
            with open(text, encoding="utf-8") as f:
                text = f.read()
        return cls.from_dict(json.loads(text))

    def __eq__(self, other):
        return isinstance(other, GroupStructure) and self.to_dict() == other.to_dict()

    def __str__(self) -> str:
        lines = [f"GroupStructure ({len(self)} layers)"]
        for e in self:
            a, b = e.block_sizes()
            lines.append(
                f"  {e.name}: K={e.n_groups} kernel={e.kernel_shape} inputs/group={a.tolist()} "
                f"outputs/group={b.tolist()} kept={e.params_kept}/{e.params_total} "
                f"({e.params_kept / max(e.params_total, 1):.1%})"
            )
        return "\n".join(lines)

    __repr__ = __str__
