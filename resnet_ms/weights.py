"""Pretrained weights: records describing them, the cache, and the one way to a loaded network.

`--pretrained` takes `default` (the record for the model, if it has one), a
record name, an http(s) URL, a local `.ckpt` (this project's, the course's or
mindcv's), a local torchvision `.pth`, or `none`. Downloads are cached under
$RESNET_MS_CACHE (default: $XDG_CACHE_HOME/resnet_ms or ~/.cache/resnet_ms).

The weights decide the padding convention of the network that runs them
(models.PADDINGS): `open_weights` reads it from the record, the checkpoint's
record or the file's format, and `load_network` builds the network with it.
Everything that turns weights into a network (train.py's --pretrained and
--resume, eval.py, predict.py, visualize.py, export.py, convert.py and the
public `build_model`) goes through `load_network`.
"""
import os
from dataclasses import dataclass

from . import models
from .checkpoint import CheckpointRecord, load_weights, read_checkpoint
from .data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from .errors import UserError
from .fetch import fetch_file
from .files import cache_dir
from .formats import PADDING, as_parameters, detect_format, from_mindcv, from_torchvision, infer_arch, read_torchvision


@dataclass(frozen=True)
class Weights:
    name: str
    arch: str
    url: str
    checksum: str = None  # "sha256:..." when published; else the load checks every name and shape
    source: str = ""
    licence: str = ""
    format: str = "resnet_ms"  # names in the file: resnet_ms (also the course's), mindcv, torchvision
    padding: str = "same"  # the convention the weights were trained with
    num_classes: int = 1000
    class_names: tuple = None  # None: class indices (ImageNet-1k's order for 1000 classes)
    image_size: int = 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    top1: float = None  # accuracy on ImageNet-1k val as reported by the source, in %
    top5: float = None


_MINDCV = "https://download.mindspore.cn/toolkits/mindcv/resnet/"
# mindcv publishes no digests (the 8 hex digits in a file name are not documented
# as one), so these are checked by the strict load: every name and shape.
_MINDCV_LICENCE = "Apache-2.0 (mindcv); trained on ImageNet-1k, whose terms of access also apply"


def _mindcv(arch, file, top1, top5):
    return Weights(f"mindcv_{arch}", arch, _MINDCV + file, source="mindcv model zoo (ImageNet-1k)",
                   licence=_MINDCV_LICENCE, format="mindcv", padding="symmetric", top1=top1, top5=top5)


WEIGHTS = {w.name: w for w in [
    Weights("course_resnet50", "resnet50",
            "https://mindspore-website.obs.cn-north-4.myhuaweicloud.com/"
            "notebook/models/application/resnet50_224_new.ckpt",
            source="MindSpore course 'ResNet-50 image classification' (ImageNet-1k)",
            licence="not stated by the course; trained on ImageNet-1k, whose terms of access also apply"),
    _mindcv("resnet18", "resnet18-1e65cd21.ckpt", 70.21, 89.62),
    _mindcv("resnet34", "resnet34-f297d27e.ckpt", 74.15, 91.98),
    _mindcv("resnet50", "resnet50-e0733ab8.ckpt", 76.69, 93.50),
    _mindcv("resnet101", "resnet101-689c5e77.ckpt", 78.24, 94.09),
    _mindcv("resnet152", "resnet152-beb689d8.ckpt", 78.72, 94.45),
]}
# `--pretrained default`: the course's ResNet-50 (what its users fine-tune), and
# mindcv's ImageNet weights for the depths the course has none for.
DEFAULT_WEIGHTS = {"resnet18": "mindcv_resnet18", "resnet34": "mindcv_resnet34",
                   "resnet50": "course_resnet50", "resnet101": "mindcv_resnet101",
                   "resnet152": "mindcv_resnet152"}


