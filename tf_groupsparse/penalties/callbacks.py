"""Training callbacks: sparsity figures in the epoch logs, and binding of proximal steps.

- :class:`SparsityMonitor` adds group sparsity, zero-weight fraction and removable parameters
  to ``logs`` at every epoch end, so ``History``, ``CSVLogger`` and ``TensorBoard`` record them.
- :class:`ProximalStep` binds every proximal constraint of the model to its optimizer when
  training starts (step ``t = learning_rate * strength``).

Example:
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

from .._validation import check_bool, check_number
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

    Example:
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

    Example:
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
