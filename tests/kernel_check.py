"""Run under RESNET_MS_KERNELS=onednn: one training step of a network built twice, on
resnet_ms's oneDNN kernels and on MindSpore's own, with the same weights; prints JSON
of the largest relative differences (loss, each gradient, running statistics).

    python tests/kernel_check.py block 16 64 8 1     (conv-BN-ReLU-conv-BN: batch, channels, size, stride)
    python tests/kernel_check.py resnet18 16 32 pytorch nopool
    python tests/kernel_check.py mixed resnet18 16 32 pytorch nopool
        (MindSpore's convolutions with our BatchNorm, against our convolutions with
        MindSpore's BatchNorm: each of our ops against MindSpore's inside a whole network)
"""
import json
import sys

import numpy as np

import resnet_ms  # noqa: F401  (first: loads the kernels before MindSpore)
import mindspore as ms
from mindspore import nn

from resnet_ms import cpu_kernels, models
from resnet_ms.layers import BatchNorm2d, Conv2d
from resnet_ms.runtime import native_layers


class Block(nn.Cell):
    def __init__(self, channels, stride, onednn):
        super().__init__()
        self.conv1 = Conv2d(channels, channels, 3, stride, pad_mode="same", has_bias=False, onednn=onednn)
        self.norm1 = BatchNorm2d(channels, onednn=onednn)
        self.conv2 = Conv2d(channels, 2 * channels, 1, 1, pad_mode="same", has_bias=False, onednn=onednn)
        self.norm2 = BatchNorm2d(2 * channels, onednn=onednn)
        self.fc = nn.Dense(2 * channels, 10)

    def construct(self, x):
        y = self.norm2(self.conv2(nn.ReLU()(self.norm1(self.conv1(x)))))
        return self.fc(y.mean(axis=(2, 3)))


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
    elif argv[0] == "block":
        batch, channels, size, stride = map(int, argv[1:5])
        ms.set_seed(3)
        native, fast = Block(channels, stride, False), Block(channels, stride, True)
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
    channels = int(argv[2]) if argv[0] == "block" else 3
    x = ms.Tensor(rng.standard_normal((batch, channels, size, size)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 10, batch).astype(np.int32))
    return native, fast, x, y


def step(net, x, y):
    net.set_train(True)
    loss_fn = nn.CrossEntropyLoss()

    def forward(a, b):
        return loss_fn(net(a), b)

    loss, grads = ms.jit(ms.value_and_grad(forward, None, net.trainable_params()))(x, y)
    stats = {p.name: p.asnumpy() for p in net.get_parameters() if "moving" in p.name}
    return float(loss.asnumpy()), [g.asnumpy() for g in grads], stats


def main(argv):
    ms.set_context(mode=ms.GRAPH_MODE)
    native, fast, x, y = networks(argv)
    loss_n, grads_n, stats_n = step(native, x, y)
    loss_f, grads_f, stats_f = step(fast, x, y)
    rel = lambda a, b: float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))  # noqa: E731
    names = [p.name for p in native.trainable_params()]
    grads = {n: rel(a, b) for n, a, b in zip(names, grads_n, grads_f)}
    print(json.dumps({"kernels": cpu_kernels.describe(), "onednn": bool(fast.conv1.onednn),
                      "loss": abs(loss_f - loss_n) / abs(loss_n), "grads": grads,
                      "stats": max(rel(stats_n[k], stats_f[k]) for k in stats_n)}))


if __name__ == "__main__":
    main(sys.argv[1:])
