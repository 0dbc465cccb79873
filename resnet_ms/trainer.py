"""One training run from a TrainConfig: the loop behind train.py.

Each epoch: train, evaluate on the selection split, append to metrics.csv,
save best.ckpt when the selection accuracy improves, then last.ckpt (with
optimizer state) for --resume. Every file is replaced atomically, so a crash
at any moment leaves the previous complete version in place.
"""
import csv
import logging
import os
import time

import mindspore as ms
from mindspore import nn

from . import config as config_lib
from . import distributed
from .checkpoint import load_optimizer_state, load_weights, read_checkpoint, save_checkpoint
from .data import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, make_loader, open_source
from .engine import build_optimizer, cosine_lr, evaluate, make_eval_step, make_train_step, train_one_epoch
from .errors import UserError
from .models import build_model
from .plots import plot_curves
from .runtime import init_context
from .weights import load_into, open_pretrained

log = logging.getLogger("resnet_ms")
METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5",
                 "val_images", "train_images_per_s", "epoch_s"]


def write_metrics(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_metrics_rows(path, up_to_epoch):
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["epoch"]) <= up_to_epoch]


def _remove_temporaries(out):
    """Temporary files a killed run left (never taken for checkpoints: see checkpoint.py)."""
    if os.path.isdir(out):
        for name in os.listdir(out):
            if (name.startswith(".tmp-") and name.endswith(".ckpt")) or name.endswith(".tmp"):
                os.remove(os.path.join(out, name))


def normalisation(cfg, pretrained):
    """Mean/std follow the weights: their record's, a checkpoint's own, else the data's."""
    if pretrained is not None and pretrained.record is not None:
        return pretrained.record.mean, pretrained.record.std
    if pretrained is not None and pretrained.meta:
        return tuple(pretrained.meta["mean"]), tuple(pretrained.meta["std"])
    if pretrained is not None:
        return IMAGENET_MEAN, IMAGENET_STD  # a plain weight file: almost always ImageNet's
    return (CIFAR10_MEAN, CIFAR10_STD) if cfg.dataset == "cifar10" else (IMAGENET_MEAN, IMAGENET_STD)


def amp_setup(cfg, device):
    """(amp level, loss scaler): O2 with a dynamic loss scale on GPU/Ascend, fp32 on CPU."""
    level = cfg.amp_level
    if level == "auto":
        level = "O0" if device == "CPU" else "O2"
    if level == "O0":
        return level, None
    # fp16 gradients underflow without scaling; start high, halve on overflow,
    # double after 1000 clean steps (MindSpore's and PyTorch's usual values).
    return level, ms.amp.DynamicLossScaler(scale_value=2 ** 16, scale_factor=2, scale_window=1000)


def _check_resume(meta, cfg, num_classes, last_path):
    # The schedule and the data order depend on these: a change would not be a resume.
    changed = [k for k in ("model", "stem", "dataset", "batch_size", "epochs", "image_size", "seed")
               if meta["config"].get(k) != getattr(cfg, k)]
    if meta["num_classes"] != num_classes:
        changed.append("num_classes")
    if changed:
        raise UserError(f"--resume: {last_path} was made with other {', '.join(changed)}; "
                        "resume with the same configuration")


def _metrics_row(epoch, lr, tr, ev, seconds):
    return {"epoch": epoch, "lr": f"{lr:.6g}", "train_loss": f"{tr['loss']:.5f}",
            "train_acc": f"{tr['acc']:.5f}", "val_loss": f"{ev['loss']:.5f}", "val_acc": f"{ev['top1']:.5f}",
            "val_top5": f"{ev['top5']:.5f}", "val_images": ev["images"], "train_images_per_s": f"{tr['images_per_s']:.1f}",
            "epoch_s": f"{seconds:.1f}"}


