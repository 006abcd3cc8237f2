"""Handlers for the toolkit's own grouped layers: BlockDiagonalDense (channels within their
blocks), ChannelGather and ChannelSlice (the channel maps that grouped rewrites insert).

See :mod:`tf_groupsparse.graph.handlers` for the handler interface.
"""

from __future__ import annotations

import keras
import numpy as np

from .handlers import Handler

__all__ = ["BlockDiagonalDense", "ChannelGather", "ChannelSlice"]


class BlockDiagonalDense(Handler):
    """tf_groupsparse's BlockDiagonalDense: input block k feeds only output block k. Each block's
    kernel rows read its input channels, its columns produce its output channels; removing
    channels can make the blocks unequal, and the rebuilt layer then uses the "split" form."""

    kind = "consumes"

    def trace(self, node, inputs, ctx):
        layer, x = node.layer, inputs[0]
        out = ctx.own(node, layer.units)
        r = c = 0
        for k, (a, b) in enumerate(zip(layer.input_groups, layer.output_groups)):
            if a and b:
                if layer.equal_blocks:
                    ctx.add_slice(node, layer.kernel, 0, x[r:r + a], "consume", index=(k,))
                    ctx.add_slice(node, layer.kernel, 1, out[c:c + b], "produce", index=(k,))
                else:
                    ctx.add_slice(node, layer.kernels[k], 0, x[r:r + a], "consume")
                    ctx.add_slice(node, layer.kernels[k], 1, out[c:c + b], "produce")
            r, c = r + a, c + b
        if layer.use_bias:
            ctx.add_slice(node, layer.bias, 0, out, "param")
        return [out]

    def _sizes(self, sizes, mask):
        edges = np.cumsum([0] + list(sizes))
        return [int(mask[lo:hi].sum()) for lo, hi in zip(edges, edges[1:])]

    def rebuild(self, layer, config, keep):
        config["input_groups"] = self._sizes(layer.input_groups, keep.inputs[0])
        config["output_groups"] = self._sizes(layer.output_groups, keep.owned)
        config["units"] = int(keep.owned.sum())
        equal = len(set(config["input_groups"])) == 1 and len(set(config["output_groups"])) == 1
        if not equal:
            config["implementation"] = "split"
        return config

    def rebuild_weights(self, layer, keep):
        ins = np.cumsum([0] + list(layer.input_groups))
        outs = np.cumsum([0] + list(layer.output_groups))
        blocks = [block[keep.inputs[0][ins[k]:ins[k + 1]]][:, keep.owned[outs[k]:outs[k + 1]]]
                  for k, block in enumerate(layer.block_kernels())]
        sizes = [b.shape for b in blocks]
        if len({s[0] for s in sizes}) == 1 and len({s[1] for s in sizes}) == 1:
            weights = [np.stack(blocks)]
        else:
            weights = [b for b in blocks if b.shape[0] and b.shape[1]]
        if layer.use_bias:
            weights.append(keras.ops.convert_to_numpy(layer.bias)[keep.owned])
        return weights


class ChannelGather(Handler):
    """tf_groupsparse's ChannelGather: output channel j is input channel ``indices[j]``."""

    kind = "tile"

    def trace(self, node, inputs, ctx):
        return [inputs[0][np.asarray(node.layer.indices, dtype=np.int64)]]

    def rebuild(self, layer, config, keep):
        position = np.cumsum(keep.inputs[0]) - 1
        config["indices"] = [int(position[i]) for i, kept in zip(layer.indices, keep.outputs[0]) if kept]
        return config


class ChannelSlice(Handler):
    """tf_groupsparse's ChannelSlice: output channels are input channels ``start:stop``."""

    kind = "tile"

    def trace(self, node, inputs, ctx):
        return [inputs[0][node.layer.start:node.layer.stop]]

    def rebuild(self, layer, config, keep):
        config["start"] = int(keep.inputs[0][:layer.start].sum())
        config["stop"] = config["start"] + int(keep.outputs[0].sum())
        return config
