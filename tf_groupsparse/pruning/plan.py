"""Which channel groups a pruner removes, what every layer keeps, and rounding widths to a multiple.

One :class:`ChannelPlan` serves every pruner (``shrink``, ``prune_filters``, ``prune``): a group
of the dependency graph can hold channels of several layers (a residual add couples them), so
removing it counts for every channel-creating layer it touches. A plan never removes a layer's
last channel, honours per-layer caps (the largest fraction of a layer's channels to remove), and
rounds widths to a multiple of `multiple` channels (:meth:`ChannelPlan.round`), the one rounding
rule of the toolkit: "up" gives back the strongest removed groups, "down" removes the weakest
kept ones (never below one multiple), "nearest" picks the closer of the two (ties go up).

Examples:
    >>> import keras
    >>> from tf_groupsparse.graph import build_graph
    >>> from tf_groupsparse.pruning.plan import ChannelPlan
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10, name="h"),
    ...                       keras.layers.Dense(2, name="out")])
    >>> g = build_graph(m)
    >>> plan = ChannelPlan(g)
    >>> plan.remove([g.group("h", c) for c in range(3)])
    >>> plan.kept("h")
    7
    >>> _ = plan.round("h", 4, "up", scores={})
    >>> plan.kept("h")
    8
"""

from __future__ import annotations

import math

import numpy as np

ROUNDINGS = ("down", "nearest", "up")


class ChannelPlan:
    """The removed groups of one dependency graph and the channels each layer keeps.

    Args:
        graph: the :class:`~tf_groupsparse.graph.DependencyGraph`.
        caps: optional ``{layer name: largest fraction of its channels to remove}``.
        keep_min: channels every channel-creating layer keeps at least (default 1).
        limits: optional ``{layer name: largest number of its channels to remove}``.
    """

    def __init__(self, graph, caps=None, keep_min=1, limits=None):
        self.graph = graph
        self.removed = np.zeros(graph.n_groups, dtype=bool)
        self.owned = {name: graph.labels[ids] for node in graph.nodes for name, ids in node.unit_sets()}
        self.removed_count = {name: 0 for name in self.owned}
        self.limit = {name: max(len(labels) - keep_min, 0) for name, labels in self.owned.items()}
        for name, fraction in (caps or {}).items():
            self.limit[name] = min(self.limit[name], int(math.floor(fraction * len(self.owned[name]))))
        for name, count in (limits or {}).items():
            if name in self.limit:
                self.limit[name] = max(min(self.limit[name], int(count)), 0)
        self.members = {}  # group id -> {layer: how many of its channels the group holds}
        for name, labels in self.owned.items():
            for gid, count in zip(*np.unique(labels, return_counts=True)):
                self.members.setdefault(int(gid), {})[name] = int(count)

    def copy(self):
        """An independent plan with the same removals (the graph is shared, not copied)."""
        other = object.__new__(ChannelPlan)
        other.__dict__.update(self.__dict__)
        other.removed = self.removed.copy()
        other.removed_count = dict(self.removed_count)
        return other

    # --- counts --------------------------------------------------------------------------
    def width(self, name):
        """Channels layer `name` had."""
        return len(self.owned[name])

    def kept(self, name):
        """Channels layer `name` keeps under the plan."""
        return self.width(name) - self.removed_count[name]

    def _ids(self, groups):
        return [int(getattr(g, "id", g)) for g in groups]

    def can_remove(self, groups):
        """Whether all of `groups` (distinct, not yet removed, not frozen) can go together
        without any layer passing its limit."""
        counts = {}
        for gid in self._ids(groups):
            if self.graph.frozen_groups[gid] or self.removed[gid]:
                return False
            for name, c in self.members.get(gid, {}).items():
                counts[name] = counts.get(name, 0) + c
        return all(self.removed_count[n] + c <= self.limit[n] for n, c in counts.items())

    def remove(self, groups):
        """Mark `groups` removed (no checks: call :meth:`can_remove` first)."""
        for gid in self._ids(groups):
            if not self.removed[gid]:
                self.removed[gid] = True
                for name, c in self.members.get(gid, {}).items():
                    self.removed_count[name] += c

    def restore(self, groups):
        """Put removed `groups` back."""
        for gid in self._ids(groups):
            if self.removed[gid]:
                self.removed[gid] = False
                for name, c in self.members.get(gid, {}).items():
                    self.removed_count[name] -= c

    def groups_of(self, name):
        """Distinct group ids of layer `name`'s channels, in channel order."""
        return list(dict.fromkeys(int(g) for g in self.owned[name]))

    # --- rounding ------------------------------------------------------------------------
    def round(self, name, multiple, rounding, scores):
        """Make layer `name` keep a multiple of `multiple` channels (or all it had).

        Args:
            name: a channel-creating layer of the graph.
            multiple: int >= 1.
            rounding: "up" (give back removed groups, highest score first), "down" (remove kept
                groups, lowest score first, never below one multiple) or "nearest" (ties go up).
            scores: ``{group id: score}`` (missing groups score 0).

        Returns:
            The net number of channels the rounding removed (negative: given back).
        """
        before = self.kept(name)
        over = before % multiple
        if multiple <= 1 or over == 0 or before == self.width(name):
            return 0
        down, up = before - over, min(before - over + multiple, self.width(name))
        score = lambda g: scores.get(g, 0.0)  # noqa: E731
        if down > 0 and (rounding == "down" or (rounding == "nearest" and over < multiple - over)):
            for gid in sorted((g for g in self.groups_of(name) if not self.removed[g]), key=score):
                if self.kept(name) <= down:
                    break
                if self.can_remove([gid]):
                    self.remove([gid])
        else:
            for gid in sorted((g for g in self.groups_of(name) if self.removed[g]), key=score, reverse=True):
                if self.kept(name) >= up:
                    break
                self.restore([gid])
        return before - self.kept(name)

    def round_all(self, multiple, scores, names=None):
        """Round every layer up to a multiple, repeating until no coupled give-back breaks
        another layer's multiple (only give-backs, so it ends)."""
        names = list(self.owned) if names is None else list(names)
        changed = True
        while changed:
            changed = False
            for name in names:
                if self.round(name, multiple, "up", scores):
                    changed = True
