"""Handlers for recurrent layers (SimpleRNN, GRU, LSTM), Bidirectional and TimeDistributed.

See :mod:`tf_groupsparse.graph.handlers` for the handler interface.
"""

from __future__ import annotations

import keras
import numpy as np

from .handlers import Handler, Unsupported

__all__ = ["Recurrent", "Bidirectional", "TimeDistributed"]


class Recurrent(Handler):
    """SimpleRNN / GRU / LSTM: unit ``u`` is column ``g * units + u`` of the kernel, the recurrent
    kernel and the bias for every gate ``g`` (1, 3 or 4 gates), and row ``u`` of the recurrent
    kernel, which reads the unit's own state; the output and state channels are the units.
    Initial states are the units' channels; masks are frozen."""

    kind = "consumes"
    GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}

    def _gates(self, layer):
        return next(g for name, g in self.GATES.items() if isinstance(layer, getattr(keras.layers, name)))

    def trace(self, node, inputs, ctx):
        layer = node.layer
        cell = layer.cell
        where = ctx.arguments
        seq = where.get(0, where.get("sequences", 0))
        out = ctx.own(node, int(layer.units))
        tiled = np.tile(out, self._gates(layer))
        ctx.add_slice(node, cell.kernel, 0, inputs[seq], "consume")
        ctx.add_slice(node, cell.kernel, 1, tiled, "produce")
        ctx.add_slice(node, cell.recurrent_kernel, 0, out, "consume")
        ctx.add_slice(node, cell.recurrent_kernel, 1, tiled, "produce")
        if cell.bias is not None:
            ctx.add_slice(node, cell.bias, len(cell.bias.shape) - 1, tiled, "param")
        for i, x in enumerate(inputs):
            if i == seq:
                continue
            if len(x) == len(out) and ctx.in_shapes[i][-1] == layer.units:  # an initial state
                ctx.couple(x, out)
            else:
                ctx.freeze(x)
        return [out for _ in ctx.out_shapes]

    def rebuild(self, layer, config, keep):
        config["units"] = int(keep.owned.sum())
        return config


class Bidirectional(Handler):
    """Bidirectional around SimpleRNN / GRU / LSTM: unit ``u`` of the forward and of the backward
    layer are one group (both directions are rebuilt from one config, so they keep the same
    units); the output is their concatenation, or with ``merge_mode`` sum/mul/ave the units
    themselves."""

    kind = "consumes"

    def trace(self, node, inputs, ctx):
        layer = node.layer
        if getattr(layer, "return_state", False):
            raise Unsupported("return_state=True")
        recurrent = Recurrent()
        out = ctx.own(node, 2 * int(layer.forward_layer.units))
        units = int(layer.forward_layer.units)
        fwd, bwd = out[:units], out[units:]
        ctx.couple(fwd, bwd)
        for part, ids in ((layer.forward_layer, fwd), (layer.backward_layer, bwd)):
            cell, tiled = part.cell, np.tile(ids, recurrent._gates(part))
            ctx.add_slice(node, cell.kernel, 0, inputs[0], "consume")
            ctx.add_slice(node, cell.kernel, 1, tiled, "produce")
            ctx.add_slice(node, cell.recurrent_kernel, 0, ids, "consume")
            ctx.add_slice(node, cell.recurrent_kernel, 1, tiled, "produce")
            if cell.bias is not None:
                ctx.add_slice(node, cell.bias, len(cell.bias.shape) - 1, tiled, "param")
        for x in inputs[1:]:
            ctx.freeze(x)
        if layer.merge_mode == "concat":
            return [out]
        if layer.merge_mode in ("sum", "mul", "ave"):
            return [fwd]
        raise Unsupported(f"merge_mode={layer.merge_mode!r}")

    def rebuild(self, layer, config, keep):
        units = int(keep.owned[:len(keep.owned) // 2].sum())
        for key in ("layer", "backward_layer"):
            if config.get(key):
                config[key]["config"]["units"] = units
                config[key].pop("build_config", None)  # built again at the new input width
        return config


class TimeDistributed(Handler):
    """TimeDistributed around a layer with a handler: the inner layer's channels, traced by its
    own handler (the wrapper holds exactly the inner layer's weights, in the same order)."""

    def _inner(self, layer):
        from .kinds import handler_for

        handler = handler_for(layer.layer)
        if handler is None or isinstance(handler, TimeDistributed):
            raise Unsupported(f"the wrapped layer {type(layer.layer).__name__} has no handler")
        return handler

    @property
    def kind(self):
        return "consumes"

    def trace(self, node, inputs, ctx):
        wrapper = node.layer
        handler = self._inner(wrapper)
        node.layer = wrapper.layer  # slices index the inner layer's weights: the wrapper's, in order
        try:
            return handler.trace(node, inputs, ctx)
        finally:
            node.layer = wrapper

    def rebuild(self, layer, config, keep):
        inner = config["layer"]
        inner["config"] = self._inner(layer).rebuild(layer.layer, dict(inner["config"]), keep)
        inner.pop("build_config", None)  # built again at the new input width
        return config
