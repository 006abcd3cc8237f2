"""The benchmark architectures, written once for Keras 3 and for tf_keras (the tfmot peer).

Every builder takes the Keras module to use (``keras`` or ``tf_keras``) and uses only the public
functional API both share, so the suite and the peer train the same architecture; this module does
not import Keras itself. A spec is a flat JSON-able dict: ``{"arch": "mlp" | "vgg" | "resnet" |
"cnn1d", "input_shape": [...], "classes": 10, "widths": [...]}``, optionally ``"batch_norm"``
(default True) and, for the VGG, ``"conv_widths"`` (one width per conv, e.g. a pruned net's).
"""

from __future__ import annotations


def mlp(K, spec):
    """Flatten, then Dense(w, relu) per width, then Dense(classes) logits."""
    inp = K.Input(tuple(spec["input_shape"]), name="input")
    x = K.layers.Flatten(name="flatten")(inp)
    for i, w in enumerate(spec["widths"], 1):
        x = K.layers.Dense(w, activation="relu", name=f"fc{i}")(x)
    return K.Model(inp, K.layers.Dense(spec["classes"], name="logits")(x), name="mlp")


def _conv_bn_relu(K, x, filters, kernel, name, conv, batch_norm=True, strides=1):
    """conv (no bias) - BN - ReLU, or conv (bias) - ReLU when `batch_norm` is False."""
    x = conv(filters, kernel, strides=strides, padding="same", use_bias=not batch_norm, name=f"{name}_conv")(x)
    if batch_norm:
        x = K.layers.BatchNormalization(name=f"{name}_bn")(x)
    return K.layers.ReLU(name=f"{name}_relu")(x)


def _head(K, inp, x, spec, name, pool="gap"):
    x = (K.layers.GlobalAveragePooling2D if pool == "gap" else K.layers.Flatten)(name=pool)(x)
    return K.Model(inp, K.layers.Dense(spec["classes"], name="logits")(x), name=name)


def vgg(K, spec):
    """Stages of two conv3x3-BN-ReLU then max-pool (skipped once the map is 2 pixels wide), one width
    per stage; global average pool; Dense logits."""
    inp = K.Input(tuple(spec["input_shape"]), name="input")
    x, size = inp, spec["input_shape"][0]
    conv_widths = spec.get("conv_widths") or [w for w in spec["widths"] for _ in (1, 2)]
    for s, pair in enumerate(zip(conv_widths[::2], conv_widths[1::2]), 1):
        for j, w in enumerate(pair, 1):
            x = _conv_bn_relu(K, x, w, 3, f"s{s}c{j}", K.layers.Conv2D, spec.get("batch_norm", True))
        if size >= 4:
            x = K.layers.MaxPooling2D(name=f"s{s}_pool")(x)
            size //= 2
    return _head(K, inp, x, spec, "vgg")


def resnet(K, spec):
    """A stem conv, then per width one basic block (two conv3x3, identity or strided 1x1 projection
    shortcut, Add, ReLU); global average pool; Dense logits."""
    inp = K.Input(tuple(spec["input_shape"]), name="input")
    x, channels = _conv_bn_relu(K, inp, spec["widths"][0], 3, "stem", K.layers.Conv2D), spec["widths"][0]
    for b, w in enumerate(spec["widths"], 1):
        stride = 1 if b == 1 else 2
        y = K.layers.Conv2D(w, 3, strides=stride, padding="same", use_bias=False, name=f"b{b}_conv1")(x)
        y = K.layers.BatchNormalization(name=f"b{b}_bn1")(y)
        y = K.layers.ReLU(name=f"b{b}_relu1")(y)
        y = K.layers.Conv2D(w, 3, padding="same", use_bias=False, name=f"b{b}_conv2")(y)
        y = K.layers.BatchNormalization(name=f"b{b}_bn2")(y)
        if stride != 1 or w != channels:
            x = K.layers.Conv2D(w, 1, strides=stride, use_bias=False, name=f"b{b}_proj")(x)
            x = K.layers.BatchNormalization(name=f"b{b}_proj_bn")(x)
        x = K.layers.Add(name=f"b{b}_add")([x, y])
        x, channels = K.layers.ReLU(name=f"b{b}_out")(x), w
    return _head(K, inp, x, spec, "resnet")


def cnn1d(K, spec):
    """MNIST-1D: conv(k=5)-BN-ReLU per width (stride 2 after the first), flatten, Dense logits."""
    inp = K.Input(tuple(spec["input_shape"]), name="input")
    x = inp
    for i, w in enumerate(spec["widths"], 1):
        x = _conv_bn_relu(K, x, w, 5, f"c{i}", K.layers.Conv1D, spec.get("batch_norm", True), 1 if i == 1 else 2)
    return _head(K, inp, x, spec, "cnn1d", pool="flatten")


#: arch name -> builder(K, spec)
BUILDERS = {"mlp": mlp, "vgg": vgg, "resnet": resnet, "cnn1d": cnn1d}


def spec(arch, widths, input_shape=(28, 28, 1), **options):
    """The spec of `arch` at `widths` for 10 classes; `options`: ``batch_norm``, ``conv_widths``."""
    return {"arch": arch, "input_shape": list(input_shape), "classes": 10, "widths": list(widths), **options}


def build(K, spec, seed=0):
    """Build `spec` with the Keras module `K`, seeding its initializers with `seed`."""
    K.utils.set_random_seed(seed)
    if spec.get("arch") not in BUILDERS:
        raise ValueError(f"build: Expected spec['arch'] in {sorted(BUILDERS)}. Received: arch={spec.get('arch')!r}")
    return BUILDERS[spec["arch"]](K, spec)
