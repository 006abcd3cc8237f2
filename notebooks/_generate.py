"""Write the notebooks of this folder from the cell lists below and execute them in place.

    .venv/bin/python notebooks/_generate.py            # all notebooks
    .venv/bin/python notebooks/_generate.py 01 03      # those whose file name starts with 01 / 03

Each notebook is written with nbformat 4 (kernel python3), executed with nbclient in the
notebooks/ directory and saved WITH its outputs so that a reader sees the tables and plots.
`make test` executes them again through nbmake.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
CELLS: dict[str, list[tuple[str, str]]] = {}


def notebook(name):
    """Register the cell list returned by the decorated function under `name`."""

    def register(fn):
        CELLS[name] = fn()
        return fn

    return register


SETUP = """\
%matplotlib inline
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # keep TensorFlow's C++ start-up logs out of the outputs
import numpy as np
import keras
import matplotlib.pyplot as plt
from IPython.display import Markdown, display
import tf_groupsparse as tgs

keras.utils.set_random_seed(0)
(x, y), (xt, yt) = tgs.datasets.load_digits()        # 8x8 digits bundled with scikit-learn
print(x.shape, xt.shape, "tf_groupsparse", tgs.__version__)"""


def md(text):
    return ("markdown", text)


def code(text):
    return ("code", text)


# ---------------------------------------------------------------------------------------------
# The notebooks (cell texts)
# ---------------------------------------------------------------------------------------------
@notebook("01_quickstart.ipynb")
def _quickstart():
    return [
        md("""\
# Quickstart: regularize -> fit -> report -> shrink -> export -> run the .tflite

A small MLP on the 8x8 digits learns with a **group lasso** penalty on the input-channel groups
of every kernel (HGSR's "feature-wise" groups, `axis="input"`): for a kernel `W` of shape
`(C_in, C_out)` the group of input channel `i` is the row `g_i = W[i, :]` and the penalty is

$$\\Omega(W) = \\lambda \\sum_i \\lVert W[i, :] \\rVert_2 .$$

With `proximal=True` the penalty is applied by its proximal step after every optimizer step,
$x_g = \\max(0, 1 - t / \\lVert v_g \\rVert_2)\\, v_g$ with $t = \\text{learning rate} \\cdot \\lambda$,
which sets whole rows to exactly zero. A zero row means that input channel is unused, so
`tgs.shrink` can delete it (and the producer's unit) physically without changing the outputs.

Sources: group sparsity over input/output channels as in Mitsuno, Miyao & Kurita, *Hierarchical
Group Sparse Regularization for Deep Convolutional Neural Networks*, IJCNN 2020 (arXiv 2004.04394);
the group lasso proximal step is the standard block soft-threshold."""),
        code(SETUP),
        md("## 1. A dense baseline and its regularized clone\n"
           "`tgs.regularize` returns a new model (same weights, the input model is untouched) whose "
           "kernels carry the proximal constraint; `callbacks.ProximalStep` binds the step to the "
           "optimizer's learning rate."),
        code("""\
def mlp():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(64, activation="relu", name="fc1"),
        keras.layers.Dense(64, activation="relu", name="fc2"),
        keras.layers.Dense(10, name="logits"),
    ], name="mlp")

def compile_(m):
    m.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    return m

keras.utils.set_random_seed(0)
dense = compile_(mlp())
dense.fit(x, y, epochs=15, batch_size=64, verbose=0)

keras.utils.set_random_seed(0)
sparse = tgs.regularize(mlp(), tgs.regularizers.GroupLasso(0.5, axis="input"), proximal=True)
compile_(sparse)
history = sparse.fit(x, y, epochs=15, batch_size=64, verbose=0,
                     callbacks=[tgs.callbacks.ProximalStep(), tgs.callbacks.SparsityMonitor()])
acc_dense = dense.evaluate(xt, yt, verbose=0)[1]
acc_sparse = sparse.evaluate(xt, yt, verbose=0)[1]
print(f"test accuracy: dense {acc_dense:.4f}, group lasso (prox) {acc_sparse:.4f}")"""),
        md("`SparsityMonitor` logged the fraction of zero groups after every epoch:"),
        code("""\
fig, ax = plt.subplots(figsize=(5, 2.5))
ax.plot(history.history["sparsity/group_sparsity"], label="zero input groups")
ax.plot(history.history["sparsity/removable_fraction"], label="removable parameters")
ax.set_xlabel("epoch"); ax.set_ylabel("fraction"); ax.legend(); ax.grid(alpha=0.3)
plt.show()"""),
        md("## 2. Sparsity report\nA weight counts as zero below 1e-3 (the HGSR setting)."),
        code("tgs.sparsity_report(sparse, threshold=1e-3)"),
        md("## 3. Shrink: a physically smaller model with the same outputs"),
        code("""\
small, shrink_report = tgs.shrink(sparse, threshold=1e-3, return_report=True)
display(shrink_report)
diff = np.max(np.abs(small.predict(xt, verbose=0) - sparse.predict(xt, verbose=0)))
print(f"parameters: {tgs.count_params(sparse):,} -> {tgs.count_params(small):,}; "
      f"multiply-adds: {tgs.flops(sparse):,} -> {tgs.flops(small):,}")
print(f"max |small(x) - sparse(x)| on the test set = {diff:.2e}")
assert diff < 1e-4"""),
        md("## 4. Export: SavedModel + float .tflite, and an int8 .tflite\n"
           "`export` verifies the .tflite in LiteRT against the Keras model (`max_abs_error`) and "
           "against the unshrunk reference, and times both (one thread, median of repeated calls). "
           "The files go to a temporary directory here."),
        code("""\
import tempfile
out = tempfile.mkdtemp(prefix="tgs_quickstart_")
float_report = tgs.export(small, os.path.join(out, "float"), formats=("saved_model", "tflite"),
                          sample=xt[:64], reference=sparse, overwrite=True)
