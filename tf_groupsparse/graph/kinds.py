"""What the toolkit knows about each layer kind, in one registry entry per kind.

A :class:`LayerKind` holds, for one ``keras.layers.Layer`` class:

- ``handler``: how the layer maps, couples and stores channels in the dependency graph
  (:mod:`tf_groupsparse.graph.handlers`); None: no handler (the graph raises or freezes);
- ``kernels``: its kernel-like weights (:class:`KernelSlot`): which constructor argument takes a
  penalty or a constraint (``regularize``) and how the kernel is laid out (``sparsity_report``);
- ``cost``: multiply-adds per sample (:mod:`tf_groupsparse.graph.costs`, ``metrics.layer_costs``);
- ``grouping``: ``"dense"`` or ``"conv"`` when EM grouping (:mod:`tf_groupsparse.grouping`) can
  split its kernel into blocks;
- ``foldable``: whether a constant input channel folds exactly into its bias (``shrink``);
- ``weight_cost``: multiply-adds from the (kept) shapes of the layer's weights, for kinds whose
  cost is not proportional to their kernel entries (attention: the score and value products
  scale with heads and head dims alone); the budget pruner's cost model uses it.

Lookups follow the class's MRO field by field, so a subclass registered with only a handler keeps
its base class's cost and kernels. Register your own layer with :func:`register_layer_kind`
(``graph.register_handler`` and ``metrics.register_layer_cost`` are shortcuts for one field).
Besides layers, the registry knows the ``keras.ops`` calls that functional graphs contain
(elementwise arithmetic and activations, channel-preserving reshapes and transposes), and, by
class name, the layers that keras.applications defines privately (ConvNeXt's ``LayerScale``,
InceptionResNetV2's ``CustomScaleLayer``).

Examples:
    >>> import keras
    >>> from tf_groupsparse.graph import kinds, handlers
    >>> class Doubler(keras.layers.Layer):
    ...     def call(self, x):
    ...         return 2.0 * x
    >>> kinds.register_layer_kind(Doubler, handler=handlers.Identity(), cost=lambda layer, i, o: 0)
    >>> type(kinds.handler_for(Doubler())).__name__
    'Identity'
    >>> _ = kinds.REGISTRY.pop(Doubler)  # leave the global registry as it was
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import keras

from .. import layers as _own
from . import costs, handlers as H, handlers_attention as HA, handlers_grouped as HG, handlers_recurrent as HR
from . import hub as HH, transformer as T

__all__ = [
    "KernelSlot", "LayerKind", "REGISTRY", "register_layer_kind", "kind_for", "handler_for",
    "kernel_slots", "cost_for", "grouping_kind", "foldable", "channel_role", "register_handler",
    "iter_layers",
]


@dataclass(frozen=True)
class KernelSlot:
    """One kernel-like weight of a layer kind.

    Attributes:
        weight: attribute holding the variable (``"kernel"``, ``"depthwise_kernel"``, ...).
        regularizer_arg: constructor argument that takes its regularizer.
        constraint_arg: constructor argument that takes its constraint.
        layout: ``"standard"`` ``(*S, C_in, C_out)``; ``"transposed"`` ``(*S, C_out, C_in)``
            (Conv*Transpose); ``"depthwise"`` ``(*S, C, m)`` where output channel ``c * m + j``
            is the single kernel ``K_cj``.
        output: True for the slot whose output channels are the layer's (bias, BN follow it).
        regularizable: False where a regularizer's ``axis`` would name the wrong channels
            (transposed kernels), so ``regularize`` refuses it.

    Examples:
        >>> import keras
        >>> slot = kernel_slots(keras.layers.Conv2DTranspose(4, 3))[0]
        >>> slot.weight, slot.layout, slot.regularizable
        ('kernel', 'transposed', False)
        >>> KernelSlot("kernel", "kernel_regularizer", "kernel_constraint").layout
        'standard'
    """

    weight: str
    regularizer_arg: str
    constraint_arg: str
    layout: str = "standard"
    output: bool = True
    regularizable: bool = True


@dataclass(frozen=True)
class LayerKind:
    """Everything the toolkit knows about one layer class (None: not known, ask the base class).

    Examples:
        >>> import keras
        >>> layer = keras.layers.Dense(3)
        >>> kind = kind_for(layer)
        >>> type(kind.handler).__name__, kind.grouping, kind.foldable
        ('Dense', 'dense', True)
        >>> kind.cost(layer, (None, 4), (None, 3))      # multiply-adds per sample: 4 * 3
        12
    """

    handler: object = None
    kernels: tuple | None = None
    cost: object = None
    grouping: str | None = None
    foldable: object = None
    weight_cost: object = None


#: layer class -> LayerKind. Extend it with :func:`register_layer_kind`.
REGISTRY: dict = {}


def register_layer_kind(layer_class, **fields_):
    """Set fields of the registry entry of `layer_class` (other fields are kept).

    Args:
        layer_class: a subclass of ``keras.layers.Layer``.
        **fields_: any of ``handler`` (a :class:`~tf_groupsparse.graph.handlers.Handler`),
            ``kernels`` (tuple of :class:`KernelSlot`), ``cost`` (``(layer, input_shape,
            output_shape) -> MACs``), ``grouping`` ("dense" or "conv"), ``foldable`` (bool or
            ``layer -> bool``), ``weight_cost`` (``(layer, weight_shapes, input_shape,
            output_shape) -> MACs``).

    Raises:
        TypeError: `layer_class` is not a Layer subclass, a field name is unknown, or a handler
            has no ``trace`` method.

    Examples:
        >>> import keras
        >>> from tf_groupsparse import flops
        >>> from tf_groupsparse.graph import build_graph, handlers
        >>> class Gain(keras.layers.Layer):                # one multiply per value
        ...     def call(self, x):
        ...         return 3.0 * x
        >>> register_layer_kind(Gain, handler=handlers.Identity(),
        ...                     cost=lambda layer, i, o: o[-1])
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
        ...                       Gain(name="gain"), keras.layers.Dense(2, name="out")])
        >>> print(build_graph(m).group("h", 0))
        prune out channels of h [0] => in channels of gain [0], in channels of out [0]
        >>> flops(m)                                       # 4 * 3 + 3 + 3 * 2
        21
        >>> _ = REGISTRY.pop(Gain)                         # leave the global registry as it was
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.Operation)):
        raise TypeError(
            "register_layer_kind: Expected `layer_class` to be a subclass of keras.layers.Layer (or "
            f"keras.Operation). Received: layer_class={layer_class!r}"
        )
    known = {f.name for f in fields(LayerKind)}
    unknown = sorted(set(fields_) - known)
    if unknown:
        raise TypeError(
            f"register_layer_kind: Expected fields among {sorted(known)}. Received: {unknown}"
        )
    handler = fields_.get("handler")
    if handler is not None and not callable(getattr(handler, "trace", None)):
        raise TypeError(
            "register_layer_kind: Expected `handler` to be a Handler instance with a trace() method. "
            f"Received: handler={handler!r}"
        )
    REGISTRY[layer_class] = replace(REGISTRY.get(layer_class, LayerKind()), **fields_)


