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


def test_uniform_ranking_prunes_every_layer_by_the_same_share():
    model = torch_peer.ResNet20()
    full = torch_peer.macs(model)
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    torch_peer.prune_to(model, 0.5 * full, "l2", x, y, ranking="uniform")
    kept = [m.out_channels / w for m, w in zip((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), widths)]
    assert torch_peer.macs(model) <= 0.5 * full
    assert min(kept) > 0.5 and max(kept) - min(kept) < 0.2  # ~0.7 each, no layer collapses


def test_prepare_images_resizes_to_32x32x3_in_range():
    import numpy as np

    x = np.random.default_rng(0).random((4, 28, 28)).astype("float32")
    out = prepare_images(x)
    assert out.shape == (4, 32, 32, 3) and 0.0 <= out.min() and out.max() <= 1.0
    assert np.array_equal(out[..., 0], out[..., 2])


def test_the_vit_twin_has_the_keras_vits_macs_and_parameters_and_prunes_to_the_target():
    pytest.importorskip("keras_hub", reason="the hub extra (keras-hub) is not installed")
    from benchmarks import torch_vit_peer, transformer_pruning

    keras_model, twin = transformer_pruning.vit(), torch_vit_peer.ViT()
    full = torch_vit_peer.macs(twin)
    assert full == tgs.flops(keras_model) and torch_vit_peer.params(twin) == tgs.count_params(keras_model)
    pruned, seconds = torch_vit_peer.prune_to(twin, 0.5 * full)
    assert 0.45 <= torch_vit_peer.macs(pruned) / full <= 0.5 and seconds > 0
    heads = [b.attn.num_heads for b in pruned.blocks]
    assert all(1 <= h <= 4 for h in heads) and sum(heads) < 24  # whole heads went, none emptied
    assert all(b.attn.qkv.out_features == 3 * 32 * b.attn.num_heads for b in pruned.blocks)
    assert pruned(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert twin.blocks[0].attn.num_heads == 4  # the model handed in is left whole


def test_the_equal_macs_vit_has_half_the_macs():
    pytest.importorskip("keras_hub", reason="the hub extra (keras-hub) is not installed")
    from benchmarks import transformer_pruning

    ratio = tgs.flops(transformer_pruning.vit_scaled()) / tgs.flops(transformer_pruning.vit())
    assert abs(ratio - 0.5) < 0.01


@pytest.mark.parametrize(
    "affinity, expected",
    [(lambda pid: {0}, 1), (None, 3)],
    ids=["the cores the process may run on", "every core where the platform has no affinity"],
)
def test_torch_threads_follow_the_usable_cores(monkeypatch, affinity, expected):
    if affinity is None:
        monkeypatch.delattr(torch_peer.os, "sched_getaffinity", raising=False)
        monkeypatch.setattr(torch_peer.os, "cpu_count", lambda: 3)
    else:
        monkeypatch.setattr(torch_peer.os, "sched_getaffinity", affinity, raising=False)
    before = torch.get_num_threads()
    try:
        torch_peer.use_cores()
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
