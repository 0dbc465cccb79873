"""Data: CIFAR-10 (official binary layout) and folder-per-class image sets.

Every split is a list of sample indices into a `mindspore.dataset` leaf
(`Cifar10Dataset` or `ImageFolderDataset`) read through a `SubsetSampler`.
That one mechanism gives the held-out validation split, a per-epoch shuffle
that is a pure function of (seed, epoch) so a resumed run sees the same order,
`--limit_*` trials, and the per-rank shards of distributed training.
"""
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError
from .fetch import check_tar, extract_tar, fetch_file
from .images import IMAGE_EXTENSIONS, decode, scan

log = logging.getLogger("resnet_ms")

CIFAR10_URL = ("https://mindspore-website.obs.cn-north-4.myhuaweicloud.com/"
               "notebook/datasets/cifar-10-binary.tar.gz")
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # the official cifar-10-binary.tar.gz
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR10_RECORD = 1 + 32 * 32 * 3  # label byte, then R, G, B planes
CIFAR10_FILE_BYTES = 10000 * CIFAR10_RECORD
# Per-channel statistics of the CIFAR-10 training images (for training from scratch).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# ImageNet statistics: what ImageNet-pretrained weights expect.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

DATASETS = ("cifar10", "imagefolder")


# ---------------------------------------------------------------- CIFAR-10 files

def cifar10_labels(folder, usage):
    """Every label of the train (50,000) or test (10,000) files, in the reader's order."""
    names = CIFAR10_FILES[:5] if usage == "train" else CIFAR10_FILES[5:]
    return np.concatenate([np.memmap(os.path.join(folder, n), np.uint8, "r")[::CIFAR10_RECORD]
                           for n in names]).astype(np.int64)


def check_cifar10(folder):
    """All six batch files, each of the exact size, every label below 10."""
    for name in CIFAR10_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise UserError(f"{path}: missing; a CIFAR-10 folder needs {', '.join(CIFAR10_FILES)}")
        size = os.path.getsize(path)
        if size != CIFAR10_FILE_BYTES:
            raise UserError(f"{path}: {size} bytes, expected {CIFAR10_FILE_BYTES} "
                            "(truncated or not CIFAR-10 binary); replace it")
        labels = np.memmap(path, np.uint8, "r")[::CIFAR10_RECORD]
        if labels.max() >= 10:
            raise UserError(f"{path}: label {int(labels.max())} found, CIFAR-10 labels are 0-9; "
                            "the file is damaged or not CIFAR-10")
    return folder


def _refuse_foreign_folder(data_dir):
    """Never download into a folder that holds something other than CIFAR-10."""
    if not os.path.isdir(data_dir):
        return
    found = sorted(n for n in os.listdir(data_dir) if not n.startswith("."))
    foreign = [n for n in found if n not in ("cifar-10-binary.tar.gz", "cifar-10-batches-bin")]
    if not foreign:
        return
    hint = ("; it looks like an image-folder data set: pass --dataset imagefolder"
            if "train" in foreign else "; pass the folder that holds CIFAR-10's .bin files, or a new folder to download into")
    raise UserError(f"--data_dir {data_dir}: holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''} "
                    f"but no CIFAR-10 binary files, so nothing is downloaded there{hint}")