def register_handler(layer_class, handler):
    """Use `handler` in the dependency graph for every instance of `layer_class`.

    Examples:
        >>> import keras
        >>> from tf_groupsparse.graph import handlers, kinds, register_handler
        >>> class MyScale(keras.layers.Layer):
        ...     def call(self, x):
        ...         return 2.0 * x
        >>> register_handler(MyScale, handlers.Identity())
        >>> _ = kinds.REGISTRY.pop(MyScale)
    """
    if not callable(getattr(handler, "trace", None)):
        raise TypeError(
            "register_handler: Expected `handler` to be a Handler instance with a trace() method. "
            f"Received: handler={handler!r}"
        )
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(
            "register_handler: Expected `layer_class` to be a subclass of keras.layers.Layer. "
            f"Received: layer_class={layer_class!r}"
        )
    register_layer_kind(layer_class, handler=handler)


#: class name -> LayerKind, for layers whose classes are not public (keras.applications').
BY_NAME: dict = {}


def _field(layer, name):
    for cls in type(layer).__mro__:
        entry = REGISTRY.get(cls)
        if entry is not None and getattr(entry, name) is not None:
            return getattr(entry, name)
    entry = BY_NAME.get(type(layer).__name__)
    return getattr(entry, name) if entry is not None else None


def kind_for(layer):
    """The :class:`LayerKind` of `layer`, each field resolved along its class's MRO.

    Examples:
        >>> import keras
        >>> class MyDense(keras.layers.Dense):             # not registered itself
        ...     pass
        >>> kind = kind_for(MyDense(2))
        >>> type(kind.handler).__name__, kind.grouping, [s.weight for s in kind.kernels]
        ('Dense', 'dense', ['kernel'])
    """
    return LayerKind(**{f.name: _field(layer, f.name) for f in fields(LayerKind)})


