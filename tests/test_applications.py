"""Every keras.applications family shrinks exactly and prunes to a budget on the default path
(handlers for keras.ops calls, LayerScale and CustomScaleLayer included)."""

import keras
import numpy as np
import pytest

import tf_groupsparse as tgs
from tf_groupsparse.graph import Group, build_graph, zero_slices

A = keras.applications
FAMILIES = {
    "ResNet50": (A.ResNet50, 64), "ResNet50V2": (A.ResNet50V2, 64), "MobileNet": (A.MobileNet, 64),
    "MobileNetV2": (A.MobileNetV2, 64), "MobileNetV3Small": (A.MobileNetV3Small, 64),
    "MobileNetV3Large": (A.MobileNetV3Large, 64), "EfficientNetB0": (A.EfficientNetB0, 64),
    "EfficientNetV2B0": (A.EfficientNetV2B0, 64), "DenseNet121": (A.DenseNet121, 64),
    "InceptionV3": (A.InceptionV3, 96), "InceptionResNetV2": (A.InceptionResNetV2, 96),
    "Xception": (A.Xception, 72), "VGG16": (A.VGG16, 64), "ConvNeXtTiny": (A.ConvNeXtTiny, 64),
    "NASNetMobile": (A.NASNetMobile, 64),
}


#: the largest graphs: shrink is checked on them, pruning (the same surgery) on the others, to
#: keep `make test` within its time budget
SHRINK_ONLY = {"InceptionResNetV2", "NASNetMobile", "DenseNet121", "InceptionV3"}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_shrinks_exactly_and_prunes_to_a_budget(family):
    build, size = FAMILIES[family]
    keras.utils.set_random_seed(0)
    model = build(weights=None, input_shape=(size, size, 3), classes=10)
    graph = build_graph(model)                       # the default: unsupported layers raise
    # zero what every reader of a fifth of the removable groups reads: nothing flows through them
    rng = np.random.default_rng(0)
    removable = np.nonzero(~graph.frozen_groups & ~graph.lossy_groups)[0]
    chosen = rng.permutation(removable)[: max(1, len(removable) // 5)]
    consume = [s for g in chosen for s in Group(graph, g).slices if s.role == "consume"]
    zero_slices(consume)
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    small = tgs.shrink(model, threshold=0.0, verbose=0)
    assert tgs.count_params(small) < tgs.count_params(model)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4, rtol=1e-4)
    if family in SHRINK_ONLY:
        return
    pruned, report = tgs.prune(model, macs=0.6, verbose=0)
    assert report.totals["macs_fraction"] <= 0.6
    assert pruned.predict(x, verbose=0).shape == (2, 10)
