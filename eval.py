#!/usr/bin/env python
"""Evaluate a checkpoint: top-1, top-5, loss, per-class accuracy, confusion matrix.

    python eval.py --ckpt runs/train/best.ckpt --data_dir data/cifar10
    python eval.py --ckpt runs/cifar10_hour/best.ckpt --data_dir data/cifar10 --tta none
    python eval.py --ckpt resnet50_cifar10.ckpt --model resnet50 --num_classes 10 --data_dir data/cifar10
"""
import os
import sys

# The scripts run in graph mode and do their own eager work in NumPy, where
# resnet_ms's CPU kernels are safe; a plain `import resnet_ms` leaves them off
# (resnet_ms/cpu_kernels.py says why). Set before resnet_ms is imported.
os.environ.setdefault("RESNET_MS_KERNELS", "auto")

from resnet_ms import cli  # noqa: E402
from resnet_ms.tta import TTA  # noqa: E402


def main(argv=None):
    p = cli.add_data_flags(cli.add_checkpoint_flags(cli.parser(__doc__)))
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--limit_batches", type=int, default=0,
                   help="0: the whole split; N: a quick look at N batches (printed, marked partial, not written)")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--bad_images", choices=["stop", "skip"], default="stop",
                   help="image folders: stop on a truncated/unreadable image, or skip it")
    p.add_argument("--tta", choices=("auto",) + TTA, default="auto",
                   help="test-time augmentation; auto: what the checkpoint's recipe names (its tta field), "
                        "none: the plain number")
    p.add_argument("--output_dir", help="where metrics.json and the confusion PNG go "
                   "(default: the checkpoint's folder)")
    a = p.parse_args(argv)
    cli.positive(a.batch_size, "--batch_size")
    cli.positive(a.limit_batches, "--limit_batches", zero_ok=True)
    cli.workers(a.num_workers)
    out_dir = a.output_dir or os.path.dirname(os.path.abspath(a.ckpt))
    cli.writable_folder(out_dir, "--output_dir")
    from resnet_ms.evaluation import evaluate_checkpoint, write_eval_report
    from resnet_ms.runtime import init_context
    init_context()
    r = evaluate_checkpoint(a.ckpt, a.data_dir, a.split, a.dataset, a.model, a.num_classes,
                            a.batch_size, a.limit_batches, a.num_workers, bad_images=a.bad_images, tta=a.tta)
    write_eval_report(r, out_dir)


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