def handler_for(layer):
    """The graph handler of `layer`, or None.

    Examples:
        >>> import keras
        >>> type(handler_for(keras.layers.BatchNormalization())).__name__
        'BatchNorm'
        >>> class Unknown(keras.layers.Layer):
        ...     pass
        >>> handler_for(Unknown()) is None       # build_graph raises, or freezes its channels
        True
    """
    return _field(layer, "handler")


def kernel_slots(layer):
    """The :class:`KernelSlot` tuple of `layer`, or ``()``.

    Examples:
        >>> import keras
        >>> [s.regularizer_arg for s in kernel_slots(keras.layers.SeparableConv2D(4, 3))]
        ['depthwise_regularizer', 'pointwise_regularizer']
    """
    return _field(layer, "kernels") or ()


def cost_for(layer):
    """The MAC function of `layer`, or None when its kind has no cost rule."""
    return _field(layer, "cost")


def weight_cost_for(layer):
    """``(layer, weight_shapes, input_shape, output_shape) -> MACs`` for kinds whose MACs are not
    proportional to their kernel entries (attention), else None: the budget pruner's cost model
    calls it with the kept shapes of the layer's weights."""
    return _field(layer, "weight_cost")


def grouping_kind(layer):
    """``"dense"`` or ``"conv"`` when EM grouping can split `layer`'s kernel, else None."""
    return _field(layer, "grouping")


def foldable(layer):
    """Whether a constant input channel of `layer` folds exactly into its bias."""
    rule = _field(layer, "foldable")
    return bool(rule(layer) if callable(rule) else rule)


def channel_role(layer):
    """How `layer` treats channels in a chain: "weight", "channelwise", "pass", "flatten" or None.

    "weight": a kernel that EM grouping splits; "channelwise": per-channel parameters on the
    last axis (BatchNormalization); "pass": every channel alike (activations, pooling, dropout);
    "flatten": Flatten. Read from the registry's grouping kind and graph handler.
    """
    if grouping_kind(layer) is not None:
        return "weight"
    handler = handler_for(layer)
    if isinstance(handler, H.BatchNorm):
        return "channelwise"
    if isinstance(handler, H.Flatten):
        return "flatten"
    if type(handler) in (H.Identity, H.Activation, H.Softmax) and not getattr(handler, "lossy", False):
        return "pass"
    return None


def iter_layers(model, prefix=""):
    """Yield ``(path, layer)`` for every layer, descending into nested models.

    ``path`` joins the names of enclosing models with ``/`` (``"backbone/conv1"``).

    Examples:
        >>> import keras
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="inner")
        >>> outer = keras.Sequential([keras.Input((3,)), inner])
        >>> [p for p, _ in iter_layers(outer)]
        ['inner/d']
    """
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer, path + "/")
        else:
            yield path, layer


# --------------------------------------------------------------------------- the default entries

_KERNEL = (KernelSlot("kernel", "kernel_regularizer", "kernel_constraint"),)
_DEPTHWISE = (KernelSlot("kernel", "depthwise_regularizer", "depthwise_constraint", "depthwise"),)
_SEPARABLE = (
    KernelSlot("depthwise_kernel", "depthwise_regularizer", "depthwise_constraint", "depthwise", output=False),
    KernelSlot("pointwise_kernel", "pointwise_regularizer", "pointwise_constraint"),
)
_TRANSPOSED = (KernelSlot("kernel", "kernel_regularizer", "kernel_constraint", "transposed", regularizable=False),)
_EMBEDDING = (KernelSlot("embeddings", "embeddings_regularizer", "embeddings_constraint"),)


