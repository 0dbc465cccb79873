"""ResNet-18/34/50/101/152, and small-image ResNets for 32 px, as MindSpore cells.

Parameter names follow the MindSpore course ("ResNet-50 image classification"),
so that its checkpoint `resnet50_224_new.ckpt` loads tensor for tensor:
`conv1`, `norm`, `layerL.B.convK`, `layerL.B.normK`, `layerL.0.down_sample.{0,1}`,
`fc`. Two bugs of the course's code are not carried over: its basic block shared
one BatchNorm between both convolutions (and built conv2 with the input width,
so ResNet-18/34 crashed at layer2), and its `nn.AvgPool2d()` had a 1x1 kernel,
so the head only worked at 32 px. Here the head is a global average.

Padding is a property of the weights, not of the architecture: the course's
network pads with pad_mode='same' (at stride 2 on even sizes one pixel less on
the top/left than PyTorch), mindcv pads its convolutions symmetrically but keeps
a 'same' max-pool, and torchvision pads everything symmetrically. The same
weights under another convention give logits that are off by percents, so
`padding` selects the convention and never changes a parameter name.
"""
from mindspore import nn
from mindspore.common.initializer import HeNormal, Zero

from .layers import BatchNorm2d, Conv2d, Dense, MaxPool2d
from .runtime import onednn_layers, small_maps_as_matmul

# Convolutions: He-normal on fan-out, as in the ResNet paper's code; the course
# used Normal(0.02), which trains far slower from scratch.
_CONV_INIT = HeNormal(mode="fan_out", nonlinearity="relu")


# "same": the course's (and the default, so its weights give its numbers);
# "symmetric": mindcv's; "pytorch": torchvision's.
PADDINGS = ("same", "symmetric", "pytorch")


def conv(in_ch, out_ch, kernel, stride=1, padding="same"):
    if padding in ("same", "valid"):  # valid: no padding (SmallResNet's 2x2 stem)
        pad = {"pad_mode": padding}
    else:  # kernel // 2 on every side, as both mindcv and torchvision do
        pad = {"pad_mode": "pad", "padding": kernel // 2}
    # layers.Conv2d is nn.Conv2d (same parameter, same results) with the CPU
    # fast paths: resnet_ms's oneDNN kernels, or 1x1/2x2 maps as a matrix product.
    onednn = onednn_layers()
    return Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, has_bias=False, weight_init=_CONV_INIT,
                  dense=not onednn and small_maps_as_matmul(), onednn=onednn, **pad)


def max_pool(padding="same"):
    """The stem's 3x3 stride-2 max-pool under a padding convention."""
    onednn = onednn_layers()
    if padding != "pytorch":
        return MaxPool2d(3, 2, "same", onednn=onednn)  # course and mindcv
    if onednn:  # torchvision's MaxPool2d(3, 2, padding=1): one pixel of -inf on every side
        return MaxPool2d(3, 2, 1, onednn=True)
    # Elsewhere zeros: the same result here, since the input comes out of a ReLU
    # (>= 0) and every window holds a real pixel; MaxPool2d(pad_mode='pad') would
    # also do, but it does not export to ONNX in MindSpore 2.10 (no converter for
    # its MaxPool3DWithArgmax).
    return nn.SequentialCell([nn.Pad(((0, 0), (0, 0), (1, 1), (1, 1))),
                              nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="valid")])


def norm(channels, zero_gamma=False):
    # zero_gamma starts a residual branch as the identity (Goyal et al. 2017).
    return BatchNorm2d(channels, momentum=0.9, gamma_init=Zero() if zero_gamma else "ones",
                       onednn=onednn_layers())


class ResidualBlockBase(nn.Cell):
    """Basic block of ResNet-18/34: two 3x3 convolutions, each with its own BN."""
    expansion = 1

    def __init__(self, in_channel, out_channel, stride=1, down_sample=None,
                 zero_init_residual=False, padding="same"):
        super().__init__()
        self.conv1 = conv(in_channel, out_channel, 3, stride, padding)
        self.norm1 = norm(out_channel)
        self.conv2 = conv(out_channel, out_channel, 3, 1, padding)
        self.norm2 = norm(out_channel, zero_init_residual)
        self.relu = nn.ReLU()
        self.down_sample = down_sample

    def construct(self, x):
        identity = x if self.down_sample is None else self.down_sample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + identity)  # not `+=`: in-place add does not export


