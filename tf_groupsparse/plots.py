"""Matplotlib figures for structured sparsity (no ``show()``; the caller saves or displays them).

Examples:
    >>> import keras, matplotlib; matplotlib.use("Agg")
    >>> from tf_groupsparse import fit_groups
    >>> from tf_groupsparse.plots import block_structure
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc1"),
    ...                           keras.layers.Dense(2)])
    >>> structure = fit_groups(model, 2, seed=0, verbose=0)
    >>> fig = block_structure(model, structure)           # |W| before and after permutation
    >>> len(fig.axes) >= 2
    True
"""

from __future__ import annotations

import keras
import numpy as np

from .grouping.structure import GroupStructure


def _magnitude(kernel):
    """``|W|`` for Dense, ``||K_io||_2`` for conv kernels: shape ``(C_in, C_out)``."""
    w = np.asarray(kernel, dtype="float32")
    if w.ndim == 2:
        return np.abs(w)
    return np.sqrt(np.square(w.reshape(-1, *w.shape[-2:])).sum(axis=0))


def block_structure(model_or_layer, structure, layer=None):
    """Figure with ``|W|`` of grouped layers before (left) and after (right) the block permutation.

    Rows are input channels, columns output channels; conv kernels show ``||K_io||_2``. The right
    panel is ``|W|[pi][:, po]`` with ``(pi, po) = structure.permutations(name)`` and lines at the
    block boundaries (the EMG block-diagonal view; Yi & Choi, ICDMW 2018).

    Args:
        model_or_layer: a keras.Model or one grouped layer.
        structure: GroupStructure.
        layer: name of the layer to draw when a model is given; default None = every layer of
            the structure (one row each).

    Returns:
        matplotlib.figure.Figure (not shown).

    Raises:
        TypeError: not a model/layer or not a GroupStructure.
        ValueError: the layer is not in the structure or the model.

    Examples:
        >>> import keras, matplotlib; matplotlib.use("Agg")
        >>> from tf_groupsparse import fit_groups
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc1"),
        ...                           keras.layers.Dense(2)])
        >>> fig = block_structure(model, fit_groups(model, 2, seed=0, verbose=0), layer="fc1")
        >>> type(fig).__name__
        'Figure'
    """
    from matplotlib.figure import Figure

    owner = "block_structure"
    if not isinstance(structure, GroupStructure):
        raise TypeError(f"{owner}: Expected a GroupStructure. Received: structure of type {type(structure).__name__}")
    if isinstance(model_or_layer, keras.Model):
        names = structure.layer_names if layer is None else [layer]
        layers = []
        for name in names:
            try:
                layers.append(model_or_layer.get_layer(name))
            except ValueError:
                raise ValueError(f"{owner}: Expected a layer of model {model_or_layer.name!r}. Received: layer={name!r}") from None
    elif isinstance(model_or_layer, keras.layers.Layer):
        layers = [model_or_layer]
    else:
        raise TypeError(f"{owner}: Expected a keras.Model or a keras layer. Received: {type(model_or_layer).__name__}")
    for lay in layers:
        if lay.name not in structure:
            raise ValueError(
                f"{owner}: Expected a layer of the structure ({structure.layer_names}). Received: layer={lay.name!r}"
            )
    fig = Figure(figsize=(8, 3.2 * len(layers)))
    axes = fig.subplots(len(layers), 2, squeeze=False)
    for row, lay in zip(axes, layers):
        entry = structure[lay.name]
        w = _magnitude(keras.ops.convert_to_numpy(lay.kernel))
        pi, po = entry.permutations()
        a, b = entry.block_sizes()
        for ax, data, title in ((row[0], w, "original order"), (row[1], w[pi][:, po], "grouped order")):
            ax.imshow(data, aspect="auto", cmap="viridis", interpolation="nearest")
            ax.set_title(f"{lay.name}: |W|, {title}")
            ax.set_xlabel("output channel")
            ax.set_ylabel("input channel")
        for r, c in zip(np.cumsum(a)[:-1], np.cumsum(b)[:-1]):
            row[1].axhline(r - 0.5, color="white", lw=0.8)
            row[1].axvline(c - 0.5, color="white", lw=0.8)
    fig.tight_layout()
    return fig
