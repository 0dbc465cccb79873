"""Training configuration: defaults with their reasons, YAML, flags, checks.

Precedence: these defaults < the run's own config.yaml (with `--resume PATH`)
< the YAML file given with -c < flags typed on the command line. A YAML key
that is not a field here is an error, not ignored; the `resolved:` block that
train.py writes into a run's config.yaml is information and is skipped, so
`-c runs/X/config.yaml` repeats run X (into a new folder).
"""
import argparse
import dataclasses
import os
from dataclasses import dataclass, field, fields

import yaml

from .data import CIFAR10_URL, DATASETS, PAD_MODES
from . import cli
from .errors import UserError
from .tta import TTA
from .whitening import WHITEN
from .engine import SCHEDULES
from .models import MODEL_NAMES, SMALL_ARCHS, STEMS, default_stem

RUNS_ROOT = "runs"  # where runs go without --output_dir: runs/train, runs/train2, ...
FREEZE = ("none", "backbone", "layer1", "layer2", "layer3", "layer4")


@dataclass
class TrainConfig:
    # data
    dataset: str = field(default="cifar10", metadata={"help": "cifar10 (binary layout) or imagefolder (train/<class>/*)"})
    data_dir: str = field(default="data/cifar10", metadata={"help": "data folder; CIFAR-10 is downloaded here if absent"})
    data_url: str = field(default=CIFAR10_URL, metadata={"help": "where to fetch CIFAR-10 from ('' never downloads)"})
    val_split: float = field(default=0.1, metadata={"help": "held-out validation: fraction (<1) or count; 0 selects on test"})
    image_size: int = field(default=32, metadata={"help": "network input size (the course fine-tunes at 32)"})
    bad_images: str = field(default="stop", metadata={"help": "image folders: stop on a truncated/unreadable image, or skip it"})
    translate: int = field(default=4, metadata={"help": "32-px training: random shifts of up to this many "
                                                        "pixels each way (the course's 4; 0: flips only)"})
    pad_mode: str = field(default="zeros", metadata={"help": "what the shifts bring in: zeros (the course's) "
                                                             "or reflect (the image's mirror, airbench's)"})
    num_workers: int = field(default=2, metadata={"help": "data workers (2 cores: more only compete with compute)"})
    # model
    model: str = field(default="resnet50", metadata={"help": "|".join(MODEL_NAMES)})
    num_classes: int = field(default=0, metadata={"help": "0: the data's class count"})
    pretrained: str = field(default="default", metadata={"help": "default | record name | URL | .ckpt | torchvision .pth | none"})
    stem: str = field(default="auto", metadata={"help": "auto (the model's own), imagenet (7x7/2 + max-pool), "
                                                        "nopool (7x7/2: 2x the maps, same weights) or cifar (3x3/1)"})
    zero_init_residual: bool = field(default=False, metadata={"help": "start each block as identity (from scratch)"})
    # optimisation: the course's fine-tuning schedule, plus a short warm-up
    epochs: int = field(default=5, metadata={"help": "training epochs"})
    # batch_size is global: the same steps (and lr) on 1 or N devices; no lr scaling needed
    batch_size: int = field(default=256, metadata={"help": "global batch size, split evenly over ranks"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (1e-3 suits fine-tuning)"})
    min_lr: float = field(default=1e-5, metadata={"help": "final learning rate of the cosine decay"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up length, in epochs"})
    schedule: str = field(default="cosine", metadata={"help": "cosine, or linear (one cycle: straight up "
                                                               "over the warm-up, straight down to min_lr)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    nesterov: bool = field(default=False, metadata={"help": "Nesterov momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "L2 on conv/dense weights only"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing"})
    ema_decay: float = field(default=0.0, metadata={"help": "0: off; else a moving average of the weights "
                                                            "(per step) is validated, kept in best.ckpt and resumed"})
    whiten: str = field(default="none", metadata={"help": "none | init | frozen: the first convolution set "
                                                          "from training patches' whitening (not the cifar stem)"})
    keep: str = field(default="best", metadata={"help": "best: best.ckpt is the epoch best on validation; "
                                                        "last: the last epoch (nothing is selected on data)"})
    tta: str = field(default="none", metadata={"help": "test-time augmentation eval.py applies to this run's "
                                                       "checkpoints: none | flip | flip_translate"})
    class_weights: str = field(default="none", metadata={"help": "none, or balanced: loss weights "
                                                                 "n / (classes * count) from the training split"})
    freeze: str = field(default="none", metadata={"help": "none | backbone (train only fc) | layerK "
                                                          "(stem and layers 1..K frozen)"})
    patience: int = field(default=0, metadata={"help": "stop after this many epochs without a better "
                                                       "selection accuracy (0: never)"})
    # running
    output_dir: str = field(default="", metadata={"help": "checkpoints, metrics.csv, config.yaml, curves.png "
                                                          "('': the next free runs/train, runs/train2, ...)"})
    resume: str = field(default="", metadata={"help": "continue a run: its folder or last.ckpt (flag alone: "
                                                      "--output_dir's); its config.yaml is read, nothing to retype"})
    distribute: bool = field(default=False, metadata={"help": "data-parallel over the ranks msrun started"})
    device_target: str = field(default="auto", metadata={"help": "auto | CPU | GPU | Ascend"})
    mode: str = field(default="graph", metadata={"help": "graph (fast) or pynative (debugging)"})
    amp_level: str = field(default="auto", metadata={"help": "auto: O2 + dynamic loss scale on GPU/Ascend, O0 on CPU"})
    seed: int = field(default=0, metadata={"help": "weights, split, data order and augmentation"})
    limit_train_batches: int = field(default=0, metadata={"help": "0: all; >0: only this many (quick trials)"})
    limit_val_batches: int = field(default=0, metadata={"help": "0: all; >0: only this many"})
    log_interval: int = field(default=50, metadata={"help": "steps between progress lines when stderr "
                                                            "is not a terminal (0: none)"})


RESUME_HERE = "."  # `--resume` with no path: the run in --output_dir


def _flag_type(f):
    return None if f.type is bool else f.type


def add_arguments(parser):
    """One snake_case flag per field, with no defaults: only typed flags override."""
    parser.add_argument("-c", "--config", help="YAML file of fields (unknown keys are an error)")
    for f in fields(TrainConfig):
        h = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if f.name == "resume":  # --resume alone continues --output_dir's run
            parser.add_argument("--resume", nargs="?", const=RESUME_HERE, default=argparse.SUPPRESS,
                                metavar="PATH", help=h)
        elif _flag_type(f) is None:
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
    if "resolved" in data:  # a run's own config.yaml: repeat its settings, not its folder
        data = {k: v for k, v in data.items() if k not in ("resolved", "output_dir", "resume")}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"-c {path}: unknown key(s) {', '.join(unknown)}; see train.py --help for the fields")
    return data


def _typed(name, value, want):
    """A YAML value as the field's type: YAML 1.1 reads 1e-3 as a string, so numbers in strings count."""
    if want is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is str and name == "resume" and isinstance(value, bool):
        return RESUME_HERE if value else ""
    if value is not None and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
        raise UserError(f"{name}: {value!r} is not a {want.__name__}")
    return value


def _run_folder(resume, output_dir):
    """The folder a --resume value names: a run folder, its last.ckpt, or --output_dir's."""
    path = output_dir if resume == RESUME_HERE else resume
    if not path:
        raise UserError("--resume: name the run (its folder or last.ckpt), or pass --output_dir")
    if os.path.isfile(path) and os.path.basename(path) == "last.ckpt":
        return os.path.dirname(path) or "."
    if os.path.isfile(path):
        raise UserError(f"--resume {path}: give a run folder or its last.ckpt (best.ckpt has no optimizer state)")
    return path


def next_run_folder(root=RUNS_ROOT, name="train"):
    """runs/train, then runs/train2, runs/train3, ...: the first that does not exist."""
    k = 1
    while os.path.exists(os.path.join(root, name + (str(k) if k > 1 else ""))):
        k += 1
    return os.path.join(root, name + (str(k) if k > 1 else ""))


def resolve(args):
    """TrainConfig from parsed flags (and the YAML files they name), checked."""
    values = dict(vars(args))
    path = values.pop("config", None)
    merged = load_yaml(path) if path else {}
    merged.update(values)
    resume = merged.get("resume")
    if resume not in (None, "", False):
        folder = _run_folder(_typed("resume", resume, str), merged.get("output_dir", ""))
        saved = os.path.join(folder, "config.yaml")
        base = load_yaml(saved) if os.path.isfile(saved) else {}
        merged = {**base, **merged, "output_dir": folder, "resume": RESUME_HERE}
    cfg = TrainConfig(**merged)
    for f in fields(TrainConfig):  # YAML values get the same types as flags
        setattr(cfg, f.name, _typed(f.name, getattr(cfg, f.name), f.type))
    if not cfg.output_dir and not cfg.resume:
        cfg.output_dir = next_run_folder()
    if cfg.stem == "auto" and cfg.model in MODEL_NAMES:
        cfg.stem = default_stem(cfg.model)
    check(cfg)
    return cfg


def check(cfg):
    """Reject bad values before any work starts."""
    rules = [
        (cfg.dataset in DATASETS, f"--dataset {cfg.dataset}: choose one of {', '.join(DATASETS)}"),
        (cfg.model in MODEL_NAMES, f"--model {cfg.model}: choose one of {', '.join(MODEL_NAMES)}"),
        (cfg.stem in STEMS, f"--stem {cfg.stem}: choose one of {', '.join(STEMS)}"),
        ((cfg.stem == "small") == (cfg.model in SMALL_ARCHS),
         f"--stem {cfg.stem}: {cfg.model} takes --stem " + ("small" if cfg.model in SMALL_ARCHS else
                                                            "imagenet, nopool or cifar") + " (or auto)"),
        (cfg.batch_size > 0, f"--batch_size {cfg.batch_size}: must be at least 1"),
        (cfg.epochs >= 1, f"--epochs {cfg.epochs}: must be at least 1"),
        (0 <= cfg.translate <= 16, f"--translate {cfg.translate}: 0 to 16 pixels"),
        (cfg.pad_mode in PAD_MODES, f"--pad_mode {cfg.pad_mode}: choose one of {', '.join(PAD_MODES)}"),
        (cfg.image_size >= 32, f"--image_size {cfg.image_size}: must be at least 32"),
        (cfg.image_size <= 1024, f"--image_size {cfg.image_size}: at most 1024 (ResNets are trained at 32-448)"),
        (bool(cfg.data_dir), "--data_dir: empty; give the data folder"),
        (cfg.num_classes >= 0, f"--num_classes {cfg.num_classes}: must be 0 (from the data) or more"),
        (cfg.lr > 0 and 0 <= cfg.min_lr <= cfg.lr, f"--lr {cfg.lr} / --min_lr {cfg.min_lr}: need 0 <= min_lr <= lr, lr > 0"),
        (cfg.warmup_epochs >= 0, f"--warmup_epochs {cfg.warmup_epochs}: must not be negative"),
        (0 <= cfg.label_smoothing < 1, f"--label_smoothing {cfg.label_smoothing}: must be in [0, 1)"),
        (cfg.val_split >= 0, f"--val_split {cfg.val_split}: must not be negative"),
        (cfg.val_split < 1 or cfg.val_split == int(cfg.val_split),
         f"--val_split {cfg.val_split}: a fraction below 1, or a whole number of images"),
        (cfg.schedule in SCHEDULES, f"--schedule {cfg.schedule}: choose one of {', '.join(SCHEDULES)}"),
        (0 <= cfg.ema_decay < 1, f"--ema_decay {cfg.ema_decay}: 0 (off) or in (0, 1), e.g. 0.999"),
        (cfg.whiten in WHITEN, f"--whiten {cfg.whiten}: choose one of {', '.join(WHITEN)}"),
        (cfg.whiten == "none" or cfg.stem != "cifar",  # 64 filters; 3x3 RGB patches have 27 directions
         f"--whiten {cfg.whiten}: the cifar stem's 64 filters exceed the 54 that 3x3 patch whitening fills; "
         "use --stem imagenet or nopool, or a small-image model"),
        (cfg.whiten == "none" or cfg.pretrained == "none" or cfg.resume,
         f"--whiten {cfg.whiten}: initialises from scratch; pass --pretrained none"),
        (cfg.keep in ("best", "last"), f"--keep {cfg.keep}: best or last"),
        (cfg.tta in TTA, f"--tta {cfg.tta}: choose one of {', '.join(TTA)}"),
        (not (cfg.keep == "last" and cfg.patience), "--patience: stops on no better validation accuracy; "
                                                    "with --keep last nothing is compared, so leave --patience 0"),
        (cfg.class_weights in ("none", "balanced"), f"--class_weights {cfg.class_weights}: none or balanced"),
        (cfg.freeze in FREEZE, f"--freeze {cfg.freeze}: choose one of {', '.join(FREEZE)}"),
        (cfg.patience >= 0, f"--patience {cfg.patience}: must not be negative"),
        (cfg.log_interval >= 0, f"--log_interval {cfg.log_interval}: must not be negative"),
        (cfg.momentum >= 0 and cfg.weight_decay >= 0, "--momentum / --weight_decay: must not be negative"),
        (cfg.bad_images in ("stop", "skip"), f"--bad_images {cfg.bad_images}: stop or skip"),
        (cfg.device_target in ("auto", "CPU", "GPU", "Ascend"), f"--device_target {cfg.device_target}: auto, CPU, GPU or Ascend"),
        (cfg.mode in ("graph", "pynative"), f"--mode {cfg.mode}: graph or pynative"),
        (cfg.amp_level in ("auto", "O0", "O1", "O2", "O3"), f"--amp_level {cfg.amp_level}: auto, O0, O1, O2 or O3"),
        (cfg.limit_train_batches >= 0 and cfg.limit_val_batches >= 0, "--limit_*_batches: must not be negative"),
    ]
    for ok, message in rules:
        if not ok:
            raise UserError(message)
    cli.workers(cfg.num_workers)
    cli.writable_folder(cfg.output_dir, "--output_dir")


def to_dict(cfg):
    return dataclasses.asdict(cfg)
