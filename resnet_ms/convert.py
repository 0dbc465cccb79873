"""Conversion of mindcv `.ckpt` and torchvision `.pth` weights into resnet_ms checkpoints.

The renaming is formats.py's; the network is built and every tensor loaded
strictly (weights.load_network) before anything is written, and the output is
a self-describing checkpoint (model, classes, padding, mean/std).
"""
import os

from .checkpoint import save_checkpoint
from .errors import UserError
from .formats import FORMATS, as_parameters, infer_arch, read_foreign
from .weights import WEIGHTS, Pretrained, describe_weights, guess_record, load_network, resolve


def convert(src, dest, fmt, model=None, record=None):
    """Write `src` (mindcv or torchvision weights) as a resnet_ms checkpoint at `dest`.

    `record` (a weights.Weights) supplies classes and preprocessing when the
    file came from one. Returns the CheckpointRecord written.
    """
    if fmt not in FORMATS:
        raise UserError(f"--from {fmt}: choose one of {', '.join(FORMATS)}")
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise UserError(f"{dest}: folder {folder} does not exist")
    tensors, dropped = read_foreign(src, fmt)
    tensors = as_parameters(tensors)
    arch = infer_arch(tensors, src)
    if model and model != arch:
        raise UserError(f"--model {model}: {src} holds {arch} weights")
    info = guess_record(tensors, arch, fmt, src)
    if record is not None:
        info = describe_weights(record).replace(num_classes=info.num_classes)
    info = info.replace(converted_from={"format": fmt, "file": os.path.basename(src)})
    net, _ = load_network(Pretrained(src, tensors, fmt, info, True), arch)
    save_checkpoint(dest, net, info)
    print(f"{src}: {len(tensors)} tensors as {arch} ({info.num_classes} classes, padding {info.padding})"
          + (f"; dropped {len(dropped)} non-weight entries" if dropped else "") + f" -> {dest}")
    return info


def convert_named(name_or_path, dest, fmt, model=None):
    """convert() for a file path or a weights record name (downloaded first)."""
    record = WEIGHTS.get(name_or_path)
    if record is None:
        return convert(name_or_path, dest, fmt, model)
    if record.format != fmt:
        raise UserError(f"{name_or_path}: a {record.format} record, not {fmt}")
    if model and model != record.arch:
        raise UserError(f"--model {model}: {name_or_path} holds {record.arch} weights")
    src, _ = resolve(record.arch, name_or_path)
    return convert(src, dest, fmt, model, record)
