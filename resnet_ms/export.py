"""Deployable files from a checkpoint: MINDIR (MindSpore Lite, serving) and ONNX.

The network is exported in eval mode with a fixed input shape (batch, 3, size,
size), size being the checkpoint's image size unless given. Next to the model a
small JSON file says how to feed it: class names, image size, mean/std (on
0-1 pixel values, RGB, NCHW). Both files are written under temporary names and
renamed into place, so a failed export leaves no half-written file.

The network is written so that MindSpore 2.10 can convert it to ONNX: the
residual add is `out + identity` (in-place `+=` does not convert), the head is
a mean over H and W (adaptive pooling does not convert), and torchvision's
padded max-pool is an explicit pad + valid max-pool (see models.max_pool).
"""
import os
import shutil
import tempfile

import numpy as np

from .errors import UserError
from .files import TMP_PREFIX, write_json
from .runtime import native_layers
from .weights import load_model

SUFFIX = {"MINDIR": ".mindir", "ONNX": ".onnx"}


def output_path(ckpt, output, fmt):
    """The file to write: `output`, given the format's suffix if it has none."""
    suffix = SUFFIX[fmt]
    if not output:
        return os.path.splitext(ckpt)[0] + suffix
    root, ext = os.path.splitext(output)
    if not ext:
        return output + suffix
    if ext.lower() != suffix:
        raise UserError(f"--output {output}: {fmt} files end in {suffix}")
    return output


def export_checkpoint(ckpt, fmt="MINDIR", output=None, image_size=0, batch_size=1, model=None, num_classes=0):
    """Write `ckpt` as a MINDIR or ONNX file (and its .json); returns the model file's path."""
    import mindspore as ms
    fmt = fmt.upper()
    if fmt not in SUFFIX:
        raise UserError(f"--format {fmt}: choose one of {', '.join(SUFFIX)}")
    if batch_size < 1:
        raise UserError(f"--batch_size {batch_size}: must be at least 1")
    dest = output_path(ckpt, output, fmt)
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise UserError(f"--output {dest}: folder {folder} does not exist")
    with native_layers():  # MINDIR and ONNX files hold MindSpore's standard ops
        net, record = load_model(ckpt, model, num_classes)
    size = image_size or record.image_size
    if size < 32:
        raise UserError(f"--image_size {size}: must be at least 32")
    sample = ms.Tensor(np.zeros((batch_size, 3, size, size), np.float32))
    info = {"format": fmt, "input_shape": [batch_size, 3, size, size], "model": record.model,
            "padding": record.padding, "mean": list(record.mean), "std": list(record.std),
            "class_names": list(record.class_names), "checkpoint": os.path.basename(ckpt)}
    # ms.export chooses the file name (it appends the suffix), so it writes
    # into a temporary folder and the finished file is renamed into place.
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=folder)
    try:
        ms.export(net, sample, file_name=os.path.join(tmp, "model"), file_format=fmt)
        os.replace(os.path.join(tmp, "model" + SUFFIX[fmt]), dest)
        write_json(dest + ".json", info)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {dest} ({fmt}, input {info['input_shape']}) and {dest}.json")
    return dest