def resolve(arch, spec):
    """(local path, Weights record or None) for a --pretrained value; None for `none`.

    `arch` may be None when the file says what it holds (a checkpoint to evaluate).
    """
    if spec in (None, "none"):
        return None, None
    if spec == "default":
        if arch not in DEFAULT_WEIGHTS:
            raise UserError(f"--pretrained default: {arch} has no default weights; "
                            "pass a .ckpt file, a URL, or none")
        spec = DEFAULT_WEIGHTS[arch]
    record = WEIGHTS.get(spec)
    if record is not None:
        if arch is not None and record.arch != arch:
            raise UserError(f"--pretrained {spec}: weights for {record.arch}, not {arch}")
        url, checksum = record.url, record.checksum
    elif spec.startswith(("http://", "https://")):
        url, checksum = spec, None
    else:
        if not os.path.isfile(spec):
            raise UserError(f"--pretrained {spec}: no such file, and not a URL or one of: "
                            f"{', '.join(WEIGHTS)}, default, none")
        return spec, None
    path = os.path.join(cache_dir(), os.path.basename(url.split("?")[0]))
    # Without a published checksum, a download must at least parse (and pass its CRC).
    verify = None if checksum else (read_torchvision if path.endswith(".pth") else read_checkpoint)
    return fetch_file(url, path, checksum, verify=verify), record


@dataclass
class Pretrained:
    """Weights read and renamed to this project's names, with what they need."""
    path: str
    tensors: dict
    format: str  # formats.FORMATS or "resnet_ms"
    record: CheckpointRecord  # the file's own, or one made from its Weights record / its tensors
    described: bool  # False: a plain file whose record is a guess (see guess_record)

    @property
    def padding(self):
        return self.record.padding


def _read(path, record, fmt):
    """(tensors in our names, format, the file's CheckpointRecord or None)."""
    if fmt == "torchvision" or (fmt is None and (path.endswith(".pth") or
                                                 (record is not None and record.format == "torchvision"))):
        return as_parameters(from_torchvision(read_torchvision(path))[0]), "torchvision", None
    tensors, own = read_checkpoint(path)
    fmt = fmt or (record.format if record is not None else detect_format(tensors))
    if fmt == "mindcv":
        return as_parameters(from_mindcv(tensors)[0]), fmt, None
    return tensors, fmt, own


def describe_weights(w):
    classes = tuple(w.class_names or (str(i) for i in range(w.num_classes)))
    return CheckpointRecord(w.arch, w.num_classes, classes, w.image_size, tuple(w.mean), tuple(w.std),
                            padding=w.padding, weights=w.name)


def guess_record(tensors, arch, fmt, source):
    """What a file without a record holds: the architecture from its tensor names,
    the stem from conv1's kernel, the classes from fc.bias. Foreign formats are
    ImageNet weights; a plain 10-class file is taken to be the course's CIFAR-10
    fine-tune at 32 px."""
    if "fc.bias" not in tensors:
        raise UserError(f"{source}: no fc.bias tensor; not a ResNet classifier checkpoint")
    n = int(tensors["fc.bias"].shape[0])
    conv1 = tensors.get("conv1.weight")
    kernel = tuple(conv1.shape)[-1] if conv1 is not None else 7
    stem = {3: "cifar", 2: "small"}.get(kernel, "imagenet")
    indices = tuple(str(i) for i in range(n))
    if fmt == "resnet_ms":
        return CheckpointRecord(arch, n, CIFAR10_CLASSES if n == 10 else indices, 32, CIFAR10_MEAN,
                                CIFAR10_STD, stem=stem, dataset="cifar10")
    return CheckpointRecord(arch, n, indices, 224, IMAGENET_MEAN, IMAGENET_STD, stem=stem,
                            padding=PADDING[fmt])


def open_weights(spec, arch=None, fmt=None):
    """A Pretrained for a --pretrained value (fetched if needed), or None for `none`.

    `fmt` forces the naming (convert.py's --from); else it is detected.
    """
    path, weights_record = resolve(arch, spec)
    if path is None:
        return None
    tensors, fmt, record = _read(path, weights_record, fmt)
    if record is not None:
        return Pretrained(path, tensors, fmt, record, True)
    if weights_record is not None:
        return Pretrained(path, tensors, fmt, describe_weights(weights_record), True)
    if arch is None and "fc.bias" in tensors:
        arch = infer_arch(tensors, path)
    return Pretrained(path, tensors, fmt, guess_record(tensors, arch, fmt, path), False)


