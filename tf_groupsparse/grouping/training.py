"""In-training EM group regularization (EMG): a GMM penalty layer wrapper and a freeze callback.

The penalty added to the loss for a wrapped layer is ``-q * Q`` with

    Q = sum_i sum_k gamma_ik * [log pi_k + log N(x_i | mu_k, diag(exp(s_k)))]
    gamma_ik = stop_gradient(softmax_k(log pi_k + log N(x_i | mu_k, diag(exp(s_k)))))   (E-step)
    log pi = log_softmax(logits)

where ``x_i`` is the connection profile of input channel ``i`` (Dense: ``W[i, :]``, or
``|W[i, :]|``; conv: ``max(K_io) - min(K_io)`` or ``||K_io||_2``). The mixture means ``mu``,
log-variances ``s`` and mixing logits are trainable variables updated by the optimizer with the
network (the M-step by gradient); the E-step runs on every batch. Each channel's profile is
pulled towards its cluster, so the blocks sharpen during training. ``q`` defaults to 1e-5 for
Dense and 1e-6 for conv layers (the paper's MLP and CNN settings).

:class:`EMGroupFreeze` watches Q at the end of every epoch; once it has not improved for
``patience`` epochs (default 3) it freezes the grouping: ``c_i = argmax_k gamma_ik``, outputs by
the mean-connection rule of :mod:`~tf_groupsparse.grouping.em`, chained like ``fit_groups``.
From then on the penalty is off (q = 0) and the kernels are projected on the block mask after
every batch, so training continues on the task loss with the mask. Use
:func:`strip_em_penalty` to get a plain model for :func:`apply_mask` / :func:`to_block_diagonal`.

When to use which:
- this EM penalty: the groups are not known in advance and should be learned jointly with the
  weights (the paper's method); costs one small (C_in x K) likelihood per layer per step.
- ``tf_groupsparse.regularizers.BlockDiagonal``: the groups are already fixed (e.g. from
  ``fit_groups`` on a trained model) and off-block weights should shrink smoothly to zero
  (SplitNet-style group lasso); simpler and without extra variables.
- a hard mask (:func:`apply_mask`): fastest; fine-tune a trained model directly on a fixed
  structure, off-block weights set to zero at once.

Source: Yi & Choi, "Learning the group structure of deep neural networks with an expectation
maximization method", ICDMW 2018 (group regularization, q = 1e-5 MLP, 1e-6 CNN, freeze after 3
epochs without improvement of Q).

Examples:
    >>> import keras, numpy as np
    >>> x = np.random.rand(64, 12).astype("float32"); y = np.arange(64) % 3
    >>> model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(12, name="fc1"),
    ...                           keras.layers.Dense(9, name="fc2"), keras.layers.Dense(3, name="out")])
    >>> model = add_em_penalty(model, 3, layers=["fc1", "fc2"])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> freeze = EMGroupFreeze(patience=1)
    >>> _ = model.fit(x, y, epochs=3, callbacks=[freeze], verbose=0)
    >>> plain = strip_em_penalty(model)
    >>> [layer.name for layer in plain.layers]
    ['fc1', 'fc2', 'out']
"""

from __future__ import annotations

import logging
import math

import keras
import numpy as np
from keras import ops

from .._validation import check_choice, check_int, check_keras_model, check_number
from ..penalties.groups import safe_l2
from .em import _compact, build_structure
from .structure import layer_kind

logger = logging.getLogger(__name__)
register = keras.saving.register_keras_serializable(package="tf_groupsparse")
DEFAULT_Q = {"dense": 1e-5, "conv": 1e-6}
_LOG_2PI = math.log(2.0 * math.pi)


def _range(kernel):
    axes = tuple(range(len(kernel.shape) - 2))
    return ops.max(kernel, axis=axes) - ops.min(kernel, axis=axes)