float_report"""),
        code("""\
int8_report = tgs.export(small, os.path.join(out, "int8"), formats=("tflite",), quantize="int8",
                         representative_data=x[:256], sample=xt[:64], reference=sparse, overwrite=True)
int8_report"""),
        md("## 5. Run the .tflite files with LiteRT\nThe interpreter from `ai_edge_litert` "
           "classifies the whole test set one image at a time."),
        code("""\
from ai_edge_litert.interpreter import Interpreter

def tflite_accuracy(path):
    interp = Interpreter(model_path=path, num_threads=1)
    interp.allocate_tensors()
    inp, out_ = interp.get_input_details()[0], interp.get_output_details()[0]
    predictions = []
    for image in xt:
        interp.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interp.invoke()
        predictions.append(int(np.argmax(interp.get_tensor(out_["index"]))))
    return float(np.mean(np.array(predictions) == yt))

rows = [("Keras, dense", tgs.count_params(dense), acc_dense, None),
        ("Keras, group lasso + shrink", tgs.count_params(small), small.evaluate(xt, yt, verbose=0)[1], None)]
for name in ("float", "int8"):
    path = os.path.join(out, name, "model.tflite")
    rows.append((f"LiteRT {name}", tgs.count_params(small), tflite_accuracy(path), os.path.getsize(path)))
table = "| model | params | test accuracy | .tflite bytes |\\n|---|---:|---:|---:|\\n" + "\\n".join(
    f"| {n} | {p:,} | {a:.4f} | {'' if b is None else f'{b:,}'} |" for n, p, a, b in rows)
display(Markdown(table))"""),
        md("The shrunk model keeps the accuracy of its regularized parent exactly (same outputs), and "
           "the int8 file (weights stored in 8 bits, float32 input and output) is less than half the size "
           "of the float file. Next: "
           "`02_regularizers.ipynb` compares the penalty families."),
        code("import shutil\nshutil.rmtree(out)  # the exported files were only for this demonstration"),
    ]

@notebook("02_regularizers.ipynb")
def _regularizers():
    return [
        md("""\
# The penalty families side by side

One small MLP (64-64-10 on the 8x8 digits), the same seed, data and 10 epochs of Adam, trained with
each penalty of `tf_groupsparse.regularizers`. Groups are input channels (`axis="input"`,
`g_i = W[i, :]`); every penalty is multiplied by its strength $\\lambda$:

| family | penalty | source |
|---|---|---|
| `L1` | $\\sum \\lvert w \\rvert$ | |
| `GroupLasso` ($\\ell_{2,1}$) | $\\sum_g \\lVert w_g \\rVert_2$ | |
| `SparseGroupLasso` | $\\alpha \\sum \\lvert w\\rvert + (1-\\alpha) \\sum_g \\lVert w_g\\rVert_2$ | |
| `ExclusiveSparsity` ($\\ell_{1,2}$) | $\\tfrac12 \\sum_g \\lVert w_g \\rVert_1^2$ | CGES |
| `CombinedL11L12` | $l_{11} \\sum \\lvert w\\rvert + \\tfrac{l_{12}}{2} \\sum_g \\lVert w_g\\rVert_1^2$ | L1112 |
| `CombinedGroupExclusive` | $\\mu \\sum_g \\lVert w_g\\rVert_2 + \\tfrac{1-\\mu}{2}\\sum_g \\lVert w_g\\rVert_1^2$, $\\mu$ = 0.8, 0.6, 0.4 by depth | CGES |
| `HierarchicalGroupSparse` | e.g. squared group $\\ell_{1/2}$: $\\sum_g \\big(\\sum_{k \\in g} \\sqrt{\\lVert K_k\\rVert_1}\\big)^2$, mixed with L1 | HGSR |

The first six have exact proximal steps (`proximal=True`, applied after each optimizer step with
$t = \\text{lr}\\cdot\\lambda$); HGSR has none and trains through the loss (sub)gradient.
Strengths are chosen per family so that accuracy stays near the dense model's; they are not
comparable across families (Adam rescales loss gradients, the proximal step is not rescaled).

Sources: CGES = Yoon & Hwang, *Combined Group and Exclusive Sparsity for Deep Neural Networks*,
ICML 2017. L1112 = Ma & Niu, *Compact Deep Neural Networks with l1,1 and l1,2 Regularization*,
ICDMW 2018. HGSR = Mitsuno, Miyao & Kurita, *Hierarchical Group Sparse Regularization for Deep
Convolutional Neural Networks*, IJCNN 2020 (arXiv 2004.04394)."""),
        code(SETUP),
        code("""\
R = tgs.regularizers
LAYERS = ["fc1", "fc2", "logits"]

def mlp():
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(name="flat"),
        keras.layers.Dense(64, activation="relu", name="fc1"),
        keras.layers.Dense(64, activation="relu", name="fc2"),
        keras.layers.Dense(10, name="logits")], name="mlp")

# name -> (regularizer or per-layer dict, proximal?)
METHODS = {
    "dense": (None, False),
    "L1 (prox)": (R.L1(0.1), True),
    "group lasso (prox)": (R.GroupLasso(0.5), True),
    "sparse group lasso (prox)": (R.SparseGroupLasso(0.5, alpha=0.3), True),
    "exclusive (prox)": (R.ExclusiveSparsity(0.05), True),
    "L1,1 + L1,2 (prox)": (R.CombinedL11L12(l11=0.02, l12=0.05), True),
    "CGES (prox)": ({n: R.CombinedGroupExclusive(0.5, mu=mu)
                     for n, mu in zip(LAYERS, R.cges_mu_schedule(len(LAYERS)))}, True),
    "HGSR sq. group l1/2 + L1 (subgradient)": (
        R.HierarchicalGroupSparse(3e-4, variant="squared_group_l12", l1_mix=0.5), False),
    "group lasso (subgradient)": (R.GroupLasso(0.01), False),
}