def load_network(spec, model=None, num_classes=0, *, new_head=False, **build):
    """(network, Pretrained or None): `spec` (anything --pretrained takes, or an
    opened Pretrained) built to fit its weights and loaded strictly.

    model/num_classes default to the weights' own; `build` (stem, padding,
    zero_init_residual) to what the weights need. With `new_head`, weights for
    another class count load all but the classifier, which starts fresh.
    """
    pretrained = spec if isinstance(spec, Pretrained) else open_weights(spec, model)
    if pretrained is None:
        return models.resnet(model, num_classes or 1000, **build), None
    record = pretrained.record
    model = model or record.model
    if model is None:
        raise UserError(f"--ckpt {pretrained.path}: plain weights without metadata; pass --model "
                        f"({'|'.join(models.MODEL_NAMES)}) and --num_classes")
    build.setdefault("stem", record.stem)
    build.setdefault("padding", record.padding)
    if build["padding"] != record.padding:
        raise UserError(f"--pretrained {pretrained.path}: these weights need padding "
                        f"'{record.padding}', the network was built with '{build['padding']}'; "
                        f"leave padding out and the weights' own is used")
    net = models.resnet(model, num_classes or record.num_classes, **build)
    replaced = load_weights(net, pretrained.tensors, pretrained.path, replace_head=new_head)
    if new_head:
        loaded = sum(1 for _ in net.get_parameters()) - len(replaced)
        print(f"loaded {loaded} tensors from {pretrained.path} ({pretrained.format} names, "
              f"padding {record.padding})"
              + (f"; replaced {', '.join(replaced)} (new classifier for {net.num_classes} classes)"
                 if replaced else ""))
    return net, pretrained


def build_model(name, num_classes=1000, pretrained=None, **kwargs):
    """The public builder: `name` from MODEL_NAMES, with `pretrained` anything
    `--pretrained` takes (a classifier of another class count is replaced).

    The network gets the weights' padding convention; passing another one is an error.
    """
    if name not in models.MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(models.MODEL_NAMES)}")
    return load_network(pretrained, name, num_classes, new_head=True, **kwargs)[0]


def load_model(ckpt, model=None, num_classes=0):
    """(network in eval mode, CheckpointRecord) from a resnet_ms or course-format file.

    A resnet_ms checkpoint describes itself; a plain-weights file needs `model`.
    Foreign formats are converted first (convert.py), so that the file used
    for evaluation and deployment carries its classes and preprocessing.
    """
    if os.path.isdir(ckpt):
        raise UserError(f"--ckpt {ckpt}: a folder; pass a checkpoint file in it, e.g. {os.path.join(ckpt, 'best.ckpt')}")
    if ckpt.endswith((".pth", ".pt")):
        raise UserError(f"--ckpt {ckpt}: a PyTorch file; convert it first: "
                        f"python convert.py --from torchvision {ckpt} converted.ckpt")
    if not os.path.isfile(ckpt):
        raise UserError(f"{ckpt}: no such checkpoint file")
    pretrained = open_weights(ckpt, model)
    if pretrained.format == "mindcv":
        raise UserError(f"--ckpt {ckpt}: mindcv's names; convert it first: "
                        f"python convert.py --from mindcv {ckpt} converted.ckpt")
    if pretrained.format == "torchvision":
        raise UserError(f"--ckpt {ckpt}: a PyTorch file; convert it first: "
                        f"python convert.py --from torchvision {ckpt} converted.ckpt")
    if not pretrained.described and model is None:
        raise UserError(f"--ckpt {ckpt}: plain weights without metadata; pass --model "
                        f"({'|'.join(models.MODEL_NAMES)}) and --num_classes")
    net, _ = load_network(pretrained, model, num_classes)
    net.set_train(False)
    return net, pretrained.record.replace(model=model or pretrained.record.model,
                                          num_classes=net.num_classes)


def _builder(name):
    def build(num_classes=1000, pretrained=None, **kwargs):
        return build_model(name, num_classes, pretrained, **kwargs)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name}: build_model('{name}', ...)."
    return build


resnet18, resnet34, resnet50, resnet101, resnet152, resnet9, resnet_hour = map(_builder, models.MODEL_NAMES)
