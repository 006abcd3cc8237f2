"""regularize(coupled=True): one penalty / one exact proximal step per dependency-graph group."""

import re

import keras
import numpy as np
import pytest

import tf_groupsparse as tgs
from tf_groupsparse.graph import build_graph
from tf_groupsparse.penalties.coupled import CoupledPenalty, CoupledProx, coupled_slices

from _models import residual_cnn


def resnet(seed=0):
    return residual_cnn((8, 8, 1), classes=10, seed=seed, name="resnet")

L = keras.layers


def reference_groups(model):
    """Independent: {group label: concatenated trainable slice values} from the graph's slices."""
    graph = build_graph(model)
    out = {}
    for s in graph.slices:
        variable = s.node.layer.weights[s.weight_index]
        if not variable.trainable:
            continue
        w = variable.numpy()
        for j, label in enumerate(graph.labels[s.ids]):
            if graph.frozen_groups[label]:
                continue
            out.setdefault(int(label), []).append(np.take(w, j, axis=s.axis).ravel())
    return {k: np.concatenate(v) for k, v in out.items()}


def zero_slices_left(model):
    graph = build_graph(model)
    left = 0
    for s in graph.slices:
        if s.role == "param":
            continue
        w = s.node.layer.weights[s.weight_index].numpy()
        rows = np.moveaxis(w, s.axis, 0).reshape(w.shape[s.axis], -1)
        left += int((np.abs(rows).sum(axis=1) == 0).sum())
    return left


def test_penalty_values_match_a_numpy_reference():
    model = resnet()
    groups = reference_groups(model)
    cases = {
        tgs.regularizers.GroupLasso(0.3): 0.3 * sum(np.linalg.norm(v) for v in groups.values()),
        tgs.regularizers.GroupLasso(0.3, scale_by_size=True):
            0.3 * sum(np.sqrt(v.size) * np.linalg.norm(v) for v in groups.values()),
        tgs.regularizers.SparseGroupLasso(0.3, alpha=0.25):
            0.3 * sum(0.25 * np.abs(v).sum() + 0.75 * np.linalg.norm(v) for v in groups.values()),
        tgs.regularizers.GroupL12(0.3): 0.3 * sum(np.sqrt(np.abs(v).sum()) for v in groups.values()),
    }
    for penalty, expected in cases.items():
        coupled = tgs.regularize(model, penalty, coupled=True)
        (value,) = coupled.losses
        assert float(value) == pytest.approx(expected, rel=1e-5), penalty


