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
from mindspore import ops

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


def tables_for(conv):
    """(taps for 1x1 input or None, its output size, taps for 2x2 or None, its output size)
    of an nn.Conv2d, where the dense form pays; all None where it never does."""
    none = (None, 0, None, 0)
    if conv.group != 1 or conv.has_bias or tuple(conv.dilation) != (1, 1):
        return none
    k, s = conv.kernel_size[0], conv.stride[0]
    if conv.kernel_size[1] != k or conv.stride[1] != s:
        return none
    pad = conv.padding if isinstance(conv.padding, int) else None
    if conv.pad_mode == "pad" and pad is None:
        return none  # asymmetric explicit padding: not needed by ResNet
    out = []
    for n in _SIZES:
        taps = tap_table(n, k, s, conv.pad_mode, pad or 0)
        out += [None, 0] if taps is None else [ms.Tensor(taps), output_size(n, k, s, conv.pad_mode, pad or 0)[0]]
    return tuple(out)


def as_matmul(x, weight, taps, out):
    """The convolution of x (N, C, n, n) by weight (O, C, k, k) as one product with the spread kernel."""
    o, c = weight.shape[0], weight.shape[1]
    t, q, p = taps.shape
    taps, weight = taps.astype(x.dtype), weight.astype(x.dtype)  # float16 under mixed precision
    w = weight.reshape(o, c, t).transpose(1, 0, 2).reshape(c * o, t)
    big = ops.matmul(w, taps.reshape(t, q * p))  # (c*o, q*p): the kernel spread over pixels
    big = big.reshape(c, o, q, p).transpose(0, 2, 1, 3).reshape(c * q, o * p)
    y = ops.matmul(x.reshape(x.shape[0], c * q), big)
    return y.reshape(x.shape[0], o, out, out)
