#!/usr/bin/env python
"""Convert mindcv or torchvision ResNet weights into a resnet_ms checkpoint.

    python convert.py --from mindcv resnet50-e0733ab8.ckpt mindcv_resnet50.ckpt
    python convert.py --from mindcv mindcv_resnet50 mindcv_resnet50.ckpt   (a record: downloaded)
    python convert.py --from torchvision resnet50-0676ba61.pth tv_resnet50.ckpt   (needs torch)

The output describes itself (model, classes, padding, mean/std), so train.py
--pretrained, eval.py, visualize.py and export.py take it as it is.
"""
import sys

from resnet_ms import cli


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--from", dest="fmt", required=True, choices=["mindcv", "torchvision"],
                   help="naming of the input file")
    p.add_argument("input", help="mindcv .ckpt or torchvision .pth file, or a weights record name")
    p.add_argument("output", help="resnet_ms .ckpt to write")
    p.add_argument("--model", help="check that the file holds this model (resnet18 ... resnet152)")
    a = p.parse_args(argv)
    from resnet_ms.convert import convert_named
    convert_named(a.input, a.output, a.fmt, a.model)


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
