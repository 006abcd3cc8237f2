"""Handlers for attention layers: MultiHeadAttention and GroupQueryAttention (heads and head
dims as inner units, see ``ctx.inner``), EinsumDense, and the dot-product attention layers.

See :mod:`tf_groupsparse.graph.handlers` for the handler interface.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from .handlers import Handler, Unsupported

__all__ = ["MultiHeadAttention", "GroupQueryAttention", "EinsumDense", "DotAttention", "take", "attention_inputs",
           "extra_outputs"]


def attention_inputs(ctx, inputs):
    """Indices of the query, key and value inputs of an attention call; masks are frozen."""
    where = ctx.arguments
    q = where.get(0, where.get("query"))
    v = where.get(1, where.get("value"))
    k = where.get(2, where.get("key", v))
    if q is None or v is None:
        raise Unsupported("the query and value inputs must be single tensors")
    for i, x in enumerate(inputs):
        if i not in (q, k, v):  # masks: their last axis is a sequence, not channels
            ctx.freeze(x)
    return q, k, v


def take(variable, *masks):
    """`variable` as NumPy with the entries of each axis kept where its mask (or None: all) says."""
    value = keras.ops.convert_to_numpy(variable)
    for axis, mask in enumerate(masks):
        if mask is not None:
            value = np.compress(mask, value, axis=axis)
    return value


def extra_outputs(ctx, outputs):
    """Frozen variables for outputs past the first (attention scores: not channels)."""
    for shape in ctx.out_shapes[1:]:
        outputs.append(ctx.new(int(shape[-1]), frozen=True))
    return outputs


class MultiHeadAttention(Handler):
    """keras.layers.MultiHeadAttention: removable heads, key dims and value dims, and the
    channels of the query, key and value inputs and of the output.

    Kernels: query ``(D_q, H, d_k)``, key ``(D_k, H, d_k)``, value ``(D_v, H, d_v)``, output
    ``(H, d_v, D_o)``. A head ``h`` is the slices ``[:, h, :]`` of the three input projections
    (and their biases) and ``[h]`` of the output projection; a key dim ``j`` is ``[:, :, j]`` of
    the query and key projections (removed from every head); a value dim is ``[:, :, j]`` of the
    value projection and ``[:, j, :]`` of the output projection. A key dim counts as read by the
    key projection (a zero key kernel there makes the scores' term constant over the keys, which
    softmax ignores) and as computed by the query projection. Mask inputs are not channels and
    are frozen. The rebuilt layer keeps the attention scale of the original (``1 / sqrt(d_k)``)
    by scaling the query projection by ``sqrt(d_k' / d_k)``, so removing zero key dims leaves the
    outputs unchanged.
    """

    kind = "attention"
    def trace(self, node, inputs, ctx):
        layer = node.layer
        q, k, v = attention_inputs(ctx, inputs)
        heads = ctx.inner(node, "heads", layer.num_heads)
        kd = ctx.inner(node, "key_dim", layer.key_dim)
        vd = ctx.inner(node, "value_dim", layer.value_dim)
        out = ctx.own(node, int(layer.output_dense.kernel.shape[-1]))
        node.meta["attention_inputs"] = (q, k, v)
        for dense, x, dims in ((layer.query_dense, inputs[q], kd), (layer.key_dense, inputs[k], kd),
                               (layer.value_dense, inputs[v], vd)):
            if len(dense.kernel.shape) != 3:
                raise Unsupported(f"projection kernel of shape {tuple(dense.kernel.shape)}")
            ctx.add_slice(node, dense.kernel, 0, x, "consume")
            ctx.add_slice(node, dense.kernel, 1, heads, "produce")
            # a key dim j adds q_j k_j to the scores: it is unused when the query computes 0 there
            # (kernel and bias zero) or when the key's is constant over positions (kernel zero)
            ctx.add_slice(node, dense.kernel, 2, dims, "consume" if dense is layer.key_dense else "produce")
            if dense.bias is not None:
                ctx.add_slice(node, dense.bias, 0, heads, "param")
                ctx.add_slice(node, dense.bias, 1, dims, "param")
        o = layer.output_dense
        ctx.add_slice(node, o.kernel, 0, heads, "consume")
        ctx.add_slice(node, o.kernel, 1, vd, "consume")
        ctx.add_slice(node, o.kernel, 2, out, "produce")
        if o.bias is not None:
            ctx.add_slice(node, o.bias, 0, out, "param")
        return extra_outputs(ctx, [out])

    def rebuild(self, layer, config, keep):
        config["num_heads"] = int(keep.internal["heads"].sum())
        config["key_dim"] = int(keep.internal["key_dim"].sum())
        config["value_dim"] = int(keep.internal["value_dim"].sum())
        config["output_shape"] = (int(keep.owned.sum()),)
        return config

    def rebuild_weights(self, layer, keep):
        q, k, v = keep.meta["attention_inputs"]
        heads, kd, vd = (keep.internal[key] for key in ("heads", "key_dim", "value_dim"))
        scale = math.sqrt(kd.sum() / len(kd))  # keeps 1/sqrt(d_k) of the original
        new = {}
        for dense, x, dims, factor in ((layer.query_dense, q, kd, scale), (layer.key_dense, k, kd, 1.0),
                                       (layer.value_dense, v, vd, 1.0)):
            new[id(dense.kernel)] = take(dense.kernel, keep.inputs[x], heads, dims) * factor
            if dense.bias is not None:
                new[id(dense.bias)] = take(dense.bias, heads, dims) * factor
        o = layer.output_dense
        new[id(o.kernel)] = take(o.kernel, heads, vd, keep.owned)
        if o.bias is not None:
            new[id(o.bias)] = take(o.bias, keep.owned)
        return [new[id(w)] for w in layer.weights]


class GroupQueryAttention(Handler):
    """keras.layers.GroupQueryAttention: removable key/value heads (each with the
    ``num_query_heads / num_key_value_heads`` query heads that share it, so the ratio stays) and
    head dims, and the channels of the query, key and value inputs.

    Kernels (EinsumDense): query and gate ``(D_q, H_q, d)``, key and value ``(D, H_kv, d)``,
    output ``(H_q, d, D_q)``; query head ``j r + i`` reads key/value head ``j``. A head dim ``j``
    is read by the key (scores) and the output projection (values): it is unused when both are
    zero there, or when the query, value and gate projections compute zero. The output has the
    query's width (the layer has no ``output_shape``), so its channels are the query's. The rebuilt
    layer keeps the attention scale ``1 / sqrt(d)`` by scaling the query projection.
    """

    kind = "attention"
    reads = "parallel"

    @staticmethod
    def _weights(layer):
        """``{(sublayer, "kernel"|"bias"): variable}`` read from the variables' paths."""
        return {tuple(w.path.split("/")[-2:]): w for w in layer.weights}

    def trace(self, node, inputs, ctx):
        layer = node.layer
        q, k, v = attention_inputs(ctx, inputs)
        w = self._weights(layer)
        r = layer.num_repeats
        kv = ctx.inner(node, "kv_heads", layer.num_key_value_heads)
        dims = ctx.inner(node, "head_dim", layer.head_dim)
        out = ctx.own(node, int(w[("attention_output", "kernel")].shape[-1]))
        ctx.couple(out, inputs[q])  # output width = query width
        node.meta["attention_inputs"] = (q, k, v)
        query_heads = np.repeat(kv, r)
        projections = [("query", inputs[q], query_heads, "produce"), ("key", inputs[k], kv, "consume"),
                       ("value", inputs[v], kv, "produce")]
        if layer.use_gate:
            projections.append(("gate", inputs[q], query_heads, "produce"))
        for name, x, heads, dim_role in projections:
            kernel, bias = w[(name, "kernel")], w.get((name, "bias"))
            ctx.add_slice(node, kernel, 0, x, "consume")
            ctx.add_slice(node, kernel, 1, heads, "produce")
            ctx.add_slice(node, kernel, 2, dims, dim_role)
            if bias is not None:
                ctx.add_slice(node, bias, 0, heads, "param")
                ctx.add_slice(node, bias, 1, dims, "param")
        o, ob = w[("attention_output", "kernel")], w.get(("attention_output", "bias"))
        ctx.add_slice(node, o, 0, query_heads, "consume")
        ctx.add_slice(node, o, 1, dims, "consume")
        ctx.add_slice(node, o, 2, out, "produce")
        if ob is not None:
            ctx.add_slice(node, ob, 0, out, "param")
        return extra_outputs(ctx, [out])

    def rebuild(self, layer, config, keep):
        kv = int(keep.internal["kv_heads"].sum())
        config["num_key_value_heads"] = kv
        config["num_query_heads"] = kv * layer.num_repeats
        config["head_dim"] = int(keep.internal["head_dim"].sum())
        return config

    def rebuild_weights(self, layer, keep):
        q, k, v = keep.meta["attention_inputs"]
        kv, dims = keep.internal["kv_heads"], keep.internal["head_dim"]
        query_heads = np.repeat(kv, layer.num_repeats)
        scale = math.sqrt(dims.sum() / len(dims))
        rows = {"query": (keep.inputs[q], query_heads, scale), "gate": (keep.inputs[q], query_heads, 1.0),
                "key": (keep.inputs[k], kv, 1.0), "value": (keep.inputs[v], kv, 1.0)}
        new = {}
        for (name, part), variable in self._weights(layer).items():
            if name == "attention_output":
                new[id(variable)] = (take(variable, query_heads, dims, keep.owned) if part == "kernel"
                                     else take(variable, keep.owned))
            else:
                x, heads, factor = rows[name]
                masks = (x, heads, dims) if part == "kernel" else (heads, dims)
                new[id(variable)] = take(variable, *masks) * factor
        return [new[id(w)] for w in layer.weights]


class EinsumDense(Handler):
    """keras.layers.EinsumDense whose equation contracts the input's last axis with the kernel
    and takes the output's last axis from the kernel, the forms Keras' own layers use
    (``"ab,bc->ac"``, ``"abc,cd->abd"``, ``"abc,cde->abde"``, ``"...b,bc->...c"``): input
    channels are a kernel axis read, output channels a kernel axis written; other kernel axes
    (heads) stay. Any other equation is unsupported, with the equation in the message."""

    kind = "consumes"

    @staticmethod
    def _spec(layer):
        equation = layer.equation.replace(" ", "")
        lhs, out = equation.split("->")
        inp, ker = lhs.split(",")
        if inp.endswith("...") or out.endswith("..."):
            raise Unsupported(f"equation {equation!r} elides the channel (last) axis")
        inp, out = inp.replace("...", ""), out.replace("...", "")
        c_in, c_out = inp[-1], out[-1]
        fits = (c_in in ker and c_in not in out and c_out in ker and c_out not in inp
                and all(ch in out for ch in inp if ch != c_in)
                and all(ch in out and ch not in inp for ch in ker if ch not in (c_in, c_out)))
        if not fits:
            raise Unsupported(
                f"equation {equation!r}: supported are equations that contract only the input's last "
                "axis with the kernel and take the output's last axis from the kernel"
            )
        return ker.index(c_in), ker.index(c_out), out, c_out

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        a_in, a_out, out_spec, c_out = self._spec(layer)
        out = ctx.own(node, int(layer.kernel.shape[a_out]))
        ctx.add_slice(node, layer.kernel, a_in, x, "consume")
        ctx.add_slice(node, layer.kernel, a_out, out, "produce")
        bias_axes = getattr(layer, "bias_axes", None) or ""
        if layer.bias is not None and c_out in bias_axes:
            first = min(out_spec.index(ch) for ch in bias_axes)
            ctx.add_slice(node, layer.bias, out_spec.index(c_out) - first, out, "param")
        return [out]

    def rebuild(self, layer, config, keep):
        shape = config["output_shape"]
        if isinstance(shape, int):
            config["output_shape"] = int(keep.owned.sum())
        else:
            config["output_shape"] = list(shape)[:-1] + [int(keep.owned.sum())]
        return config


class DotAttention(Handler):
    """keras.layers.Attention / AdditiveAttention called on ``[query, value(, key)]``: the output
    channels are the value's; query and key channels are coupled (their products or sums make
    the scores), and removing them changes the scores unless they are zero, so they are marked
    lossy. AdditiveAttention's per-channel ``scale`` is sliced with them."""

    kind = "identity"

    def trace(self, node, inputs, ctx):
        layer = node.layer
        start, count = ctx.argument_spans.get(0, ctx.argument_spans.get("inputs", (0, 0)))
        if count < 2:
            raise Unsupported("expected inputs=[query, value] or [query, value, key]")
        q, v = inputs[start], inputs[start + 1]
        k = inputs[start + 2] if count > 2 else v
        if len(q) != len(k):
            raise Unsupported(f"query and key have {len(q)} and {len(k)} channels")
        ctx.couple(q, k)
        ctx.mark_lossy(q)
        for i, x in enumerate(inputs):
            if not start <= i < start + count:  # masks
                ctx.freeze(x)
        scale = getattr(layer, "scale", None)
        if scale is not None and len(scale.shape) == 1:
            ctx.add_slice(node, scale, 0, q, "param")
        return extra_outputs(ctx, [v])
