"""Group the channels of Dense/Conv layers with a Gaussian mixture (EM), as in EMG.

For a layer with kernel ``W`` of shape ``(*S, C_in, C_out)`` and ``K`` groups:

1. Connection profile of input channel ``i``: Dense ``x_i = |W[i, :]|`` (``features="abs"``) or
   ``W[i, :]`` (``"signed"``, the authors' MLP choice); conv ``x_io = max(K_io) - min(K_io)``
   (``representative="range"``, the authors' choice) or ``||K_io||_2`` (``"l2"``).
2. Fit ``sklearn.mixture.GaussianMixture(K, covariance_type="diag")`` to ``{x_i}``;
   ``c_i = argmax_k gamma_ik``. Non-negative profiles start from k-means (``n_init`` restarts,
   best likelihood kept); signed profiles start from k-means on ``|x_i|`` (rows of one block
   share large magnitudes while their signed means are near zero, so k-means on the signed
   rows starts EM in a poor local optimum).
3. ``g_o = argmax_k mean_{i: c_i = k} |x_io|``. The magnitude is used even for signed profiles:
   a strong negative connection is a strong connection, and signed means of mixed-sign rows
   cancel out. Groups with no input channel are never chosen.
4. ``M_io = [c_i == g_o]``; see :class:`~tf_groupsparse.grouping.structure.GroupStructure`.
5. ``chain=True``: a grouped layer whose producer (through BatchNormalization, activations,
   pooling, Dropout) is grouped too inherits ``c`` from the producer's ``g``; after Flatten the
   channel labels tile the spatial positions (flat index ``p * C + c`` gets label ``g_c``).
   Chained layers need no permutation between them in the block-diagonal model.

``balanced=True`` gives every group ``C_in / K`` inputs and ``C_out / K`` outputs (needed by
``Conv2D(groups=K)`` and the batched-matmul layer): channels are assigned to ``K * size``
slots by ``scipy.optimize.linear_sum_assignment``, maximizing the total responsibility (inputs)
or the total mean connection strength (outputs).

A mixture component that ends with no channel is dropped and the groups renumbered, so a layer
can have fewer groups than asked (logged as a warning).

Source: Yi & Choi, "Learning the group structure of deep neural networks with an expectation
maximization method", ICDMW 2018, pp. 689-696.

Examples:
    >>> import keras
    >>> from tf_groupsparse.grouping.em import fit_groups
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="fc1"),
    ...                           keras.layers.Dense(8, name="fc2"), keras.layers.Dense(2)])
    >>> s = fit_groups(model, 2, seed=0, verbose=0)
    >>> s.layer_names, s.n_groups("fc2")
    (['fc1', 'fc2'], 2)
"""

from __future__ import annotations

import logging
import numbers
import warnings

import keras
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.exceptions import ConvergenceWarning
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from .._validation import check_choice, check_int, check_keras_model, check_number, check_seed, check_verbose
from .chain import channel_positions, linear_chain, role
from ..graph.kinds import grouping_kind
from .structure import GroupStructure, LayerGroups, layer_kind

logger = logging.getLogger(__name__)
OWNER = "fit_groups"


def _range(blocks):
    return blocks.max(axis=-1) - blocks.min(axis=-1)


def _l2(blocks):
    return np.sqrt(np.sum(np.square(blocks), axis=-1))


DENSE_FEATURES = {"abs": np.abs, "signed": lambda w: w}
CONV_REPRESENTATIVES = {"range": _range, "l2": _l2}


def connection_profiles(kernel, features="abs", representative="range"):
    """Profiles ``x`` of shape ``(C_in, C_out)``: row ``i`` describes input channel ``i``.

    Args:
        kernel: array ``(C_in, C_out)`` (Dense) or ``(*S, C_in, C_out)`` (conv).
        features: "abs" (default) or "signed", for 2-D kernels.
        representative: "range" (default, ``max - min`` of each ``K_io``) or "l2", for conv kernels.
    """
    check_choice("features", features, tuple(DENSE_FEATURES), OWNER)
    check_choice("representative", representative, tuple(CONV_REPRESENTATIVES), OWNER)
    w = np.asarray(kernel, dtype=np.float32)
    if w.ndim == 2:
        return DENSE_FEATURES[features](w)
    blocks = np.moveaxis(w.reshape(-1, *w.shape[-2:]), 0, -1)  # (C_in, C_out, prod(S))
    return CONV_REPRESENTATIVES[representative](blocks)


