"""Checkpoint files: the record that describes a network, atomic writes, CRC, strict loading.

A checkpoint holds the network's parameters, optionally the optimizer state
(under `optimizer/`), and a `CheckpointRecord` as JSON, so that eval, predict,
visualize and export need only the file. Plain-weight checkpoints (the
course's) have no record and load too, when the caller says what they are.
"""
import dataclasses
import json
import os
from dataclasses import dataclass, field

from .errors import UserError, first_line
from .files import atomic_path

META_KEY = "resnet_ms_meta"
OPT_PREFIX = "optimizer/"
EMA_PREFIX = "ema/"  # the weight average (ema.py)
STATE_PREFIXES = (OPT_PREFIX, EMA_PREFIX)  # training state in last.ckpt, not the network's weights
RECORD_VERSION = 2  # 1: the untyped dict of the first release (still read)


@dataclass(frozen=True)
class CheckpointRecord:
    """What a network needs around its weights; one reader, one writer (below)."""
    model: str
    num_classes: int
    class_names: tuple
    image_size: int
    mean: tuple  # per channel, on 0-1 RGB pixels
    std: tuple
    stem: str = "imagenet"
    padding: str = "same"  # models.PADDINGS: the convention the weights were trained with
    dataset: str = "imagefolder"  # how evaluation preprocesses images (data.image_transforms)
    # The data a run was selected on: which split, and how validation was held
    # out of training (recorded here, so renaming a flag cannot change it).
    selection_split: str = None
    val_split: float = None
    split_seed: int = 0
    epoch: int = 0
    best_acc: float = None
    best_epoch: int = 0
    val_acc: float = None
    stop_reason: str = None  # set when --patience ended the run early
    world_size: int = 1
    weights: str = None  # the weights record it started from
    converted_from: dict = None
    config: dict = field(default_factory=dict)  # the training configuration, as written

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_json(self):
        data = dataclasses.asdict(self)
        data.update(class_names=list(self.class_names), mean=list(self.mean), std=list(self.std),
                    version=RECORD_VERSION)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text, source):
        """The record in a file; version-1 dicts (written before the record type) too."""
        try:
            data = json.loads(text)
        except ValueError:
            raise UserError(f"{source}: its metadata is not JSON; the file is damaged") from None
        data.pop("version", None)
        config = data.get("config") or {}
        data.setdefault("val_split", config.get("val_split", 0.1) if config else None)
        data.setdefault("split_seed", config.get("seed", 0))
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            record = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:  # a required field is missing
            raise UserError(f"{source}: incomplete metadata ({e}); not a resnet_ms checkpoint") from None
        return record.replace(class_names=tuple(record.class_names), mean=tuple(record.mean),
                              std=tuple(record.std))


def optimizer_state(optimizer):
    """The optimizer's own parameters: momentum buffers (nn.Momentum's moments, or nn.SGD's
    accum and first-step flags) and the step counter that indexes the schedule."""
    buffers = list(optimizer.moments) if hasattr(optimizer, "moments") else \
        list(optimizer.accum) + list(optimizer.stat)
    return buffers + [optimizer.global_step]


def save_checkpoint(path, net, record=None, optimizer=None, state=()):
    """Write `path` so that it is either the old file or the complete new one.

    mindspore.save_checkpoint removes an existing file before renaming its
    own temporary file into place; a crash in between would lose the previous
    best. So it writes to a fresh name, and `os.replace` swaps it in.
    `record=None` writes plain weights, as the course's file is; `state` is
    further (name, Parameter) pairs that --resume needs.
    """
    import mindspore as ms
    items = [{"name": p.name, "data": p} for p in net.get_parameters()]
    if optimizer is not None:
        items += [{"name": OPT_PREFIX + p.name, "data": p} for p in optimizer_state(optimizer)]
    items += [{"name": name, "data": p} for name, p in state]  # e.g. the weight average (ema.py)
    extra = {META_KEY: record.to_json()} if record is not None else None
    with atomic_path(path) as tmp:
        ms.save_checkpoint(items, tmp, append_dict=extra, crc_check=True)


def read_checkpoint(path):
    """(tensors, CheckpointRecord or None): every tensor by name, and the record if any.

    The CRC is checked when the file has one (the course's file has none).
    """
    import mindspore as ms
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such checkpoint file")
    try:
        params = ms.load_checkpoint(path, crc_check=True)
    except (ValueError, RuntimeError, OSError) as e:
        raise UserError(f"{path}: damaged or not a MindSpore checkpoint ({first_line(e, 120)})") from None
    meta = params.pop(META_KEY, None)
    tensors = {k: v for k, v in params.items() if isinstance(v, ms.Parameter)}
    return tensors, CheckpointRecord.from_json(meta, path) if isinstance(meta, str) else None


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
    weights = {k: v for k, v in tensors.items() if not k.startswith(STATE_PREFIXES)}
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
    wanted = {OPT_PREFIX + p.name: p for p in optimizer_state(optimizer)}
    missing = wanted.keys() - tensors.keys()
    if missing:
        raise UserError(f"{source}: no optimizer state for {_names(missing)}; cannot resume from it")
    for name, param in wanted.items():
        if _shape(param) != _shape(tensors[name]):
            raise UserError(f"{source}: optimizer state {name} has shape {_shape(tensors[name])}, "
                            f"expected {_shape(param)}; was it saved by another configuration?")
        param.set_data(ms.Tensor(tensors[name].asnumpy()))