models, rows = {}, []
for name, (reg, prox) in METHODS.items():
    keras.utils.set_random_seed(0)
    m = mlp() if reg is None else tgs.regularize(mlp(), reg, proximal=prox)
    m.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    m.fit(x, y, epochs=10, batch_size=64, verbose=0,
          callbacks=[tgs.callbacks.ProximalStep()] if prox else [])
    report = tgs.sparsity_report(m, threshold=1e-3)
    models[name] = (m, report)
    rows.append((name, m.evaluate(xt, yt, verbose=0)[1], report.totals["zero_weight_fraction"],
                 report.totals["group_sparsity_input"], tgs.count_params(tgs.shrink(m, threshold=1e-3))))

display(Markdown(
    "| method | test acc. | zero weights | zero input groups | params after shrink |\\n|---|---:|---:|---:|---:|\\n"
    + "\\n".join(f"| {n} | {a:.4f} | {z:.1%} | {g:.1%} | {p:,} |" for n, a, z, g, p in rows)))"""),
        md("""\
**Reading the table.** Element-wise penalties (L1, exclusive, L1,1 + L1,2) zero many single weights
but few whole input channels, so `shrink` removes little: unstructured zeros need sparse kernels
to pay off. Group penalties (group lasso, sparse group lasso, CGES) zero whole rows, which
`shrink` deletes physically. The exclusive term spreads the weights: it keeps every channel but
makes each sparse inside (competition within the group), which is why CGES combines it with
the group term.

## Per-layer zero input-channel fraction"""),
        code("""\
fig, ax = plt.subplots(figsize=(9, 3))
width = 0.8 / len(models)
for k, (name, (_, report)) in enumerate(models.items()):
    fractions = [report.row(l)["zero_in"] / report.row(l)["in_channels"] for l in LAYERS]
    ax.bar(np.arange(len(LAYERS)) + k * width, fractions, width, label=name)
ax.set_xticks(np.arange(len(LAYERS)) + 0.4 - width / 2, LAYERS)
ax.set_ylabel("zero input channels"); ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1, 1)); ax.grid(axis="y", alpha=0.3)
plt.show()"""),
        md("## Sparsity patterns: $|W|$ of `fc2` (rows: input channels, columns: output channels; "
           "white = exactly or nearly zero)"),
        code("""\
fig, axes = plt.subplots(1, len(models), figsize=(2 * len(models), 2.4))
for ax, (name, (m, _)) in zip(axes, models.items()):
    w = np.abs(keras.ops.convert_to_numpy(m.get_layer("fc2").kernel))
    ax.imshow(w, cmap="Greys", vmin=0, vmax=np.percentile(w, 99))
    ax.set_title(name.replace(" (", "\\n("), fontsize=7); ax.set_xticks([]); ax.set_yticks([])
plt.show()"""),
        md("""\
## Proximal step versus subgradient

The same group lasso, once applied by its proximal step, once added to the loss and followed
by the optimizer's (sub)gradient. The proximal step produces exact zeros, the subgradient only
small values that oscillate around zero, so a threshold has to decide what counts as zero.
Histogram of the input-group norms $\\lVert W[i, :]\\rVert_2$ of `fc1` and `fc2` (exact zeros drawn
at $10^{-9}$):"""),
        code("""\
fig, ax = plt.subplots(figsize=(6, 2.8))
bins = np.logspace(-9, 1, 41)
for name in ("group lasso (prox)", "group lasso (subgradient)"):
    m = models[name][0]
    norms = np.concatenate([np.linalg.norm(keras.ops.convert_to_numpy(m.get_layer(l).kernel), axis=1)
                            for l in ("fc1", "fc2")])
    print(f"{name}: exact zero groups {np.sum(norms == 0)}, groups with norm < 1e-3 {np.sum(norms < 1e-3)} of {norms.size}")
    ax.hist(np.maximum(norms, 1e-9), bins=bins, alpha=0.6, label=name)
ax.set_xscale("log"); ax.set_xlabel("input-group norm"); ax.set_ylabel("groups"); ax.legend(fontsize=8)
plt.show()"""),
    ]