def _compact(labels):
    """Renumber labels to 0..K'-1 in order of first group index (drops empty components)."""
    used, compact = np.unique(labels, return_inverse=True)
    return compact.astype(np.int64), len(used)


def _balanced(score, k):
    """Assign rows of `score` (n, k) to k equal groups maximizing the summed score."""
    n = score.shape[0]
    size = n // k
    finite = np.where(np.isfinite(score), score, -1e30)
    rows, cols = linear_sum_assignment(-np.repeat(finite, size, axis=1))
    labels = np.empty(n, dtype=np.int64)
    labels[rows] = cols // size
    return labels


def _check_divisible(n, k, what, name):
    if n % k:
        raise ValueError(
            f"{OWNER}: Expected {what} of layer {name!r} to be divisible by the number of groups "
            f"for balanced=True; choose K dividing {n} or balanced=False. Received: {what}={n}, n_groups={k}"
        )


def _magnitude_start(x, k, seed, reg_covar, n_init):
    """Mixture start from k-means on |x|: signed profiles of a block share magnitudes, not means."""
    labels = KMeans(k, n_init=n_init, random_state=seed).fit_predict(np.abs(x))
    weights = np.bincount(labels, minlength=k) / len(labels)
    overall = x.var(axis=0) + reg_covar
    means = np.stack([x[labels == j].mean(0) if (labels == j).any() else x.mean(0) for j in range(k)])
    var = np.stack([x[labels == j].var(0) + reg_covar if (labels == j).sum() > 1 else overall for j in range(k)])
    return {"weights_init": np.maximum(weights, 1e-6) / np.maximum(weights, 1e-6).sum(), "means_init": means,
            "precisions_init": 1.0 / var, "n_init": 1}


def _mixture(x, k, name, seed, max_iter, reg_covar, n_init):
    start = {"n_init": n_init} if np.all(x >= 0) else _magnitude_start(x, k, seed, reg_covar, n_init)
    gm = GaussianMixture(k, covariance_type="diag", random_state=seed, max_iter=max_iter,
                         reg_covar=reg_covar, **start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x)
    if not gm.converged_:
        warnings.warn(
            f"{OWNER}: the Gaussian mixture of layer {name!r} (K={k}) did not converge in "
            f"max_iter={max_iter} EM iterations; pass a larger max_iter (e.g. {4 * max_iter}) or a larger "
            f"reg_covar (e.g. {reg_covar * 10:g}).",
            ConvergenceWarning,
            stacklevel=3,
        )
    return gm


def input_groups(x, n_groups, *, name="layer", balanced=False, seed=None, max_iter=100,
                 reg_covar=1e-6, n_init="auto", bic_range=(2, 8)):
    """Cluster the rows of profiles `x` (C_in, C_out): ``c_i = argmax_k gamma_ik``.

    Args:
        x: connection profiles from :func:`connection_profiles`.
        n_groups: int K, or "bic" to pick K in `bic_range` by the lowest ``GaussianMixture.bic``.
        name: layer name used in warnings and errors.
        balanced, seed, max_iter, reg_covar, n_init: see :func:`fit_groups`.

    Returns:
        ``(labels, K)``: int labels in ``0..K-1`` and the number of non-empty groups.
    """
    n = x.shape[0]
    if n_init == "auto":
        n_init = 4 if x.size <= 2**20 else 1
    if isinstance(n_groups, str):
        low, high = bic_range
        candidates = range(low, min(high, n) + 1)
        fits = [_mixture(x, k, name, seed, max_iter, reg_covar, n_init) for k in candidates]
        gm = min(fits, key=lambda m: m.bic(x))
        k = gm.n_components
    else:
        k = n_groups
        if k == 1:
            return np.zeros(n, dtype=np.int64), 1
        gm = _mixture(x, k, name, seed, max_iter, reg_covar, n_init)
    resp = gm.predict_proba(x)
    if balanced:
        _check_divisible(n, k, "C_in", name)
        return _balanced(resp, k), k
    labels, used = _compact(resp.argmax(axis=1))
    if used < k:
        logger.warning("fit_groups: layer %r: %d of %d mixture components took no channel; using %d groups",
                       name, k - used, k, used)
    return labels, used


