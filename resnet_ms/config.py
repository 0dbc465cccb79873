"""Training configuration: defaults with their reasons, YAML, flags, checks.

Precedence: these defaults < the YAML file given with -c < flags typed on the
command line. A YAML key that is not a field here is an error, not ignored.
"""
import argparse
import dataclasses
import os
from dataclasses import dataclass, field, fields

import yaml

from .data import CIFAR10_URL, DATASETS
from .errors import UserError
from .models import MODEL_NAMES, STEMS


@dataclass
class TrainConfig:
    # data
    dataset: str = field(default="cifar10", metadata={"help": "cifar10 (binary layout) or imagefolder (train/<class>/*)"})
    data_dir: str = field(default="data/cifar10", metadata={"help": "data folder; CIFAR-10 is downloaded here if absent"})
    data_url: str = field(default=CIFAR10_URL, metadata={"help": "where to fetch CIFAR-10 from ('' never downloads)"})
    val_split: float = field(default=0.1, metadata={"help": "held-out validation: fraction (<1) or count; 0 selects on test"})
    image_size: int = field(default=32, metadata={"help": "network input size (the course fine-tunes at 32)"})
    bad_images: str = field(default="stop", metadata={"help": "image folders: stop on a truncated/unreadable image, or skip it"})
    num_workers: int = field(default=2, metadata={"help": "data workers (2 cores: more only compete with compute)"})
    # model
    model: str = field(default="resnet50", metadata={"help": "|".join(MODEL_NAMES)})
    num_classes: int = field(default=0, metadata={"help": "0: the data's class count"})
    pretrained: str = field(default="default", metadata={"help": "default | record name | URL | .ckpt | torchvision .pth | none"})
    stem: str = field(default="imagenet", metadata={"help": "imagenet (7x7/2 + max-pool), nopool (7x7/2: 2x the maps, same weights) or cifar (3x3/1)"})
    zero_init_residual: bool = field(default=False, metadata={"help": "start each block as identity (from scratch)"})
    # optimisation: the course's fine-tuning schedule, plus a short warm-up
    epochs: int = field(default=5, metadata={"help": "training epochs"})
    # batch_size is global: the same steps (and lr) on 1 or N devices; no lr scaling needed
    batch_size: int = field(default=256, metadata={"help": "global batch size, split evenly over ranks"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (1e-3 suits fine-tuning)"})
    min_lr: float = field(default=1e-5, metadata={"help": "final learning rate of the cosine decay"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up length, in epochs"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "L2 on conv/dense weights only"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing"})
    # running
    output_dir: str = field(default="runs/train", metadata={"help": "checkpoints, metrics.csv, config.yaml, curves.png"})
    resume: bool = field(default=False, metadata={"help": "continue from output_dir/last.ckpt"})
    distribute: bool = field(default=False, metadata={"help": "data-parallel over the ranks msrun started"})
    device_target: str = field(default="auto", metadata={"help": "auto | CPU | GPU | Ascend"})
    mode: str = field(default="graph", metadata={"help": "graph (fast) or pynative (debugging)"})
    amp_level: str = field(default="auto", metadata={"help": "auto: O2 + dynamic loss scale on GPU/Ascend, O0 on CPU"})
    seed: int = field(default=0, metadata={"help": "weights, split, data order and augmentation"})
    limit_train_batches: int = field(default=0, metadata={"help": "0: all; >0: only this many (quick trials)"})
    limit_val_batches: int = field(default=0, metadata={"help": "0: all; >0: only this many"})


def _flag_type(f):
    return None if f.type is bool else f.type


def add_arguments(parser):
    """One snake_case flag per field, with no defaults: only typed flags override."""
    parser.add_argument("-c", "--config", help="YAML file of fields (unknown keys are an error)")
    for f in fields(TrainConfig):
        h = f"{f.metadata.get('help', '')} (default: {f.default})"
        if _flag_type(f) is None:
            parser.add_argument(f"--{f.name}", action="store_true", default=argparse.SUPPRESS, help=h)
        else:
            parser.add_argument(f"--{f.name}", type=_flag_type(f), default=argparse.SUPPRESS, help=h)
    return parser


def load_yaml(path):
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as e:
        raise UserError(f"-c {path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"-c {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"-c {path}: expected a mapping of field: value")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"-c {path}: unknown key(s) {', '.join(unknown)}; see train.py --help for the fields")
    return data


def resolve(args):
    """TrainConfig from parsed flags (and the YAML they name), checked."""
    values = dict(vars(args))
    path = values.pop("config", None)
    merged = load_yaml(path) if path else {}
    merged.update(values)
    cfg = TrainConfig(**merged)
    for f in fields(TrainConfig):  # YAML values get the same types as flags
        value = getattr(cfg, f.name)
        want = f.type
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if value is not None and not isinstance(value, want):
            raise UserError(f"{f.name}: {value!r} is not a {want.__name__}")
        setattr(cfg, f.name, value)
    check(cfg)
    return cfg


def check(cfg):
    """Reject bad values before any work starts."""
    rules = [
        (cfg.dataset in DATASETS, f"--dataset {cfg.dataset}: choose one of {', '.join(DATASETS)}"),
        (cfg.model in MODEL_NAMES, f"--model {cfg.model}: choose one of {', '.join(MODEL_NAMES)}"),
        (cfg.stem in STEMS, f"--stem {cfg.stem}: choose one of {', '.join(STEMS)}"),
        (cfg.batch_size > 0, f"--batch_size {cfg.batch_size}: must be at least 1"),
        (cfg.epochs >= 0, f"--epochs {cfg.epochs}: must not be negative"),
        (cfg.image_size >= 32, f"--image_size {cfg.image_size}: must be at least 32"),
        (cfg.num_classes >= 0, f"--num_classes {cfg.num_classes}: must be 0 (from the data) or more"),
        (cfg.lr > 0 and 0 <= cfg.min_lr <= cfg.lr, f"--lr {cfg.lr} / --min_lr {cfg.min_lr}: need 0 <= min_lr <= lr, lr > 0"),
        (cfg.warmup_epochs >= 0, f"--warmup_epochs {cfg.warmup_epochs}: must not be negative"),
        (0 <= cfg.label_smoothing < 1, f"--label_smoothing {cfg.label_smoothing}: must be in [0, 1)"),
        (cfg.val_split >= 0, f"--val_split {cfg.val_split}: must not be negative"),
        (cfg.bad_images in ("stop", "skip"), f"--bad_images {cfg.bad_images}: stop or skip"),
        (cfg.num_workers >= 1, f"--num_workers {cfg.num_workers}: must be at least 1"),
        (cfg.device_target in ("auto", "CPU", "GPU", "Ascend"), f"--device_target {cfg.device_target}: auto, CPU, GPU or Ascend"),
        (cfg.mode in ("graph", "pynative"), f"--mode {cfg.mode}: graph or pynative"),
        (cfg.amp_level in ("auto", "O0", "O1", "O2", "O3"), f"--amp_level {cfg.amp_level}: auto, O0, O1, O2 or O3"),
        (cfg.limit_train_batches >= 0 and cfg.limit_val_batches >= 0, "--limit_*_batches: must not be negative"),
    ]
    for ok, message in rules:
        if not ok:
            raise UserError(message)
    out = os.path.abspath(cfg.output_dir)
    parent = out
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK) or (os.path.exists(out) and not os.path.isdir(out)):
        raise UserError(f"--output_dir {cfg.output_dir}: not a writable folder")


def to_dict(cfg):
    return dataclasses.asdict(cfg)


def save_yaml(cfg, path, extra=None):
    data = to_dict(cfg)
    data.update(extra or {})
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    os.replace(tmp, path)
