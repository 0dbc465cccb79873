"""Weight files of other projects, read and renamed to this project's names.

Pure readers: nothing here builds a network or touches the network
connection. Only names change, never numbers or layouts: convolution kernels
are OIHW and dense weights (out, in) in all three. What does differ is the
padding the weights were trained with, so each format also names the
convention the network must be built with (see models.PADDINGS).

    mindcv                    torchvision                      here
    bn1.gamma                 bn1.weight                       norm.gamma
    layer1.0.bn2.beta         layer1.0.bn2.bias                layer1.0.norm2.beta
    ...bnK.moving_mean        ...bnK.running_mean              ...normK.moving_mean
    ...bnK.moving_variance    ...bnK.running_var               ...normK.moving_variance
    layer2.0.down_sample.1.*  layer2.0.downsample.1.*          layer2.0.down_sample.1.*
    classifier.weight         fc.weight                        fc.weight
                              ...num_batches_tracked           (dropped: a counter)
"""
import os
import re

import numpy as np

from .checkpoint import read_checkpoint
from .errors import UserError, first_line
from .models import ARCHS, MODEL_NAMES

FORMATS = ("mindcv", "torchvision")
# The convention each source's weights were trained with.
PADDING = {"resnet_ms": "same", "mindcv": "symmetric", "torchvision": "pytorch"}

# Training state that MindSpore training loops can leave in a checkpoint next
# to the weights: not part of the network, so dropped (and counted) rather
# than refused.
_TRAINING_STATE = re.compile(r"^(moments|accum|adam_m|adam_v|optimizer)\.|^(global_step|learning_rate|momentum|"
                             r"scale_sense|current_iterator_step|last_overflow_iterator_step|"
                             r"epoch_num|step_num|beta1_power|beta2_power)$")

_MINDCV_RULES = [
    (re.compile(r"^bn1\.(gamma|beta|moving_mean|moving_variance)$"), r"norm.\1"),
    (re.compile(r"^(layer[1-4]\.\d+)\.bn([123])\.(gamma|beta|moving_mean|moving_variance)$"), r"\1.norm\2.\3"),
    (re.compile(r"^classifier\.(weight|bias)$"), r"fc.\1"),
]
_TORCH_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
# (batch-norm module pattern, its name here); its last group is the field
_TORCH_NORMS = [
    (re.compile(r"^bn1\.(\w+)$"), "norm"),
    (re.compile(r"^(layer[1-4]\.\d+)\.bn([123])\.(\w+)$"), r"\1.norm\2"),
    (re.compile(r"^(layer[1-4]\.\d+)\.downsample\.1\.(\w+)$"), r"\1.down_sample.1"),
]


def _rename(name, rules):
    for pattern, repl in rules:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return name


def from_mindcv(tensors):
    """mindcv names -> ours; (tensors, dropped training-state names)."""
    out, dropped = {}, []
    for name, value in tensors.items():
        if _TRAINING_STATE.match(name):
            dropped.append(name)
            continue
        out[_rename(name, _MINDCV_RULES)] = value
    return out, dropped


def from_torchvision(state_dict):
    """torchvision names -> ours; (tensors, dropped `num_batches_tracked` names)."""
    out, dropped = {}, []
    for name, value in state_dict.items():
        if name.endswith(".num_batches_tracked"):
            dropped.append(name)
            continue
        new = name.replace(".downsample.0.", ".down_sample.0.")
        for pattern, module in _TORCH_NORMS:
            m = pattern.match(name)
            if m:  # an unknown field keeps its name, and the strict load reports it
                field = m.group(m.lastindex)
                new = m.expand(module) + "." + _TORCH_BN.get(field, field)
                break
        out[new] = value
    return out, dropped


def read_torchvision(path):
    """{name: float32 array} from a torchvision state-dict file, without unpickling objects.

    torch.load(weights_only=True) only rebuilds tensors and plain containers;
    torch is imported here only, so it stays an optional dependency.
    """
    try:
        import torch
    except ImportError:
        raise UserError(f"{path}: reading .pth files needs PyTorch (pip install torch); "
                        "or convert the file where torch is installed") from None
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types here (UnpicklingError, RuntimeError, ...)
        raise UserError(f"{path}: not a loadable weights-only PyTorch file ({first_line(e, 120)})") from None
    if isinstance(obj, dict) and not any(torch.is_tensor(v) for v in obj.values()):
        # a training checkpoint that wraps the state dict
        obj = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), obj)
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict (name -> tensor), as torchvision's weight files are")
    return {k: v.detach().to(torch.float32).numpy() if v.is_floating_point() else v.numpy()
            for k, v in obj.items()}


def detect_format(tensors):
    """'mindcv' or 'resnet_ms' from the names of a MindSpore checkpoint."""
    if "classifier.weight" in tensors or "bn1.gamma" in tensors:
        return "mindcv"
    return "resnet_ms"


def infer_arch(tensors, source):
    """The model name whose block counts and block type the tensors have."""
    blocks = [len({m.group(1) for m in map(re.compile(rf"^layer{i}\.(\d+)\.conv1\.weight$").match, tensors) if m})
              for i in range(1, 5)]
    bottleneck = any(re.match(r"^layer1\.0\.conv3\.weight$", k) for k in tensors)
    for name, (block, counts) in ARCHS.items():
        if tuple(blocks) == counts and (block.expansion == 4) == bottleneck:
            return name
    raise UserError(f"{source}: blocks per stage {blocks} match none of {', '.join(MODEL_NAMES)}")


def as_parameters(tensors):
    """{name: float32 Parameter}, the form MindSpore's loader accepts."""
    import mindspore as ms
    return {k: ms.Parameter(ms.Tensor(np.asarray(v.asnumpy() if hasattr(v, "asnumpy") else v, np.float32)),
                            name=k) for k, v in tensors.items()}


def read_foreign(path, fmt):
    """(tensors in our names, dropped names) of a mindcv .ckpt or torchvision .pth file."""
    if fmt == "torchvision":
        return from_torchvision(read_torchvision(path))
    if fmt == "mindcv":
        tensors, _ = read_checkpoint(path)
        return from_mindcv({k: v.asnumpy() for k, v in tensors.items()})
    raise UserError(f"--from {fmt}: choose one of {', '.join(FORMATS)}")