@notebook("03_em_grouping.ipynb")
def _em_grouping():
    return [
        md("""\
# EM grouping: block-diagonal layers from a trained MLP and CNN

`tgs.fit_groups` clusters the input channels of a trained layer by a Gaussian mixture (EM) over
their connection profiles and assigns every output channel to the group it connects to most:

1. profile of input channel $i$: $x_i = |W[i, :]|$ (Dense) or $x_{io} = \\max K_{io} - \\min K_{io}$
   (conv kernels, the range of the kernel);
2. a $K$-component diagonal GMM on $\\{x_i\\}$, $c_i = \\arg\\max_k \\gamma_{ik}$
   (`balanced=True`: $K$ equal groups maximizing the total responsibility);
3. $g_o = \\arg\\max_k \\operatorname{mean}_{i: c_i = k} x_{io}$;
4. mask $M_{io} = [c_i = g_o]$: permuting inputs by $c$ and outputs by $g$ makes $W \\odot M$
   block diagonal. A layer inherits its input groups from its grouped producer (chaining).

`apply_mask` fine-tunes with the off-block weights held at zero, and `to_block_diagonal`
rewrites the model with block-diagonal layers (a batched matmul for Dense, `Conv2D(groups=K)`
for convolutions), with the permutations folded into the weights: same outputs, about $1/K$ of
the grouped layers' weights.

Source: Yi & Choi, *Learning the group structure of deep neural networks with an expectation
maximization method*, ICDMW 2018."""),
        code(SETUP),
        code("""\
import tempfile
L = keras.layers
OUT = tempfile.mkdtemp(prefix="tgs_em_grouping_")

def compile_(m, lr):
    m.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    return m

def accuracy(m):
    return float(np.mean(np.argmax(keras.ops.convert_to_numpy(m(xt)), axis=1) == yt))"""),
        md("## 1. MLP 64-512-512-10, K = 4 groups on both hidden layers"),
        code("""\
keras.utils.set_random_seed(0)
mlp = compile_(keras.Sequential([
    keras.Input((8, 8, 1)), L.Flatten(name="flat"),
    L.Dense(512, activation="relu", name="fc1"),
    L.Dense(512, activation="relu", name="fc2"),
    L.Dense(10, name="head")], name="mlp"), 1e-3)
mlp.fit(x, y, epochs=10, batch_size=64, verbose=0)

mlp_groups = tgs.fit_groups(mlp, 4, layers=["fc1", "fc2"], balanced=True, seed=0)
print(mlp_groups)"""),
        md("$|W|$ of the trained `fc2` before and after permuting rows by $c$ and columns by $g$ "
           "(lines at the block boundaries):"),
        code("""\
tgs.plots.block_structure(mlp, mlp_groups, layer="fc2")   # a matplotlib Figure, displayed by Jupyter"""),
        md("Fine-tune with the mask, then rewrite to block-diagonal layers and check that the "
           "outputs are unchanged:"),
        code("""\
mlp_masked = compile_(tgs.apply_mask(mlp, mlp_groups), 1e-3)
mlp_masked.fit(x, y, epochs=5, batch_size=64, verbose=0)
mlp_block = tgs.to_block_diagonal(mlp_masked, mlp_groups)
diff = np.max(np.abs(keras.ops.convert_to_numpy(mlp_block(xt)) - keras.ops.convert_to_numpy(mlp_masked(xt))))
print(f"max |block(x) - masked(x)| = {diff:.2e}")
assert diff < 1e-4
print("layers of the rewrite:", [type(l).__name__ for l in mlp_block.layers])"""),
        md("A plainly trained layer shows no block structure by eye: the mixture finds the split "
           "whose blocks hold the strongest connections, and the masked fine-tuning makes the "
           "layer block diagonal (the EMG paper also pulls weights toward their blocks during "
           "training with an EM group penalty, `tgs.grouping.add_em_penalty`). `fc2` after the "
           "masked fine-tuning:"),
        code('tgs.plots.block_structure(mlp_masked, mlp_groups, layer="fc2")'),
        md("## 2. CNN conv32-conv64-pool-conv64-GAP-dense, K = 2 groups on conv2 and conv3"),
        code("""\
keras.utils.set_random_seed(0)
cnn = compile_(keras.Sequential([
    keras.Input((8, 8, 1)),
    L.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
    L.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
    L.MaxPooling2D(name="pool"),
    L.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
    L.GlobalAveragePooling2D(name="gap"),
    L.Dense(10, name="head")], name="cnn"), 3e-3)
cnn.fit(x, y, epochs=5, batch_size=64, verbose=0)

cnn_groups = tgs.fit_groups(cnn, 2, layers=["conv2", "conv3"], balanced=True, seed=0)
print(cnn_groups)
display(tgs.plots.block_structure(cnn, cnn_groups, layer="conv3"))"""),
        code("""\
cnn_masked = compile_(tgs.apply_mask(cnn, cnn_groups), 1e-3)
cnn_masked.fit(x, y, epochs=3, batch_size=64, verbose=0)
cnn_block = tgs.to_block_diagonal(cnn_masked, cnn_groups)
diff = np.max(np.abs(keras.ops.convert_to_numpy(cnn_block(xt)) - keras.ops.convert_to_numpy(cnn_masked(xt))))
print(f"max |block(x) - masked(x)| = {diff:.2e}")
assert diff < 1e-4
print({l.name: l.groups for l in cnn_block.layers if isinstance(l, L.Conv2D)})"""),
        md("## 3. Accuracy, size and TFLite latency, dense versus grouped\n"
           "`export` converts both the grouped model and its dense reference with the same "
           "settings and times each in LiteRT (XNNPack, one thread, median of 200 calls on one "
           "image). On models this small the times are microseconds and vary from run to run; "
           "the benchmark suite measures larger models."),
        code("""\
rows = []
for name, dense_model, block_model in [("MLP, K=4", mlp, mlp_block), ("CNN, K=2", cnn, cnn_block)]:
    report = tgs.export(block_model, os.path.join(OUT, name.split(",")[0].lower()), formats=("tflite",),
                        sample=xt[:64], reference=dense_model, overwrite=True, latency_runs=200)
    by_model = {row["model"]: row for row in report.rows}
    exported, reference = by_model["exported"], by_model["reference"]
    rows.append((name, accuracy(dense_model), accuracy(block_model), reference["params"], exported["params"],
                 reference["macs"], exported["macs"], reference["tflite_bytes"], exported["tflite_bytes"],
                 reference["latency_ms"] * 1e3, exported["latency_ms"] * 1e3, report.totals["speedup"]))
display(Markdown(
    "| model | acc. dense | acc. grouped | params dense | params grouped | MACs dense | MACs grouped "
    "| .tflite dense | .tflite grouped | latency dense (us) | latency grouped (us) | speed-up |\\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\\n"
    + "\\n".join("| {} | {:.4f} | {:.4f} | {:,} | {:,} | {:,} | {:,} | {:,} | {:,} | {:.1f} | {:.1f} | {:.2f}x |".format(*r)
                 for r in rows)))"""),
        md("The grouped layers keep $1/K$ of their weights; the accuracy change comes from "
           "the masked fine-tuning, not from the rewrite (outputs equal above)."),
        code("import shutil\nshutil.rmtree(OUT)  # the exported files were only for the measurement"),
    ]

