"""Unsupervised structure learning by efficient coding and global group sparse coding.

This module is the project's *interpretation* of Yuan, Pan, Zhou, Qin, Liu, "Learning
Structures for Deep Neural Networks" (arXiv 2105.13905, 2021), whose full method is not public
(the methods page of the documentation says so). Layers are learned one at a time, without labels:

1. The sources of layer ``d`` are the (centred) outputs of ALL earlier layers, the input
   included: ``Z = [x, h_1, ..., h_{d-1}]`` (``x`` is centred and divided by one global
   standard deviation, so low-variance features stay cheap to ignore).
2. The candidate layer ``h = tanh(Z W + b)`` (``width`` units) is fit by sparse coding: a linear
   dictionary ``V`` (rows of norm <= 1) must reconstruct the input from the code, while an
   efficient-coding term rewards output entropy, and a sparse group lasso on ``W`` whose groups
   are the source layers and, inside them, the source units:

       L(W, b, V, c) = mean ||x - h V - c||^2 / p  -  beta * H(h)
                       + lambda * (sum_units ||W_u||_2 + sum_sources sqrt(|s|) ||W_s||_F)

   with the Gaussian entropy estimate ``H(h) = 0.5 * logdet(2 pi e (Cov(h) + eps I)) / width``
   (nats per unit). The smooth part is minimised by SGD with momentum, and after every step the exact
   proximal operator of the penalty (unit-group shrinkage, then source-group shrinkage) sets
   groups to exactly zero. A source whose weight group is zero is *not connected*.
3. Depth grows while the new layer's output entropy ``H(h_d)`` exceeds the previous layer's by
   more than ``entropy_tol``; the first layer is always kept, and at most ``max_depth`` layers.

:func:`build_model` turns the result into a Keras functional model: each Dense layer reads the
Concatenate of its connected sources, and a Dense head reads every learned layer's output, to
be trained with labels.

Examples:
    >>> import numpy as np
    >>> from tf_groupsparse import learn_structure, build_model
    >>> x = np.random.default_rng(0).normal(size=(256, 6)).astype("float32")
    >>> s = learn_structure(x, max_depth=2, width=4, epochs=20, verbose=0)
    >>> model = build_model(s, n_outputs=3)
    >>> model.output_shape
    (None, 3)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

import keras
import numpy as np

from .._validation import check_int, check_number, check_seed, check_verbose

logger = logging.getLogger(__name__)

_OWNER = "learn_structure"
_EPS = 1e-3


@dataclass
class LearnedStructure:
    """What :func:`learn_structure` found.

    Attributes:
        input_dim: number of input features.
        widths: units of each learned layer (layer ``d`` is ``widths[d - 1]``).
        connections: for each learned layer, the sorted source indices it reads
            (0 = input, ``j`` = learned layer ``j``).
        unit_connections: for each learned layer, ``{source: [connected unit indices]}``.
        entropy: output entropy (nats per unit, Gaussian estimate) of each learned layer.
        unit_entropy: per-unit entropy ``0.5 * log(2 pi e var)`` of each learned layer.
        rejected_entropy: entropy of the first candidate layer that was not kept (None when
            ``max_depth`` stopped the search).
        weights: per learned layer ``{"kernel": (sum of connected source widths, width),
            "bias": (width,)}`` arrays, rows ordered as the connected sources (their kept order).
        source_norms: per learned layer, ``||W_s||_F`` for every source (before dropping).
        settings: the arguments used.

    Examples:
        >>> import json
        >>> s = LearnedStructure(input_dim=6, widths=[4, 3], connections=[[0], [0, 1]],
        ...                      entropy=[1.25, 1.5])
        >>> print(s)
        LearnedStructure: input 6 features, depth 2
          layer1: 4 units <- [input]  entropy 1.2500 nats/unit
          layer2: 3 units <- [input, layer1]  entropy 1.5000 nats/unit
        >>> json.loads(s.to_json())["connections"]
        [[0], [0, 1]]
        >>> build_model(s, 2).get_layer("layer2").input.shape   # reads input and layer1
        (None, 10)
    """

    input_dim: int
    widths: list = field(default_factory=list)
    connections: list = field(default_factory=list)
    unit_connections: list = field(default_factory=list)
    entropy: list = field(default_factory=list)
    unit_entropy: list = field(default_factory=list)
    rejected_entropy: float | None = None
    weights: list = field(default_factory=list)
    source_norms: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return len(self.widths)

    def to_dict(self, include_weights=False) -> dict:
        """Plain Python values (JSON-ready); weights as nested lists when asked."""
        out = {
            "input_dim": self.input_dim,
            "depth": self.depth,
            "widths": list(self.widths),
            "connections": [list(c) for c in self.connections],
            "unit_connections": [{str(k): list(v) for k, v in u.items()} for u in self.unit_connections],
            "entropy": [float(e) for e in self.entropy],
            "unit_entropy": [[float(v) for v in u] for u in self.unit_entropy],
            "rejected_entropy": None if self.rejected_entropy is None else float(self.rejected_entropy),
            "source_norms": [[float(v) for v in n] for n in self.source_norms],
            "settings": dict(self.settings),
        }
        if include_weights:
            out["weights"] = [{k: np.asarray(v).tolist() for k, v in w.items()} for w in self.weights]
        return out

    def to_json(self, path=None, include_weights=False, indent=2) -> str:
        """JSON text of :meth:`to_dict`; also written to `path` when given."""
        text = json.dumps(self.to_dict(include_weights), indent=indent)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text

    def __str__(self) -> str:
        lines = [f"LearnedStructure: input {self.input_dim} features, depth {self.depth}"]
        for d, (width, sources, h) in enumerate(zip(self.widths, self.connections, self.entropy), 1):
            names = ", ".join("input" if s == 0 else f"layer{s}" for s in sources)
            lines.append(f"  layer{d}: {width} units <- [{names}]  entropy {h:.4f} nats/unit")
        if self.rejected_entropy is not None:
            lines.append(f"  stopped: next layer's entropy {self.rejected_entropy:.4f} did not rise enough")
        return "\n".join(lines)


def _prox_sparse_group(w, sizes, unit_t, source_t):
    """Exact prox of unit-group then source-group lasso on the rows of `w` (NumPy)."""
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    w = w * np.maximum(0.0, 1.0 - unit_t / np.maximum(norms, 1e-12))
    start = 0
    for size in sizes:
        block = w[start:start + size]
        norm = np.linalg.norm(block)
        scale = max(0.0, 1.0 - source_t * math.sqrt(size) / max(norm, 1e-12))
        w[start:start + size] = block * scale
        start += size
    return w


def _gaussian_entropy(h):
    """(joint entropy per unit, per-unit entropies) in nats, Gaussian estimates."""
    width = h.shape[1]
    cov = np.cov(h, rowvar=False).reshape(width, width) + _EPS * np.eye(width)
    _, logdet = np.linalg.slogdet(2 * math.pi * math.e * cov)
    per_unit = 0.5 * np.log(2 * math.pi * math.e * np.diag(cov))
    return 0.5 * logdet / width, per_unit


def _fit_layer(z, sizes, x, width, strength, beta, epochs, learning_rate, batch_size, rng):
    """Sparse-code one candidate layer; returns (W, b) with exactly-zero groups."""
    import tensorflow as tf

    n, dim = z.shape
    p = x.shape[1]

    def glorot(shape):  # Keras' initializer on the active backend, as NumPy for the tf.Variable
        init = keras.initializers.GlorotUniform(seed=int(rng.integers(2**31)))
        return keras.ops.convert_to_numpy(init(shape))

    w = tf.Variable(glorot((dim, width)), dtype="float32")
    b = tf.Variable(tf.zeros(width))
    v = tf.Variable(glorot((width, p)), dtype="float32")
    c = tf.Variable(tf.zeros(p))
    # SGD with momentum 0.9 written in TensorFlow, as keras.optimizers.SGD does it
    # (m <- 0.9 m - lr g; w <- w + m): a Keras optimizer runs on the Keras backend (JAX,
    # PyTorch), which cannot update these TensorFlow variables.
    variables = [w, b, v, c]
    momenta = [tf.Variable(tf.zeros_like(var)) for var in variables]
    lr, momentum = tf.constant(learning_rate, "float32"), tf.constant(0.9, "float32")
    eye = tf.eye(width) * _EPS

    @tf.function
    def step(zb, xb):
        with tf.GradientTape() as tape:
            h = tf.tanh(zb @ w + b)
            recon = tf.reduce_mean(tf.reduce_sum(tf.square(xb - h @ v - c), axis=1)) / p
            hc = h - tf.reduce_mean(h, axis=0)
            cov = tf.transpose(hc) @ hc / tf.cast(tf.shape(h)[0], "float32") + eye
            entropy = 0.5 * tf.linalg.logdet(cov) / width
            loss = recon - beta * entropy
        for var, m, grad in zip(variables, momenta, tape.gradient(loss, variables)):
            m.assign(m * momentum - grad * lr)
            var.assign_add(m)
        v.assign(v / tf.maximum(1.0, tf.norm(v, axis=1, keepdims=True)))
        return loss

    zt, xt = z.astype("float32"), x.astype("float32")
    t = learning_rate * strength
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            step(tf.constant(zt[idx]), tf.constant(xt[idx]))
            w.assign(_prox_sparse_group(w.numpy(), sizes, t, t))
    return w.numpy(), b.numpy()


def learn_structure(
    x,
    *,
    max_depth=4,
    width=32,
    group_strength=3e-2,
    entropy_tol=0.05,
    entropy_weight=0.1,
    epochs=100,
    learning_rate=0.1,
    batch_size=256,
    seed=None,
    verbose=1,
    random_state=None,
):
    """Learn depth and inter-layer connections of a dense network from unlabeled data.

    For layer ``d`` the sources are ``Z = [x, h_1, ..., h_{d-1}]``; ``h_d = tanh(Z W + b)`` is
    fit by minimising ``mean ||x - h V - c||^2 / p - beta * H(h) + lambda * (sum_units ||W_u||
    + sum_sources sqrt(|s|) ||W_s||_F)`` with proximal steps, ``H(h) = 0.5 logdet(2 pi e
    (Cov(h) + eps I)) / width``. Sources whose group ends at zero are not connected. Layers are
    added while ``H(h_d) - H(h_{d-1}) > entropy_tol`` (the first layer is always kept).
    This is the project's interpretation of the LSDNN abstract (see the module docstring).

    Args:
        x: array ``(n_samples, n_features)`` of unlabeled data (>= 2 samples).
        max_depth: largest number of layers (default 4).
        width: units of every candidate layer (default 32).
        group_strength: lambda of the sparse group lasso (default 3e-2).
        entropy_tol: smallest entropy rise (nats per unit) that justifies one more layer
            (default 0.05; may be negative).
        entropy_weight: beta, weight of the entropy term (default 0.1).
        epochs: passes over the data per candidate layer (default 100).
        learning_rate: step of SGD with momentum 0.9 (default 0.1); the proximal step is
            ``learning_rate * group_strength``.
        batch_size: mini-batch size (default 256).
        seed: seed of initial weights and batch order (default 0; `random_state` is its
            deprecated name).
        verbose: 1 shows a progress bar over the depth, 0 is silent (default 1).

    Returns:
        A :class:`LearnedStructure`.

    Raises:
        TypeError / ValueError: `x` is not a 2-D finite array, or a setting is out of range.

    Reference: Yuan, Pan, Zhou, Qin, Liu, "Learning Structures for Deep Neural Networks",
    arXiv 2105.13905 (2021) (interpretation).

    Examples:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(128, 5)).astype("float32")
        >>> learn_structure(x, max_depth=1, width=3, epochs=5, verbose=0).depth
        1
    """
    try:
        data = np.asarray(x, dtype="float64")
    except (TypeError, ValueError):
        raise TypeError(
            f"{_OWNER}: Expected `x` to be a numeric array of shape (n_samples, n_features). "
            f"Received: x of type {type(x).__name__}"
        ) from None
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 1 or not np.all(np.isfinite(data)):
        raise ValueError(
            f"{_OWNER}: Expected `x` to be a finite 2-D array with at least 2 samples and 1 feature. "
            f"Received: x.shape={data.shape}"
        )
    max_depth = check_int("max_depth", max_depth, _OWNER, minimum=1)
    width = check_int("width", width, _OWNER, minimum=1)
    epochs = check_int("epochs", epochs, _OWNER, minimum=1)
    batch_size = check_int("batch_size", batch_size, _OWNER, minimum=2)
    seed = check_seed(seed, _OWNER, random_state=random_state)
    verbose = check_verbose(verbose, _OWNER)
    group_strength = check_number("group_strength", group_strength, _OWNER)
    entropy_weight = check_number("entropy_weight", entropy_weight, _OWNER)
    entropy_tol = check_number("entropy_tol", entropy_tol, _OWNER, minimum=-math.inf)
    learning_rate = check_number("learning_rate", learning_rate, _OWNER, strict=True)
    settings = {
        "max_depth": max_depth, "width": width, "group_strength": group_strength,
        "entropy_tol": entropy_tol, "entropy_weight": entropy_weight, "epochs": epochs,
        "learning_rate": learning_rate, "batch_size": batch_size, "seed": seed,
    }
    rng = np.random.default_rng(seed)
    scale = data.std() or 1.0
    x0 = (data - data.mean(axis=0)) / scale
    sources = [x0]
    structure = LearnedStructure(input_dim=data.shape[1], settings=settings)
    progbar = keras.utils.Progbar(max_depth, verbose=verbose, unit_name="layer")
    for depth in range(1, max_depth + 1):
        sizes = [s.shape[1] for s in sources]
        z = np.concatenate(sources, axis=1)
        w, b = _fit_layer(z, sizes, x0, width, group_strength, entropy_weight, epochs,
                          learning_rate, batch_size, rng)
        bounds = np.cumsum([0] + sizes)
        blocks = [w[bounds[i]:bounds[i + 1]] for i in range(len(sizes))]
        norms = [float(np.linalg.norm(block)) for block in blocks]
        connected = [i for i, norm in enumerate(norms) if norm > 0.0]
        h = np.tanh(z @ w + b)
        entropy, per_unit = _gaussian_entropy(h)
        logger.info("learn_structure: layer %d sources %s entropy %.4f", depth, connected, entropy)
        if structure.entropy and entropy - structure.entropy[-1] <= entropy_tol:
            structure.rejected_entropy = float(entropy)
            progbar.update(max_depth, values=[("entropy", entropy)])
            break
        structure.widths.append(width)
        structure.connections.append(connected)
        structure.unit_connections.append(
            {i: [int(u) for u in np.flatnonzero(np.linalg.norm(blocks[i], axis=1) > 0)] for i in connected}
        )
        structure.entropy.append(float(entropy))
        structure.unit_entropy.append([float(v) for v in per_unit])
        structure.source_norms.append(norms)
        kernel = np.concatenate([blocks[i] for i in connected], axis=0) if connected else np.zeros((0, width))
        structure.weights.append({"kernel": kernel.astype("float32"), "bias": b.astype("float32")})
        sources.append(h - h.mean(axis=0))
        progbar.update(depth, values=[("entropy", entropy)])
    return structure


def build_model(structure, n_outputs, *, activation="relu", name="learned_structure"):
    """Build the learned structure as a Keras functional model with a Dense(n_outputs) head.

    Layer ``d`` is ``Dense(widths[d-1], activation)`` on ``Concatenate`` of its connected
    sources (or on the single source directly); a source-less layer reads the input. The head
    reads the last learned layer (no activation: logits). Weights are
    freshly initialised, to be trained with labels.

    Args:
        structure: a :class:`LearnedStructure`.
        n_outputs: units of the output Dense layer (>= 1).
        activation: hidden activation (default "relu").
        name: model name (default "learned_structure").

    Returns:
        An uncompiled keras.Model.

    Raises:
        TypeError: `structure` is not a LearnedStructure.
        ValueError: `n_outputs` < 1 or `activation` is unknown.

    Examples:
        >>> s = LearnedStructure(input_dim=4, widths=[3], connections=[[0]], entropy=[1.0])
        >>> build_model(s, 2).count_params()
        23
    """
    if not isinstance(structure, LearnedStructure):
        raise TypeError(
            "build_model: Expected `structure` to be a LearnedStructure (from learn_structure). "
            f"Received: structure of type {type(structure).__name__}"
        )
    n_outputs = check_int("n_outputs", n_outputs, "build_model", minimum=1)
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError):
        raise ValueError(
            "build_model: Expected `activation` to be a Keras activation name. "
            f"Received: activation={activation!r}"
        ) from None
    inputs = keras.Input((structure.input_dim,), name="input")
    outputs = [inputs]
    for d, (width, sources) in enumerate(zip(structure.widths, structure.connections), 1):
        chosen = [outputs[s] for s in (sources or [0])]
        merged = chosen[0] if len(chosen) == 1 else keras.layers.Concatenate(name=f"concat{d}")(chosen)
        outputs.append(keras.layers.Dense(width, activation=activation, name=f"layer{d}")(merged))
    head = keras.layers.Dense(n_outputs, name="head")(outputs[-1])
    return keras.Model(inputs, head, name=name)
