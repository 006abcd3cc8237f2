"""How filter pruning by loss increase accepts candidates: filter by filter, or by bisection.

Both searches zero candidate groups in place on one working copy of the model (every weight
slice of a group: producing kernel columns, biases, BatchNormalization entries, consumers' input
rows), evaluate the loss on a fixed sample, and keep the candidates whose joint removal raises
the loss by at most the tolerance; nothing is rebuilt during the search.

- :func:`greedy` tries the candidates one at a time (or block by block): one loss evaluation
  per candidate, ``O(filters)``.
- :func:`bisect` first finds, by bisection, the longest prefix of the candidate queue (weakest
  filters of every layer first, by relative rank) whose joint removal fits the tolerance, then,
  layer by layer, the largest number of that layer's next weakest filters that still fits:
  ``O((layers + 1) * log(filters))`` evaluations.

Examples:
    >>> from tf_groupsparse.pruning.search import largest_fitting
    >>> largest_fitting(10, lambda k: k <= 6)     # the largest k in [0, 10] with ok(k)
    6
"""

from __future__ import annotations

import keras

from ..graph.surgery import zero_slices


class ZeroedCopy:
    """Zero groups of a working model in place and put them back (weights saved on first touch)."""

    def __init__(self):
        self.saved = {}          # (id(layer), weight index) -> (variable, original NumPy value)

    def zero(self, groups):
        """Zero every slice of `groups`; returns the keys of the weights touched."""
        slices = [s for group in groups for s in group.slices]
        touched = []
        for s in slices:
            key = (id(s.layer), s.weight_index)
            if key not in self.saved:
                variable = s.layer.weights[s.weight_index]
                self.saved[key] = (variable, keras.ops.convert_to_numpy(variable).copy())
            touched.append(key)
        zero_slices(slices)
        return touched

    def restore(self, keys, accepted):
        """Put the weights of `keys` back to their originals, then zero the `accepted` groups again."""
        for key in dict.fromkeys(keys):
            variable, original = self.saved[key]
            variable.assign(original)
        if accepted:
            zero_slices([s for group in accepted for s in group.slices
                         if (id(s.layer), s.weight_index) in set(keys)])


def largest_fitting(n, ok):
    """The largest ``k`` in ``[0, n]`` with ``ok(k)``, by bisection, assuming ``ok(0)`` and that
    ``ok`` turns false at most once (larger removals cost more loss)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _walk(plan, items, graph):
    """The groups that `items` ((layer, [channels]) in order) remove when walked with the plan's
    limits, on a scratch copy of the plan."""
    scratch = plan.copy()
    taken = []
    for name, channels in items:
        groups = list(dict.fromkeys(graph.group(name, c) for c in channels))
        if scratch.can_remove(groups):
            scratch.remove(groups)
            taken.extend(groups)
    return taken


def greedy(queue, graph, plan, evaluate, base, tolerance, blocks, progbar):
    """Accept the queue's candidates one by one; returns ``(per-layer loss increase, loss)``."""
    zeroed = ZeroedCopy()
    accepted, current = [], base
    delta = {}
    stopped = set()  # layers whose block was rejected: their later blocks are stronger filters
    for step, (_, name, channels) in enumerate(queue, 1):
        groups = list(dict.fromkeys(graph.group(name, c) for c in channels))
        if name in stopped or not plan.can_remove(groups):
            progbar.update(step)
            continue
        keys = zeroed.zero(groups)
        value = evaluate()
        if value - base <= tolerance:
            plan.remove(groups)
            accepted.extend(groups)
            delta[name] = delta.get(name, 0.0) + value - current
            current = value
        else:
            zeroed.restore(keys, accepted)
            if blocks:
                stopped.add(name)
        progbar.update(step, values=[("loss_increase", current - base)])
    return delta, current


def bisect(queue, names, order, graph, plan, evaluate, base, tolerance, progbar):
    """Accept the longest fitting prefix of the queue, then refine layer by layer (see the module
    docstring); returns ``(per-layer loss increase, loss, loss increase of the joint prefix)``."""
    zeroed = ZeroedCopy()
    accepted = []
    items = [(name, channels) for _, name, channels in queue]

    def fits(candidate_groups):
        keys = zeroed.zero(candidate_groups)
        value = evaluate()
        zeroed.restore(keys, accepted)
        return value - base <= tolerance, value

    def accept(groups):
        plan.remove(groups)
        accepted.extend(groups)
        zeroed.zero(groups)

    prefix = largest_fitting(len(items), lambda k: fits(_walk(plan, items[:k], graph))[0])
    accept(_walk(plan, items[:prefix], graph))
    current = evaluate() if prefix else base
    joint = current - base
    delta = {}
    for step, name in enumerate(names, 1):
        remaining = [c for c in order[name] if not plan.removed[graph.group(name, c).id]]
        mine = [(name, [c]) for c in remaining]
        k = largest_fitting(len(mine), lambda k: fits(_walk(plan, mine[:k], graph))[0])
        if k:
            accept(_walk(plan, mine[:k], graph))
            value = evaluate()
            delta[name] = value - current
            current = value
        progbar.update(step, values=[("loss_increase", current - base)])
    return delta, current, joint
