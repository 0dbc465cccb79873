#!/usr/bin/env python
"""Export a checkpoint for deployment: MINDIR (MindSpore Lite) or ONNX.

    python export.py --ckpt runs/train/best.ckpt --format MINDIR --output deploy/resnet50.mindir
    python export.py --ckpt runs/train/best.ckpt --format ONNX --image_size 224
"""
import argparse
import sys

from resnet_ms.errors import run_cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="resnet_ms checkpoint (train.py's or convert.py's output)")
    p.add_argument("--format", default="MINDIR", type=str.upper, choices=["MINDIR", "ONNX"])
    p.add_argument("--output", help="model file (default: the checkpoint's name with .mindir/.onnx)")
    p.add_argument("--image_size", type=int, default=0, help="input size (default: the checkpoint's)")
    p.add_argument("--batch_size", type=int, default=1, help="fixed batch size of the exported input")
    p.add_argument("--model", help="for plain-weights checkpoints: resnet18 ... resnet152")
    p.add_argument("--num_classes", type=int, default=0, help="for plain-weights checkpoints")
    a = p.parse_args(argv)
    from resnet_ms.export import export_checkpoint
    from resnet_ms.runtime import init_context
    init_context()
    export_checkpoint(a.ckpt, a.format, a.output, a.image_size, a.batch_size, a.model, a.num_classes)


if __name__ == "__main__":
    sys.exit(run_cli(main))
