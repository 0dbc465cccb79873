#!/usr/bin/env python
"""Show predictions: a grid of images titled with class and confidence
(blue when right, red when wrong, black when the truth is unknown).

    python visualize.py --ckpt runs/train/best.ckpt --data_dir data/cifar10 --num_images 12 --output preds.png
    python visualize.py --ckpt runs/train/best.ckpt --images cat.jpg ship.png --output mine.png
"""
import os
import sys

# The scripts run in graph mode and do their own eager work in NumPy, where
# resnet_ms's CPU kernels are safe; a plain `import resnet_ms` leaves them off
# (resnet_ms/cpu_kernels.py says why). Set before resnet_ms is imported.
os.environ.setdefault("RESNET_MS_KERNELS", "auto")

from resnet_ms import cli  # noqa: E402
from resnet_ms.errors import UserError  # noqa: E402
from resnet_ms.tta import TTA, resolve_tta  # noqa: E402


def main(argv=None):
    p = cli.add_data_flags(cli.add_checkpoint_flags(cli.parser(__doc__)), data_required=False)
    p.add_argument("--output", required=True, help="PNG file to write")
    p.add_argument("--num_images", type=int, default=12)
    p.add_argument("--images", nargs="+", help="image files instead of --data_dir")
    p.add_argument("--seed", type=int, default=0, help="which images are drawn")
    p.add_argument("--tta", choices=("auto",) + TTA, default="auto",
                   help="test-time augmentation; auto: the checkpoint's recipe's, as eval.py")
    a = p.parse_args(argv)
    if not (a.images or a.data_dir):
        raise UserError("pass --data_dir (with --num_images) or --images FILE ...")
    if a.num_images < 1:
        raise UserError(f"--num_images {a.num_images}: must be at least 1")
    cli.writable_file(a.output, "--output", ".png")
    from resnet_ms.inference import load_image_files, predict, preprocess, sample_images
    from resnet_ms.plots import plot_predictions
    from resnet_ms.runtime import init_context
    from resnet_ms.weights import load_model
    init_context()  # graph mode: the network runs on the fast CPU kernels
    net, record = load_model(a.ckpt, a.model, a.num_classes)
    names = None
    if a.images:  # decoded and preprocessed as evaluation of this checkpoint does it
        images, labels, kind = load_image_files(a.images), None, None
        names = [os.path.basename(p) for p in a.images]
    else:
        images, labels, kind = sample_images(record, a.data_dir, a.split, a.num_images, a.dataset, a.seed)
    predicted, confidence = predict(net, preprocess(images, record, kind), resolve_tta(a.tta, record))
    plot_predictions(images, predicted, confidence, record.class_names, a.output, labels, names=names)
    if labels is not None:
        print(f"{int((predicted == labels).sum())}/{len(labels)} right")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
