"""Pretrained weights: records describing them, and strict loading.

`--pretrained` takes `default` (the record for the model, if it has one), a
record name, an http(s) URL, a local `.ckpt` (this project's, the course's or
mindcv's), a local torchvision `.pth`, or `none`. Downloads are cached under
$RESNET_MS_CACHE (default: $XDG_CACHE_HOME/resnet_ms or ~/.cache/resnet_ms).

The weights decide the padding convention of the network that runs them
(models.PADDINGS): `open_pretrained` reads it from the record, the checkpoint's
metadata or the file's format, and the network is built with it.
"""
import os
from dataclasses import dataclass, field

from .checkpoint import load_weights, read_checkpoint
from .convert import PADDING, as_parameters, detect_format, from_mindcv, from_torchvision, read_torchvision
from .data import IMAGENET_MEAN, IMAGENET_STD
from .errors import UserError
from .fetch import fetch_file


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


def cache_dir():
    if os.environ.get("RESNET_MS_CACHE"):
        return os.environ["RESNET_MS_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "resnet_ms")


def resolve(arch, spec):
    """(local path, Weights record or None) for a --pretrained value; None for `none`."""
    if spec in (None, "none"):
        return None, None
    if spec == "default":
        if arch not in DEFAULT_WEIGHTS:
            raise UserError(f"--pretrained default: {arch} has no default weights; "
                            "pass a .ckpt file, a URL, or none")
        spec = DEFAULT_WEIGHTS[arch]
    record = WEIGHTS.get(spec)
    if record is not None:
        if record.arch != arch:
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
    padding: str
    format: str
    record: Weights = None
    meta: dict = field(default_factory=dict)  # a resnet_ms checkpoint's own metadata


def open_pretrained(arch, spec):
    """A Pretrained for a --pretrained value (fetched if needed), or None for `none`."""
    path, record = resolve(arch, spec)
    if path is None:
        return None
    meta = {}
    if path.endswith(".pth") or (record is not None and record.format == "torchvision"):
        fmt = "torchvision"
        tensors, _ = from_torchvision(read_torchvision(path))
    else:
        tensors, meta = read_checkpoint(path)
        fmt = record.format if record is not None else detect_format(tensors)
        if fmt == "mindcv":
            tensors, _ = from_mindcv(tensors)
    padding = record.padding if record is not None else meta.get("padding", PADDING[fmt])
    return Pretrained(path, as_parameters(tensors), padding, fmt, record, meta)


def load_into(net, pretrained):
    """Load `pretrained` into `net` strictly; a classifier of another class count is replaced.

    Returns the Weights record (or None for a plain file, or no weights).
    """
    if pretrained is None:
        return None
    if net.padding != pretrained.padding:
        raise UserError(f"--pretrained {pretrained.path}: these weights need padding "
                        f"'{pretrained.padding}', the network was built with '{net.padding}'; "
                        f"build it with padding='{pretrained.padding}' (build_model does so itself)")
    replaced = load_weights(net, pretrained.tensors, pretrained.path, replace_head=True)
    loaded = sum(1 for _ in net.get_parameters()) - len(replaced)
    print(f"loaded {loaded} tensors from {pretrained.path} ({pretrained.format} names, "
          f"padding {pretrained.padding})"
          + (f"; replaced {', '.join(replaced)} (new classifier for {net.num_classes} classes)"
             if replaced else ""))
    return pretrained.record


def load_pretrained(net, arch, spec):
    """open_pretrained + load_into, for a network already built with the right padding."""
    return load_into(net, open_pretrained(arch, spec))