def _l2(kernel):
    rank = len(kernel.shape)
    moved = ops.transpose(kernel, (rank - 2, rank - 1) + tuple(range(rank - 2)))
    return safe_l2(ops.reshape(moved, tuple(kernel.shape[-2:]) + (-1,)))


PROFILES = {("dense", "signed"): lambda w: w, ("dense", "abs"): ops.abs,
            ("conv", "range"): _range, ("conv", "l2"): _l2}


@register
class EMGroupPenalty(keras.layers.Wrapper):
    """Wrap a Dense/Conv1D/Conv2D layer and add ``-q * Q`` (module docstring) to the model loss.

    Args:
        layer: the Dense/Conv1D/Conv2D layer to wrap (its outputs are returned unchanged).
        n_groups: K >= 1 mixture components.
        q: penalty weight; default None = 1e-5 (Dense) or 1e-6 (conv).
        features: Dense profiles, "signed" (default, the authors' choice) or "abs".
        representative: conv profiles, "range" (default) or "l2".

    Raises:
        ValueError/TypeError: unsupported layer, bad n_groups/q/features/representative.

    Examples:
        >>> wrapped = EMGroupPenalty(keras.layers.Dense(8), n_groups=2, q=1e-4)
    """

    def __init__(self, layer, n_groups, q=None, features="signed", representative="range", **kwargs):
        super().__init__(layer, **kwargs)
        owner = f"EMGroupPenalty({self.name!r})"
        self.kind = layer_kind(layer, owner)
        self.n_groups = check_int("n_groups", n_groups, owner, minimum=1)
        self.q = DEFAULT_Q[self.kind] if q is None else check_number("q", q, owner, minimum=0.0)
        self.features = check_choice("features", features, ("signed", "abs"), owner)
        self.representative = check_choice("representative", representative, ("range", "l2"), owner)
        self._profile = PROFILES[(self.kind, features if self.kind == "dense" else representative)]

    def build(self, input_shape):
        super().build(input_shape)
        c_in, c_out = self.layer.kernel.shape[-2:]
        if self.n_groups > c_in:
            raise ValueError(
                f"EMGroupPenalty({self.name!r}): Expected n_groups <= C_in = {c_in} of layer "
                f"{self.layer.name!r}; lower n_groups. Received: n_groups={self.n_groups}"
            )
        k = self.n_groups
        self.means = self.add_weight(name="means", shape=(k, c_out), initializer="zeros")
        self.log_vars = self.add_weight(name="log_vars", shape=(k, c_out), initializer="zeros")
        self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros")
        self.scale = self.add_weight(name="q", shape=(), initializer=keras.initializers.Constant(self.q), trainable=False)
        self.initialize_mixture()

    def profiles(self):
        """Connection profiles ``(C_in, C_out)`` of the wrapped kernel (keras.ops)."""
        return self._profile(self.layer.kernel)

    def initialize_mixture(self, seed=0):
        """Means at K distinct profiles, log-variances at the profiles' log-variance, equal weights."""
        x = keras.ops.convert_to_numpy(self.profiles())
        rows = np.random.default_rng(seed).choice(x.shape[0], self.n_groups, replace=False)
        self.means.assign(x[rows])
        self.log_vars.assign(np.broadcast_to(np.log(x.var(axis=0) + 1e-8), self.log_vars.shape))
        self.logits.assign(np.zeros(self.n_groups, "float32"))

    def log_joint(self, x):
        """``log pi_k + log N(x_i | mu_k, diag(exp(s_k)))`` of shape ``(C_in, K)``."""
        precision = ops.exp(-self.log_vars)                         # (K, D)
        quad = (ops.matmul(ops.square(x), ops.transpose(precision))
                - 2.0 * ops.matmul(x, ops.transpose(self.means * precision))
                + ops.sum(ops.square(self.means) * precision, axis=1))
        log_norm = -0.5 * (quad + ops.sum(self.log_vars, axis=1) + x.shape[-1] * _LOG_2PI)
        return log_norm + ops.log_softmax(self.logits)

    def expected_log_likelihood(self):
        """Q with responsibilities from a stop-gradient E-step."""
        joint = self.log_joint(self.profiles())
        gamma = ops.stop_gradient(ops.softmax(joint, axis=1))
        return ops.sum(gamma * joint)

    def responsibilities(self):
        return keras.ops.convert_to_numpy(ops.softmax(self.log_joint(self.profiles()), axis=1))

    def call(self, inputs, training=None):
        self.add_loss(-self.scale * self.expected_log_likelihood())
        return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "n_groups": self.n_groups, "q": self.q, "features": self.features,
                "representative": self.representative}


