"""Evaluation of a checkpoint on a split, and its report (table, JSON, pictures).

Numbers are written to files only for a whole split: a run with
--limit_batches prints what it read, marked partial, and writes nothing.
"""
import os

import numpy as np

from .data import CIFAR10_URL, make_loader
from .engine import class_report, evaluate, make_eval_step, per_class_accuracy
from .files import write_json
from .inference import softmax, source_for
from .plots import plot_confusion, plot_predictions
from .tta import describe, resolve_tta
from .weights import load_model

MISTAKES_SHOWN = 12


def evaluate_checkpoint(ckpt, data_dir, split="test", dataset=None, model=None, num_classes=0,
                        batch_size=256, limit_batches=0, workers=2, data_url=None, bad_images="stop",
                        tta="auto"):
    """Top-1/top-5/loss, per-class precision/recall/F1 and the confusion matrix of `ckpt` on a split,
    with test-time augmentation `tta` (auto: the checkpoint's recipe's)."""
    net, record = load_model(ckpt, model, num_classes)
    tta = resolve_tta(tta, record)
    source = source_for(record, dataset, data_dir, data_url or CIFAR10_URL, bad_images)
    loader = make_loader(source, split, batch_size, record.image_size, record.mean, record.std,
                         limit_batches=limit_batches, workers=workers)
    result = evaluate(make_eval_step(net), net, loader, record.num_classes, desc=split, keep_logits=True, tta=tta)
    names = list(source.class_names)
    result["per_class"] = dict(zip(names, per_class_accuracy(result["confusion"]).tolist()))
    result["classes"], result["average"] = class_report(result["confusion"], names)
    result.update(class_names=names, split=split, checkpoint=ckpt, epoch=record.epoch or None, views=describe(tta),
                  model=record.model, split_images=len(source.indices(split)), source=source)
    result["partial"] = result["images"] < result["split_images"]
    return result


def confident_mistakes(result, count=MISTAKES_SHOWN):
    """(dataset indices, predicted, confidence, true) of the most confident wrong predictions."""
    probs = softmax(result["logits"])
    source, split = result["source"], result["split"]
    true = source.labels(split)[:len(probs)]
    predicted, confidence = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(predicted != true)
    top = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    return source.indices(split)[top], predicted[top], confidence[top], true[top]


def plot_mistakes(result, path):
    """The most confident mistakes as a picture (None when there are none)."""
    picked, predicted, confidence, true = confident_mistakes(result)
    if not len(picked):
        return None
    order = np.argsort(picked)  # the reader returns them in index order
    leaf = result["source"].leaf(result["split"], picked[order], 1)
    images = [image for image, _ in leaf.create_tuple_iterator(output_numpy=True)]
    back = np.argsort(order)
    return plot_predictions([images[i] for i in back], predicted, confidence, result["class_names"], path, true)


def print_report(result):
    top5 = f"  top-5 {result['top5']:.4f}" if len(result["class_names"]) > 5 else ""
    tta = f"  (test-time augmentation: {result['tta']}, {len(result['views'])} views)" if result["tta"] != "none" else ""
    print(f"{result['model']} on {result['split']} ({result['images']} images): top-1 {result['top1']:.4f}"
          f"{top5}  loss {result['loss']:.4f}{tta}")
    width = max(len(c) for c in result["class_names"] + ["weighted avg"])
    print(f"  {'':<{width}}  precision  recall     f1  support")
    for name, row in result["classes"].items():
        print(f"  {name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}  {row['support']:7d}")
    for kind in ("macro", "weighted"):
        a = result["average"][kind]
        print(f"  {kind + ' avg':<{width}}  {a['precision']:9.4f}  {a['recall']:6.4f}  {a['f1']:.4f}  "
              f"{result['images']:7d}")


def write_eval_report(result, out_dir):
    """Print the table; for a whole split also write eval_<split>_metrics.json, the
    confusion PNG and the most confident mistakes PNG. Returns the files written."""
    print_report(result)
    if result["partial"]:
        print(f"partial: {result['images']} of the {result['split_images']} {result['split']} images were "
              "read (--limit_batches), so no metrics file is written")
        return []
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"eval_{result['split']}")
    summary = {k: result[k] for k in ("checkpoint", "model", "epoch", "split", "images", "top1", "tta",
                                      "views", "loss", "per_class", "classes", "average")}
    if len(result["class_names"]) > 5:
        summary["top5"] = result["top5"]
    summary["confusion"] = result["confusion"].tolist()
    written = [write_json(stem + "_metrics.json", summary),
               plot_confusion(result["confusion"], result["class_names"], stem + "_confusion.png")]
    mistakes = plot_mistakes(result, stem + "_mistakes.png")
    written += [mistakes] if mistakes else []
    print("wrote " + ", ".join(written))
    return written
