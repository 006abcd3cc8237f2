"""The PyTorch peer of the budget benchmark: Torch-Pruning on the same architectures and data.

Torch-Pruning (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023; ``torch-pruning``
on PyPI) is the leading structural pruner, for PyTorch only. This module writes the two
architectures of :mod:`benchmarks.budget_pruning` in PyTorch, layer for layer:

- MobileNetV2 (width 1.0) for 32x32x3 inputs as ``keras.applications.MobileNetV2`` builds it:
  a stride-2 3x3 stem (TensorFlow's "same" padding is asymmetric at stride 2, so the pad is one
  row and column at the bottom and right, as Keras' ZeroPadding2D in its blocks), inverted
  residual blocks (expansion 6, the first without expansion), ReLU6, BatchNormalization with
  epsilon 1e-3, the 1280-channel last conv, global average pooling and a Dense head;
- ResNet-20 as ``budget_pruning.resnet20`` builds it (1x1 strided projection shortcuts);

trains them on the same arrays (``budget_pruning.load_data``) with the same budget and optimizer
(SGD momentum 0.9, cosine-decayed learning rate from 0.05, batch 128, BatchNormalization momentum
0.01 in PyTorch's convention = 0.99 in Keras'), prunes with Torch-Pruning's ``MetaPruner``
(global ranking over dependency groups, at most 90% of a layer's channels, the classifier
ignored) to the same fraction of the MACs, and fine-tunes with the same epochs; ``--ranking
uniform`` prunes every layer by the same ratio instead (``global_pruning=False``, the library's
default), which keeps the early layers from collapsing on MobileNetV2. The target is
reached by many small iterative pruner steps, stopping at the first step whose MACs are at or
below it (MACs counted as the Keras side counts them: convolution and Dense multiply-adds).

    python -m benchmarks.torch_peer mobilenetv2 --target 0.5 --importance l2 --steps 1 --out row.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.budget_pruning import BATCH, CACHE, LEARNING_RATE, load_data, schedule  # noqa: E402

BN = {"eps": 1e-3, "momentum": 0.01}
MAX_FRACTION = 0.9
FINE_STEPS = 200  # Torch-Pruning steps available to reach a target (each removes a sliver)


def _bn(channels):
    return nn.BatchNorm2d(channels, **BN)


class _Block(nn.Module):
    """Inverted residual block: expand 1x1 (unless expansion 1), depthwise 3x3, project 1x1."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        mid = cin * expansion
        layers = [] if expansion == 1 else [nn.Conv2d(cin, mid, 1, bias=False), _bn(mid), nn.ReLU6()]
        pad = [nn.ZeroPad2d((0, 1, 0, 1))] if stride == 2 else []
        layers += pad + [nn.Conv2d(mid, mid, 3, stride, padding=0 if stride == 2 else 1, groups=mid, bias=False),
                         _bn(mid), nn.ReLU6(), nn.Conv2d(mid, cout, 1, bias=False), _bn(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    BLOCKS = [(16, 1, 1, 1), (24, 2, 2, 6), (32, 3, 2, 6), (64, 4, 2, 6), (96, 3, 1, 6), (160, 3, 2, 6),
              (320, 1, 1, 6)]  # (channels, repeats, first stride, expansion)

    def __init__(self, classes=10):
        super().__init__()
        layers = [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 32, 3, 2, bias=False), _bn(32), nn.ReLU6()]
        cin = 32
        for cout, repeats, stride, expansion in self.BLOCKS:
            for r in range(repeats):
                layers.append(_Block(cin, cout, stride if r == 0 else 1, expansion))
                cin = cout
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), _bn(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class _Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _bn(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _bn(cout))
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.shortcut(x) + self.body(x))


