"""Convolutions on tiny maps as one matrix product (a CPU speed setting).

At 32 px with the ImageNet stem, ResNet's layer3 runs on 2x2 maps and layer4
on 1x1. oneDNN's gemm convolution is very slow there: on this project's 2-core
CPU a 512->512 3x3 convolution over a 64x512x1x1 batch took 198 ms forward +
backward, the same arithmetic as one matrix product 34 ms (benchmarks/RESULTS.md).

On an input of Q pixels giving P output pixels, a convolution is a linear map
from C*Q to O*P numbers. Its matrix is the kernel spread out by a constant
0/1 table `taps[t, q, p]` (1 where tap t links input pixel q to output pixel
p), so the weight stays the one `weight` parameter: same names, same
checkpoints, gradients flow through the spreading. The dense form is used only
where the matrix is mostly taps (at most `_MAX_WASTE` times the convolution's
own multiply-adds): a 3x3 on 2x2 or 1x1 maps, a 1x1 on 1x1 maps, a stride-2
3x3 from 2x2 to 1x1.
"""
import math

import numpy as np

import mindspore as ms
from mindspore import nn, ops

_MAX_WASTE = 2.0
_SIZES = (1, 2)  # square input sizes that get a precomputed table


def output_size(size, kernel, stride, pad_mode, padding):
    """Output size and leading pad of one spatial axis, as nn.Conv2d computes them."""
    if pad_mode == "same":
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return out, total // 2
    if pad_mode == "valid":
        return (size - kernel) // stride + 1, 0
    return (size + 2 * padding - kernel) // stride + 1, padding


def tap_table(size, kernel, stride, pad_mode, padding):
    """taps[t, q, p] for a size x size input, or None where the dense form wastes too much."""
    out, lead = output_size(size, kernel, stride, pad_mode, padding)
    if out < 1:
        return None
    taps = np.zeros((kernel * kernel, size * size, out * out), np.float32)
    for oy in range(out):
        for ox in range(out):
            for ky in range(kernel):
                for kx in range(kernel):
                    iy, ix = oy * stride - lead + ky, ox * stride - lead + kx
                    if 0 <= iy < size and 0 <= ix < size:
                        taps[ky * kernel + kx, iy * size + ix, oy * out + ox] = 1
    used = taps.sum()
    if used == 0 or taps.shape[1] * taps.shape[2] > _MAX_WASTE * used:
        return None
    return taps


class Conv2d(nn.Conv2d):
    """nn.Conv2d that runs as one matrix product on 1x1 and 2x2 inputs where that pays.

    The input size is static in graph mode, so the branch is decided when the
    graph compiles; other sizes run nn.Conv2d unchanged.
    """

    def __init__(self, *args, dense=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.dense = False
        self.taps1 = self.taps2 = None
        self.out1 = self.out2 = 0
        if not dense or self.group != 1 or self.has_bias or tuple(self.dilation) != (1, 1):
            return
        k, s = self.kernel_size[0], self.stride[0]
        if self.kernel_size[1] != k or self.stride[1] != s:
            return
        pad = self.padding if isinstance(self.padding, int) else None
        if self.pad_mode == "pad" and pad is None:
            return  # asymmetric explicit padding: not needed by ResNet
        tables = [tap_table(n, k, s, self.pad_mode, pad or 0) for n in _SIZES]
        if tables[0] is not None:
            self.taps1, self.out1 = ms.Tensor(tables[0]), output_size(1, k, s, self.pad_mode, pad or 0)[0]
        if tables[1] is not None:
            self.taps2, self.out2 = ms.Tensor(tables[1]), output_size(2, k, s, self.pad_mode, pad or 0)[0]
        self.dense = self.taps1 is not None or self.taps2 is not None

    def _as_matmul(self, x, taps, out):
        o, c = self.out_channels, self.in_channels
        t, q, p = taps.shape
        w = self.weight.reshape(o, c, t).transpose(1, 0, 2).reshape(c * o, t)
        big = ops.matmul(w, taps.reshape(t, q * p))  # (c*o, q*p): the kernel spread over pixels
        big = big.reshape(c, o, q, p).transpose(0, 2, 1, 3).reshape(c * q, o * p)
        y = ops.matmul(x.reshape(x.shape[0], c * q), big)
        return y.reshape(x.shape[0], o, out, out)

    def construct(self, x):
        if self.dense:
            h, w = x.shape[2], x.shape[3]
            if h == 1 and w == 1 and self.taps1 is not None:
                return self._as_matmul(x, self.taps1, self.out1)
            if h == 2 and w == 2 and self.taps2 is not None:
                return self._as_matmul(x, self.taps2, self.out2)
        return super().construct(x)