def run(cfg):
    """Train as `cfg` says; returns a summary (best epoch and accuracy, paths, the network)."""
    device = init_context(cfg.device_target, cfg.mode, cfg.seed)  # same seed: same initial weights on every rank
    rank, world = distributed.init_data_parallel() if cfg.distribute else (0, 1)
    main = rank == 0  # only rank 0 writes files
    print(f"rank {rank} of {world}", flush=True)
    out = cfg.output_dir
    last_path, best_path = os.path.join(out, "last.ckpt"), os.path.join(out, "best.ckpt")
    if os.path.exists(last_path) and not cfg.resume:
        raise UserError(f"--output_dir {out}: already holds a run (last.ckpt); "
                        "pass --resume to continue it, or choose another --output_dir")
    if cfg.resume and not os.path.exists(last_path):
        raise UserError(f"--resume: no {last_path} to continue from")
    if cfg.batch_size % world:
        raise UserError(f"--batch_size {cfg.batch_size}: must divide evenly over {world} ranks")
    per_rank = cfg.batch_size // world

    source = open_source(cfg.dataset, cfg.data_dir, cfg.val_split, cfg.seed, cfg.data_url, cfg.bad_images)
    num_classes = len(source.class_names)
    if cfg.num_classes and cfg.num_classes != num_classes:
        raise UserError(f"--num_classes {cfg.num_classes}: the data in {cfg.data_dir} has {num_classes} classes")
    select = "val" if "val" in source.splits else "test"
    if select == "test":
        log.warning("no validation split (--val_split 0): the best checkpoint is chosen on the "
                    "test split, so its test accuracy is optimistic")

    # The weights come first: their padding convention decides how the network is built.
    resume_state = read_checkpoint(last_path) if cfg.resume else None
    if resume_state is None:
        pretrained = open_pretrained(cfg.model, cfg.pretrained)
        padding = pretrained.padding if pretrained is not None else "same"
        mean, std = normalisation(cfg, pretrained)
    else:
        padding = resume_state[1].get("padding", "same")
        mean, std = resume_state[1]["mean"], resume_state[1]["std"]
    net = build_model(cfg.model, num_classes, stem=cfg.stem, zero_init_residual=cfg.zero_init_residual,
                      padding=padding)
    if resume_state is None:
        load_into(net, pretrained)

    n_train = len(source.indices("train"))
    steps = n_train // world // per_rank
    if cfg.limit_train_batches:
        steps = min(steps, cfg.limit_train_batches)
    if steps == 0:
        raise UserError(f"--batch_size {cfg.batch_size}: larger than the {n_train} training images")
    lrs = cosine_lr(cfg.lr, cfg.min_lr, cfg.epochs * steps, int(cfg.warmup_epochs * steps))
    optimizer = build_optimizer(net, lrs or [cfg.lr], cfg.momentum, cfg.weight_decay)
    level, scaler = amp_setup(cfg, device)
    if level != "O0":
        net = ms.amp.auto_mixed_precision(net, level)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    reducer = distributed.grad_reducer(optimizer, world) if world > 1 else None
    train_step = make_train_step(net, loss_fn, optimizer, scaler, reducer)
    eval_step = make_eval_step(net)

    start_epoch, best_acc, best_epoch = 1, -1.0, 0
    if resume_state is not None:
        tensors, meta = resume_state
        _check_resume(meta, cfg, num_classes, last_path)
        load_weights(net, tensors, last_path)
        load_optimizer_state(optimizer, tensors, last_path)
        start_epoch, best_acc, best_epoch = meta["epoch"] + 1, meta["best_acc"], meta["best_epoch"]
        log.info("resuming %s at epoch %d (best %.4f at epoch %d)", last_path, start_epoch, best_acc, best_epoch)

    metrics_path = os.path.join(out, "metrics.csv")
    if main:
        os.makedirs(out, exist_ok=True)
        _remove_temporaries(out)
        config_lib.save_yaml(cfg, os.path.join(out, "config.yaml"), {"resolved": {
            "num_classes": num_classes, "device": device, "amp_level": level, "mean": list(mean),
            "std": list(std), "selection_split": select, "steps_per_epoch": steps, "world_size": world,
            "global_batch_size": cfg.batch_size, "batch_size_per_rank": per_rank,
            "lr_scaling": "none: lr applies to the global batch, whatever the world size"}})
    rows = read_metrics_rows(metrics_path, start_epoch - 1)
    meta = {"model": cfg.model, "num_classes": num_classes, "class_names": list(source.class_names),
            "image_size": cfg.image_size, "mean": list(mean), "std": list(std), "stem": cfg.stem,
            "padding": padding, "dataset": cfg.dataset, "selection_split": select, "world_size": world,
            "config": config_lib.to_dict(cfg)}
    loader_args = dict(batch_size=per_rank, image_size=cfg.image_size, mean=mean, std=std,
                       seed=cfg.seed, workers=cfg.num_workers, shard=(rank, world))
    log.info("%s: %d classes, %d training images, %d steps/epoch of %d images (%d ranks x %d), "
             "lr %g for the global batch (no scaling), selection on %s", cfg.model, num_classes,
             n_train, steps, cfg.batch_size, world, per_rank, cfg.lr, select)

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loader = make_loader(source, "train", train=True, epoch=epoch,
                                   limit_batches=cfg.limit_train_batches, **loader_args)
        tr = train_one_epoch(train_step, net, train_loader, f"epoch {epoch}", skip_first=epoch == start_epoch)
        val_loader = make_loader(source, select, limit_batches=cfg.limit_val_batches, **loader_args)
        if world > 1:  # one network for evaluation and checkpoints, numbers over all ranks
            distributed.average_batch_norm_statistics(net, world)
            tr = distributed.reduce_train_stats(tr)
        ev = evaluate(eval_step, net, val_loader, num_classes, desc=select)
        if world > 1:
            ev = distributed.reduce_eval(ev)
        improved = ev["top1"] > best_acc
        if improved:
            best_acc, best_epoch = ev["top1"], epoch
        rows.append(_metrics_row(epoch, lrs[min(epoch * steps, len(lrs)) - 1], tr, ev, time.perf_counter() - t0))
        meta.update(epoch=epoch, best_acc=best_acc, best_epoch=best_epoch, val_acc=ev["top1"])
        if main:  # metrics first: a resume drops rows past last.ckpt's epoch
            write_metrics(metrics_path, rows)
            if improved:
                save_checkpoint(best_path, net, meta)
            save_checkpoint(last_path, net, meta, optimizer)
        print(f"epoch {epoch}/{cfg.epochs}  loss {tr['loss']:.4f}  train acc {tr['acc']:.4f}  "
              f"{select} loss {ev['loss']:.4f}  {select} acc {ev['top1']:.4f}  "
              f"{tr['images_per_s']:.1f} img/s  {time.perf_counter() - t0:.1f}s"
              + ("  *best*" if improved else ""), flush=True)

    curves = None
    if rows and main:
        curves = plot_curves(metrics_path, os.path.join(out, "curves.png"))
    print(f"best {select} accuracy {best_acc:.4f} at epoch {best_epoch}: {best_path}")
    return {"best_acc": best_acc, "best_epoch": best_epoch, "best": best_path, "last": last_path,
            "metrics": metrics_path, "curves": curves, "net": net, "rank": rank, "world": world}