def locate_cifar10(data_dir, data_url=CIFAR10_URL):
    """The folder holding CIFAR-10's batch files, downloading it if absent.

    `data_dir` may be that folder itself or its parent (where the official
    archive unpacks `cifar-10-batches-bin/`). An existing folder is used as
    is, after `check_cifar10`.
    """
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f"--data_dir {data_dir}: a file, not a folder")
    for folder in (data_dir, os.path.join(data_dir, "cifar-10-batches-bin")):
        if any(os.path.isfile(os.path.join(folder, name)) for name in CIFAR10_FILES):
            return check_cifar10(folder)
    _refuse_foreign_folder(data_dir)
    if not data_url:
        raise UserError(f"--data_dir {data_dir}: no CIFAR-10 binary files there and no --data_url to fetch them from")
    created = not os.path.exists(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    archive = os.path.join(data_dir, "cifar-10-binary.tar.gz")
    # The official archive has a known MD5; another URL is checked by structure.
    checksum = f"md5:{CIFAR10_MD5}" if data_url == CIFAR10_URL else None
    try:
        fetch_file(data_url, archive, checksum, verify=check_tar)
    except UserError as e:
        if created:  # leave no empty folder behind
            os.rmdir(data_dir)
        raise UserError(f"{e}, e.g. --data_dir DIR with DIR/cifar-10-batches-bin/") from None
    folder = extract_tar(archive, data_dir, "cifar-10-batches-bin")
    return check_cifar10(folder)


# ---------------------------------------------------------------- sources and splits

@dataclass
class DataSource:
    """Where each split's samples come from, as index lists into a leaf dataset."""
    kind: str
    root: str
    class_names: tuple
    # split -> (folder, usage, indices, labels of every sample of that leaf by index)
    splits: dict = field(default_factory=dict)

    def indices(self, split):
        if split not in self.splits:
            raise UserError(f"{self.root}: no {split!r} split here (have: {', '.join(self.splits)})")
        return self.splits[split][2]

    def labels(self, split):
        """The label of every sample of a split, in indices(split) order."""
        return self.splits[split][3][self.indices(split)]

    def class_counts(self, split):
        return np.bincount(self.labels(split), minlength=len(self.class_names))

    def leaf(self, split, indices, workers):
        import mindspore.dataset as ds
        folder, usage = self.splits[split][:2]
        sampler = ds.SubsetSampler(np.asarray(indices, dtype=np.int64).tolist())
        if self.kind == "cifar10":
            return ds.Cifar10Dataset(folder, usage=usage, sampler=sampler,
                                     num_parallel_workers=workers)
        files = ds.ImageFolderDataset(folder, sampler=sampler, decode=False,
                                      extensions=list(IMAGE_EXTENSIONS),
                                      class_indexing={c: i for i, c in enumerate(self.class_names)},
                                      num_parallel_workers=workers)
        # images.decode, not the native decoder: the same pixels as prediction and pictures
        return files.map(_decode_bytes, input_columns="image", num_parallel_workers=workers)


def _decode_bytes(data):
    return decode(data.tobytes())


def split_indices(n, val_split, seed):
    """Deterministic (train, val) index arrays; val_split is a fraction (<1) or a count."""
    n_val = int(round(val_split * n)) if val_split < 1 else int(val_split)
    if not 0 <= n_val < n:
        raise UserError(f"--val_split {val_split}: must leave training images (there are {n})")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _class_folders(folder):
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def usable_images(folder, class_names, bad_images="stop"):
    """Indices (in ImageFolderDataset's order) of the images that will decode.

    bad_images="stop" refuses a folder with any truncated or unreadable image;
    "skip" leaves them out and says how many.
    """
    files, good, bad, others = scan(folder, class_names)
    if others:
        log.warning("not read: %d file(s) under %s without an image extension (%s), e.g. %s",
                    len(others), folder, " ".join(e for e in IMAGE_EXTENSIONS if e.islower()), others[0])
    if bad and bad_images == "stop":
        raise UserError(f"{bad[0]}: truncated or not a readable image ({len(bad)} such file(s) under "
                        f"{folder}); remove them, or pass --bad_images skip")
    if bad:
        log.warning("skipping %d unreadable image(s) under %s, e.g. %s", len(bad), folder, bad[0])
    counts = np.bincount([files[i][1] for i in good], minlength=len(class_names))
    for name, n in zip(class_names, counts):
        if n == 0:
            raise UserError(f"{os.path.join(folder, name)}: class folder has no (readable) images")
    return np.asarray(good, dtype=np.int64), np.asarray([label for _, label in files], dtype=np.int64)


def open_source(dataset, data_dir, val_split=0.1, seed=0, data_url=CIFAR10_URL, bad_images="stop"):
    """Find (or download) the data and fix its train/val/test index lists.

    Validation is held out of the training data (deterministic in `seed`);
    an image folder's own `val/` is used instead when it has one.
    `val_split=0` leaves no validation split: selection then falls to the test split.
    """
    if dataset == "cifar10":
        folder = locate_cifar10(data_dir, data_url)
        train, val = split_indices(50000, val_split, seed)
        src = DataSource("cifar10", folder, CIFAR10_CLASSES)
        labels = cifar10_labels(folder, "train")
        src.splits["train"] = (folder, "train", train, labels)
        if len(val):
            src.splits["val"] = (folder, "train", val, labels)
        src.splits["test"] = (folder, "test", np.arange(10000), cifar10_labels(folder, "test"))
        return src
    if dataset != "imagefolder":
        raise UserError(f"--dataset {dataset}: choose one of {', '.join(DATASETS)}")
    train_dir = os.path.join(data_dir, "train")
    if not os.path.isdir(train_dir):
        raise UserError(f"--data_dir {data_dir}: no train/ folder; an image folder data set is "
                        "train/<class>/*.jpg with val/<class>/ or test/<class>/ beside it")
    classes = tuple(_class_folders(train_dir))
    if len(classes) < 2:
        raise UserError(f"{train_dir}: {len(classes)} class folder(s); need at least two")
    src = DataSource("imagefolder", data_dir, classes)
    usable, labels = usable_images(train_dir, classes, bad_images)
    has_val = os.path.isdir(os.path.join(data_dir, "val"))
    train, val = usable, []
    if not has_val:
        train_pos, val_pos = split_indices(len(usable), val_split, seed)
        train, val = usable[train_pos], usable[val_pos]
    src.splits["train"] = (train_dir, None, train, labels)
    if len(val):
        src.splits["val"] = (train_dir, None, val, labels)
    for split in ("val", "test") if has_val else ("test",):
        folder = os.path.join(data_dir, split)
        if os.path.isdir(folder):
            if tuple(_class_folders(folder)) != classes:
                raise UserError(f"{folder}: class folders differ from those of {train_dir}")
            src.splits[split] = (folder, None, *usable_images(folder, classes, bad_images))
    return src


# ---------------------------------------------------------------- transforms and loaders

PAD_MODES = ("zeros", "reflect")


def image_transforms(kind, train, image_size, mean, std, translate=4, pad_mode="zeros"):
    """The per-image ops. Rescale(1/255) and Normalize are folded into one
    Normalize on 0-255 values: the same numbers, one pass over the pixels fewer.

    32-px training images are shifted by up to `translate` pixels each way (a
    random crop of the image padded with zeros, the course's, or its mirror
    image, airbench's) and flipped; translate 0 only flips."""
    import mindspore.dataset.vision as V
    ops = []
    if kind == "cifar10":
        if train and translate:
            border = V.Border.REFLECT if pad_mode == "reflect" else V.Border.CONSTANT
            ops.append(V.RandomCrop(32, padding=translate, padding_mode=border))
        if train:
            ops.append(V.RandomHorizontalFlip())
        if image_size != 32:
            ops.append(V.Resize(image_size))
    elif train:
        ops += [V.RandomResizedCrop(image_size), V.RandomHorizontalFlip()]
    else:  # the usual ImageNet evaluation: resize by 256/224, centre crop
        ops += [V.Resize(round(image_size * 256 / 224)), V.CenterCrop(image_size)]
    ops += [V.Normalize([255 * m for m in mean], [255 * s for s in std]), V.HWC2CHW()]
    return ops


def epoch_order(indices, seed, epoch):
    """The training order of one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(indices)


def loader_indices(indices, *, train=False, seed=0, epoch=0, batch_size=1, limit_batches=None,
                   shard=(0, 1)):
    """Which samples, in which order, one rank reads in one epoch.

    Training shuffles with `epoch_order`. `shard=(rank, world)` gives each rank
    a disjoint share; in training the shares are equal (every rank must run
    the same number of steps), in evaluation together they are the whole split.
    """
    if train:
        indices = epoch_order(indices, seed, epoch)
    rank, world = shard
    if world > 1:
        if train:
            indices = indices[:len(indices) // world * world]
        indices = indices[rank::world]
    if limit_batches:
        indices = indices[:limit_batches * batch_size]
    return indices


def make_loader(source, split, batch_size, image_size, mean, std, *, train=False,
                seed=0, epoch=0, limit_batches=None, shard=(0, 1), workers=2, translate=4, pad_mode="zeros"):
    """A batched dataset of (float32 NCHW image, int32 label) for one split/epoch.

    Training drops the last partial batch (a fixed shape avoids recompiling
    the graph); evaluation keeps every image.
    """
    import mindspore as ms
    import mindspore.dataset as ds
    import mindspore.dataset.transforms as T
    indices = loader_indices(source.indices(split), train=train, seed=seed, epoch=epoch,
                             batch_size=batch_size, limit_batches=limit_batches, shard=shard)
    if train:
        ds.config.set_seed(seed * 1000 + epoch)  # the random crops and flips of this epoch
    data = source.leaf(split, indices, workers)
    data = data.map(image_transforms(source.kind, train, image_size, mean, std, translate, pad_mode),
                    input_columns="image", num_parallel_workers=workers)
    data = data.map(T.TypeCast(ms.int32), input_columns="label")
    return data.batch(batch_size, drop_remainder=train)
