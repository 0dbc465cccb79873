#!/usr/bin/env python
"""Train (or fine-tune) a ResNet; writes best.ckpt, last.ckpt, metrics.csv, curves.png.

    python train.py -c configs/course_finetune.yaml --data_dir data/cifar10
    python train.py --model resnet18 --pretrained none --stem cifar --lr 0.1 ...
"""
import argparse
import sys

from resnet_ms import config, trainer
from resnet_ms.errors import run_cli


def main(argv=None):
    parser = config.add_arguments(argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    return trainer.run(config.resolve(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(run_cli(main))