class ResNet20(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), _bn(16), nn.ReLU()]
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for block in range(3):
                layers.append(_Basic(cin, cout, 2 if stage > 0 and block == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(64, classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


ARCHS = {"mobilenetv2": MobileNetV2, "resnet20": ResNet20}


def macs(model):
    """Convolution and Linear multiply-adds for one 32x32x3 sample (the Keras side's rule)."""
    total = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total.append(output.numel() * k * module.in_channels // module.groups)
        elif isinstance(module, nn.Linear):
            total.append(module.in_features * module.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    return int(sum(total))


def params(model):
    return int(sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers()
                                                                  if b.dtype.is_floating_point))


def _tensors(x, y):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y.astype("int64"))


def train(model, x, y, epochs, seed):
    torch.manual_seed(seed)
    steps = epochs * -(-len(x) // BATCH)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(BATCH):
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
            scheduler.step()
    return model


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).float().mean())


def _importance(name):
    import torch_pruning as tp

    return {"l2": lambda: tp.importance.GroupMagnitudeImportance(p=2), "bn_scale": tp.importance.BNScaleImportance,
            "taylor": tp.importance.GroupTaylorImportance, "random": tp.importance.RandomImportance}[name]()


def prune_to(model, target_macs, importance, x, y, ranking="global"):
    """Prune `model` in place until its MACs are at most `target_macs`; returns the seconds spent.

    `ranking` "global" ranks the dependency groups of every layer together; "uniform" removes the
    same share of every layer's channels at each pruner step."""
    import torch_pruning as tp

    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, 3, 32, 32), importance=_importance(importance),
                                  global_pruning=ranking == "global", pruning_ratio=MAX_FRACTION, max_pruning_ratio=MAX_FRACTION,
                                  iterative_steps=FINE_STEPS, ignored_layers=[model.classifier])
    for _ in range(FINE_STEPS):
        if macs(model) <= target_macs:
            break
        if importance == "taylor":  # first-order Taylor needs the loss gradients of a batch
            model.zero_grad()
            model.eval()
            nn.CrossEntropyLoss()(model(x[:256]), y[:256]).backward()
        pruner.step()
    return time.perf_counter() - start


def use_cores():
    """Give torch as many threads as the cores this process may run on (``taskset``; every core
    where the platform cannot say)."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    torch.set_num_threads(len(cores))


def run(arch, target, importance, steps, seed, ranking="global"):
    """One row: train (or load) the dense model, prune in `steps` steps with fine-tuning, measure."""
    use_cores()
    (x, y), (xv, yv), (xt, yt) = load_data()
    x, y = _tensors(x, y)
    xv, yv = _tensors(xv, yv)
    xt, yt = _tensors(xt, yt)
    cached = CACHE / f"torch_{arch}_dense_seed{seed}.pt"
    torch.manual_seed(seed)
    model = ARCHS[arch]()
    if cached.exists():
        model.load_state_dict(torch.load(cached))
    else:
        train(model, x, y, schedule(arch)[0], seed)
        torch.save(model.state_dict(), cached)
    row = {"kind": "torch", "arch": arch, "target": target, "seed": seed, "importance": importance, "steps": steps,
           "dense_test_accuracy": accuracy(model, xt, yt), "macs_before": macs(model), "params_before": params(model)}
    seconds, per_step = 0.0, max(1, schedule(arch)[1] // steps)
    for step in range(1, steps + 1):
        goal = row["macs_before"] * (1.0 - (1.0 - target) * step / steps)
        seconds += prune_to(model, goal, importance, x, y, ranking)
        train(model, x, y, per_step, seed)
    import torch_pruning as tp

    ratio = ", uniform per-layer ratio" if ranking == "uniform" else ""
    row.update({"method": f"Torch-Pruning {importance}{ratio}, {steps} step{'s' if steps > 1 else ''}", "ranking": ranking,
                "test_accuracy": accuracy(model, xt, yt), "val_accuracy": accuracy(model, xv, yv),
                "macs": macs(model), "params": params(model), "prune_seconds": seconds,
                "fine_tune_epochs": per_step * steps, "torch": torch.__version__, "torch_pruning": tp.__version__,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return row


def save_row(row, out):
    """Write a peer row as JSON to `out` and print it."""
    with open(out, "w", encoding="utf-8") as f:
        json.dump(row, f, indent=2)
    print(json.dumps(row, indent=2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arch", choices=tuple(ARCHS))
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--importance", choices=("l2", "bn_scale", "taylor", "random"), default="l2")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranking", choices=("global", "uniform"), default="global",
                        help="rank channel groups across layers (global) or prune each layer by the same ratio")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    save_row(run(args.arch, args.target, args.importance, args.steps, args.seed, args.ranking), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
