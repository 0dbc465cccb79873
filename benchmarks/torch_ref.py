"""PyTorch eager reference for bench.py: the same ResNets, the same step, timed.

bench.py runs this file in its own interpreter (`--torch_python`), so torch
and MindSpore never load into one process (two OpenMP runtimes and two
thread pools on the same cores would distort both numbers). It prints one
JSON line: {"version": ..., "threads": ..., "cases": [...]}.

The networks match resnet_ms.models layer for layer: same blocks, widths,
BatchNorm after every convolution, stride on the 3x3 of the bottleneck,
1x1 conv + BN shortcut when the shape changes, 7x7/2 stem + 3x3/2 max-pool,
global average pool, one linear layer. MindSpore's pad_mode='same' pads
asymmetrically where PyTorch pads symmetrically; the output shapes and the
arithmetic are the same, which is what a speed comparison needs.
"""
import argparse
import json
import os

import torch
from torch import nn

from timing import median_seconds  # benchmarks/ is on sys.path as the script's folder


def conv_bn(in_ch, out_ch, kernel, stride=1, padding=None):
    padding = kernel // 2 if padding is None else padding
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, padding=padding, bias=False), nn.BatchNorm2d(out_ch)]


class Basic(nn.Module):
    expansion = 1

    def __init__(self, in_ch, ch, stride, shortcut):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(in_ch, ch, 3, stride), nn.ReLU(inplace=True),
                                  *conv_bn(ch, ch, 3))
        self.shortcut = shortcut

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch, ch, stride, shortcut):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(in_ch, ch, 1), nn.ReLU(inplace=True),
                                  *conv_bn(ch, ch, 3, stride), nn.ReLU(inplace=True),
                                  *conv_bn(ch, ch * 4, 1))
        self.shortcut = shortcut

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


ARCHS = {"resnet18": (Basic, (2, 2, 2, 2)), "resnet34": (Basic, (3, 4, 6, 3)),
         "resnet50": (Bottleneck, (3, 4, 6, 3)), "resnet101": (Bottleneck, (3, 4, 23, 3)),
         "resnet152": (Bottleneck, (3, 8, 36, 3))}


# resnet_ms.models.SMALL_ARCHS: (stage widths, basic blocks per stage)
SMALL_ARCHS = {"resnet9": ((128, 256, 512), (1, 0, 1)), "resnet_hour": ((64, 128, 256), (1, 1, 1))}


class SmallResNet(nn.Module):
    """resnet_ms.models.SmallResNet: a 2x2 'valid' stem to 24 channels, then per stage a
    3x3 conv, 2x2 max-pool, BN, ReLU and basic blocks; global max-pool; classifier x 1/8."""

    def __init__(self, widths, blocks, num_classes):
        super().__init__()
        layers, ch = [*conv_bn(3, 24, 2, padding=0), nn.ReLU(inplace=True)], 24
        for width, n in zip(widths, blocks):
            layers += [nn.Conv2d(ch, width, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)] + [Basic(width, width, 1, nn.Identity()) for _ in range(n)]
            ch = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).amax(dim=(2, 3))) * 0.125


def resnet(name, num_classes):
    if name in SMALL_ARCHS:
        return SmallResNet(*SMALL_ARCHS[name], num_classes)
    block, counts = ARCHS[name]
    layers = [*conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    in_ch = 64
    for i, (width, n) in enumerate(zip((64, 128, 256, 512), counts)):
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            out_ch = width * block.expansion
            shortcut = (nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride))
                        if stride != 1 or in_ch != out_ch else nn.Identity())
            layers.append(block(in_ch, width, stride, shortcut))
            in_ch = out_ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)]
    return nn.Sequential(*layers)


def optimizer(net, lr=0.1, weight_decay=1e-4):
    # As resnet_ms.engine.build_optimizer: decay conv/linear weights, not BN or biases.
    decay = [p for p in net.parameters() if p.dim() > 1]
    rest = [p for p in net.parameters() if p.dim() <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": rest, "weight_decay": 0.0}], lr=lr, momentum=0.9)


def bench_train(name, batch, size, steps, warmup, num_classes=10):
    torch.manual_seed(0)
    net = resnet(name, num_classes).train()
    opt = optimizer(net)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch,))

    def step():  # what resnet_ms's step does: loss, backward, update, correct count
        opt.zero_grad(set_to_none=True)
        logits = net(x)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        (logits.argmax(1) == y).sum().item()
        return loss.item()  # .item() waits for the result, as .asnumpy() does in bench.py
    return batch / median_seconds(step, steps, warmup)


def bench_eval(name, batch, size, steps, warmup, num_classes=10):
    torch.manual_seed(0)
    net = resnet(name, num_classes).eval()
    x = torch.randn(batch, 3, size, size)

    def step():
        with torch.inference_mode():
            return net(x).numpy()
    return batch / median_seconds(step, steps, warmup)


def main(args):
    torch.set_num_threads(args.threads)
    cases = []
    for name in args.models:
        for batch in args.batches:
            cases.append({"kind": "torch_train", "model": name, "batch": batch,
                          "images_per_s": bench_train(name, batch, args.image_size, args.steps, args.warmup)})
        batch = max(args.batches)
        cases.append({"kind": "torch_eval", "model": name, "batch": batch,
                      "images_per_s": bench_eval(name, batch, args.image_size, args.steps, args.warmup)})
    print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(), "cases": cases}))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50"], choices=sorted(ARCHS) + sorted(SMALL_ARCHS))
    p.add_argument("--batches", nargs="+", type=int, default=[32, 64, 128])
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    main(p.parse_args())
