"""Training callbacks: sparsity figures in the epoch logs, and binding of proximal steps.

- :class:`SparsityMonitor` adds group sparsity, zero-weight fraction and removable parameters
  to ``logs`` at every epoch end, so ``History``, ``CSVLogger`` and ``TensorBoard`` record them.
- :class:`ProximalStep` binds every proximal constraint of the model to its optimizer when
  training starts (step ``t = learning_rate * strength``).
- :class:`SparsityTarget` adapts the penalties' strength during ``fit`` so that the zero groups
  reach a budget of MACs or parameters.

Examples:
    >>> import keras, numpy as np
    >>> from tf_groupsparse.callbacks import SparsityMonitor
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> m.compile("sgd", "mse")
    >>> h = m.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=1, verbose=0,
    ...           callbacks=[SparsityMonitor()])
    >>> sorted(k for k in h.history if k.startswith("sparsity/"))
    ['sparsity/group_sparsity', 'sparsity/removable_fraction', 'sparsity/removable_params', 'sparsity/zero_weights']
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from .._validation import check_bool, check_int, check_number
from . import groups

logger = logging.getLogger(__name__)


class SparsityMonitor(keras.callbacks.Callback):
    """Write the model's structured sparsity into the epoch logs.

    At each epoch end it runs :func:`tf_groupsparse.sparsity_report` (NumPy on the
    kernel values, once per epoch) over every layer with a kernel and sets, with
    ``prefix="sparsity/"``:

    - ``sparsity/group_sparsity``: zero groups / groups along `axis`, i.e.
      ``sum_l #{i: W_l[..., i, :] = 0} / sum_l C_in,l`` for ``axis="input"``
      (``W_l[..., :, o]`` and ``C_out,l`` for ``axis="output"``);
    - ``sparsity/zero_weights``: fraction of kernel weights with ``|w| < threshold``;
    - ``sparsity/removable_params``: parameters a channel shrink removes (see
      ``sparsity_report`` for the exact definition);
    - ``sparsity/removable_fraction``: that count / ``model.count_params()``;
    - with ``per_layer=True`` also ``sparsity/<layer>/group_sparsity`` for each kernel.

    Callbacks share one ``logs`` dict in list order, so put SparsityMonitor BEFORE CSVLogger,
    TensorBoard or EarlyStopping in ``callbacks=[...]`` for them to see these keys (History is
    appended by Keras after the user's callbacks and always sees them).

    Args:
        threshold: a weight counts as zero when ``|w| < threshold`` (or exactly 0); >= 0
            (default 1e-3, the HGSR setting; use 0 with proximal training).
        axis: groups for ``group_sparsity``: "input" (default) or "output".
        prefix: prefix of the log keys (default "sparsity/").
        per_layer: add one group-sparsity key per kernel (default False).

    Raises:
        TypeError / ValueError: bad `threshold`, `axis`, `prefix` or `per_layer`.

    Reference: the zero threshold and group definitions follow Mitsuno, Miyao & Kurita,
    "Hierarchical Group Sparse Regularization for Deep CNNs", IJCNN 2020.

    Examples:
        >>> SparsityMonitor(threshold=0.0, axis="output")
        SparsityMonitor(threshold=0.0, axis='output', prefix='sparsity/', per_layer=False)
    """

    def __init__(self, threshold=1e-3, axis="input", prefix="sparsity/", per_layer=False):
        super().__init__()
        owner = type(self).__name__
        self.threshold = check_number("threshold", threshold, owner, minimum=0.0)
        self.axis = groups.check_axis(axis, owner)
        if not isinstance(prefix, str):
            raise TypeError(f"{owner}: Expected `prefix` to be a string. Received: prefix={prefix!r}")
        self.prefix = prefix
        self.per_layer = check_bool("per_layer", per_layer, owner)

    def measure(self):
        """The figures for the current weights as a dict (the keys written into ``logs``)."""
        from ..pruning.sparsity import sparsity_report

        report = sparsity_report(self.model, self.threshold)
        t = report.totals
        p = self.prefix
        values = {
            f"{p}group_sparsity": float(t[f"group_sparsity_{self.axis}"]),
            f"{p}zero_weights": float(t["zero_weight_fraction"]),
            f"{p}removable_params": float("nan") if t["removable"] is None else float(t["removable"]),
            f"{p}removable_fraction": float("nan") if t["removable"] is None else float(t["removable_fraction"]),
        }
        if self.per_layer:
            zero, total = ("zero_in", "in_channels") if self.axis == "input" else ("zero_out", "out_channels")
            for row in report.rows:
                values[f"{p}{row['layer']}/group_sparsity"] = row[zero] / max(row[total], 1)
        return values

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        values = self.measure()
        logs.update(values)
        logger.debug("epoch %d sparsity: %s", epoch, values)

    def get_config(self):
        return {"threshold": self.threshold, "axis": self.axis, "prefix": self.prefix, "per_layer": self.per_layer}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class ProximalStep(keras.callbacks.Callback):
    """Bind the model's proximal constraints to the optimizer when ``fit`` starts.

    Each :class:`~tf_groupsparse.penalties.ProximalConstraint` then applies
    ``W <- prox_{t * penalty}(W)`` with ``t = learning_rate * strength`` right after every
    optimizer step (proximal gradient descent). Keras 3 runs ``on_train_begin`` after creating
    but before first tracing the train function, and the constraint reads the learning rate
    when the step is traced, so the binding is in place for the compiled step.

    Args:
        optimizer: optimizer to read the learning rate from (default None: ``model.optimizer``).
        require: raise if the model has no proximal constraint (default True), so a model
            regularized without ``proximal=True`` is not silently trained without prox steps.

    Raises:
        ValueError: at the start of training, when `require` and no constraint was found.

    Reference: proximal gradient training of group-sparse penalties as in Ma & Niu, "Compact
    Deep Neural Networks with l1,1 and l1,2 Regularization", ICDMW 2018.

    Examples:
        >>> ProximalStep()
        ProximalStep(require=True)
    """

    def __init__(self, optimizer=None, require=True):
        super().__init__()
        self.optimizer = optimizer
        self.require = check_bool("require", require, type(self).__name__)
        self.bound = 0

    def on_train_begin(self, logs=None):
        from .constraints import bind

        self.bound = bind(self.model, self.optimizer)
        if self.bound == 0 and self.require:
            raise ValueError(
                "ProximalStep: Expected the model to have proximal constraints (build it with "
                "tf_groupsparse.regularize(model, regularizer, proximal=True)). Received: a model "
                f"{self.model.name!r} without any ProximalConstraint"
            )
        logger.info("ProximalStep: bound %d proximal constraints", self.bound)

    def get_config(self):
        return {"require": self.require}

    def __repr__(self):
        extra = "" if self.optimizer is None else f"optimizer={type(self.optimizer).__name__}, "
        return f"{type(self).__name__}({extra}require={self.require!r})"


def _penalties(model):
    """Every tf_groupsparse penalty and proximal constraint attached to `model`'s layers."""
    from .base import _Regularizer
    from .constraints import ProximalConstraint
    from .coupled import CoupledPenalty

    kinds = (_Regularizer, ProximalConstraint, CoupledPenalty)
    found = {}
    stack = [model]
    while stack:
        layer = stack.pop()
        stack.extend(child for child in getattr(layer, "layers", None) or () if child is not layer)
        for name, value in vars(layer).items():
            if name.endswith(("_regularizer", "_constraint")) and isinstance(value, kinds):
                found[id(value)] = value
    for variable in model.trainable_variables:
        for value in (getattr(variable, "regularizer", None), getattr(variable, "constraint", None)):
            if isinstance(value, kinds):
                found[id(value)] = value
    return list(found.values())


class SparsityTarget(keras.callbacks.Callback):
    """Adapt the penalty strength during ``fit`` so that the zero groups reach a budget.

    A growing-regularization controller: every `interval` training steps (and at each epoch
    end) it measures the share of the model's MACs (or parameters) that shrink would keep, with
    the zero test of ``sparsity_report`` (a group is zero when the norm of a slice is below
    `threshold`); while that share is above the schedule ``1 - (1 - target) * progress``
    (progress reaches 1 after a fraction `ramp` of the epochs) it multiplies the strength of
    every tf_groupsparse penalty and proximal constraint of the model by `growth`, and while it
    is below the schedule by more than `margin` it divides it by `growth` (so training does not
    run far past the budget). The strengths are scaled through one variable read inside the
    compiled train step (no retracing on TensorFlow and PyTorch); the configured strengths are
    left as they were, and :attr:`used_strengths` says what the training used. Works for per-layer and coupled
    penalties (loss penalties and proximal constraints alike), on every backend; on JAX the
    train step holds the multiplier as a compiled constant, so each change of strength compiles
    the step again (raise `interval` to make that rarer on large models).

    Afterwards ``tgs.prune(model, macs=target)`` removes exactly the budget (exact zero groups
    score lowest), or ``shrink(model, threshold)`` removes the zero groups only.

    Args:
        macs, params: exactly one, the fraction of the original to keep, in (0, 1).
        threshold: the zero threshold of the measurement (default 0.0: exact zeros, for
            proximal training; use e.g. 1e-3 with loss penalties).
        ramp: fraction of the epochs over which the schedule reaches the target (default 0.75).
        interval: training steps between measurements (default 50); measurements also run at
            every epoch end.
        growth: factor by which the strength moves (default 1.2).
        margin: tolerance of the schedule before the strength is lowered (default 0.05).

    Attributes:
        scale: the current strength multiplier; ``history``: ``(step, kept fraction, scale)``
        of every measurement; :attr:`used_strengths`.

    Raises:
        ValueError: at the start of training, when the model has no tf_groupsparse penalty.

    Reference: the growing regularization of Wang, Qin, Zhang & Fu, "Neural Pruning via Growing
    Regularization", ICLR 2021.

    Examples:
        >>> SparsityTarget(macs=0.5)
        SparsityTarget(macs=0.5, threshold=0.0, ramp=0.75, interval=50, growth=1.2, margin=0.05)
    """

    def __init__(self, macs=None, params=None, threshold=0.0, ramp=0.75, interval=50, growth=1.2, margin=0.05):
        super().__init__()
        owner = type(self).__name__
        given = {k: v for k, v in (("macs", macs), ("params", params)) if v is not None}
        if len(given) != 1:
            raise ValueError(f"{owner}: Expected exactly one of `macs`, `params` (the fraction to keep). "
                             f"Received: {given or 'none'}")
        (self.kind, target), = given.items()
        self.target = check_number(self.kind, target, owner, strict=True, maximum=1.0)
        self.threshold = check_number("threshold", threshold, owner, minimum=0.0)
        self.ramp = check_number("ramp", ramp, owner, strict=True, maximum=1.0)
        self.interval = check_int("interval", interval, owner, minimum=1)
        self.growth = check_number("growth", growth, owner, strict=True, minimum=1.0)
        self.margin = check_number("margin", margin, owner, minimum=0.0)
        self.scale = 1.0
        self.history = []
        self._variable = None

    def on_train_begin(self, logs=None):
        from ..graph import build_graph
        from ..pruning.cost import CostModel

        self._penalties = _penalties(self.model)
        if not self._penalties:
            raise ValueError(
                "SparsityTarget: Expected the model to carry tf_groupsparse penalties or proximal "
                "constraints (attach them with tgs.regularize). Received: a model "
                f"{self.model.name!r} without any"
            )
        if self._variable is None:
            self._variable = keras.Variable(self.scale, trainable=False, name="sparsity_target_scale")
        for penalty in self._penalties:
            penalty.scale = self._variable
        self._graph = build_graph(self.model, unsupported="freeze")
        self._cost = CostModel(self._graph)
        epochs = (self.params or {}).get("epochs") or 1
        steps = (self.params or {}).get("steps") or 1
        self._ramp_steps = max(1, int(round(self.ramp * epochs * steps)))
        self._step = 0

    def kept(self):
        """The fraction of the MACs (or parameters) that shrink at `threshold` would keep now."""
        from ..pruning.sparsity import zero_groups

        # On JAX, fit keeps the trained state outside the model's variables during an epoch;
        # reading Callback.model writes it back (jax_state_sync) before the weights are read.
        _ = self.model
        producer_dead, consumer_dead, _ = zero_groups(self._graph, self.threshold)
        removable = ~self._graph.frozen_groups & ~self._graph.lossy_groups
        dead = set(np.nonzero((producer_dead | consumer_dead) & removable)[0].tolist())
        self._cost.remove(dead - self._cost.removed)
        self._cost.restore(self._cost.removed - dead)
        return self._cost.fraction(self.kind)

    def _update(self):
        kept = self.kept()
        scheduled = 1.0 - (1.0 - self.target) * min(self._step / self._ramp_steps, 1.0)
        before = self.scale
        if kept > scheduled:
            self.scale *= self.growth
        elif kept < scheduled - self.margin:
            self.scale /= self.growth
        self._variable.assign(self.scale)
        if self.scale != before and keras.backend.backend() == "jax":
            # JAX compiles the train step with the variable's value as a constant (it is not part
            # of the model's state): compile it again so that the next steps use the new strength.
            self.model.make_train_function(force=True)
        self.history.append((self._step, kept, self.scale))
        return kept

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.interval == 0:
            self._update()

    def on_epoch_end(self, epoch, logs=None):
        kept = self._update()
        if logs is not None:
            logs[f"sparsity_target/{self.kind}_kept"] = kept
            logs["sparsity_target/scale"] = self.scale

    @property
    def used_strengths(self):
        """``{penalty: effective strength}`` (configured strength times the final scale)."""
        out = {}
        for penalty in getattr(self, "_penalties", ()):
            config = getattr(penalty, "penalty", penalty).get_config()
            keys = [k for k in ("strength", "l11", "l12") if k in config]
            out[repr(penalty)] = {k: config[k] * self.scale for k in keys}
        return out

    def get_config(self):
        return {self.kind: self.target, "threshold": self.threshold, "ramp": self.ramp,
                "interval": self.interval, "growth": self.growth, "margin": self.margin}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
