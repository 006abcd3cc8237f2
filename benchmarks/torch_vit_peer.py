"""The PyTorch peer of the transformer benchmark: Torch-Pruning's attention-head pruning on a ViT.

The ViT of :mod:`benchmarks.transformer_pruning` written in PyTorch, layer for layer as
keras-hub's ``ViTBackbone`` computes it (a patch-strided convolution, a class token in front, a
learned position table; pre-norm blocks ``x + MHA(LN(x))``, ``x + MLP(LN(x))`` with exact GELU and
LayerNorm epsilon 1e-6; a final LayerNorm; a Dense head on the class token). The attention is
written as Torch-Pruning's own ViT examples write it (one ``qkv`` Linear and a ``proj`` Linear,
the head count an attribute), which is the form its head pruning handles.

Trained on the same arrays with the same budget (AdamW, cosine-decayed learning rate, batch 128),
pruned with Torch-Pruning's ``MetaPruner`` (``GroupMagnitudeImportance``, global ranking, whole
heads with ``prune_num_heads=True`` and ``prune_head_dims=False``, the residual width kept as on
the Keras side by ignoring the patch convolution, the classifier ignored) at the largest ratio
that meets the MAC target, then fine-tuned with the same epochs.

    python -m benchmarks.torch_vit_peer --target 0.5 --seed 0 --out row.json
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks import transformer_pruning as bench  # noqa: E402
from benchmarks.torch_peer import _tensors, accuracy, params, save_row, use_cores  # noqa: E402

EPS = 1e-6
MAX_FRACTION = 0.9
BISECTIONS = 10


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = ((q * self.head_dim ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_dim):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=EPS), Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, image=28, patch=4, channels=1, dim=128, depth=6, num_heads=4, mlp_dim=256, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(channels, dim, patch, patch)
        tokens = (image // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def macs(model):
    """Multiply-adds of one sample as the Keras side counts them: the patch convolution, every
    Linear over its tokens, and the two attention products (scores and weighted values)."""
    total = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total.append(output[0].numel() * k * module.in_channels // module.groups)
        elif isinstance(module, nn.Linear):
            total.append(output[0].numel() * module.in_features)
        elif isinstance(module, Attention):
            t = inputs[0].shape[1]
            total.append(2 * t * t * module.num_heads * module.head_dim)

    kinds = (nn.Conv2d, nn.Linear, Attention)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for h in handles:
        h.remove()
    return int(sum(total))


def train(model, x, y, epochs, seed):
    """AdamW (weight decay ``bench.WEIGHT_DECAY``), learning rate ``bench.LEARNING_RATE`` decayed to 0
    along a cosine, batch ``bench.BATCH``, shuffled each epoch."""
    torch.manual_seed(seed)
    steps = epochs * -(-len(x) // bench.BATCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=bench.LEARNING_RATE, weight_decay=bench.WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(bench.BATCH):
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
            schedule.step()
    return model


def _prune(model, ratio):
    """One Torch-Pruning step removing `ratio` of the heads and of the MLP units (global ranking);
    None when it leaves a block without heads (its global head ranking has no per-layer floor)."""
    import torch_pruning as tp

    heads = {block.attn.qkv: block.attn.num_heads for block in model.blocks}
    pruner = tp.pruner.MetaPruner(
        model, torch.zeros(1, 1, 28, 28), importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=True, pruning_ratio=ratio, max_pruning_ratio=MAX_FRACTION, num_heads=heads,
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio,
        ignored_layers=[model.head, model.patch])
    pruner.step()
    if min(pruner.num_heads[block.attn.qkv] for block in model.blocks) < 1:
        return None
    for block in model.blocks:  # the head count Torch-Pruning keeps, as its ViT examples do
        block.attn.num_heads = pruner.num_heads[block.attn.qkv]
        block.attn.head_dim = block.attn.qkv.out_features // (3 * block.attn.num_heads)
    return model


def prune_to(model, target_macs):
    """``(pruned, seconds)``: the largest one-shot Torch-Pruning ratio whose model has at most
    `target_macs` MACs, found by bisection on copies (Torch-Pruning takes a ratio, not a MAC
    budget; its iterative global head schedule fails on steps that remove no head in 1.6)."""
    import copy

    start = time.perf_counter()
    lo, hi, best = 0.0, MAX_FRACTION, None
    for _ in range(BISECTIONS):
        ratio = (lo + hi) / 2
        trial = _prune(copy.deepcopy(model), ratio)
        if trial is None or macs(trial) <= target_macs:
            hi, best = ratio, trial or best
        else:
            lo = ratio
    if best is None:
        raise RuntimeError(f"Torch-Pruning reached no model of at most {target_macs:,.0f} MACs with heads left")
    return best, time.perf_counter() - start


def run(target, seed):
    """One row: train (or load) the dense ViT, prune to `target` of its MACs, fine-tune, measure."""
    use_cores()
    (x, y), (xv, yv), (xt, yt) = bench.load_fashion()
    x, y = _tensors(x, y)
    xv, yv = _tensors(xv, yv)
    xt, yt = _tensors(xt, yt)
    cached = bench.CACHE / f"torch_vit_dense_seed{seed}.pt"
    torch.manual_seed(seed)
    model = ViT()
    if cached.exists():
        model.load_state_dict(torch.load(cached))
    else:
        train(model, x, y, bench.EPOCHS, seed)
        torch.save(model.state_dict(), cached)
    row = {"kind": "torch", "arch": "vit", "target": target, "seed": seed, "dense_test_accuracy": accuracy(model, xt, yt),
           "macs_before": macs(model), "params_before": params(model)}
    model, seconds = prune_to(model, target * row["macs_before"])
    train(model, x, y, bench.FINE_TUNE_EPOCHS, seed)
    import torch_pruning as tp

    row.update({"method": "Torch-Pruning group magnitude (heads + MLP), 1 step",
                "test_accuracy": accuracy(model, xt, yt), "val_accuracy": accuracy(model, xv, yv),
                "macs": macs(model), "params": params(model), "prune_seconds": seconds,
                "heads": [b.attn.num_heads for b in model.blocks], "mlp": [b.fc1.out_features for b in model.blocks],
                "fine_tune_epochs": bench.FINE_TUNE_EPOCHS, "torch": torch.__version__, "torch_pruning": tp.__version__,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    save_row(run(args.target, args.seed), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