@notebook("04_filter_pruning_and_planting.ipynb")
def _pruning_planting():
    return [
        md("""\
# Filter pruning, channel planting and structure learning

Three ways to reach a small network on the 8x8 digits:

1. **Filter pruning by loss increase** (`tgs.prune_filters`): train with a hierarchical group
   sparse (HGSR) penalty, visit the filters in ascending order of their group norm, and accept a
   filter $f$ when removing it together with the filters $R$ accepted so far keeps
   $L(\\text{model without } R \\cup \\{f\\}) - L(\\text{model}) \\le \\text{tolerance}$
   on randomly drawn training samples; the accepted filters are removed physically, then the model
   is fine-tuned. By default the filters are accepted by bisection (the longest prefix of that
   order that fits the tolerance, then per layer the largest number of next weakest filters that
   still fits: a few loss evaluations per layer); `search="greedy"` tries them one by one. Mitsuno & Kurita, *Filter Pruning using Hierarchical Group Sparse Regularization
   for Deep Convolutional Neural Networks*, ICPR 2020 (arXiv 2011.02389); the penalty is from
   Mitsuno, Miyao & Kurita, IJCNN 2020 (arXiv 2004.04394). The full text of the pruning paper is
   not public: this is the project's reading of its abstract.
2. **Channel planting** (`tgs.plant`): grow a small student by adding $k$ channels to one layer
   at a time, training only the new parameters with the distillation loss
   $\\alpha\\,\\mathrm{CE}(y, s) + (1-\\alpha)\\,T^2\\,\\mathrm{KL}(\\mathrm{softmax}(t/T)\\,\\Vert\\,\\mathrm{softmax}(s/T))$
   from a larger teacher, and keeping the layer with the best validation gain per added
   parameter. Mitsuno, Nomura & Kurita, *Channel Planting for Deep Neural Networks using Knowledge
   Distillation*, ICPR 2020 (arXiv 2011.02390).
3. **Structure learning by efficient coding** (`tgs.learn_structure`): unsupervised, layer by
   layer; each candidate layer reads all earlier layers through a group-sparse code (a source
   whose group ends at zero is not connected) and depth grows while the output entropy rises.
   The project's interpretation of Yuan, Pan, Zhou, Qin & Liu, *Learning Structures for Deep
   Neural Networks*, arXiv 2105.13905 (2021), whose full text is not public."""),
        code(SETUP),
        code("""\
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

def cnn(widths, name):
    layers = [keras.Input((8, 8, 1))]
    for i, w in enumerate(widths, 1):
        layers += [keras.layers.Conv2D(w, 3, padding="same", activation="relu", name=f"conv{i}"),
                   keras.layers.MaxPooling2D(name=f"pool{i}")]
    layers += [keras.layers.Flatten(name="flat"), keras.layers.Dense(10, name="logits")]
    return keras.Sequential(layers, name=name)

def train(model, epochs, lr=3e-3, data=(x, y)):
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    model.fit(*data, epochs=epochs, batch_size=64, verbose=0)
    return model

def accuracy(model, images=xt):
    return float(np.mean(np.argmax(keras.ops.convert_to_numpy(model(images)), axis=1) == yt))"""),
        md("## 1. HGSR training, then filter pruning\n"
           "The penalty is the squared group $\\ell_{1/2}$ mixed half and half with L1, "
           "$\\lambda\\,(\\tfrac12 \\sum_g (\\sum_{k\\in g} \\sqrt{\\lVert K_k\\rVert_1})^2 + \\tfrac12 \\sum |w|)$, "
           "on feature-wise groups of both conv layers (the HGSR reference mix; "
           "$\\lambda = 10^{-5}$ because the reference $10^{-3}$ collapses a 5k-parameter model)."),
        code("""\
keras.utils.set_random_seed(0)
hgsr = tgs.regularizers.HierarchicalGroupSparse.squared_group_l12(1e-5, l1_mix=0.5)
model = train(tgs.regularize(cnn((16, 32), "cnn"), hgsr, layers=["conv1", "conv2"]), epochs=15)
pruned, prune_report = tgs.prune_filters(model, (x, y), loss=LOSS, samples=512, tolerance=0.02,
                                         search="greedy", fine_tune={"epochs": 3}, verbose=0)
display(prune_report)
display(Markdown(
    "| model | params | MACs | test accuracy |\\n|---|---:|---:|---:|\\n"
    f"| HGSR-trained | {tgs.count_params(model):,} | {tgs.flops(model):,} | {accuracy(model):.4f} |\\n"
    f"| pruned + fine-tuned | {tgs.count_params(pruned):,} | {tgs.flops(pruned):,} | {accuracy(pruned):.4f} |"))"""),
        md("Kernels compute output channels in tiles (16 floats for a conv on this project's x86 CPU in "
           "LiteRT's XNNPack, `benchmarks/results/tile_widths.md`): a width just past a multiple costs a whole "
           "extra tile. `round_to` rounds every pruned layer's width to a multiple after the "
           "loss-based pass; `rounding=\"down\"` (the default) removes the next-weakest filters, `\"up\"` gives "
           "back the strongest removed ones, and the report's `loss_after` is the rounded model's loss. "
           "This CNN is too narrow for 16 (its 16-filter first layer can only stay whole), so the cell "
           "shows a multiple of 8. `rounding=\"blocks\"` searches in whole multiples instead: one loss "
           "evaluation per block of filters, and the tolerance bounds the loss again."),
        code("""\
tiled, tiled_report = tgs.prune_filters(model, (x, y), loss=LOSS, samples=512, tolerance=0.02, round_to=8,
                                        search="greedy", fine_tune={"epochs": 3}, verbose=0)
widths = lambda m: [m.get_layer(n).filters for n in ("conv1", "conv2")]
print(f"widths after pruning {widths(pruned)}, rounded down to multiples of 8 {widths(tiled)} "
      f"({tiled_report.totals['filters_rounded']} more filters removed); "
      f"test accuracy {accuracy(pruned):.4f} -> {accuracy(tiled):.4f}")
runs = [("filter by filter, rounded down", 0.02, tiled_report, tiled)]
for tolerance in (0.02, 0.6):  # the rounded-down model's loss rose by ~0.57
    blocks, blocks_report = tgs.prune_filters(model, (x, y), loss=LOSS, samples=512, tolerance=tolerance,
                                              round_to=8, rounding="blocks", fine_tune={"epochs": 3}, verbose=0)
    runs.append(("whole blocks of 8", tolerance, blocks_report, blocks))
for name, tolerance, r, m in runs:
    print(f"{name}, tolerance {tolerance}: widths {widths(m)}, {r.totals['evaluations']} loss evaluations, "
          f"loss increase {r.totals['loss_increase']:.4f}, test accuracy {accuracy(m):.4f}")"""),
        md("Pruning loses what the removed filters carried; a fine-tune on the labels relearns it from "
           "the data alone. `fine_tune={..., \"teacher\": model}` fine-tunes on the distillation loss "
           "against the unpruned model instead, $\\alpha\\,\\mathrm{CE}(y, s) + (1-\\alpha)\\,T^2\\,"
           "\\mathrm{KL}(\\mathrm{softmax}(t/T)\\,\\|\\,\\mathrm{softmax}(s/T))$ (Hinton, Vinyals & Dean, "
           "arXiv 1503.02531), with the model's own optimizer and metrics. `tgs.Distiller(student, "
           "teacher)` is the same loss as a Keras model for any student: `compile(optimizer)` and "
           "`fit(x, y)` train only the student. On data this small the two fine-tunes differ by a few "
           "test images, which says little either way; measurements on Fashion-MNIST over several "
           "seeds are in the README."),
        code("""\
keras.utils.set_random_seed(0)
distilled, _ = tgs.prune_filters(model, (x, y), loss=LOSS, samples=512, tolerance=0.02, round_to=8,
                                 fine_tune={"epochs": 3, "teacher": model, "temperature": 2.0}, verbose=0)
print(f"widths {widths(distilled)}; test accuracy after fine-tuning on the labels {accuracy(tiled):.4f}, "
      f"by distillation from the unpruned model {accuracy(distilled):.4f}")

# the same by hand, for any student and teacher: only the student's weights train
bare, _ = tgs.prune_filters(model, (x, y), loss=LOSS, samples=512, tolerance=0.02, round_to=8, verbose=0)
distiller = tgs.Distiller(bare, model, temperature=2.0, alpha=0.5)
distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
history = distiller.fit(x, y, epochs=3, batch_size=64, verbose=0)
print(f"Distiller: training accuracy {history.history['accuracy'][-1]:.4f}, test accuracy {accuracy(bare):.4f}")"""),
        md("## 2. Channel planting with a teacher\n"
           "A conv4-conv8 student grows by 4 channels per step; candidates are compared on the "
           "last 270 training images (a validation split, never the test set). For reference, "
           "the final architecture is also trained from scratch on labels."),
        code("""\
keras.utils.set_random_seed(0)
teacher = train(cnn((32, 64), "teacher"), epochs=10)
student = train(cnn((4, 8), "student"), epochs=10)
grown, plant_report = tgs.plant(student, teacher, (x[:-270], y[:-270]), validation_data=(x[-270:], y[-270:]),
                                channels_per_step=4, max_steps=2, epochs_per_step=3, learning_rate=1e-2,
                                verbose=0)
display(plant_report)
widths = (grown.get_layer("conv1").filters, grown.get_layer("conv2").filters)
keras.utils.set_random_seed(0)
scratch = train(cnn(widths, "scratch"), epochs=10)
display(Markdown(
    "| model | widths | params | test accuracy |\\n|---|---|---:|---:|\\n"
    f"| teacher | 32, 64 | {tgs.count_params(teacher):,} | {accuracy(teacher):.4f} |\\n"
    f"| student | 4, 8 | {tgs.count_params(student):,} | {accuracy(student):.4f} |\\n"
    f"| student after planting | {widths[0]}, {widths[1]} | {tgs.count_params(grown):,} | {accuracy(grown):.4f} |\\n"
    f"| same widths from scratch | {widths[0]}, {widths[1]} | {tgs.count_params(scratch):,} | {accuracy(scratch):.4f} |"))"""),
        md("Planting never changes a trained parameter: the new channels learn from the teacher "
           "while the student's original ones stay frozen. The search keeps the best candidate of "
           "each step even when its validation gain is negative (a documented behaviour of "
           "`plant`); `target_accuracy` and `param_budget` stop the growth earlier. Compare the "
           "planted student with the same widths trained from scratch before choosing planting "
           "for a problem this small."),
        md("## 3. Learning depth and connections without labels\n"
           "`learn_structure` decides the depth and which earlier layers each layer reads; "
           "`build_model` turns the result into a Keras functional model that is then trained "
           "with labels."),
        code("""\
flat, flat_test = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
structure = tgs.learn_structure(flat, max_depth=3, width=32, epochs=30, entropy_tol=0.0, verbose=0)
print(structure)
learned = train(tgs.build_model(structure, 10), epochs=15, data=(flat, y))
print(f"learned structure: {tgs.count_params(learned):,} params, test accuracy {accuracy(learned, flat_test):.4f}")"""),
    ]