class Bottleneck(nn.Cell):
    """Bottleneck of ResNet-50/101/152: 1x1 reduce, 3x3 (carries the stride), 1x1 expand x4."""
    expansion = 4

    def __init__(self, in_channel, out_channel, stride=1, down_sample=None,
                 zero_init_residual=False, padding="same"):
        super().__init__()
        wide = out_channel * self.expansion
        self.conv1 = conv(in_channel, out_channel, 1, 1, padding)
        self.norm1 = norm(out_channel)
        self.conv2 = conv(out_channel, out_channel, 3, stride, padding)
        self.norm2 = norm(out_channel)
        self.conv3 = conv(out_channel, wide, 1, 1, padding)
        self.norm3 = norm(wide, zero_init_residual)
        self.relu = nn.ReLU()
        self.down_sample = down_sample

    def construct(self, x):
        identity = x if self.down_sample is None else self.down_sample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return self.relu(out + identity)


ResidualBlock = Bottleneck  # the course's name for the bottleneck block


def make_layer(last_out_channel, block, channel, block_nums, stride=1,
               zero_init_residual=False, padding="same"):
    """One stage: `block_nums` blocks, the first one changing stride/width.

    The shortcut gets a 1x1 conv + BN exactly when the shape changes.
    """
    out_channel = channel * block.expansion
    down_sample = None
    if stride != 1 or last_out_channel != out_channel:
        down_sample = nn.SequentialCell([conv(last_out_channel, out_channel, 1, stride, padding),
                                         norm(out_channel)])
    layers = [block(last_out_channel, channel, stride, down_sample, zero_init_residual, padding)]
    layers += [block(out_channel, channel, zero_init_residual=zero_init_residual, padding=padding)
               for _ in range(1, block_nums)]
    return nn.SequentialCell(layers)


STEMS = ("imagenet", "nopool", "cifar", "small")  # small: SmallResNet's own


