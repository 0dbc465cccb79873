"""Pretrained weights: records describing them, and strict loading.

`--pretrained` takes `default` (the record for the model, if it has one), a
record name, an http(s) URL, a local `.ckpt`, or `none`. Downloads are cached
under $RESNET_MS_CACHE (default: $XDG_CACHE_HOME/resnet_ms or ~/.cache/resnet_ms).
"""
import os
from dataclasses import dataclass

from .checkpoint import load_weights, read_checkpoint
from .data import IMAGENET_MEAN, IMAGENET_STD
from .errors import UserError
from .fetch import fetch_file


@dataclass(frozen=True)
class Weights:
    name: str
    arch: str
    url: str
    checksum: str = None  # "sha256:..." when published; else the load checks every name and shape
    num_classes: int = 1000
    image_size: int = 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    source: str = ""


WEIGHTS = {w.name: w for w in [
    Weights("course_resnet50", "resnet50",
            "https://mindspore-website.obs.cn-north-4.myhuaweicloud.com/"
            "notebook/models/application/resnet50_224_new.ckpt",
            source="MindSpore course 'ResNet-50 image classification' (ImageNet-1k)"),
]}
DEFAULT_WEIGHTS = {"resnet50": "course_resnet50"}


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
    return fetch_file(url, path, checksum, verify=None if checksum else read_checkpoint), record


def load_pretrained(net, arch, spec):
    """Load weights into `net` strictly; a classifier of another class count is replaced.

    Returns the Weights record (or None for a plain file).
    """
    path, record = resolve(arch, spec)
    if path is None:
        return None
    tensors, _ = read_checkpoint(path)
    replaced = load_weights(net, tensors, path, replace_head=True)
    loaded = sum(1 for _ in net.get_parameters()) - len(replaced)
    print(f"loaded {loaded} tensors from {path}"
          + (f"; replaced {', '.join(replaced)} (new classifier for {net.num_classes} classes)"
             if replaced else ""))
    return record
