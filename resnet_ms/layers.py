"""The convolution, BatchNorm and max-pool cells of the networks, with the CPU fast paths.

They are the standard cells (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d: the same
parameters, names and checkpoints); what changes is how they run, fixed when a
network is built:
  - `onednn`: through `mindspore.mint`'s conv2d, batch_norm and max_pool2d, whose
    ops MindSpore routes to resnet_ms's kernels (cpu_kernels.py);
  - `dense` (convolutions only): on 1x1/2x2 maps as one matrix product (smallmap.py);
  - otherwise MindSpore's own ops, as for export and on GPU/Ascend.
"""
from mindspore import mint, nn, ops

from .smallmap import as_matmul, tables_for


def same_padding(size, kernel, stride):
    """(before, after) padding of one axis under pad_mode='same' (the extra pixel goes after)."""
    out = -(-size // stride)
    total = (out - 1) * stride + kernel - size
    total = total if total > 0 else 0  # not max(): it fails to compile inside a bprop
    return total // 2, total - total // 2


def _append_zeros(x, rows, cols):
    """x with zero rows below and zero columns to the right. A concatenation, not a pad
    op: MindSpore 2.10 hung in the pad's gradient when a plugin convolution came before it."""
    n, c, h, w = x.shape
    if cols:
        x = ops.concat((x, ops.zeros((n, c, h, cols), x.dtype)), 3)
    if rows:
        x = ops.concat((x, ops.zeros((n, c, rows, w + cols), x.dtype)), 2)
    return x


def _padded(conv, x):
    """(input, symmetric padding) for mint's conv2d, which pads symmetrically: the extra
    pixel that 'same' puts after (at stride 2) is appended first."""
    if conv.pad_mode == "valid":
        return x, (0, 0)
    if conv.pad_mode == "pad":
        return x, (conv.padding, conv.padding)
    top, bottom = same_padding(x.shape[2], conv.kernel_size[0], conv.stride[0])
    left, right = same_padding(x.shape[3], conv.kernel_size[1], conv.stride[1])
    if bottom > top or right > left:
        x = _append_zeros(x, bottom - top, right - left)
    return x, (top, left)


class _WeightGradientOnly(nn.Cell):
    """mint's conv2d (no bias) whose gradient leaves out its input's.

    MindSpore's gradient of a convolution asks for the input's gradient too, even
    when the input is the images (it cannot see that nothing reads it): for
    ResNet-18's 7x7 stem at batch 128 that was 20 ms of a 360 ms step
    (benchmarks/RESULTS.md run 11). This bprop asks for the weight's only.
    """

    def __init__(self, conv):
        super().__init__()
        from mindspore.ops.auto_generate.gen_ops_prim import ConvolutionGrad  # only with resnet_ms's kernels
        # the geometry only: a reference to `conv` would make it a cell of its own child
        self.pad_mode, self.padding, self.kernel_size = conv.pad_mode, conv.padding, conv.kernel_size
        self.stride, self.dilation, self.group = conv.stride, conv.dilation, conv.group
        self.gradient = ConvolutionGrad()

    def construct(self, x, weight):
        x, padding = _padded(self, x)
        return mint.nn.functional.conv2d(x, weight, None, self.stride, padding, self.dilation, self.group)

    def bprop(self, x, weight, out, dout):
        padded, padding = _padded(self, x)
        _, dweight, _ = self.gradient(dout, padded, weight, None, self.stride, padding, self.dilation, False,
                                      (0, 0), self.group, (0, 1, 0))  # output_mask: dweight only
        return ops.zeros_like(x), dweight


class Conv2d(nn.Conv2d):
    def __init__(self, *args, dense=False, onednn=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.onednn = onednn
        self.weight_gradient_only = None  # set by skip_input_gradient: this convolution reads the images
        self.taps1, self.out1, self.taps2, self.out2 = tables_for(self) if dense and not onednn else (None, 0, None, 0)
        self.dense = self.taps1 is not None or self.taps2 is not None

    def construct(self, x):
        if self.onednn:  # shapes are static in graph mode: the padding is decided when compiling
            if self.weight_gradient_only is not None:
                return self.weight_gradient_only(x, self.weight)
            x, padding = _padded(self, x)
            return mint.nn.functional.conv2d(x, self.weight, self.bias, self.stride, padding,
                                             self.dilation, self.group)
        if self.dense:
            h, w = x.shape[2], x.shape[3]
            if h == 1 and w == 1 and self.taps1 is not None:
                return as_matmul(x, self.weight, self.taps1, self.out1)
            if h == 2 and w == 2 and self.taps2 is not None:
                return as_matmul(x, self.weight, self.taps2, self.out2)
        return super().construct(x)


def skip_input_gradient(net):
    """Let the network's first convolution (`conv1`, which reads the images) compute no
    input gradient: for a training step, which differentiates the weights only. Nothing
    changes where that convolution is not on resnet_ms's kernels."""
    conv = getattr(net, "conv1", None)
    if isinstance(conv, Conv2d) and conv.onednn and conv.bias is None and conv.weight_gradient_only is None:
        conv.weight_gradient_only = _WeightGradientOnly(conv)


class BatchNorm2d(nn.BatchNorm2d):
    def __init__(self, *args, onednn=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.onednn = onednn

    def construct(self, x):
        if self.onednn:
            # nn.BatchNorm2d keeps momentum as the op wants it (the batch's share);
            # use_batch_statistics=False (frozen layers) normalises with the running ones.
            training = self.training if self.use_batch_statistics is None else self.use_batch_statistics
            return mint.nn.functional.batch_norm(x, self.moving_mean, self.moving_variance, self.gamma,
                                                 self.beta, training, self.momentum, self.eps)
        return super().construct(x)


class MaxPool2d(nn.MaxPool2d):
    """A k x k max-pool of stride k without padding (SmallResNet's 2x2 pools)."""

    def __init__(self, kernel_size, onednn=False):
        super().__init__(kernel_size=kernel_size, stride=kernel_size)
        self.onednn = onednn
        self.size = kernel_size

    def construct(self, x):
        if self.onednn:  # MindSpore's own CPU gradient of this pool is slow (benchmarks/RESULTS.md run 7)
            return mint.nn.functional.max_pool2d(x, self.size, self.size)
        return super().construct(x)