def _conv_foldable(layer):
    """A groups=1 convolution whose window never covers zero padding."""
    return getattr(layer, "groups", 1) == 1 and (
        layer.padding == "valid" or all(k == 1 for k in layer.kernel_size))


def _einsum_foldable(layer):
    """An EinsumDense with a ``(C_in, C_out)`` kernel and a bias over the output channels alone
    is a Dense layer: a constant input channel folds into its bias."""
    out = layer.equation.replace(" ", "").split("->")[1]
    return len(layer.kernel.shape) == 2 and (getattr(layer, "bias_axes", None) or "") == out[-1]


def _public(*names):
    """The keras.layers classes among `names` that this Keras version has."""
    return [c for c in (getattr(keras.layers, n, None) for n in names) if c is not None]


_ENCODER = LayerKind(HH.TransformerEncoder(), cost=HH.composite_cost, weight_cost=HH.composite_cost_from_shapes)
_DECODER = LayerKind(HH.TransformerDecoder(), cost=HH.composite_cost, weight_cost=HH.composite_cost_from_shapes)
_STACK = LayerKind(HH.ViTEncoder(), cost=HH.composite_cost, weight_cost=HH.composite_cost_from_shapes)


def _defaults():
    """(classes, LayerKind) for every kind the toolkit knows out of the box."""
    identity = H.Identity()
    zero = costs.zero
    return [
        (_public("Dense"), LayerKind(H.Dense(), _KERNEL, costs.dense, "dense", True)),
        (_public("Conv1D", "Conv2D"), LayerKind(H.Conv(), _KERNEL, costs.conv, "conv", _conv_foldable)),
        (_public("Conv3D"), LayerKind(H.Conv(), _KERNEL, costs.conv, None, _conv_foldable)),
        (_public("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"),
         LayerKind(H.ConvTranspose(), _TRANSPOSED, costs.conv_transpose)),
        (_public("DepthwiseConv1D", "DepthwiseConv2D"), LayerKind(H.Depthwise(), _DEPTHWISE, costs.depthwise)),
        (_public("SeparableConv1D", "SeparableConv2D"), LayerKind(H.Separable(), _SEPARABLE, costs.separable)),
        (_public("Embedding"), LayerKind(H.Embedding(), _EMBEDDING, zero)),
        (_public("EinsumDense"), LayerKind(HA.EinsumDense(), cost=costs.einsum_dense, foldable=_einsum_foldable)),
        (_public("MultiHeadAttention"), LayerKind(HA.MultiHeadAttention(), cost=costs.multi_head_attention,
                                                   weight_cost=costs.attention_from_shapes)),
        (_public("GroupQueryAttention"), LayerKind(HA.GroupQueryAttention(), cost=costs.grouped_query_attention,
                                                    weight_cost=costs.grouped_attention_from_shapes)),
        (_public("SimpleRNN", "GRU", "LSTM"), LayerKind(HR.Recurrent(), cost=costs.rnn)),
        (_public("Bidirectional"), LayerKind(HR.Bidirectional(), cost=costs.bidirectional)),
        (_public("TimeDistributed"), LayerKind(HR.TimeDistributed(), cost=costs.time_distributed)),
        (_public("Attention", "AdditiveAttention"), LayerKind(HA.DotAttention(), cost=costs.dot_attention)),
        ([T.TransformerBlock], _ENCODER),
        ([T.TransformerDecoderBlock], _DECODER),
        ([T.TransformerStack], _STACK),
        ([T.PatchEmbedding], LayerKind(HH.ViTPatchingAndEmbedding(), cost=HH.patching_cost)),
        ([_own.BlockDiagonalDense], LayerKind(HG.BlockDiagonalDense(), cost=costs.block_diagonal_dense)),
        ([_own.ChannelGather], LayerKind(HG.ChannelGather(), cost=zero)),
        ([_own.ChannelSlice], LayerKind(HG.ChannelSlice(), cost=zero)),
        (_public("BatchNormalization"), LayerKind(H.BatchNorm(), cost=zero)),
        (_public("LayerNormalization"), LayerKind(H.LayerNorm(), cost=zero)),
        (_public("GroupNormalization"), LayerKind(H.GroupNorm(), cost=zero)),
        (_public("InputLayer"), LayerKind(cost=zero)),
        (_public("UnitNormalization"), LayerKind(H.Identity(lossy=True), cost=zero)),
        (_public("Normalization"), LayerKind(H.Normalization(), cost=zero)),
        (_public("Rescaling"), LayerKind(H.Rescaling(), cost=zero)),
        (_public("PReLU"), LayerKind(H.PReLU(), cost=zero)),
        (_public("Activation"), LayerKind(H.Activation(), cost=zero)),
        (_public("Softmax"), LayerKind(H.Softmax(), cost=zero)),
        (_public("Permute"), LayerKind(H.Permute(), cost=zero)),
        (_public("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"), LayerKind(H.Merge(), cost=zero)),
        (_public("Concatenate"), LayerKind(H.Concatenate(), cost=zero)),
        (_public("Flatten"), LayerKind(H.Flatten(), cost=zero)),
        (_public("Reshape"), LayerKind(H.Reshape(), cost=zero)),
        (_public(
            "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
            "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
            "ActivityRegularization", "Identity", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
            "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
            "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
            "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D",
            "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D",
            "UpSampling2D", "UpSampling3D", "RepeatVector",
        ), LayerKind(identity, cost=zero)),
        (_public(
            "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D",
            "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D",
        ), LayerKind(cost=zero)),
    ]