@notebook("05_compare_with_tfmot.ipynb")
def _compare_with_tfmot():
    return [
        md("""\
# Comparison with the dense baseline and tensorflow-model-optimization

The benchmark suite (`benchmarks/run_all.py`) trains every method on the same architecture,
data, epochs, batch size and seed, and compares it with the dense baseline and with the peer,
tensorflow-model-optimization's `prune_low_magnitude` at 50/80/90% sparsity (a tf-keras model of
the same architecture, run in its own process), all exported to TFLite the same way. For every
row it records test accuracy, parameters, multiply-adds, `.tflite` bytes (float and int8),
one-thread LiteRT latency and its ratio to the dense baseline measured in the same run.

This notebook only **reads** the suite's JSON, so it needs neither tf-keras nor tfmot. To produce
or refresh the results:

```
make bench-quick     # digits, tiny models, a subset of methods (minutes)  -> benchmarks/results/suite_quick.json
make bench           # Fashion-MNIST + MNIST-1D, every method (hours on 2 cores) -> benchmarks/results/suite.json
```

Methods and their sources: L1112 (Ma & Niu, ICDMW 2018), CGES (Yoon & Hwang, ICML 2017),
HGSR (Mitsuno, Miyao & Kurita, IJCNN 2020), EM grouping (Yi & Choi, ICDMW 2018), filter pruning
(Mitsuno & Kurita, ICPR 2020), planting (Mitsuno, Nomura & Kurita, ICPR 2020); the peer is
magnitude pruning as implemented in tensorflow-model-optimization."""),
        code("""\
%matplotlib inline
import json
from pathlib import Path
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

# the repository root: the first folder upward from here that holds benchmarks/results
ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "benchmarks" / "results").is_dir()), None)
RESULTS = ROOT / "benchmarks" / "results" if ROOT else None

def load_suite():
    \"\"\"(source, payload): the full suite if present, else the quick one, else finished single jobs.\"\"\"
    if RESULTS is None:
        return None, None
    for name in ("suite.json", "suite_quick.json"):
        if (RESULTS / name).is_file():
            return name, json.loads((RESULTS / name).read_text())
    for jobs in ("suite_jobs", "suite_quick_jobs"):
        files = sorted((RESULTS / jobs).glob("*.json"))
        rows = [row for f in files for row in json.loads(f.read_text()).get("rows", [])]
        if rows:
            return f"{jobs}/ ({len(files)} finished jobs, not yet summarized)", {"rows": rows}
    return None, None

source, suite = load_suite()
if suite is None:
    display(Markdown("**No benchmark results found** under `benchmarks/results/`. "
                     "Run `make bench-quick` (minutes) or `make bench` (hours), then re-run this notebook."))
else:
    display(Markdown(f"Results from `benchmarks/results/{source}`"
                     + (f", made by `{suite['command']}` on {suite['date']}" if "command" in suite else "")
                     + ("; machine: " + ", ".join(f"{k} {v}" for k, v in suite["environment"].items())
                        if "environment" in suite else "")))"""),
        md("## The table\nRatios (x) are dense / row; speed-up is dense latency / row latency "
           "(float .tflite). Rows from unsummarized single jobs have no ratios and latencies that "
           "were not re-measured together, so compare them with care."),
        code("""\
COLUMNS = [("data", "data", "{}"), ("model", "model", "{}"), ("method", "method", "{}"),
           ("accuracy", "test acc.", "{:.4f}"), ("accuracy_int8", "int8 acc.", "{:.4f}"),
           ("params", "params", "{:,}"), ("nonzero_params", "nonzero", "{:,}"), ("params_x", "params x", "{:.2f}"),
           ("macs", "MACs", "{:,}"), ("tflite_float_bytes", "float bytes", "{:,}"),
           ("tflite_int8_bytes", "int8 bytes", "{:,}"), ("latency_float_s", "latency (us)", "{:.1f}"),
           ("speedup_float", "speed-up", "{:.2f}"), ("train_s", "train s", "{:.0f}")]

def cell(row, key, fmt):
    value = row.get(key)
    if value is None:
        return ""
    return fmt.format(value * 1e6 if key.startswith("latency") else value)

if suite is not None:
    rows = suite["rows"]
    used = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    display(Markdown("| " + " | ".join(h for _, h, _ in used) + " |\\n|" + "|".join("---" for _ in used) + "|\\n"
                     + "\\n".join("| " + " | ".join(cell(r, k, f) for k, _, f in used) + " |" for r in rows)))

def short(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {short(v)}" for k, v in value.items())
    return str(value)

for data, verdicts in (suite or {}).get("verdicts", {}).items():
    lines = []
    for verdict in (verdicts.values() if isinstance(verdicts, dict) else verdicts):
        if isinstance(verdict, dict):
            mark = "met" if verdict.get("met") else "NOT met"
            best = verdict.get("best")
            lines.append(f"- **{mark}**: {verdict.get('target', '')}" + (f" (best: {short(best)})" if best else ""))
        else:
            lines.append(f"- {verdict}")
    display(Markdown(f"**Headline targets ({data})**\\n\\n" + "\\n".join(lines)))"""),
        md("## Accuracy against size and latency\nEach panel is one (data, model) pair; tfmot rows "
           "are squares. The line is the Pareto front: no other row is both smaller (or faster) and "
           "more accurate."),
        code("""\
def pareto(points):
    front, best = [], -1.0
    for cost, acc in sorted(points):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front

if suite is not None:
    pairs = list(dict.fromkeys((r["data"], r["model"]) for r in rows))
    axes_spec = [("params", "parameters", 1.0), ("latency_float_s", "float .tflite latency (us)", 1e6)]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 3.6 * len(pairs)), squeeze=False)
    for (data, model), row_axes in zip(pairs, axes):
        subset = [r for r in rows if (r["data"], r["model"]) == (data, model) and r.get("accuracy") is not None]
        for ax, (key, label, scale) in zip(row_axes, axes_spec):
            points = [(r[key] * scale, r["accuracy"]) for r in subset if r.get(key)]
            for r in subset:
                if r.get(key):
                    peer = r["method"].startswith("tfmot")
                    ax.scatter(r[key] * scale, r["accuracy"], marker="s" if peer else "o",
                               color="tab:red" if peer else "tab:blue")
                    ax.annotate(r["method"], (r[key] * scale, r["accuracy"]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
            if points:
                fx, fy = zip(*pareto(points))
                ax.step(fx, fy, where="post", color="gray", alpha=0.6)
                if max(p[0] for p in points) > 20 * min(p[0] for p in points):
                    ax.set_xscale("log")
            ax.set_xlabel(label); ax.set_ylabel("test accuracy")
            ax.set_title(f"{data} / {model}", fontsize=9); ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.show()"""),
        md("For the full results with the settings of every method, see `benchmarks/results/suite.md` "
           "(or `suite_quick.md`) and the plots `suite*_params.png` / `suite*_latency.png` written "
           "next to it."),
    ]