def test_hgsr_coupled_sums_inner_measures_of_the_groups_kernels():
    model = keras.Sequential([keras.Input((5,)), L.Dense(4, name="h", use_bias=False), L.Dense(3, name="o")])
    penalty = tgs.regularizers.HierarchicalGroupSparse(0.5, "squared_group_l12")
    (value,) = tgs.regularize(model, penalty, coupled=True).losses
    h, o = model.get_layer("h").kernel.numpy(), model.get_layer("o").kernel.numpy()
    # group c = h's column c (5 scalar kernels) + o's row c (3 scalar kernels); inner sqrt(|k|), outer square
    expected = 0.5 * sum((np.sqrt(np.abs(h[:, c])).sum() + np.sqrt(np.abs(o[c])).sum()) ** 2 for c in range(4))
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_one_proximal_step_is_group_soft_thresholding_of_every_coupled_group():
    model = keras.Sequential([keras.Input((5,)), L.Dense(4, name="h"), L.Dense(3, name="o")])
    keras.utils.set_random_seed(1)
    h = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    h[:, 2] *= 0.01                                  # group 2 is small: it must go to exactly zero
    model.get_layer("h").kernel.assign(h)
    o = model.get_layer("o").kernel.numpy()
    o[2] *= 0.01
    model.get_layer("o").kernel.assign(o)
    reg = tgs.regularize(model, tgs.regularizers.GroupLasso(2.0), coupled=True, proximal=True)
    constraint = reg.get_layer("h").kernel.constraint
    assert isinstance(constraint, CoupledProx)
    constraint.bind(keras.optimizers.SGD(0.1))         # t = lr * strength = 0.2
    before = [v.numpy().copy() for v in reg.weights]
    new_anchor = keras.ops.convert_to_numpy(constraint(reg.get_layer("h").kernel))
    hk, hb, ok, ob = before
    factors = []
    for c in range(4):
        norm = np.sqrt(np.sum(hk[:, c] ** 2) + hb[c] ** 2 + np.sum(ok[c] ** 2))
        factors.append(max(0.0, 1 - 0.2 / norm))
    factors = np.array(factors)
    np.testing.assert_allclose(new_anchor, hk * factors[None, :], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(reg.get_layer("h").bias.numpy(), hb * factors, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(reg.get_layer("o").kernel.numpy(), ok * factors[:, None], rtol=1e-5, atol=1e-7)
    assert factors[2] == 0 and not np.any(reg.get_layer("o").kernel.numpy()[2])


def test_coupled_training_leaves_no_zero_slice_behind_unlike_per_layer_penalties():
    (x, y), (xt, yt) = tgs.datasets.load_digits()
    left = {}
    for coupled in (True, False):
        reg = tgs.regularize(resnet(), tgs.regularizers.GroupLasso(0.01, axis="input"), proximal=True,
                             coupled=coupled)
        reg.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        target = tgs.callbacks.SparsityTarget(params=0.5, interval=10)
        reg.fit(x, y, epochs=15, batch_size=32, verbose=0, callbacks=[tgs.callbacks.ProximalStep(), target])
        small = tgs.shrink(reg, threshold=0.0)
        np.testing.assert_allclose(small.predict(xt, verbose=0), reg.predict(xt, verbose=0), atol=1e-4)
        left[coupled] = zero_slices_left(small)
        if coupled:
            assert abs(tgs.count_params(small) / tgs.count_params(reg) - 0.5) <= target.margin
            assert reg.evaluate(xt, yt, verbose=0)[1] > 0.9
    assert left[True] == 0 < left[False]


def test_saves_with_safe_mode_and_binds_again(tmp_path):
    model = resnet()
    for proximal in (False, True):
        reg = tgs.regularize(model, tgs.regularizers.GroupLasso(1e-3), coupled=True, proximal=proximal)
        path = tmp_path / f"coupled_{proximal}.keras"
        reg.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        anchor = loaded.get_layer("stem").kernel
        carried = anchor.constraint if proximal else anchor.regularizer
        assert isinstance(carried, CoupledProx if proximal else CoupledPenalty)
        assert carried.get_config() == (reg.get_layer("stem").kernel.constraint if proximal else
                                        reg.get_layer("stem").kernel.regularizer).get_config()
        if not proximal:
            with pytest.raises(ValueError, match=re.escape("CoupledPenalty: Expected to be bound to the model's "
                                                           "variables before training; call tgs.penalties.bind(model)")):
                loaded.losses
        loaded.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        tgs.penalties.bind(loaded)
        x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
        loaded.fit(x, np.arange(8), epochs=1, verbose=0, callbacks=[tgs.callbacks.ProximalStep(require=False)])


def test_penalties_without_a_group_form_and_bad_arguments_are_refused():
    model = resnet()
    with pytest.raises(ValueError, match=r"regularize: Expected a penalty with a group form for coupled=True "
                                         r"\(GroupLasso, SparseGroupLasso, GroupL12, HierarchicalGroupSparse\)\. "
                                         r"Received: ExclusiveSparsity"):
        tgs.regularize(model, tgs.regularizers.ExclusiveSparsity(1e-3), coupled=True)
    with pytest.raises(ValueError, match=r"regularize: Expected GroupLasso for coupled=True with proximal=True"):
        tgs.regularize(model, tgs.regularizers.SparseGroupLasso(1e-3), coupled=True, proximal=True)
    with pytest.raises(ValueError, match=r"regularize: Expected layers=None, bias=False and one regularizer"):
        tgs.regularize(model, tgs.regularizers.GroupLasso(1e-3), coupled=True, layers=["stem"])
    slices, n = coupled_slices(build_graph(model))
    assert n == 16 + 24 + 24 and all(len(s) == 6 for s in slices)
