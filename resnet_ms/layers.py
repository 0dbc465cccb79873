"""The convolution, BatchNorm, max-pool and classifier cells of the networks, with the CPU fast paths.

They are the standard cells (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.Dense: the same
parameters, names and checkpoints); what changes is how they run, fixed when a
network is built:
  - `onednn`: through ops that MindSpore routes to resnet_ms's kernels (cpu_kernels.py):
    Convolution (its output_padding carrying 'same''s one pixel less before), mint's
    batch_norm and max_pool2d; the classifier as a 1x1 convolution;
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


def _padding(conv, x):
    """(padding, shortfall) of `conv` on `x`, in the form resnet_ms's Convolution kernel takes:
    `padding` after each axis, and by how much the padding before it is less. pad_mode='same'
    at stride 2 pads one pixel less before than after, which mint's conv2d (symmetric) cannot
    say; MindSpore infers the output shape from `padding` as if symmetric, the same shape."""
    if conv.pad_mode == "valid":
        return (0, 0), (0, 0)
    if conv.pad_mode == "pad":
        return (conv.padding, conv.padding), (0, 0)
    top, bottom = same_padding(x.shape[2], conv.kernel_size[0], conv.stride[0])
    left, right = same_padding(x.shape[3], conv.kernel_size[1], conv.stride[1])
    return (bottom, right), (bottom - top, right - left)


def _convolution():
    # resnet_ms's kernels only: MindSpore has no CPU kernel of its own for this op, so
    # without them a network fails to compile rather than pad symmetrically
    from mindspore.ops.auto_generate.gen_ops_prim import Convolution
    return Convolution()


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
        self.convolution, self.gradient = _convolution(), ConvolutionGrad()

    def construct(self, x, weight):
        padding, shortfall = _padding(self, x)
        return self.convolution(x, weight, None, self.stride, padding, self.dilation, False, shortfall, self.group)

    def bprop(self, x, weight, out, dout):
        padding, shortfall = _padding(self, x)
        _, dweight, _ = self.gradient(dout, x, weight, None, self.stride, padding, self.dilation, False,
                                      shortfall, self.group, (0, 1, 0))  # output_mask: dweight only
        return ops.zeros_like(x), dweight


class Conv2d(nn.Conv2d):
    def __init__(self, *args, dense=False, onednn=False, **kwargs):
        super().__init__(*args, **kwargs)
        # 'same' with an even kernel at stride 1 pads more after by one pixel, and a
        # symmetric `padding` would give one output pixel more: MindSpore's op, not _padding's
        self.onednn = onednn and not (self.pad_mode == "same" and any(
            s == 1 and k % 2 == 0 for s, k in zip(self.stride, self.kernel_size)))
        self.convolution = _convolution() if self.onednn else None
        self.weight_gradient_only = None  # set by skip_input_gradient: this convolution reads the images
        self.taps1, self.out1, self.taps2, self.out2 = tables_for(self) if dense and not self.onednn else (None, 0, None, 0)
        self.dense = self.taps1 is not None or self.taps2 is not None

    def construct(self, x):
        if self.onednn:  # shapes are static in graph mode: the padding is decided when compiling
            if self.weight_gradient_only is not None:
                return self.weight_gradient_only(x, self.weight)
            padding, shortfall = _padding(self, x)
            return self.convolution(x, self.weight, self.bias, self.stride, padding, self.dilation, False,
                                    shortfall, self.group)
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


class Dense(nn.Dense):
    """The classifier. On resnet_ms's kernels it runs as a 1x1 convolution of a 1x1 map,
    one matrix product on both cores each way: MindSpore's own CPU MatMul took 2.6-3.0 ms
    for each of its gradients at 128 x 256 -> 10, on one thread (benchmarks/RESULTS.md run 15)."""

    def __init__(self, in_channels, out_channels, onednn=False):
        super().__init__(in_channels, out_channels)
        self.onednn = onednn
        self.convolution = _convolution() if onednn else None

    def construct(self, x):
        if not self.onednn:
            return super().construct(x)
        n, c, o = x.shape[0], self.in_channels, self.out_channels
        y = self.convolution(x.reshape(n, c, 1, 1), self.weight.reshape(o, c, 1, 1), self.bias, (1, 1), (0, 0),
                             (1, 1), False, (0, 0), 1)
        return y.reshape(n, o)


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
    """A max-pool; `padding`: "valid", "same" (MindSpore's: the extra pixel after) or a
    number of pixels on every side (torchvision's; resnet_ms's kernels only). On the
    kernels because MindSpore's own CPU pool runs on one thread and its gradient is slow
    (benchmarks/RESULTS.md runs 7 and 15)."""

    def __init__(self, kernel_size, stride=None, padding="valid", onednn=False):
        stride = stride or kernel_size
        if not isinstance(padding, str) and not onednn:
            raise ValueError("a max-pool padded by a number of pixels runs on resnet_ms's kernels only")
        super().__init__(kernel_size=kernel_size, stride=stride, pad_mode="same" if padding == "same" else "valid")
        self.onednn, self.size, self.step, self.padding = onednn, kernel_size, stride, padding

    def construct(self, x):
        if not self.onednn:
            return super().construct(x)
        if self.padding == "valid":
            return mint.nn.functional.max_pool2d(x, self.size, self.step)
        if self.padding != "same":
            return mint.nn.functional.max_pool2d(x, self.size, self.step, self.padding)
        # 'same' pads one pixel less before than after at stride 2 (even sizes): the padding
        # before on both sides, and ceil mode's last window stands for the one after
        top, bottom = same_padding(x.shape[2], self.size, self.step)
        left, right = same_padding(x.shape[3], self.size, self.step)
        return mint.nn.functional.max_pool2d(x, self.size, self.step, (top, left),
                                             ceil_mode=bottom > top or right > left)
