#!/usr/bin/env python
"""Export a checkpoint for deployment: MINDIR (MindSpore Lite) or ONNX.

    python export.py --ckpt runs/train/best.ckpt --format MINDIR --output deploy/resnet50.mindir
    python export.py --ckpt runs/train/best.ckpt --format ONNX --image_size 224
"""
import sys

from resnet_ms import cli


def main(argv=None):
    p = cli.add_checkpoint_flags(cli.parser(__doc__))
    p.add_argument("--format", default="MINDIR", type=str.upper, choices=["MINDIR", "ONNX"])
    p.add_argument("--output", help="model file (default: the checkpoint's name with .mindir/.onnx)")
    p.add_argument("--image_size", type=int, default=0, help="input size (default: the checkpoint's)")
    p.add_argument("--batch_size", type=int, default=1, help="fixed batch size of the exported input")
    a = p.parse_args(argv)
    from resnet_ms.export import export_checkpoint
    from resnet_ms.runtime import init_context
    init_context()
    export_checkpoint(a.ckpt, a.format, a.output, a.image_size, a.batch_size, a.model, a.num_classes)


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
