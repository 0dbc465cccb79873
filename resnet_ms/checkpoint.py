"""Checkpoint files: atomic writes, CRC, metadata, strict loading.

A checkpoint holds the network's parameters, optionally the optimizer state
(under `optimizer/`), and a JSON metadata string (model name, classes, image
size, mean/std, epoch, best score, ...) so that eval and visualize need only
the file. Plain-weight checkpoints (the course's) load too.
"""
import json
import os
import tempfile

from .errors import UserError

META_KEY = "resnet_ms_meta"
OPT_PREFIX = "optimizer/"


def save_checkpoint(path, net, meta, optimizer=None):
    """Write `path` so that it is either the old file or the complete new one.

    mindspore.save_checkpoint removes an existing file before renaming its
    own temporary file into place; a crash in between would lose the previous
    best. So it writes to a fresh name here, and `os.replace` swaps it in.
    """
    import mindspore as ms
    items = [{"name": p.name, "data": p} for p in net.get_parameters()]
    if optimizer is not None:
        items += [{"name": OPT_PREFIX + p.name, "data": p}
                  for p in list(optimizer.moments) + [optimizer.global_step]]
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=folder)
    os.close(fd)
    try:
        ms.save_checkpoint(items, tmp, append_dict={META_KEY: json.dumps(meta)}, crc_check=True)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checkpoint(path):
    """(tensors, meta): every tensor by name, and the metadata dict ({} if none).

    The CRC is checked when the file has one (the course's file has none).
    """
    import mindspore as ms
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such checkpoint file")
    try:
        params = ms.load_checkpoint(path, crc_check=True)
    except (ValueError, RuntimeError, OSError) as e:
        raise UserError(f"{path}: damaged or not a MindSpore checkpoint ({str(e).splitlines()[0][:120]})") from None
    meta = params.pop(META_KEY, None)
    tensors = {k: v for k, v in params.items() if isinstance(v, ms.Parameter)}
    return tensors, json.loads(meta) if isinstance(meta, str) else {}


def _shape(t):
    return tuple(t.shape)


def _names(names, limit=8):
    names = sorted(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_weights(net, tensors, source, replace_head=False, head=("fc.weight", "fc.bias")):
    """Copy `tensors` into `net`, accounting for every parameter.

    Fails with the missing, unexpected and mismatched names unless the only
    difference is the classifier's shape and `replace_head` is set; then the
    network keeps its freshly initialised head. Returns the replaced names.
    MindSpore's load_param_into_net reports only what it skipped, so its
    answer is checked too.
    """
    import mindspore as ms
    own = {p.name: p for p in net.get_parameters()}
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPT_PREFIX)}
    missing = own.keys() - weights.keys()
    unexpected = weights.keys() - own.keys()
    mismatched = {k for k in own.keys() & weights.keys() if _shape(own[k]) != _shape(weights[k])}
    replaced = []
    if replace_head and mismatched and mismatched <= set(head):
        replaced = sorted(mismatched)
        mismatched = set()
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    if mismatched:
        problems.append("shape mismatch " + _names(
            f"{k} {_shape(weights[k])} vs {_shape(own[k])}" for k in mismatched))
    if problems:
        raise UserError(f"{source}: does not fit this network: {'; '.join(problems)}")
    to_load = {k: v for k, v in weights.items() if k not in replaced}
    not_loaded, _ = ms.load_param_into_net(net, to_load, strict_load=True)
    if set(not_loaded) - set(replaced):
        raise UserError(f"{source}: MindSpore did not load {_names(set(not_loaded) - set(replaced))}")
    return replaced


def load_optimizer_state(optimizer, tensors, source):
    """Restore momentum buffers and the step counter saved by save_checkpoint."""
    import mindspore as ms
    wanted = {OPT_PREFIX + p.name: p for p in list(optimizer.moments) + [optimizer.global_step]}
    missing = wanted.keys() - tensors.keys()
    if missing:
        raise UserError(f"{source}: no optimizer state for {_names(missing)}; cannot resume from it")
    for name, param in wanted.items():
        if _shape(param) != _shape(tensors[name]):
            raise UserError(f"{source}: optimizer state {name} has shape {_shape(tensors[name])}, "
                            f"expected {_shape(param)}; was it saved by another configuration?")
        param.set_data(ms.Tensor(tensors[name].asnumpy()))