class ResNet(nn.Cell):
    """ResNet with a global-average head; runs at any input size >= 32 px.

    stem (see STEMS) sets how far the input shrinks before layer1:
    "imagenet": 7x7 stride-2 conv + 3x3 stride-2 max-pool, /4 (the paper's, and
    the pretrained weights'); at 32 px layer1 sees 8x8 and layer4 1x1.
    "nopool": the same 7x7 stride-2 conv without the max-pool, /2: the same
    parameters (ImageNet weights load), 16x16 at layer1 and 2x2 at layer4 at
    32 px, for about twice the compute.
    "cifar": 3x3 stride-1 conv, no max-pool, /1: 4x4 at layer4, ~16x the compute.
    padding: one of PADDINGS, the convention the weights were trained with.
    """

    def __init__(self, block, layer_nums, num_classes=1000, stem="imagenet",
                 zero_init_residual=False, padding="same"):
        super().__init__()
        if stem not in STEMS[:3]:
            raise ValueError(f"stem must be one of {', '.join(STEMS[:3])}, not {stem!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, not {padding!r}")
        self.stem = stem
        self.padding = padding
        self.num_classes = num_classes
        if stem in ("imagenet", "nopool"):
            self.conv1 = conv(3, 64, 7, 2, padding)
            self.max_pool = max_pool(padding) if stem == "imagenet" else nn.Identity()
        else:
            self.conv1 = conv(3, 64, 3, 1, padding)
            self.max_pool = nn.Identity()
        self.norm = norm(64)
        self.relu = nn.ReLU()
        widths, channels = (64, 128, 256, 512), 64
        stages = []
        for i, (width, n) in enumerate(zip(widths, layer_nums)):
            stages.append(make_layer(channels, block, width, n, 1 if i == 0 else 2,
                                     zero_init_residual, padding))
            channels = width * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = channels
        self.fc = Dense(channels, num_classes, onednn=onednn_layers())

    def forward_features(self, x):
        """Stage outputs at strides 4, 8, 16, 32 (for detection/segmentation heads)."""
        x = self.max_pool(self.relu(self.norm(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5

    def construct(self, x):
        c5 = self.forward_features(x)[-1]
        return self.fc(c5.mean(axis=(2, 3)))  # global average pool, any input size


class SmallResNet(nn.Cell):
    """A ResNet for 32 px images that spends its compute at full resolution.

    The fast-training layout (Page's ResNet-9; Jordan's airbench): a 2x2 stem
    convolution (3 -> 24 = twice the 12 dimensions of a 2x2 RGB patch, so that
    patch whitening can fill it), then per stage a 3x3 convolution that widens,
    a 2x2 max-pool, BN, ReLU and `blocks` basic residual blocks (make_layer),
    and a global max-pool into the classifier. Sizes at 32 px: 31 -> 15 -> 7 -> 3.
    Names follow ResNet's (conv1/norm, layerK, fc) so --freeze works alike.
    """

    def __init__(self, widths, blocks, num_classes=10, stem="small", zero_init_residual=False,
                 padding="same"):
        super().__init__()
        if stem != "small":
            raise ValueError(f"stem: small-image ResNets have their own stem ('small'), not {stem!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, not {padding!r}")
        self.stem, self.padding, self.num_classes = stem, padding, num_classes
        self.conv1 = conv(3, STEM_WIDTH, 2, 1, "valid")
        self.norm = norm(STEM_WIDTH)
        self.relu = nn.ReLU()
        self.pool = MaxPool2d(2, onednn=onednn_layers())
        channels, stages = STEM_WIDTH, []
        for width, n in zip(widths, blocks):
            # no residual blocks: a plain conv-pool stage, which make_layer cannot express
            res = [make_layer(width, ResidualBlockBase, width, n, 1, zero_init_residual, padding)] if n else []
            stages.append(nn.SequentialCell([conv(channels, width, 3, 1, padding), self.pool, norm(width),
                                             nn.ReLU()] + res))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = channels
        self.fc = Dense(channels, num_classes, onednn=onednn_layers())

    def forward_features(self, x):
        x = self.relu(self.norm(self.conv1(x)))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        return c1, c2, self.layer3(c2)

    def construct(self, x):
        c3 = self.forward_features(x)[-1]
        # Global max-pool (Page measured it above the average here); its maxima of
        # ReLU outputs are large, and 1/8 keeps the first logits near a loss of ln(classes).
        return self.fc(c3.max(axis=(2, 3))) * 0.125


STEM_WIDTH = 24
ARCHS = {
    "resnet18": (ResidualBlockBase, (2, 2, 2, 2)),
    "resnet34": (ResidualBlockBase, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}
# Small-image ResNets: (stage widths, residual blocks per stage).
SMALL_ARCHS = {
    "resnet9": ((128, 256, 512), (1, 0, 1)),  # Page's ResNet-9 stages behind a 2x2 stem
    "resnet_hour": ((64, 128, 256), (1, 1, 1)),  # configs/cifar10_hour.yaml (chosen by measurement)
}
MODEL_NAMES = tuple(ARCHS) + tuple(SMALL_ARCHS)


def default_stem(name):
    """The stem a model is built with when none is asked for."""
    return "small" if name in SMALL_ARCHS else "imagenet"


def resnet(name, num_classes=1000, **kwargs):
    """The architecture `name` (one of MODEL_NAMES) with fresh weights.

    kwargs go to ResNet/SmallResNet (stem, padding, zero_init_residual). Networks
    with pretrained weights come from `resnet_ms.build_model` (weights.py),
    which builds with this and then loads.
    """
    if name in SMALL_ARCHS:
        return SmallResNet(*SMALL_ARCHS[name], num_classes, **kwargs)
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    block, layers = ARCHS[name]
    return ResNet(block, layers, num_classes, **kwargs)
