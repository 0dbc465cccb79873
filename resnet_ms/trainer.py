"""One training run from a TrainConfig: the loop behind train.py.

Each epoch: train, evaluate on the selection split, append to metrics.csv,
save best.ckpt when the selection accuracy improves, then last.ckpt (with
optimizer state) for --resume. Every file is replaced atomically (runs.py),
so a crash at any moment leaves the previous complete version in place.
"""
import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, fields

import numpy as np

import mindspore as ms
from mindspore import nn

from . import config as config_lib
from . import distributed
from .checkpoint import CheckpointRecord, load_optimizer_state, load_weights
from .data import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, make_loader, open_source
from .ema import WeightAverage
from .engine import SCHEDULES, build_optimizer, evaluate, make_eval_step, make_train_step, train_one_epoch
from .errors import UserError
from .formats import as_parameters
from .models import resnet
from .plots import plot_confusion, plot_curves
from .runs import RunFolder
from .runtime import init_context, native_layers
from .weights import load_network, open_weights
from .whitening import whiten_stem

log = logging.getLogger("resnet_ms")
# A cross-entropy this many times that of a uniform guess (ln classes) does not come back:
# the run has diverged (--lr 50 reaches 260x within two steps), so it stops there.
LOSS_LIMIT = 100
# The schedule and the data order depend on these: a change would not be a resume.
RESUME_MUST_MATCH = ("model", "stem", "dataset", "batch_size", "epochs", "image_size", "seed", "schedule",
                     "ema_decay", "whiten", "translate", "pad_mode")
WHITENING_IMAGES = 5000  # training images whose patches set the whitening stem (4.8M 2x2 patches at 32 px)


def normalisation(cfg, pretrained):
    """Mean/std follow the weights: their record's, else the data's.

    A plain weight file (no record of its own) is almost always ImageNet's.
    """
    if pretrained is not None:
        return (pretrained.record.mean, pretrained.record.std) if pretrained.described \
            else (IMAGENET_MEAN, IMAGENET_STD)
    return (CIFAR10_MEAN, CIFAR10_STD) if cfg.dataset == "cifar10" else (IMAGENET_MEAN, IMAGENET_STD)


def amp_level(cfg, device):
    """`auto`: O2 (float16) on GPU/Ascend, O0 (float32) on CPU."""
    if cfg.amp_level == "auto":
        return "O0" if device == "CPU" else "O2"
    return cfg.amp_level


def amp_setup(cfg, device):
    """(amp level, loss scaler): a dynamic loss scale with float16."""
    level = amp_level(cfg, device)
    if level == "O0":
        return level, None
    # fp16 gradients underflow without scaling; start high, halve on overflow,
    # double after 1000 clean steps (MindSpore's and PyTorch's usual values).
    return level, ms.amp.DynamicLossScaler(scale_value=2 ** 16, scale_factor=2, scale_window=1000)


def _check_resume(record, cfg, num_classes, last_path):
    # a field the run's checkpoint does not name had its default then (it came later)
    defaults = {f.name: f.default for f in fields(config_lib.TrainConfig)}
    changed = [k for k in RESUME_MUST_MATCH if record.config.get(k, defaults[k]) != getattr(cfg, k)]
    if record.num_classes != num_classes:
        changed.append("num_classes")
    if changed:
        raise UserError(f"--resume: {last_path} was made with other {', '.join(changed)}; "
                        "resume with the same configuration")


@dataclass
class Setup:
    """What a run decided before its first step."""
    device: str
    rank: int
    world: int
    folder: RunFolder
    source: object
    select: str  # the split best.ckpt is chosen on
    steps: int  # per epoch
    record: CheckpointRecord  # written into every checkpoint, epoch fields updated