def output_groups(x, c, n_groups, *, name="layer", balanced=False):
    k = n_groups
    """``g_o = argmax_k mean_{i: c_i = k} |x_io|`` (groups without inputs are never chosen)."""
    a = np.abs(x)
    score = np.full((k, a.shape[1]), -np.inf)
    for group in range(k):
        rows = c == group
        if rows.any():
            score[group] = a[rows].mean(axis=0)
    if balanced:
        _check_divisible(a.shape[1], k, "C_out", name)
        return _balanced(score.T, k)
    return score.argmax(axis=0).astype(np.int64)


def _selected(model, layers, chain):
    weights = [layer for layer in chain if role(layer, OWNER) == "weight"] if chain is not None else [
        layer for layer in model.layers if grouping_kind(layer) is not None]
    if layers is None:
        return [layer.name for layer in weights[:-1]]
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise TypeError(f"{OWNER}: Expected `layers` to be a list of layer names. Received: layers={layers!r}")
    names = [layer.name for layer in model.layers]
    for n in layers:
        if n not in names:
            raise ValueError(f"{OWNER}: Expected layer names of model {model.name!r} ({names}). Received: layers item {n!r}")
    return [n for n in names if n in set(layers)]


def _n_groups_for(n_groups, name):
    if isinstance(n_groups, dict):
        if name not in n_groups:
            raise ValueError(
                f"{OWNER}: Expected an n_groups entry for every grouped layer. Received: no entry for {name!r} in {n_groups}"
            )
        return n_groups[name]
    return n_groups


def _check_k(k, layer, c_in, c_out):
    if isinstance(k, str):
        check_choice("n_groups", k, ("bic",), OWNER)
        return k
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{OWNER}: Expected `n_groups` to be an int, a dict of ints or 'bic'. Received: n_groups={k!r}")
    check_int("n_groups", k, f"{OWNER} (layer {layer.name!r})", minimum=1)
    if k > min(c_in, c_out):
        raise ValueError(
            f"{OWNER}: Expected n_groups <= min(C_in, C_out) = {min(c_in, c_out)} for layer {layer.name!r} "
            f"(every group needs an input and an output channel); lower n_groups. Received: n_groups={k}"
        )
    return int(k)


def _producers(chain_layers):
    """For each weight layer: (producer weight layer name or None, Flatten tiling factor)."""
    out, previous, tile = {}, None, 1
    for layer in chain_layers:
        r = role(layer, OWNER)
        if r == "weight":
            out[layer.name] = (previous, tile)
            previous, tile = layer.name, 1
        elif r == "flatten":
            tile *= channel_positions(layer)
    return out