def _wrappers(model):
    return [layer for layer in model.layers if isinstance(layer, EMGroupPenalty)]


def add_em_penalty(model, n_groups, *, layers=None, q=None, features="signed", representative="range", seed=0):
    """A new model whose chosen layers are wrapped in :class:`EMGroupPenalty` (weights copied).

    Args:
        model: built keras.Model (not modified).
        n_groups: K (int) or dict ``{layer name: K}``.
        layers: names of the layers to wrap; default None = every Dense/Conv layer but the last.
        q: penalty weight, default None = 1e-5 Dense / 1e-6 conv. features, representative: as
            in :class:`EMGroupPenalty`. seed: mixture initialization seed (default 0).

    Returns:
        keras.Model (not compiled); wrapper names are ``<layer name>_em``.

    Raises:
        ValueError/TypeError: unknown layer names or unsupported layer kinds, bad arguments.

    Examples:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc1"),
        ...                       keras.layers.Dense(2, name="out")])
        >>> wrapped = add_em_penalty(m, 2)        # every Dense/Conv layer but the last
        >>> [layer.name for layer in wrapped.layers], wrapped.get_layer("fc1_em").n_groups
        (['fc1_em', 'out'], 2)
    """
    owner = "add_em_penalty"
    check_keras_model(model, owner)
    weight_layers = [layer for layer in model.layers if hasattr(layer, "kernel")]
    names = [layer.name for layer in weight_layers[:-1]] if layers is None else list(layers)
    known = [layer.name for layer in model.layers]
    for name in names:
        if name not in known:
            raise ValueError(f"{owner}: Expected layer names of model {model.name!r} ({known}). Received: layers item {name!r}")
        layer_kind(model.get_layer(name), owner)

    def k_for(name):
        if isinstance(n_groups, dict):
            if name not in n_groups:
                raise ValueError(f"{owner}: Expected an n_groups entry for {name!r}. Received: n_groups={n_groups}")
            return n_groups[name]
        return n_groups

    def clone_fn(layer):
        new = type(layer).from_config(layer.get_config())
        if layer.name in names:
            return EMGroupPenalty(new, k_for(layer.name), q=q, features=features, representative=representative,
                                  name=f"{layer.name}_em")
        return new

    new = keras.models.clone_model(model, clone_function=clone_fn)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):  # no weights; an unnamed Input gets a new name
            continue
        target = new.get_layer(f"{layer.name}_em").layer if layer.name in names else new.get_layer(layer.name)
        target.set_weights(layer.get_weights())
    for wrapper in _wrappers(new):
        wrapper.initialize_mixture(seed)
    return new


def strip_em_penalty(model):
    """A new model with every :class:`EMGroupPenalty` replaced by the layer it wraps (weights copied).

    Examples:
        >>> import keras, numpy as np
        >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc1"),
        ...                       keras.layers.Dense(2, name="out")])
        >>> plain = strip_em_penalty(add_em_penalty(m, 2))
        >>> x = np.random.rand(3, 8).astype("float32")
        >>> [layer.name for layer in plain.layers], np.allclose(plain(x), m(x))
        (['fc1', 'out'], True)
    """
    check_keras_model(model, "strip_em_penalty")

    def clone_fn(layer):
        inner = layer.layer if isinstance(layer, EMGroupPenalty) else layer
        return type(inner).from_config(inner.get_config())

    new = keras.models.clone_model(model, clone_function=clone_fn)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inner = layer.layer if isinstance(layer, EMGroupPenalty) else layer
        new.get_layer(inner.name).set_weights(inner.get_weights())
    return new