def open_data(cfg, world):
    """(source, selection split, steps per epoch), checked against the config."""
    source = open_source(cfg.dataset, cfg.data_dir, cfg.val_split, cfg.seed, cfg.data_url, cfg.bad_images)
    if cfg.num_classes and cfg.num_classes != len(source.class_names):
        raise UserError(f"--num_classes {cfg.num_classes}: the data in {cfg.data_dir} "
                        f"has {len(source.class_names)} classes")
    select = "val" if "val" in source.splits else "test"
    if select == "test" and cfg.keep == "last":
        log.info("no validation split: the last epoch is kept (--keep last); the test split is "
                 "evaluated once, after it, and chooses nothing")
    elif select == "test":
        log.warning("no validation split (--val_split 0): the best checkpoint is chosen on the "
                    "test split, so its test accuracy is optimistic")
    n_train = len(source.indices("train"))
    steps = n_train // world // (cfg.batch_size // world)
    if cfg.limit_train_batches:
        steps = min(steps, cfg.limit_train_batches)
    if steps == 0:
        raise UserError(f"--batch_size {cfg.batch_size}: larger than the {n_train} training images")
    counts = source.class_counts("train")
    print("training images per class: " + ", ".join(f"{c} {n}" for c, n in zip(source.class_names, counts)),
          flush=True)
    return source, select, steps


def class_weights(cfg, source):
    """None, or per-class loss weights n / (classes * count): each class weighs as much in total."""
    if cfg.class_weights == "none":
        return None
    counts = source.class_counts("train").astype(np.float64)
    return counts.sum() / (len(counts) * np.maximum(counts, 1))


def freeze(net, what):
    """Stop training part of the network: no gradient, no update, no weight decay, and
    frozen BatchNorm layers keep their running statistics (they always normalise with them).
    Returns the names of the frozen parameters."""
    if what == "none":
        return []
    if what == "backbone":
        keep = ("fc.",)
    else:  # layerK: the stem and layers 1..K
        k = int(what[len("layer"):])
        keep = tuple(f"layer{i}." for i in range(k + 1, 5)) + ("fc.",)
    frozen = []
    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d) and not (name + ".").startswith(keep):
            cell.use_batch_statistics = False
    for p in net.get_parameters():
        if not p.name.startswith(keep):
            p.requires_grad = False
            frozen.append(p.name)
    return frozen


def build_network(cfg, num_classes, folder):
    """(network, resumed Pretrained or None, mean, std).

    The weights come first: their padding convention decides how the network is built.
    A resume loads last.ckpt through the same door as --pretrained.
    """
    build = dict(stem=cfg.stem, zero_init_residual=cfg.zero_init_residual)
    if cfg.resume:
        state = open_weights(folder.last, cfg.model)
        _check_resume(state.record, cfg, num_classes, folder.last)
        net, _ = load_network(state, cfg.model, num_classes, **build)
        return net, state, state.record.mean, state.record.std
    net, pretrained = load_network(cfg.pretrained, cfg.model, num_classes, new_head=True, **build)
    if cfg.freeze != "none" and pretrained is None:
        log.warning("--freeze %s with --pretrained none: the frozen part keeps its random weights", cfg.freeze)
    return net, None, *normalisation(cfg, pretrained)


def setup(cfg):
    device = init_context(cfg.device_target, cfg.mode, cfg.seed)  # same seed: same initial weights on every rank
    rank, world = distributed.init_data_parallel() if cfg.distribute else (0, 1)
    print(f"rank {rank} of {world}", flush=True)
    folder = RunFolder(cfg.output_dir)
    folder.check(cfg.resume)
    if cfg.batch_size % world:
        raise UserError(f"--batch_size {cfg.batch_size}: must divide evenly over {world} ranks")
    source, select, steps = open_data(cfg, world)
    n = len(source.class_names)
    record = CheckpointRecord(cfg.model, n, tuple(source.class_names), cfg.image_size, (), (), stem=cfg.stem,
                              dataset=cfg.dataset, selection_split=select, val_split=cfg.val_split,
                              split_seed=cfg.seed, world_size=world, config=config_lib.to_dict(cfg))
    return Setup(device, rank, world, folder, source, select, steps, record)