def fit_groups(model, n_groups, *, layers=None, features="abs", representative="range", chain=True,
               balanced=False, seed=None, max_iter=100, reg_covar=1e-6, n_init="auto", random_state=None,
               bic_range=(2, 8), verbose=1):
    """Fit a block (group) structure to Dense/Conv1D/Conv2D layers of `model` by GMM/EM.

    See the module docstring for the formulas.

    Args:
        model: a built keras.Model (not modified).
        n_groups: K as an int, a dict ``{layer name: K}``, or "bic" (K in `bic_range` by BIC).
        layers: names of the layers to group; default None = every Dense/Conv layer but the last.
        features: "abs" (default) or "signed" Dense profiles.
        representative: "range" (default) or "l2" conv profiles.
        chain: default True; inherit input groups from a grouped producer (needs a linear chain).
        balanced: default False; equal group sizes (C_in and C_out divisible by K).
        seed: seed for the mixture (default None: unseeded; `random_state` is its deprecated
            name).
        max_iter: EM iterations (default 100). reg_covar: variance floor (default 1e-6).
        n_init: mixture restarts, best kept; default "auto" = 4 when C_in * C_out <= 2**20, else 1
            (one start sometimes lands in a poor local optimum on small layers; restarts on large
            layers cost seconds each, see the grouping benchmark). bic_range: (low, high) K for "bic" (default (2, 8)).
        verbose: 1 (default) progress bar over layers, 0 silent.

    Returns:
        GroupStructure with one entry per grouped layer.

    Raises:
        TypeError: `model` is not a keras.Model, bad `n_groups`/`layers` types.
        ValueError: unknown layer name, unsupported layer kind, n_groups < 1 or > the channels,
            balanced with indivisible channels, chain=True on a model that is not a linear chain,
            a chained layer whose n_groups differs from its producer's.

    Warns:
        ConvergenceWarning: scikit-learn's, naming the layer, when EM does not converge.

    Examples:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="fc1"),
        ...                           keras.layers.Dense(8, name="fc2"), keras.layers.Dense(2)])
        >>> s = fit_groups(model, {"fc1": 2, "fc2": 2}, features="signed", seed=0, verbose=0)
        >>> s.n_groups("fc1"), s.n_groups("fc2")
        (2, 2)
    """
    check_keras_model(model, OWNER)
    seed = check_seed(seed, OWNER, random_state=random_state, default=None)
    verbose = check_verbose(verbose, OWNER)
    check_choice("features", features, tuple(DENSE_FEATURES), OWNER)
    check_choice("representative", representative, tuple(CONV_REPRESENTATIVES), OWNER)
    check_int("max_iter", max_iter, OWNER, minimum=1)
    if n_init != "auto":
        check_int("n_init", n_init, OWNER, minimum=1)
    check_number("reg_covar", reg_covar, OWNER, minimum=0.0)

    def fit_inputs(name, x, k_req):
        return input_groups(x, k_req, name=name, balanced=balanced, seed=seed,
                            max_iter=max_iter, reg_covar=reg_covar, n_init=n_init, bic_range=bic_range)

    return build_structure(model, n_groups, fit_inputs, layers=layers, features=features,
                           representative=representative, chain=chain, balanced=balanced, verbose=verbose)


def build_structure(model, n_groups, fit_inputs, *, layers=None, features="abs", representative="range",
                    chain=True, balanced=False, verbose=0):
    """Shared loop of :func:`fit_groups`: `fit_inputs(name, x, K)` -> (labels, K) gives the input
    groups of layers that do not inherit them from a grouped producer; outputs follow step 3."""
    chain_layers = linear_chain(model, OWNER) if chain else None
    names = _selected(model, layers, chain_layers)
    producers = _producers(chain_layers) if chain else {}
    done = {}
    bar = keras.utils.Progbar(len(names), verbose=verbose, unit_name="layer") if verbose else None
    for step, name in enumerate(names, 1):
        layer = model.get_layer(name)
        kind = layer_kind(layer, OWNER)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        c_in, c_out = kernel.shape[-2:]
        k_req = _check_k(_n_groups_for(n_groups, name), layer, c_in, c_out)
        x = connection_profiles(kernel, features, representative)
        producer, tile = producers.get(name, (None, 1))
        if producer in done:
            prev = done[producer]
            if not isinstance(k_req, str) and isinstance(n_groups, dict) and k_req != prev.n_groups:
                raise ValueError(
                    f"{OWNER}: Expected layer {name!r} to have the n_groups of its producer {producer!r} "
                    f"({prev.n_groups}) with chain=True; pass chain=False to group it on its own. "
                    f"Received: n_groups={k_req}"
                )
            c, k = np.tile(prev.output_groups, tile), prev.n_groups
        else:
            c, k = fit_inputs(name, x, k_req)
        g = output_groups(x, c, k, name=name, balanced=balanced)
        done[name] = LayerGroups(name, kernel.shape, c, g, k, kind)
        if bar is not None:
            bar.update(step)
    return GroupStructure(done[n] for n in names)
