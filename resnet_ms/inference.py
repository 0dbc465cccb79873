"""A model from a checkpoint, and predictions on images."""
import numpy as np

from .checkpoint import load_weights, read_checkpoint
from .data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, image_transforms
from .errors import UserError
from .models import MODEL_NAMES, build_model


def load_model(ckpt, model=None, num_classes=0):
    """(network in eval mode, metadata) from a checkpoint file.

    A resnet_ms checkpoint describes itself. A plain-weights file (the
    course's format) needs `model`; its class count is read from `fc.bias`,
    and it is taken to be CIFAR-10 at 32 px when it has 10 classes.
    """
    tensors, meta = read_checkpoint(ckpt)
    name = model or meta.get("model")
    if name is None:
        raise UserError(f"--ckpt {ckpt}: plain weights without metadata; pass --model "
                        f"({'|'.join(MODEL_NAMES)}) and --num_classes")
    if "classifier.weight" in tensors:
        raise UserError(f"--ckpt {ckpt}: mindcv's names; convert it first: "
                        f"python convert.py --from mindcv {ckpt} converted.ckpt")
    if "fc.bias" not in tensors:
        raise UserError(f"--ckpt {ckpt}: no fc.bias tensor; not a ResNet classifier checkpoint")
    n = num_classes or meta.get("num_classes") or int(tensors["fc.bias"].shape[0])
    if not meta:
        meta = {"model": name, "num_classes": n, "image_size": 32, "stem": "imagenet",
                "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD), "dataset": "cifar10",
                "class_names": list(CIFAR10_CLASSES) if n == 10 else [str(i) for i in range(n)]}
    if "conv1.weight" in tensors:  # the first kernel's size tells cifar from the 7x7 stems
        if tensors["conv1.weight"].shape[-1] == 3:
            meta["stem"] = "cifar"
        elif meta.get("stem") not in ("imagenet", "nopool"):  # nopool only from metadata
            meta["stem"] = "imagenet"
    # Files from before the padding option, and the course's, use 'same'.
    net = build_model(name, n, stem=meta.get("stem", "imagenet"), padding=meta.get("padding", "same"))
    load_weights(net, tensors, ckpt)
    net.set_train(False)
    return net, meta


def preprocess(images, meta, kind=None):
    """HWC uint8 images -> one float32 NCHW batch, with the checkpoint's eval transforms."""
    import mindspore.dataset.transforms as T
    ops = T.Compose(image_transforms(kind or meta.get("dataset", "cifar10"), False,
                                     meta["image_size"], meta["mean"], meta["std"]))
    return np.stack([ops(img) for img in images]).astype(np.float32)


def softmax(logits):
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def predict(net, batch):
    """(predicted class, confidence) for a preprocessed batch."""
    import mindspore as ms
    probs = softmax(net(ms.Tensor(batch)).asnumpy().astype(np.float64))
    return probs.argmax(1), probs.max(1)


def _source_for(meta, dataset, data_dir, data_url, bad_images="stop"):
    """The data set as the checkpoint's run split it (same val_split and seed)."""
    from .data import open_source
    cfg = meta.get("config", {})
    source = open_source(dataset or meta.get("dataset", "cifar10"), data_dir,
                         cfg.get("val_split", 0.1), cfg.get("seed", 0), data_url, bad_images)
    if len(source.class_names) != meta["num_classes"]:
        raise UserError(f"--data_dir {data_dir}: {len(source.class_names)} classes, "
                        f"but the checkpoint has {meta['num_classes']}")
    return source


def evaluate_checkpoint(ckpt, data_dir, split="test", dataset=None, model=None, num_classes=0,
                        batch_size=256, limit_batches=0, workers=2, data_url=None, bad_images="stop"):
    """Top-1/top-5/loss/per-class accuracy and the confusion matrix of `ckpt` on a split."""
    from .data import CIFAR10_URL, make_loader
    from .engine import evaluate, make_eval_step, per_class_accuracy
    net, meta = load_model(ckpt, model, num_classes)
    source = _source_for(meta, dataset, data_dir, data_url or CIFAR10_URL, bad_images)
    loader = make_loader(source, split, batch_size, meta["image_size"], meta["mean"], meta["std"],
                         limit_batches=limit_batches, workers=workers)
    result = evaluate(make_eval_step(net), net, loader, meta["num_classes"], desc=split)
    result["per_class"] = dict(zip(source.class_names, per_class_accuracy(result["confusion"]).tolist()))
    result.update(class_names=list(source.class_names), split=split, checkpoint=ckpt,
                  epoch=meta.get("epoch"), model=meta["model"])
    return result


def sample_images(ckpt_meta, data_dir, split, count, dataset=None, seed=0):
    """`count` raw (HWC uint8) images and labels of a split, picked by `seed`."""
    from .data import CIFAR10_URL
    source = _source_for(ckpt_meta, dataset, data_dir, CIFAR10_URL)
    pool = source.indices(split)
    picked = np.sort(np.random.default_rng(seed).choice(pool, min(count, len(pool)), replace=False))
    images, labels = [], []
    for image, label in source.leaf(split, picked, 1).create_tuple_iterator(output_numpy=True):
        images.append(image)
        labels.append(int(label))
    return images, np.asarray(labels), source.kind


def load_image_files(paths):
    from PIL import Image, UnidentifiedImageError
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(np.asarray(im.convert("RGB")))
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"--images {p}: cannot read this image ({e})") from None
    return images


def write_eval_report(result, out_dir):
    """Print the summary and per-class table; write <split>_metrics.json and the confusion PNG."""
    import json
    import os
    from .plots import plot_confusion
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"eval_{result['split']}")
    width = max(len(c) for c in result["class_names"])
    print(f"{result['model']} on {result['split']} ({result['images']} images): top-1 {result['top1']:.4f}  "
          f"top-5 {result['top5']:.4f}  loss {result['loss']:.4f}")
    for name, acc in result["per_class"].items():
        print(f"  {name:<{width}}  {acc:.4f}")
    summary = {k: result[k] for k in ("checkpoint", "model", "epoch", "split", "images",
                                      "top1", "top5", "loss", "per_class")}
    summary["confusion"] = result["confusion"].tolist()
    with open(stem + "_metrics.json", "w") as f:
        json.dump(summary, f, indent=2)
    png = plot_confusion(result["confusion"], result["class_names"], stem + "_confusion.png")
    print(f"wrote {stem}_metrics.json and {png}")
