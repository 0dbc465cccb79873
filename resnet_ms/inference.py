"""Predictions on images: a checkpoint's preprocessing, batches of logits, probabilities."""
import csv
import io
import json
import os

import numpy as np

from .data import CIFAR10_URL, image_transforms, open_source
from .errors import UserError, first_line
from .files import write_text
from .images import decode, is_image_name
from .tta import tta_logits


def source_for(record, dataset, data_dir, data_url=CIFAR10_URL, bad_images="stop"):
    """The data set as the checkpoint's run split it (the recorded val_split and seed)."""
    val_split = 0.1 if record.val_split is None else record.val_split
    source = open_source(dataset or record.dataset, data_dir, val_split, record.split_seed,
                         data_url, bad_images)
    if len(source.class_names) != record.num_classes:
        raise UserError(f"--data_dir {data_dir}: {len(source.class_names)} classes, "
                        f"but the checkpoint has {record.num_classes}")
    return source


def preprocess(images, record, kind=None):
    """HWC uint8 images -> one float32 NCHW batch, with the checkpoint's eval transforms.

    A CIFAR-kind checkpoint takes whole 32-px pictures: an image of another
    size is scaled (shorter side) and centre-cropped to the input size, not
    given the 256/224 margin of ImageNet-style evaluation.
    """
    import mindspore.dataset.transforms as T
    import mindspore.dataset.vision as V
    kind = kind or record.dataset
    size = record.image_size
    ops = T.Compose(image_transforms(kind, False, size, record.mean, record.std))
    fit = T.Compose([V.Resize(size), V.CenterCrop(size)])
    batch = [ops(fit(img) if kind == "cifar10" and img.shape[:2] != (size, size) else img) for img in images]
    return np.stack(batch).astype(np.float32)


def softmax(logits):
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def predict(net, batch, tta="none"):
    """(predicted class, confidence) for a preprocessed batch, over the views of `tta`."""
    probs = softmax(tta_logits(net, batch, tta))
    return probs.argmax(1), probs.max(1)


def sample_images(record, data_dir, split, count, dataset=None, seed=0):
    """`count` raw (HWC uint8) images and labels of a split, picked by `seed`."""
    source = source_for(record, dataset, data_dir)
    pool = source.indices(split)
    picked = np.sort(np.random.default_rng(seed).choice(pool, min(count, len(pool)), replace=False))
    images, labels = [], []
    for image, label in source.leaf(split, picked, 1).create_tuple_iterator(output_numpy=True):
        images.append(image)
        labels.append(int(label))
    return images, np.asarray(labels), source.kind


def load_image_files(paths, flag="--images"):
    """Decoded images (images.decode: the pixels training and evaluation see); a file that
    cannot be decoded is a UserError naming it."""
    images = []
    for p in paths:
        try:
            images.append(decode(p))
        except (ValueError, OSError) as e:
            raise UserError(f"{flag} {p}: cannot read this image ({first_line(e)})") from None
    return images


def find_images(sources):
    """(image files, other files) from files and folders; folders are walked recursively, in
    sorted order. Files named directly are always tried; in folders, only image extensions."""
    files, others = [], []
    for src in sources:
        if os.path.isfile(src):
            files.append(src)
        elif os.path.isdir(src):
            for root, dirs, names in os.walk(src):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    path = os.path.join(root, name)
                    if is_image_name(name):
                        files.append(path)
                    elif not name.startswith("."):
                        others.append(path)
        else:
            raise UserError(f"--source {src}: no such file or folder")
    return files, others


def predict_files(net, record, files, batch_size=32, topk=5, progress=None, tta="none"):
    """Yields (path, [(class, probability)] * topk, error) for each file, in order,
    with probabilities from the logits averaged over the views of `tta`.

    Unreadable files give their reason in `error` and no classes; they never stop the rest.
    """
    topk = min(topk, record.num_classes)
    for start in range(0, len(files), batch_size):
        chunk, images, errors = files[start:start + batch_size], [], {}
        for path in chunk:
            try:
                images.append((path, decode(path)))
            except (ValueError, OSError) as e:
                errors[path] = first_line(e)
        probs = {}
        if images:
            batch = preprocess([img for _, img in images], record)
            full = np.zeros((batch_size,) + batch.shape[1:], np.float32)  # one shape: one compiled graph
            full[:len(batch)] = batch
            p = softmax(tta_logits(net, full, tta)[:len(batch)])
            probs = {path: row for (path, _), row in zip(images, p)}
        for path in chunk:
            if path in errors:
                yield path, [], errors[path]
            else:
                order = np.argsort(-probs[path], kind="stable")[:topk]
                yield path, [(record.class_names[k], float(probs[path][k])) for k in order], None
        if progress is not None:
            progress(len(chunk))


def write_predictions(rows, path, fmt, topk):
    """Write predict_files' rows as CSV (path, class_1, prob_1, ..., error) or JSON, atomically."""
    if fmt == "json":
        data = [{"path": p, "top": [{"class": c, "probability": round(q, 6)} for c, q in top], "error": err}
                for p, top, err in rows]
        return write_text(path, json.dumps(data, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path"] + [f"{f}_{i}" for i in range(1, topk + 1) for f in ("class", "prob")] + ["error"])
    for p, top, err in rows:
        cells = [x for c, q in top for x in (c, f"{q:.6f}")]
        w.writerow([p] + cells + [""] * (2 * topk - len(cells)) + [err or ""])
    return write_text(path, buf.getvalue())
