#!/usr/bin/env python
"""Evaluate a checkpoint: top-1, top-5, loss, per-class accuracy, confusion matrix.

    python eval.py --ckpt runs/train/best.ckpt --data_dir data/cifar10
    python eval.py --ckpt resnet50_cifar10.ckpt --model resnet50 --num_classes 10 --data_dir data/cifar10
"""
import argparse
import os
import sys

from resnet_ms.errors import run_cli
from resnet_ms.inference import evaluate_checkpoint, write_eval_report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="checkpoint file (resnet_ms or plain weights)")
    p.add_argument("--data_dir", required=True, help="CIFAR-10 folder or image folder data set")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--dataset", choices=["cifar10", "imagefolder"], help="default: the checkpoint's")
    p.add_argument("--model", help="for plain-weights checkpoints: resnet18 ... resnet152")
    p.add_argument("--num_classes", type=int, default=0, help="for plain-weights checkpoints")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--limit_batches", type=int, default=0, help="0: the whole split")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--bad_images", choices=["stop", "skip"], default="stop",
                   help="image folders: stop on a truncated/unreadable image, or skip it")
    p.add_argument("--output_dir", help="where metrics.json and the confusion PNG go "
                   "(default: the checkpoint's folder)")
    a = p.parse_args(argv)
    from resnet_ms.runtime import init_context
    from resnet_ms.errors import UserError
    if a.batch_size < 1:
        raise UserError(f"--batch_size {a.batch_size}: must be at least 1")
    init_context()
    r = evaluate_checkpoint(a.ckpt, a.data_dir, a.split, a.dataset, a.model, a.num_classes,
                            a.batch_size, a.limit_batches, a.num_workers, bad_images=a.bad_images)
    write_eval_report(r, a.output_dir or os.path.dirname(os.path.abspath(a.ckpt)))


if __name__ == "__main__":
    sys.exit(run_cli(main))
