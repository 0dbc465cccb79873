#!/usr/bin/env python
"""Train (or fine-tune) a ResNet; writes best.ckpt, last.ckpt, metrics.csv, curves.png.

    python train.py -c configs/course_finetune.yaml --data_dir data/cifar10
    python train.py --model resnet18 --pretrained none --stem cifar --lr 0.1 ...
    python train.py --resume runs/train2          (a killed run: nothing to retype)
"""
import os
import sys

# The scripts run in graph mode and do their own eager work in NumPy, where
# resnet_ms's CPU kernels are safe; a plain `import resnet_ms` leaves them off
# (resnet_ms/cpu_kernels.py says why). Set before resnet_ms is imported.
os.environ.setdefault("RESNET_MS_KERNELS", "auto")

from resnet_ms import cli, config, trainer  # noqa: E402


def main(argv=None):
    parser = config.add_arguments(cli.parser(__doc__))
    return trainer.run(config.resolve(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