@register
class EMGroupFreeze(keras.callbacks.Callback):
    """Freeze the EM grouping once Q has not improved for `patience` epochs, then train masked.

    Args:
        patience: epochs without improvement of Q before freezing (default 3).
        min_delta: smallest increase of Q that counts as improvement (default 0.0).
        chain: default True; later layers inherit input groups as in ``fit_groups``.

    Attributes:
        structure: the frozen GroupStructure (None until frozen), keyed by the wrapped layers' names.
        frozen_epoch: epoch index at which the grouping froze (None until then).
        history: Q (summed over wrapped layers) at the end of each epoch; also ``logs["em_q"]``.

    Examples:
        >>> freeze = EMGroupFreeze(patience=3)   # then model.fit(x, y, callbacks=[freeze])
        >>> freeze.structure is None                # set once Q stops improving
        True
    """

    def __init__(self, patience=3, min_delta=0.0, chain=True):
        super().__init__()
        self.patience = check_int("patience", patience, "EMGroupFreeze", minimum=1)
        self.min_delta = check_number("min_delta", min_delta, "EMGroupFreeze", minimum=0.0)
        self.chain = bool(chain)
        self.structure, self.frozen_epoch, self.history = None, None, []
        self._best, self._wait, self._masks = -np.inf, 0, []

    def get_config(self):
        return {"patience": self.patience, "min_delta": self.min_delta, "chain": self.chain}

    def on_train_begin(self, logs=None):
        if not _wrappers(self.model):
            raise ValueError(
                "EMGroupFreeze: Expected a model with EMGroupPenalty layers (build it with add_em_penalty). "
                f"Received: model {self.model.name!r} without them"
            )

    def on_epoch_end(self, epoch, logs=None):
        q = float(sum(keras.ops.convert_to_numpy(w.expected_log_likelihood()) for w in _wrappers(self.model)))
        self.history.append(q)
        if logs is not None:
            logs["em_q"] = q
        if self.structure is not None:
            return
        if q > self._best + self.min_delta:
            self._best, self._wait = q, 0
            return
        self._wait += 1
        if self._wait >= self.patience:
            self.freeze()
            self.frozen_epoch = epoch
            logger.info("EMGroupFreeze: grouping frozen at epoch %d (Q=%.4g)", epoch + 1, q)

    def freeze(self):
        """Build the structure from the current mixtures, switch the penalty off, mask the kernels."""
        wrappers = {w.layer.name: w for w in _wrappers(self.model)}
        plain = strip_em_penalty(self.model)

        def fit_inputs(name, x, k_req):
            return _compact(wrappers[name].responsibilities().argmax(axis=1))

        features = {w.features for w in wrappers.values()}
        self.structure = build_structure(
            plain, {n: w.n_groups for n, w in wrappers.items()}, fit_inputs, layers=list(wrappers),
            features="signed" if features == {"signed"} else "abs",
            representative=next(iter(wrappers.values())).representative, chain=self.chain)
        self._masks = []
        for entry in self.structure:
            wrapper = wrappers[entry.name]
            wrapper.scale.assign(0.0)
            self._masks.append((wrapper.layer.kernel, entry.mask()))
        self._apply_masks()

    def _apply_masks(self):
        for kernel, mask in self._masks:
            kernel.assign(keras.ops.convert_to_numpy(kernel) * mask)

    def on_train_batch_end(self, batch, logs=None):
        if self._masks:
            # On JAX, fit keeps the trained state outside the model's variables during an epoch;
            # reading Callback.model writes it back (jax_state_sync) so that the kernels hold the
            # current weights and the next step starts from the masked ones.
            _ = self.model
            self._apply_masks()


__all__ = ["EMGroupPenalty", "EMGroupFreeze", "add_em_penalty", "strip_em_penalty"]
