"""Exact CPU speed-ups for facenet-pytorch's MTCNN (same boxes and probabilities, bit for bit).

`speed_up(mtcnn)` swaps each max-pooling layer of the P-, R- and O-nets for one that pools
a channels-last copy of its input. A maximum does not depend on the order it is taken in,
so the outputs are identical; torch's CPU kernel for channels-last pooling is vectorised
across channels and 3-5x faster than its NCHW one on these layers (P-net's first pool on a
1080p frame's largest pyramid level: 9.3 ms -> 3.7 ms). tests/test_mtcnn.py checks that
the boxes and probabilities equal stock facenet-pytorch's on real faces and video frames;
benchmarks/RESULTS.md has the measured effect on the extract stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ChannelsLastMaxPool(torch.nn.Module):
    """nn.MaxPool2d computed on a channels-last copy of an NCHW input, its output back in
    the input's memory format (the next convolution picks its kernel, and so its rounding,
    by that format: torch's CPU convolutions return channels-last output for some shapes,
    and stock pooling keeps it)."""

    def __init__(self, pool: torch.nn.MaxPool2d):
        super().__init__()
        self.args = (pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                     pool.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, p, d, ceil = self.args
        if x.dim() != 4 or x.is_contiguous(memory_format=torch.channels_last):
            return F.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
        y = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), k, s, p, d,
                         ceil_mode=ceil)
        return y.contiguous()


def speed_up(mtcnn) -> int:
    """Replace the max-pooling layers of mtcnn's three networks in place (CPU only: on a
    GPU cuDNN pools either layout); returns how many were replaced."""
    n = 0
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        for name, layer in list(net.named_children()):
            if type(layer) is torch.nn.MaxPool2d and not layer.return_indices:
                setattr(net, name, ChannelsLastMaxPool(layer))
                n += 1
    return n
