"""Run under RESNET_MS_KERNELS=onednn: one training step of a network built twice, on
resnet_ms's oneDNN kernels and on MindSpore's own, with the same weights; prints JSON
of the largest relative differences (loss, each gradient, running statistics).

    python tests/kernel_check.py block 16 64 8 1 [3 same] [bias]
        (conv-conv-BN-ReLU-conv-BN: batch, channels, size, the middle conv's stride
        [and kernel and padding: same or pytorch] [bias: the middle conv has a bias and
        no BN after it, so that its bias gradient is not zero])
    python tests/kernel_check.py stage 16 64 128 8 2 2 pytorch
        (a 1x1 conv, then a ResNet stage: batch, in and out channels, size, stride, blocks, padding)
    python tests/kernel_check.py resnet18 16 32 pytorch nopool
    python tests/kernel_check.py mixed resnet18 16 32 pytorch nopool
        (MindSpore's convolutions with our BatchNorm, against our convolutions with
        MindSpore's BatchNorm: each of our ops against MindSpore's inside a whole network)
    python tests/kernel_check.py pool 16 64 31 2|stem [same|pytorch]
        (a 1x1 conv, then a k x k max-pool of stride k or the stem's 3x3 stride-2 one:
        batch, channels, size, k or stem and its padding; only the pool differs)
    python tests/kernel_check.py perturbed resnet18 16 32 pytorch nopool 1e-6
        (MindSpore's kernels on both sides, the second input scaled by 1 + 1e-6 * noise:
        how far a rounding-sized change moves the whole network's own gradients)
"""
import json
import sys

import numpy as np

import resnet_ms  # noqa: F401  (first: loads the kernels before MindSpore)
import mindspore as ms
from mindspore import nn, ops

from resnet_ms import cpu_kernels, models
from resnet_ms.layers import BatchNorm2d, Conv2d, MaxPool2d
from resnet_ms.runtime import native_layers