def _op_classes():
    """The classes of the keras.ops calls a functional graph may hold, read from symbolic calls
    (public API only): ``(elementwise binary, unary, shape, index)`` tuples of classes."""
    o = keras.ops
    x, y = keras.Input((2, 2, 3)), keras.Input((2, 2, 3))
    binary = [o.add(x, y), o.subtract(x, y), o.multiply(x, y), o.divide(x, y), o.true_divide(x, y),
              o.maximum(x, y), o.minimum(x, y)]
    unary = [o.relu(x), o.relu6(x), o.sigmoid(x), o.hard_sigmoid(x), o.hard_silu(x), o.silu(x), o.tanh(x),
             o.gelu(x), o.exp(x), o.abs(x), o.negative(x), o.square(x), o.sqrt(x), o.softplus(x), o.elu(x),
             o.leaky_relu(x), o.selu(x), o.softsign(x), o.clip(x, 0.0, 1.0), o.log(x), o.sign(x), o.log1p(x)]
    shape = [o.reshape(x, (-1, 4, 3)), o.transpose(x, (0, 2, 1, 3))]
    index = [x[:, 0]]

    def classes(inputs, outputs):
        return tuple(type(op) for op in keras.Model(inputs, outputs).operations
                     if not isinstance(op, keras.layers.InputLayer))

    return classes([x, y], binary), classes(x, unary), classes(x, shape), classes(x, index)


def _register_defaults():
    for classes, kind in _defaults():
        for cls in classes:
            REGISTRY[cls] = kind
    binary, unary, shape, index = _op_classes()
    for cls in binary:
        REGISTRY.setdefault(cls, LayerKind(H.Merge(), cost=costs.zero))
    for cls in unary:
        REGISTRY.setdefault(cls, LayerKind(H.Identity(), cost=costs.zero))
    for cls in shape:
        REGISTRY.setdefault(cls, LayerKind(H.ShapeOp(), cost=costs.zero))
    for cls in index:
        REGISTRY.setdefault(cls, LayerKind(H.GetItem(), cost=costs.zero))
    BY_NAME["LayerScale"] = LayerKind(H.ChannelScale(), cost=costs.zero)
    BY_NAME["CustomScaleLayer"] = LayerKind(H.Merge(), cost=costs.zero)
    # keras-hub layers, by name so that keras-hub is never imported here
    BY_NAME["TransformerEncoder"] = _ENCODER
    BY_NAME["TransformerDecoder"] = _DECODER
    BY_NAME["PositionEmbedding"] = LayerKind(HH.PositionEmbedding(), cost=costs.zero)
    BY_NAME["ViTEncoder"] = _STACK
    BY_NAME["ViTPatchingAndEmbedding"] = LayerKind(HH.ViTPatchingAndEmbedding(), cost=HH.patching_cost)


_register_defaults()
