#!/usr/bin/env python
"""Show predictions: a grid of images titled with class and confidence
(blue when right, red when wrong, black when the truth is unknown).

    python visualize.py --ckpt runs/train/best.ckpt --data_dir data/cifar10 --num_images 12 --output preds.png
    python visualize.py --ckpt runs/train/best.ckpt --images cat.jpg ship.png --output mine.png
"""
import argparse
import sys


from resnet_ms.errors import UserError, run_cli
from resnet_ms.inference import load_image_files, load_model, predict, preprocess, sample_images
from resnet_ms.plots import plot_predictions


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--output", required=True, help="PNG file to write")
    p.add_argument("--data_dir", help="data set to draw images from")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--dataset", choices=["cifar10", "imagefolder"], help="default: the checkpoint's")
    p.add_argument("--num_images", type=int, default=12)
    p.add_argument("--images", nargs="+", help="image files instead of --data_dir")
    p.add_argument("--seed", type=int, default=0, help="which images are drawn")
    p.add_argument("--model", help="for plain-weights checkpoints")
    p.add_argument("--num_classes", type=int, default=0, help="for plain-weights checkpoints")
    a = p.parse_args(argv)
    if not (a.images or a.data_dir):
        raise UserError("pass --data_dir (with --num_images) or --images FILE ...")
    if a.num_images < 1:
        raise UserError(f"--num_images {a.num_images}: must be at least 1")
    if not a.output.lower().endswith(".png"):
        raise UserError(f"--output {a.output}: must be a .png file")
    from resnet_ms.runtime import init_context
    init_context(mode="pynative")  # a handful of images: compiling a graph costs more
    net, meta = load_model(a.ckpt, a.model, a.num_classes)
    if a.images:
        images, labels, kind = load_image_files(a.images), None, "imagefolder"
    else:
        images, labels, kind = sample_images(meta, a.data_dir, a.split, a.num_images, a.dataset, a.seed)
    predicted, confidence = predict(net, preprocess(images, meta, kind))
    plot_predictions(images, predicted, confidence, meta["class_names"], a.output, labels)
    if labels is not None:
        print(f"{int((predicted == labels).sum())}/{len(labels)} right")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
