"""Small image and signal datasets for examples, tests and the demo, all available offline.

Every loader returns ``(x_train, y_train), (x_test, y_test)`` with ``x`` float32 in ``[0, 1]``
(channels last) and ``y`` integer class labels (int64), like ``keras.datasets``.

- :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images), shape
  ``(N, 8, 8, 1)``, a fixed stratified split. Needs no files at all.
- :func:`load_fashion_mnist`: Fashion-MNIST, ``(N, 28, 28, 1)``, read from the idx files in
  Keras' cache or the Debian package ``dataset-fashion-mnist`` before any download is tried.
- :func:`load_mnist1d`: MNIST-1D, ``(N, 40, 1)``, generated locally by the ``mnist1d`` package.

Examples:
    >>> from tf_groupsparse.datasets import load_digits
    >>> (x_train, y_train), (x_test, y_test) = load_digits()
    >>> x_train.shape, x_train.dtype.name, float(x_train.max())
    ((1347, 8, 8, 1), 'float32', 1.0)
"""

from __future__ import annotations

import gzip
import logging
import os
import random
from pathlib import Path

import numpy as np

from ._validation import check_int, check_number, check_seed

logger = logging.getLogger(__name__)

FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
#: Where the Debian package ``dataset-fashion-mnist`` installs the idx files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# idx type code -> numpy dtype (big-endian as stored); see the idx format of the MNIST files.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def load_digits(test_size=0.25, seed=None, *, random_state=None):
    """Load scikit-learn's bundled 8x8 digits as images with a fixed stratified split.

    Pixels (0..16 in the source) are divided by 16: ``x = pixels / 16`` in ``[0, 1]``.

    Args:
        test_size: fraction of the 1,797 images held out for testing, in (0, 1)
            (default 0.25).
        seed: seed of the stratified split (default 0; `random_state` is its deprecated name).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 ``(N, 8, 8, 1)`` images and int64
        labels 0..9; every class keeps its share in both parts.

    Raises:
        TypeError / ValueError: `test_size` is not a number in (0, 1) or `seed` not an int.

    Reference: the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak,
    1998), as bundled with scikit-learn.

    Examples:
        >>> (x, y), (xt, yt) = load_digits(test_size=0.5)
        >>> len(x), len(xt)
        (898, 899)
    """
    owner = "load_digits"
    test_size = check_number("test_size", test_size, owner, minimum=0.0, maximum=1.0, strict=True)
    if test_size >= 1.0:
        raise ValueError(f"{owner}: Expected `test_size` > 0 and < 1. Received: test_size={test_size!r}")
    seed = check_seed(seed, owner, random_state=random_state)
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    data = _sk_load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return (x_train, y_train), (x_test, y_test)


