"""The benchmark datasets by name, as ``(x_train, y_train, x_test, y_test)`` float32/int64 arrays."""

from __future__ import annotations


def _digits():
    from tf_groupsparse.datasets import load_digits

    return load_digits()


def _fashion():
    from tf_groupsparse.datasets import load_fashion_mnist

    return load_fashion_mnist(download=False)


def _mnist1d():
    from tf_groupsparse.datasets import load_mnist1d

    return load_mnist1d(n_samples=10000, seed=0)


#: dataset name -> loader returning ((x_train, y_train), (x_test, y_test))
LOADERS = {"digits": _digits, "fashion": _fashion, "mnist1d": _mnist1d}


def load(name, train_samples=None):
    """Load dataset `name`; keep the first `train_samples` training samples when given."""
    if name not in LOADERS:
        raise ValueError(f"load: Expected a dataset in {sorted(LOADERS)}. Received: name={name!r}")
    (x, y), (xt, yt) = LOADERS[name]()
    if train_samples is not None:
        x, y = x[:train_samples], y[:train_samples]
    return x, y, xt, yt