@dataclass
class Steps:
    """The compiled pieces of a run."""
    net: object
    optimizer: object
    lrs: list
    train: object
    amp_level: str
    scaler: object
    ema: object  # ema.WeightAverage or None


def training_images(s, loader_args, count=WHITENING_IMAGES):
    """The first `count` training images, normalised as training sees them, without
    augmentation, in batches of 500 (a batch at a time: images may be large)."""
    args = dict(loader_args, batch_size=500, shard=(0, 1))
    loader = make_loader(s.source, "train", limit_batches=-(-count // 500), **args)
    for i, (x, _) in enumerate(loader.create_tuple_iterator(num_epochs=1, output_numpy=True)):
        yield x[:count - 500 * i]


def compile_steps(cfg, net, s):
    frozen = freeze(net, cfg.freeze)
    if frozen:
        log.info("--freeze %s: %d of %d parameters frozen", cfg.freeze, len(frozen),
                 sum(1 for _ in net.get_parameters()))
    lrs = SCHEDULES[cfg.schedule](cfg.lr, cfg.min_lr, cfg.epochs * s.steps, int(cfg.warmup_epochs * s.steps))
    optimizer = build_optimizer(net, lrs or [cfg.lr], cfg.momentum, cfg.weight_decay, cfg.nesterov)
    ema = WeightAverage(net, cfg.ema_decay) if cfg.ema_decay else None
    level, scaler = amp_setup(cfg, s.device)
    if level != "O0":
        net = ms.amp.auto_mixed_precision(net, level)
    weights = class_weights(cfg, s.source)
    if weights is not None:
        log.info("class weights (balanced): %s", ", ".join(f"{w:.3g}" for w in weights))
        weights = ms.Tensor(weights.astype(np.float32))
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    reducer = distributed.grad_reducer(optimizer, s.world) if s.world > 1 else None
    return Steps(net, optimizer, lrs, make_train_step(net, loss_fn, optimizer, scaler, reducer, ema),
                 level, scaler, ema)


def start_training(cfg, s, net, resumed, loader_args):
    """The whitened stem (fresh runs), the compiled steps, and a resumed run's optimizer
    and weight-average state; returns the Steps."""
    if cfg.whiten != "none":  # the same images on every rank: the same stem
        if resumed is None:
            whiten_stem(net, training_images(s, loader_args))
            log.info("--whiten %s: conv1 set from the patches of %d training images", cfg.whiten,
                     WHITENING_IMAGES)
        net.conv1.weight.requires_grad = cfg.whiten != "frozen"
    st = compile_steps(cfg, net, s)
    if resumed is not None:
        if st.ema is not None:
            st.ema.load_state(resumed.tensors, s.folder.last)
        load_optimizer_state(st.optimizer, resumed.tensors, s.folder.last)
        r = resumed.record
        log.info("resuming %s at epoch %d (best %s at epoch %d)", s.folder.last, r.epoch + 1, _acc(r.best_acc),
                 r.best_epoch)
    return st


def resolved_config(cfg, s, level):
    return dict(config_lib.to_dict(cfg), resolved={
        "num_classes": s.record.num_classes, "device": s.device, "amp_level": level,
        "mean": list(s.record.mean), "std": list(s.record.std), "selection_split": s.select,
        "steps_per_epoch": s.steps, "world_size": s.world, "global_batch_size": cfg.batch_size,
        "batch_size_per_rank": cfg.batch_size // s.world,
        "lr_scaling": "none: lr applies to the global batch, whatever the world size"})


def _metrics_row(epoch, lr, tr, ev, seconds):
    """One metrics.csv row; the val fields are empty for an epoch that was not evaluated."""
    val = {"val_loss": f"{ev['loss']:.5f}", "val_acc": f"{ev['top1']:.5f}", "val_top5": f"{ev['top5']:.5f}",
           "val_images": ev["images"]} if ev is not None else {}
    return {"epoch": epoch, "lr": f"{lr:.6g}", "train_loss": f"{tr['loss']:.5f}", "train_acc": f"{tr['acc']:.5f}",
            **val, "train_images_per_s": f"{tr['images_per_s']:.1f}", "epoch_s": f"{seconds:.1f}"}


def _acc(value):
    return "not evaluated" if value is None else f"{value:.4f}"


def kept_network(cfg, s, st):
    """A new network holding what is evaluated and kept in best.ckpt: the trained weights, or
    their average, with BatchNorm statistics averaged over ranks. A copy, because writing into
    the trained network once its step is compiled detaches it from the step (Parameter.set_data:
    the step goes on in the old memory and the parameters stop changing; MindSpore 2.10)."""
    values = {p.name: p.asnumpy() for p in st.net.get_parameters()}
    if st.ema is not None:
        values.update((p.name, a.asnumpy()) for p, a in zip(st.ema.live, st.ema.average))
    if s.world > 1:
        values = distributed.average_batch_norm_statistics(values, s.world)
    net = resnet(cfg.model, s.record.num_classes, stem=cfg.stem, padding=s.record.padding)
    load_weights(net, as_parameters(values), "the trained network")
    return net


def run_epoch(cfg, s, epoch, first, st, loader_args):
    """Train one epoch, then evaluate the kept network (kept_network) on the selection split;
    (train stats, kept network, eval result or None). With --keep last and no validation
    split, only the last epoch is evaluated: the test split only reports."""
    net = st.net
    train_loader = make_loader(s.source, "train", train=True, epoch=epoch, limit_batches=cfg.limit_train_batches,
                               translate=cfg.translate, pad_mode=cfg.pad_mode, **loader_args)
    hint = f"Lower --lr (now {cfg.lr:g})" + (", or train in float32 (--amp_level O0)" if st.scaler else "") + "."
    tr = train_one_epoch(st.train, net, train_loader, f"epoch {epoch}", skip_first=first,
                         log_interval=cfg.log_interval, lrs=st.lrs, first_step=(epoch - 1) * s.steps, lr_hint=hint,
                         loss_limit=LOSS_LIMIT * math.log(s.record.num_classes))
    if s.world > 1:  # numbers over all ranks
        tr = distributed.reduce_train_stats(tr)
    kept = kept_network(cfg, s, st)
    if cfg.keep == "last" and s.select == "test" and epoch < cfg.epochs:
        return tr, kept, None
    val_loader = make_loader(s.source, s.select, limit_batches=cfg.limit_val_batches, **loader_args)
    ev = evaluate(make_eval_step(kept), kept, val_loader, s.record.num_classes, desc=s.select)
    if s.world > 1:
        ev = distributed.reduce_eval(ev)
    return tr, kept, ev


def finished(cfg, record):
    """Why a run needs no more epochs (None if it does)."""
    if record.stop_reason:
        return record.stop_reason
    if record.epoch >= cfg.epochs:
        return f"all {cfg.epochs} epochs done"
    return None


def epoch_line(cfg, s, epoch, tr, ev, seconds, improved, scaler):
    amp = (f"  {tr['skipped']} overflow step(s) skipped, loss scale {float(scaler.scale_value.asnumpy()):g}"
           if scaler is not None else "")
    return (f"epoch {epoch}/{cfg.epochs}  loss {tr['loss']:.4f}  train acc {tr['acc']:.4f}  "
            + (f"{s.select} loss {ev['loss']:.4f}  {s.select} acc {ev['top1']:.4f}  " if ev is not None else "")
            + f"{tr['images_per_s']:.1f} img/s  {seconds:.1f}s{amp}"
            + ("  *best*" if improved and cfg.keep == "best" else ""))


def run(cfg):
    """Train as `cfg` says; returns a summary (best epoch and accuracy, paths, the network)."""
    s = setup(cfg)
    # float16 runs on MindSpore's own kernels (resnet_ms's oneDNN kernels are float32)
    with native_layers() if amp_level(cfg, s.device) != "O0" else contextlib.nullcontext():
        net, resumed, mean, std = build_network(cfg, s.record.num_classes, s.folder)
    s.record = s.record.replace(mean=tuple(mean), std=tuple(std), padding=net.padding)
    start, best_acc, best_epoch = 1, -1.0, 0
    if resumed is not None:
        r = resumed.record
        start, best_acc, best_epoch = r.epoch + 1, r.best_acc, r.best_epoch
        done = finished(cfg, r)
        if done:
            if s.rank == 0:  # killed after its last checkpoint: sweep what it left, draw its curves
                s.folder.prepare()
                rows = s.folder.read_metrics(r.epoch)
                if rows and not os.path.exists(s.folder.curves):
                    plot_curves(rows, s.folder.curves)
            print(f"nothing to do: {s.folder.path} has finished ({done}); best {r.selection_split} "
                  f"accuracy {_acc(best_acc)} at epoch {best_epoch}: {s.folder.best}")
            return {"best_acc": best_acc, "best_epoch": best_epoch, "best": s.folder.best, "finished": done}
    per_rank = cfg.batch_size // s.world
    loader_args = dict(batch_size=per_rank, image_size=cfg.image_size, mean=mean, std=std,
                       seed=cfg.seed, workers=cfg.num_workers, shard=(s.rank, s.world))
    st = start_training(cfg, s, net, resumed, loader_args)
    main = s.rank == 0  # only rank 0 writes files
    if main:
        s.folder.prepare()
        s.folder.write_config(resolved_config(cfg, s, st.amp_level))
    rows = s.folder.read_metrics(start - 1)
    log.info("%s: %d classes, %d training images, %d steps/epoch of %d images (%d ranks x %d), "
             "lr %g for the global batch (no scaling), %s", cfg.model, s.record.num_classes,
             len(s.source.indices("train")), s.steps, cfg.batch_size, s.world, per_rank, cfg.lr,
             "keeping the last epoch" if cfg.keep == "last" else f"selection on {s.select}")

    stop = None
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        tr, kept, ev = run_epoch(cfg, s, epoch, epoch == start, st, loader_args)
        accuracy = ev["top1"] if ev is not None else None
        improved = cfg.keep == "last" or accuracy > best_acc  # last: every epoch replaces best.ckpt
        if improved:
            best_acc, best_epoch = accuracy, epoch
        if cfg.patience and epoch - best_epoch >= cfg.patience and epoch < cfg.epochs:
            stop = (f"stopped early after epoch {epoch}: no better {s.select} accuracy for "
                    f"{cfg.patience} epoch(s) (--patience {cfg.patience})")
        rows.append(_metrics_row(epoch, st.lrs[min(epoch * s.steps, len(st.lrs)) - 1], tr, ev,
                                 time.perf_counter() - t0))
        s.record = s.record.replace(epoch=epoch, best_acc=best_acc, best_epoch=best_epoch, val_acc=accuracy,
                                    stop_reason=stop)
        if main:
            # The kept epoch's confusion matrix, beside best.ckpt; drawn before the checkpoints
            # are saved, so that a run killed between the two redoes the epoch and draws it again.
            if improved and ev is not None:
                plot_confusion(ev["confusion"], s.source.class_names, s.folder.confusion)
            s.folder.save_epoch(st.net, kept, s.record, st.optimizer, rows, improved, st.ema)
        print(epoch_line(cfg, s, epoch, tr, ev, time.perf_counter() - t0, improved, st.scaler), flush=True)
        if stop:
            print(stop, flush=True)
            break

    curves = plot_curves(rows, s.folder.curves) if rows and main else None
    if cfg.keep == "last":
        print(f"kept (last) epoch {best_epoch}: {s.select} accuracy {_acc(best_acc)}: {s.folder.best}")
    else:
        print(f"best {s.select} accuracy {_acc(best_acc)} at epoch {best_epoch}: {s.folder.best}")
    return {"best_acc": best_acc, "best_epoch": best_epoch, "best": s.folder.best, "last": s.folder.last,
            "metrics": s.folder.metrics, "curves": curves, "net": kept, "rank": s.rank, "world": s.world,
            "stopped": stop}