class Block(nn.Cell):
    def __init__(self, channels, stride, onednn, kernel=3, padding="same", bias=False):
        super().__init__()
        pad = {"pad_mode": "same"} if padding == "same" else {"pad_mode": "pad", "padding": kernel // 2}
        # conv0 first, so that the gradient also flows through conv1 to its input (dx)
        self.conv0 = Conv2d(channels, channels, 1, 1, pad_mode="same", has_bias=False, onednn=onednn)
        self.conv1 = Conv2d(channels, channels, kernel, stride, has_bias=bias, onednn=onednn, **pad)
        # a BN right after a biased conv would take the bias's gradient to zero
        self.norm1 = nn.Identity() if bias else BatchNorm2d(channels, onednn=onednn)
        self.conv2 = Conv2d(channels, 2 * channels, 1, 1, pad_mode="same", has_bias=False, onednn=onednn)
        self.norm2 = BatchNorm2d(2 * channels, onednn=onednn)
        self.fc = nn.Dense(2 * channels, 10)

    def construct(self, x):
        y = self.norm2(self.conv2(nn.ReLU()(self.norm1(self.conv1(self.conv0(x))))))
        return self.fc(y.mean(axis=(2, 3)))


class Stage(nn.Cell):
    """A 1x1 conv, then one ResNet stage (models.make_layer), then a classifier."""

    def __init__(self, in_ch, out_ch, stride, blocks, padding):
        super().__init__()
        self.conv0 = models.conv(in_ch, in_ch, 1, 1, padding)
        self.stage = models.make_layer(in_ch, models.ResidualBlockBase, out_ch, blocks, stride, padding=padding)
        self.fc = nn.Dense(out_ch, 10)

    def construct(self, x):
        return self.fc(self.stage(self.conv0(x)).mean(axis=(2, 3)))


class Pool(nn.Cell):
    """A 1x1 conv (MindSpore's on both sides), then a k x k max-pool of stride k, or the
    stem's 3x3 stride-2 one under a padding convention (`padding`), then a classifier."""

    def __init__(self, channels, k, onednn, padding=None):
        super().__init__()
        self.conv0 = Conv2d(channels, channels, 1, 1, pad_mode="same", has_bias=False)
        # named conv1: main() reads fast.conv1.onednn
        if padding is None:
            self.conv1 = MaxPool2d(k, onednn=onednn)
        elif onednn:
            self.conv1 = models.max_pool(padding)
        else:
            with native_layers():
                self.conv1 = models.max_pool(padding)
        # the stem's pool reads a ReLU's output: MindSpore's side of "pytorch" pads with zeros
        self.positive = padding is not None
        self.fc = nn.Dense(channels, 10)

    def construct(self, x):
        x = self.conv0(x)
        if self.positive:
            x = ops.exp(x)
        return self.fc(self.conv1(x).mean(axis=(2, 3)))


def _use(net, kind):
    """Only `kind` (Conv2d or BatchNorm2d) keeps our kernels; the other runs MindSpore's."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, (Conv2d, BatchNorm2d)) and not isinstance(cell, kind):
            cell.onednn = False


def networks(argv):
    if argv[0] == "mixed":
        batch, size, padding, stem = int(argv[2]), int(argv[3]), argv[4], argv[5]
        ms.set_seed(3)
        native = models.resnet(argv[1], 10, padding=padding, stem=stem)
        fast = models.resnet(argv[1], 10, padding=padding, stem=stem)
        _use(native, BatchNorm2d)
        _use(fast, Conv2d)
    elif argv[0] == "perturbed":
        batch, size, padding, stem = int(argv[2]), int(argv[3]), argv[4], argv[5]
        ms.set_seed(3)
        with native_layers():
            native = models.resnet(argv[1], 10, padding=padding, stem=stem)
            fast = models.resnet(argv[1], 10, padding=padding, stem=stem)
    elif argv[0] == "stage":
        batch, in_ch, out_ch, size, stride, blocks = map(int, argv[1:7])
        ms.set_seed(3)
        with native_layers():
            native = Stage(in_ch, out_ch, stride, blocks, argv[7])
        fast = Stage(in_ch, out_ch, stride, blocks, argv[7])
    elif argv[0] == "pool":
        batch, channels, size = map(int, argv[1:4])
        k, padding = (3, argv[5]) if argv[4] == "stem" else (int(argv[4]), None)
        ms.set_seed(3)
        native, fast = Pool(channels, k, False, padding), Pool(channels, k, True, padding)
    elif argv[0] == "block":
        batch, channels, size, stride = map(int, argv[1:5])
        bias = argv[-1] == "bias"
        shape = (int(argv[5]), argv[6]) if len(argv) > 6 + bias else (3, "same")  # conv1's kernel and padding
        ms.set_seed(3)
        native, fast = (Block(channels, stride, onednn, *shape, bias) for onednn in (False, True))
    else:
        batch, size, padding, stem = int(argv[1]), int(argv[2]), argv[3], argv[4]
        ms.set_seed(3)
        with native_layers():
            native = models.resnet(argv[0], 10, padding=padding, stem=stem)
        fast = models.resnet(argv[0], 10, padding=padding, stem=stem)
    rng = np.random.default_rng(0)
    for a, b in zip(native.get_parameters(), fast.get_parameters()):
        value = a.asnumpy()
        if a.name.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif a.name.endswith(("beta", "moving_mean")):
            value = rng.normal(0, 0.2, value.shape).astype(np.float32)
        a.set_data(ms.Tensor(value))
        b.set_data(ms.Tensor(value))
    rng = np.random.default_rng(1)
    channels = int(argv[2]) if argv[0] in ("block", "stage", "pool") else 3
    x = ms.Tensor(rng.standard_normal((batch, channels, size, size)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 10, batch).astype(np.int32))
    if argv[0] == "perturbed":
        noise = np.random.default_rng(2).standard_normal(x.shape)
        return native, fast, x, y, ms.Tensor((x.asnumpy() * (1 + float(argv[6]) * noise)).astype(np.float32))
    return native, fast, x, y, x


def step(net, x, y):
    net.set_train(True)
    loss_fn = nn.CrossEntropyLoss()

    def forward(a, b):
        return loss_fn(net(a), b)

    loss, grads = ms.jit(ms.value_and_grad(forward, None, net.trainable_params()))(x, y)
    stats = {p.name: p.asnumpy() for p in net.get_parameters() if "moving" in p.name}
    return float(loss.asnumpy()), [g.asnumpy() for g in grads], stats


def inference(net, x):
    """Evaluation-mode logits (BatchNorm on the running statistics the step updated)."""
    net.set_train(False)

    @ms.jit
    def forward(a):
        return net(a)

    return forward(x).asnumpy()


def main(argv):
    ms.set_context(mode=ms.GRAPH_MODE)
    native, fast, x, y, x_fast = networks(argv)
    loss_n, grads_n, stats_n = step(native, x, y)
    loss_f, grads_f, stats_f = step(fast, x_fast, y)
    logits_n, logits_f = inference(native, x), inference(fast, x_fast)
    rel = lambda a, b: float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))  # noqa: E731
    names = [p.name for p in native.trainable_params()]
    grads = {n: rel(a, b) for n, a, b in zip(names, grads_n, grads_f)}
    # whether the comparison ran as meant (perturbed compares MindSpore's kernels with themselves)
    meant = True if argv[0] == "perturbed" else (fast.conv0 if argv[0] == "stage" else fast.conv1).onednn
    print(json.dumps({"kernels": cpu_kernels.describe(), "onednn": bool(meant),
                      "loss": abs(loss_f - loss_n) / abs(loss_n), "grads": grads,
                      "eval": rel(logits_n, logits_f),
                      "stats": max((rel(stats_n[k], stats_f[k]) for k in stats_n), default=0.0)}))


if __name__ == "__main__":
    main(sys.argv[1:])