def read_idx(path):
    """Read one idx file (optionally gzip-compressed) into a NumPy array.

    The idx header is two zero bytes, a type code, the number of dimensions ``n`` and then
    ``n`` big-endian uint32 sizes; the data follow in C order.

    Args:
        path: file path; a name ending in ``.gz`` is decompressed.

    Returns:
        The array with its native dtype (uint8 for the MNIST-style files).

    Raises:
        ValueError: the file is not a valid idx file (bad magic or size).

    Examples:
        >>> import gzip, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
        >>> with gzip.open(path, "wb") as f:             # magic 0x801: uint8, 1 axis of 3 entries
        ...     _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 9]))
        >>> x = read_idx(path)
        >>> x.tolist(), x.dtype.name
        ([7, 2, 9], 'uint8')
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"read_idx: Expected an idx file (magic 0x00 0x00 <type> <ndim>). "
            f"Received: path={str(path)!r} starting with {raw[:4]!r}"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"read_idx: Expected {count * dtype.itemsize} data bytes for shape {dims}. "
            f"Received: path={str(path)!r} with {len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx_files(directory):
    """Paths of the four Fashion-MNIST idx files in `directory` (gzip or plain), or None."""
    directory = Path(directory)
    found = {}
    for key, stem in FASHION_MNIST_FILES.items():
        for name in (stem + ".gz", stem):
            if (directory / name).is_file():
                found[key] = directory / name
                break
        else:
            return None
    return found


def _keras_cache_dir():
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(base, "datasets", "fashion-mnist")


def fashion_mnist_search_dirs():
    """Directories :func:`load_fashion_mnist` looks in, in order, before downloading."""
    return [_keras_cache_dir(), DEBIAN_FASHION_MNIST_DIR]


def _scale_images(images):
    return (images.astype("float32") / 255.0)[..., None]


def _missing_message(dirs, reason):
    listed = ", ".join(repr(str(d)) for d in dirs)
    return (
        "load_fashion_mnist: Expected the four Fashion-MNIST idx files "
        f"({', '.join(s + '.gz' for s in FASHION_MNIST_FILES.values())}) in one of {listed}. "
        f"Received: none found ({reason}). Install them with `apt-get install dataset-fashion-mnist` "
        "(Debian/Ubuntu), let keras.datasets.fashion_mnist.load_data() download them into Keras' "
        "cache, or pass data_dir= pointing at a directory that holds them."
    )


def load_fashion_mnist(data_dir=None, download=True):
    """Load Fashion-MNIST from local idx files, downloading through Keras only as a last resort.

    Search order when `data_dir` is None: Keras' cache (``$KERAS_HOME`` or
    ``~/.keras``, sub-folder ``datasets/fashion-mnist``), then
    ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``), then
    ``keras.datasets.fashion_mnist.load_data()`` if `download` is True. Pixels are scaled as
    ``x = pixels / 255``.

    Args:
        data_dir: a directory holding ``train-images-idx3-ubyte[.gz]``,
            ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]`` and
            ``t10k-labels-idx1-ubyte[.gz]``. When given, only this directory is used
            (default None: search as above).
        download: allow the Keras download when no local copy exists (default True).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 ``(N, 28, 28, 1)`` images in
        ``[0, 1]`` (60,000 and 10,000 for the real files) and int64 labels 0..9.

    Raises:
        FileNotFoundError: no local copy was found and downloading is off or failed; the
            message says how to get the files.
        ValueError: a file is not a valid idx file, or images and labels disagree in number.

    Reference: Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
    Machine Learning Algorithms", 2017 (arXiv 1708.07747).

    Examples:
        >>> (x, y), (xt, yt) = load_fashion_mnist(download=False)  # doctest: +SKIP
        >>> x.shape, xt.shape  # doctest: +SKIP
        ((60000, 28, 28, 1), (10000, 28, 28, 1))
    """
    dirs = [data_dir] if data_dir is not None else fashion_mnist_search_dirs()
    for directory in dirs:
        files = _find_idx_files(directory)
        if files is not None:
            logger.info("Fashion-MNIST: reading idx files from %s", directory)
            arrays = {key: read_idx(path) for key, path in files.items()}
            for part in ("train", "test"):
                n_x, n_y = len(arrays[f"x_{part}"]), len(arrays[f"y_{part}"])
                if n_x != n_y or arrays[f"x_{part}"].ndim != 3:
                    raise ValueError(
                        f"load_fashion_mnist: Expected {part} images (N, 28, 28) and as many labels. "
                        f"Received: images {arrays[f'x_{part}'].shape}, labels ({n_y},) in {str(directory)!r}"
                    )
            return (
                (_scale_images(arrays["x_train"]), arrays["y_train"].astype("int64")),
                (_scale_images(arrays["x_test"]), arrays["y_test"].astype("int64")),
            )
    if data_dir is not None:
        raise FileNotFoundError(_missing_message(dirs, "data_dir was given, so no other place was tried"))
    if not download:
        raise FileNotFoundError(_missing_message(dirs, "download=False"))
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError)
        raise FileNotFoundError(_missing_message(dirs, f"the download failed: {exc}")) from exc
    return (
        (_scale_images(x_train), np.asarray(y_train).astype("int64")),
        (_scale_images(x_test), np.asarray(y_test).astype("int64")),
    )


def load_mnist1d(n_samples=5000, seed=0, test_size=0.2):
    """Generate MNIST-1D locally with the ``mnist1d`` package (never downloads).

    The package's generator (its default transforms, sequence length 40) makes ``n_samples``
    signals, ``n_samples // 10`` per class, standardised over the whole set; we then min-max scale
    them to ``[0, 1]``: ``x = (s - min(s)) / (max(s) - min(s))`` with min and max over all signals.
    The global NumPy / ``random`` seeds the package sets are restored afterwards.

    Args:
        n_samples: number of signals, a multiple of 10 keeps the classes exactly balanced
            (default 5000, the package's own size).
        seed: generator seed (default 0).
        test_size: fraction held out at the end for testing, in (0, 1) (default 0.2, the
            package's split).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 ``(N, 40, 1)`` in ``[0, 1]`` and int64
        labels 0..9.

    Raises:
        TypeError / ValueError: bad `n_samples` (< 20), `seed` or `test_size`.

    Reference: Greydanus, "Scaling down deep learning with MNIST-1D", 2020 (arXiv 2011.14439).

    Examples:
        >>> (x, y), (xt, yt) = load_mnist1d(n_samples=200, seed=1)
        >>> x.shape, xt.shape, x.dtype.name
        ((160, 40, 1), (40, 40, 1), 'float32')
    """
    owner = "load_mnist1d"
    n_samples = check_int("n_samples", n_samples, owner, minimum=20)
    seed = check_int("seed", seed, owner, minimum=0)
    test_size = check_number("test_size", test_size, owner, minimum=0.0, maximum=1.0, strict=True)
    if test_size >= 1.0:
        raise ValueError(f"{owner}: Expected `test_size` > 0 and < 1. Received: test_size={test_size!r}")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n_samples
    args.seed = seed
    args.train_split = 1.0 - test_size
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype("float64")
    lo, hi = x.min(), x.max()
    x = ((x - lo) / (hi - lo)).astype("float32")[..., None]
    y = np.concatenate([data["y"], data["y_test"]]).astype("int64")
    n_train = len(data["y"])
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