@notebook("06_prune_mobilenetv2_to_half_the_macs.ipynb")
def _budget():
    return [
        md("""# Prune a MobileNetV2 to half its MACs

`tgs.prune(model, data, macs=0.5)` removes whole channel groups of the dependency graph (every
layer tied by a residual add, BatchNormalization or a depthwise convolution decides together),
ranked globally by an importance (the group view of Fang et al., "DepGraph: Towards Any Structural
Pruning", CVPR 2023), until the multiply-adds are half the original's; the result is
a smaller Keras model that fine-tunes, saves and exports like any other. Here a
`keras.applications.MobileNetV2` (width 0.5, trained from scratch) on the 8x8 digits bundled with
scikit-learn, enlarged to 32x32x3 so that the architecture fits: small data, so read the
accuracies as an illustration."""),
        code(SETUP),
        code("""\
def to_rgb32(images):
    \"\"\"8x8 grey digits -> 32x32x3: each pixel repeated 4 x 4, the grey value over R, G and B.\"\"\"
    big = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)
    return np.repeat(big, 3, axis=-1).astype("float32")

x32, xt32 = to_rgb32(x), to_rgb32(xt)
print(x32.shape, xt32.shape)"""),
        md("""keras.applications builds BatchNormalization with momentum 0.99: its moving statistics
need thousands of steps to settle, far more than this short training has, so the model is cloned
with momentum 0.9 (a config change, same architecture)."""),
        code("""\
base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.5, weights=None, classes=10,
                                      classifier_activation=None)

def with_momentum(layer):
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
        config["momentum"] = 0.9
    return layer.__class__.from_config(config)

model = keras.models.clone_model(base, clone_function=with_momentum)
model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
model.fit(x32, y, epochs=10, batch_size=64, verbose=0)
accuracy = model.evaluate(xt32, yt, verbose=0)[1]
print(f"MobileNetV2: {tgs.flops(model):,} MACs, {tgs.count_params(model):,} parameters, "
      f"test accuracy {accuracy:.3f}")"""),
        md("""Prune to half the MACs with the L2 group importance, and fine-tune for three epochs with the
model's own compile settings. The data also serves a guard: a model whose loss is at chance level
is refused (`allow_untrained=True` to override), since its channel ranking would be noise."""),
        code("""\
half, report = tgs.prune(model, (x32, y), macs=0.5, importance="l2",
                         fine_tune={"epochs": 3, "batch_size": 64}, verbose=0)
t = report.totals
print(f"MACs {t['macs_before']:,} -> {t['macs_after']:,} ({t['macs_fraction']:.3f} of the original), "
      f"parameters {t['params_before']:,} -> {t['params_after']:,}")
print(f"pruning took {t['prune_seconds']:.1f} s (fine-tuning {t['fine_tune_seconds']:.1f} s)")
print(f"test accuracy {accuracy:.3f} -> {half.evaluate(xt32, yt, verbose=0)[1]:.3f}")"""),
        md("Which layers lost channels: the report has one row per channel-creating layer."),
        code("""\
rows = [r for r in report.rows if r["channels_before"] > 1]
fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(range(len(rows)), [r["channels_before"] for r in rows], color="0.8", label="before")
ax.bar(range(len(rows)), [r["channels_after"] for r in rows], color="C0", label="after")
ax.set_xlabel("layer (input to output)"); ax.set_ylabel("output channels"); ax.legend()
plt.show()"""),
        md("""The pruned model is a plain Keras model: export it to LiteRT, where the outputs are checked
against Keras and the latency is measured against the original converted the same way."""),
        code("""\
import tempfile
export = tgs.export(half, tempfile.mkdtemp() + "/half", formats=("tflite",), reference=model, sample=xt32,
                    verbose=0)
print(f"LiteRT: {export.speedup:.2f}x lower latency than the original, top-1 agreement with Keras "
      f"{export.top1_agreement:.3f}")"""),
        md("""Other targets: `params=0.5`, or `latency=0.5` (a per-layer LiteRT table measured once; the
report then gives the measured ratio beside the target). `steps=5` prunes in five steps with
fine-tuning between them; `round_to=8` keeps widths at multiples of 8 (XNNPack tiles);
`importance="taylor"`, `"bn_scale"`, `"lamp"` or `"random"` rank the groups otherwise."""),
    ]


#@CELLS@


def build(name, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
                for kind, src in cells]
    return nb


def main(prefixes):
    for name, cells in CELLS.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        nb = build(name, cells)
        start = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
        for cell in nb.cells:
            cell.metadata.pop("execution", None)  # timestamps would churn every rerun
            if cell.cell_type == "code":  # TensorFlow's C++ start-up logs go to stderr: not kept
                cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print(f"{name}: executed in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
