"""The PyTorch twin of the budget benchmark's architectures has the Keras models' exact MACs and
parameters, and its Torch-Pruning loop reaches a MACs target."""

import pytest

torch = pytest.importorskip("torch", reason="the bench extra (torch, torch-pruning) is not installed")
pytest.importorskip("torch_pruning", reason="the bench extra (torch-pruning) is not installed")

import tf_groupsparse as tgs  # noqa: E402
from benchmarks import torch_peer  # noqa: E402
from benchmarks.budget_pruning import mobilenetv2, prepare_images, resnet20  # noqa: E402


@pytest.mark.parametrize("arch", ["mobilenetv2", "resnet20"])
def test_twins_have_the_keras_models_macs_and_parameters(arch):
    keras_model = {"mobilenetv2": mobilenetv2, "resnet20": resnet20}[arch]()
    twin = torch_peer.ARCHS[arch]()
    assert torch_peer.macs(twin) == tgs.flops(keras_model)
    assert torch_peer.params(twin) == tgs.count_params(keras_model)


def test_torch_pruning_reaches_the_macs_target():
    model = torch_peer.ResNet20()
    full = torch_peer.macs(model)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    seconds = torch_peer.prune_to(model, 0.5 * full, "l2", x, y)
    assert 0.45 <= torch_peer.macs(model) / full <= 0.5 and seconds > 0
    assert model(x).shape == (32, 10)


def test_prepare_images_resizes_to_32x32x3_in_range():
    import numpy as np

    x = np.random.default_rng(0).random((4, 28, 28)).astype("float32")
    out = prepare_images(x)
    assert out.shape == (4, 32, 32, 3) and 0.0 <= out.min() and out.max() <= 1.0
    assert np.array_equal(out[..., 0], out[..., 2])
