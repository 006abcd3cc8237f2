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

mlp_groups = tgs.fit_groups(mlp, 4, layers=["fc1", "fc2"], balanced=True, random_state=0)
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

cnn_groups = tgs.fit_groups(cnn, 2, layers=["conv2", "conv3"], balanced=True, random_state=0)
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
