import gzip

import numpy as np
import pytest

from tf_groupsparse import datasets
from tf_groupsparse.datasets import load_digits, load_fashion_mnist, load_mnist1d, read_idx


def write_idx(path, array, compress=True):
    """Write an idx file by hand (header: 0, 0, type 0x08, ndim, big-endian sizes)."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def fake_fashion(directory, n_train=6, n_test=4, compress=True):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) + 3) % 10,
    }
    parts["train-images-idx3-ubyte"][0, 0, 0] = 255
    for stem, array in parts.items():
        write_idx(directory / (stem + (".gz" if compress else "")), array, compress)
    return parts


def test_load_digits_shapes_ranges_and_stratified_split():
    from sklearn.datasets import load_digits as sk_digits

    (x, y), (xt, yt) = load_digits()
    assert x.shape == (1347, 8, 8, 1) and xt.shape == (450, 8, 8, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    full = sk_digits()
    # Every class keeps its share: test counts within one of 25 %.
    counts = np.bincount(yt, minlength=10)
    assert np.all(np.abs(counts - 0.25 * np.bincount(full.target)) <= 1)
    # The same images as scikit-learn's, scaled by 1/16.
    assert np.allclose(np.sort((np.concatenate([x, xt]) * 16).reshape(-1, 64), axis=0),
                       np.sort(full.data, axis=0))
    (x2, _), _ = load_digits()
    assert np.array_equal(x, x2)
    (x3, _), (xt3, _) = load_digits(test_size=0.5, seed=3)
    assert len(x3) == 898 and len(xt3) == 899 and not np.array_equal(x3[:10], x[:10])


def test_load_digits_bad_arguments():
    with pytest.raises(ValueError, match=r"load_digits: Expected `test_size` > 0 and <= 1. Received: test_size=0.0"):
        load_digits(test_size=0)
    with pytest.raises(ValueError, match=r"load_digits: Expected `test_size` > 0 and < 1. Received: test_size=1.0"):
        load_digits(test_size=1)
    with pytest.raises(TypeError, match=r"load_digits: Expected `seed` to be an integer. Received: seed='a'"):
        load_digits(seed="a")
    with pytest.warns(DeprecationWarning, match="`random_state` is deprecated; use `seed`"):
        (x4, _), _ = load_digits(test_size=0.5, random_state=3)
    np.testing.assert_array_equal(x4, load_digits(test_size=0.5, seed=3)[0][0])


@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_mnist_from_data_dir(tmp_path, compress):
    parts = fake_fashion(tmp_path / "fm", compress=compress)
    (x, y), (xt, yt) = load_fashion_mnist(data_dir=tmp_path / "fm", download=False)
    assert x.shape == (6, 28, 28, 1) and xt.shape == (4, 28, 28, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64 and yt.dtype == np.int64
    assert np.allclose(x[..., 0], parts["train-images-idx3-ubyte"] / 255.0)
    assert x.max() == 1.0 and x.min() >= 0.0
    assert y.tolist() == [0, 1, 2, 3, 4, 5] and yt.tolist() == [3, 4, 5, 6]


def test_load_fashion_mnist_search_order_before_download(tmp_path, monkeypatch):
    cache, debian = tmp_path / "cache", tmp_path / "debian"
    fake_fashion(debian, n_train=3, n_test=2)
    monkeypatch.setattr(datasets, "fashion_mnist_search_dirs", lambda: [str(cache), str(debian)])

    def no_download():
        raise AssertionError("must not download when a local copy exists")

    monkeypatch.setattr("keras.datasets.fashion_mnist.load_data", no_download)
    (x, _), (xt, _) = load_fashion_mnist()
    assert len(x) == 3 and len(xt) == 2
    fake_fashion(cache, n_train=5, n_test=1)     # Keras' cache comes first
    (x, _), _ = load_fashion_mnist()
    assert len(x) == 5


def test_keras_cache_dir_honours_keras_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert datasets.fashion_mnist_search_dirs() == [
        str(tmp_path / "datasets" / "fashion-mnist"), "/usr/share/datasets/fashion-mnist"]


def test_load_fashion_mnist_missing_files_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "fashion_mnist_search_dirs", lambda: [str(tmp_path / "a")])
    with pytest.raises(FileNotFoundError, match=r"Received: none found \(download=False\)\. Install them with "
                                                r"`apt-get install dataset-fashion-mnist`"):
        load_fashion_mnist(download=False)

    def failing_download():
        raise OSError("network unreachable")

    monkeypatch.setattr("keras.datasets.fashion_mnist.load_data", failing_download)
    with pytest.raises(FileNotFoundError, match=r"the download failed: network unreachable\)\. Install them"):
        load_fashion_mnist()
    with pytest.raises(FileNotFoundError, match=r"in one of '.*empty'\. Received: none found \(data_dir was given"):
        load_fashion_mnist(data_dir=tmp_path / "empty")


def test_load_fashion_mnist_download_fallback_is_scaled(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "fashion_mnist_search_dirs", lambda: [str(tmp_path)])
    images = np.full((2, 28, 28), 51, np.uint8)
    monkeypatch.setattr("keras.datasets.fashion_mnist.load_data",
                        lambda: ((images, np.array([1, 2], np.uint8)), (images[:1], np.array([3], np.uint8))))
    (x, y), (xt, yt) = load_fashion_mnist()
    assert x.shape == (2, 28, 28, 1) and np.allclose(x, 0.2) and y.dtype == np.int64 and yt.tolist() == [3]


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match=r"read_idx: Expected an idx file \(magic 0x00 0x00 <type> <ndim>\)"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + np.asarray([5], ">u4").tobytes() + b"abc")
    with pytest.raises(ValueError, match=r"read_idx: Expected 5 data bytes for shape \(5,\)\. .* with 3 data bytes"):
        read_idx(short)
    mismatch = tmp_path / "mm"
    fake_fashion(mismatch)
    write_idx(mismatch / "t10k-labels-idx1-ubyte.gz", np.arange(7))
    with pytest.raises(ValueError, match=r"load_fashion_mnist: Expected test images \(N, 28, 28\) and as many "
                                         r"labels\. Received: images \(4, 28, 28\), labels \(7,\)"):
        load_fashion_mnist(data_dir=mismatch)


def test_load_mnist1d_generated_locally_and_restores_global_seed(monkeypatch):
    monkeypatch.setattr("requests.get", lambda *a, **k: (_ for _ in ()).throw(AssertionError("no download")))
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    (x, y), (xt, yt) = load_mnist1d(n_samples=300, seed=1)
    assert np.random.random() == expected_next
    assert x.shape == (240, 40, 1) and xt.shape == (60, 40, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64
    both = np.concatenate([x, xt])
    assert both.min() == 0.0 and both.max() == 1.0
    assert np.bincount(np.concatenate([y, yt])).tolist() == [30] * 10
    (x2, y2), _ = load_mnist1d(n_samples=300, seed=1)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    (x3, _), _ = load_mnist1d(n_samples=300, seed=2)
    assert not np.array_equal(x, x3)
    # Same signals as the package's own generator, min-max scaled.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = 300, 1
    raw = make_dataset(args)
    ref = np.concatenate([raw["x"], raw["x_test"]])
    assert np.allclose(both[..., 0], (ref - ref.min()) / (ref.max() - ref.min()), atol=1e-6)


def test_load_mnist1d_bad_arguments():
    with pytest.raises(ValueError, match=r"load_mnist1d: Expected `n_samples` >= 20. Received: n_samples=5"):
        load_mnist1d(n_samples=5)
    with pytest.raises(TypeError, match=r"load_mnist1d: Expected `seed` to be an integer. Received: seed=1.5"):
        load_mnist1d(seed=1.5)
