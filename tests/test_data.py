import os
import shutil
import tarfile

import numpy as np
import pytest

from resnet_ms.data import (CIFAR10_CLASSES, CIFAR10_FILE_BYTES, CIFAR10_MEAN, CIFAR10_STD, check_cifar10,
                            epoch_order, loader_indices, locate_cifar10, make_loader, open_source, split_indices)
from resnet_ms.errors import UserError


def test_split_is_deterministic_disjoint_and_complete():
    train, val = split_indices(50000, 0.1, seed=0)
    assert len(train) == 45000 and len(val) == 5000
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.union1d(train, val), np.arange(50000))
    again, val_again = split_indices(50000, 5000, seed=0)  # a count means the same
    assert np.array_equal(val, val_again) and np.array_equal(train, again)
    assert not np.array_equal(val, split_indices(50000, 0.1, seed=1)[1])
    with pytest.raises(UserError, match="--val_split"):
        split_indices(100, 100, 0)


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    idx = np.arange(100)
    assert np.array_equal(epoch_order(idx, 0, 3), epoch_order(idx, 0, 3))
    assert not np.array_equal(epoch_order(idx, 0, 3), epoch_order(idx, 0, 4))
    assert sorted(epoch_order(idx, 0, 3)) == list(idx)


def test_cifar10_eval_loader_gives_normalised_chw_batches_in_file_order(synthetic_cifar):
    src = open_source("cifar10", os.path.dirname(synthetic_cifar), val_split=0.1, seed=0)
    assert src.class_names == CIFAR10_CLASSES
    assert [len(src.indices(s)) for s in ("train", "val", "test")] == [45000, 5000, 10000]
    loader = make_loader(src, "test", 16, 32, CIFAR10_MEAN, CIFAR10_STD, limit_batches=2)
    batches = list(loader.create_tuple_iterator(output_numpy=True))
    assert len(batches) == 2
    images, labels = batches[0]
    assert images.shape == (16, 3, 32, 32) and images.dtype == np.float32 and labels.dtype == np.int32
    raw = np.fromfile(os.path.join(synthetic_cifar, "test_batch.bin"), np.uint8).reshape(10000, 3073)[:16]
    assert np.array_equal(labels, raw[:, 0])
    pixels = raw[:, 1:].reshape(16, 3, 32, 32) / 255.0
    want = (pixels - np.array(CIFAR10_MEAN)[:, None, None]) / np.array(CIFAR10_STD)[:, None, None]
    np.testing.assert_allclose(images, want, atol=1e-4)


def test_validation_comes_from_the_held_out_training_images(synthetic_cifar):
    src = open_source("cifar10", synthetic_cifar, val_split=0.1, seed=0)
    loader = make_loader(src, "val", 50, 32, (0, 0, 0), (1 / 255,) * 3, limit_batches=1)
    images, labels = next(loader.create_tuple_iterator(output_numpy=True))
    train = np.concatenate([np.fromfile(os.path.join(synthetic_cifar, f"data_batch_{i}.bin"), np.uint8)
                            .reshape(10000, 3073) for i in range(1, 6)])
    rows = train[src.indices("val")[:50]]
    assert np.array_equal(labels, rows[:, 0])
    assert np.array_equal(images.astype(np.uint8), rows[:, 1:].reshape(50, 3, 32, 32))


def test_training_loader_augments_resizes_and_drops_the_partial_batch(synthetic_cifar):
    src = open_source("cifar10", synthetic_cifar, val_split=0.1, seed=0)
    loader = make_loader(src, "train", 8, 64, CIFAR10_MEAN, CIFAR10_STD, train=True, epoch=1,
                         limit_batches=3)
    shapes = [b[0].shape for b in loader.create_tuple_iterator(output_numpy=True)]
    assert shapes == [(8, 3, 64, 64)] * 3
    one = next(make_loader(src, "train", 8, 32, CIFAR10_MEAN, CIFAR10_STD, train=True, epoch=1,
                           limit_batches=1).create_tuple_iterator(output_numpy=True))
    two = next(make_loader(src, "train", 8, 32, CIFAR10_MEAN, CIFAR10_STD, train=True, epoch=2,
                           limit_batches=1).create_tuple_iterator(output_numpy=True))
    assert not np.array_equal(one[1], two[1]) or not np.array_equal(one[0], two[0])


def test_shards_are_disjoint_equal_and_cover_the_epoch(synthetic_cifar):
    src = open_source("cifar10", synthetic_cifar, val_split=0.1, seed=0)
    train = src.indices("train")
    shards = [loader_indices(train, train=True, seed=0, epoch=2, shard=(r, 2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 22500
    assert len(np.intersect1d(shards[0], shards[1])) == 0
    assert np.array_equal(np.sort(np.concatenate(shards)), train)
    odd = [loader_indices(np.arange(10), shard=(r, 3)) for r in range(3)]  # evaluation: all 10
    assert [list(x) for x in odd] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    even = [loader_indices(np.arange(10), train=True, shard=(r, 3)) for r in range(3)]
    assert [len(x) for x in even] == [3, 3, 3]  # training: equal steps on every rank
    # The loader reads exactly its shard, in that order.
    loader = make_loader(src, "val", 1000, 32, (0, 0, 0), (1 / 255,) * 3, shard=(1, 3))
    labels = np.concatenate([b[1] for b in loader.create_tuple_iterator(output_numpy=True)])
    raw = np.concatenate([np.fromfile(os.path.join(synthetic_cifar, f"data_batch_{i}.bin"), np.uint8)
                          .reshape(10000, 3073)[:, 0] for i in range(1, 6)])
    assert np.array_equal(labels, raw[loader_indices(src.indices("val"), shard=(1, 3))])


def test_image_folder_classes_splits_and_shapes(image_folder):
    src = open_source("imagefolder", image_folder, val_split=0.25, seed=0)
    assert src.class_names == ("cat", "dog", "fox")
    assert len(src.indices("train")) == 27 and len(src.indices("val")) == 9
    assert len(src.indices("test")) == 12
    loader = make_loader(src, "test", 5, 48, (0.5,) * 3, (0.25,) * 3)
    batches = list(loader.create_tuple_iterator(output_numpy=True))
    assert [b[0].shape for b in batches] == [(5, 3, 48, 48)] * 2 + [(2, 3, 48, 48)]
    assert np.array_equal(np.concatenate([b[1] for b in batches]), np.repeat([0, 1, 2], 4))


def test_image_folder_problems_are_reported(tmp_path, image_folder):
    with pytest.raises(UserError, match="no train/ folder"):
        open_source("imagefolder", str(tmp_path), 0.1)
    one = tmp_path / "one"
    shutil.copytree(os.path.join(image_folder, "train", "cat"), one / "train" / "cat")
    with pytest.raises(UserError, match="need at least two"):
        open_source("imagefolder", str(one), 0.1)
    (one / "train" / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: class folder has no \(readable\) images"):
        open_source("imagefolder", str(one), 0.1)


@pytest.fixture
def cifar_copy(synthetic_cifar, tmp_path):
    dest = tmp_path / "cifar-10-batches-bin"
    shutil.copytree(synthetic_cifar, dest)
    return dest


def test_cifar10_folder_checks(cifar_copy):
    assert check_cifar10(str(cifar_copy)) == str(cifar_copy)
    os.remove(cifar_copy / "data_batch_3.bin")
    with pytest.raises(UserError, match="data_batch_3.bin: missing"):
        check_cifar10(str(cifar_copy))


def test_cifar10_truncated_or_mislabelled_file_is_refused(cifar_copy):
    path = cifar_copy / "test_batch.bin"
    data = bytearray(path.read_bytes())
    path.write_bytes(data[:-100])
    with pytest.raises(UserError, match=f"test_batch.bin: {CIFAR10_FILE_BYTES - 100} bytes"):
        check_cifar10(str(cifar_copy))
    data[3073 * 17] = 12
    path.write_bytes(data)
    with pytest.raises(UserError, match="label 12 found"):
        check_cifar10(str(cifar_copy))


def _archive(src_folder, dest):
    with tarfile.open(dest, "w:gz", compresslevel=1) as t:
        t.add(src_folder, arcname="cifar-10-batches-bin")


def test_download_from_a_local_server_extracts_and_checks(synthetic_cifar, http_server, tmp_path):
    www, url = http_server
    _archive(synthetic_cifar, www / "cifar.tar.gz")
    data_dir = tmp_path / "data"
    folder = locate_cifar10(str(data_dir), f"{url}/cifar.tar.gz")
    assert folder == str(data_dir / "cifar-10-batches-bin")
    assert sorted(os.listdir(folder)) == sorted(os.listdir(synthetic_cifar))
    assert not [n for n in os.listdir(data_dir) if n.startswith(".")]  # no temporary leftovers
    # Second call: the folder is used as is, nothing is fetched.
    (www / "cifar.tar.gz").unlink()
    assert locate_cifar10(str(data_dir), f"{url}/cifar.tar.gz") == folder


def test_failed_download_leaves_nothing_and_says_how_to_go_offline(http_server, tmp_path):
    _, url = http_server
    data_dir = tmp_path / "nothing"
    with pytest.raises(UserError) as e:
        locate_cifar10(str(data_dir), f"{url}/missing.tar.gz")
    assert "cannot download" in str(e.value) and "--data_dir" in str(e.value)
    assert "\n" not in str(e.value)
    assert not data_dir.exists()


def test_official_url_requires_the_official_md5(synthetic_cifar, http_server, tmp_path, monkeypatch):
    import resnet_ms.data as data
    www, url = http_server
    _archive(synthetic_cifar, www / "cifar-10-binary.tar.gz")
    monkeypatch.setattr(data, "CIFAR10_URL", f"{url}/cifar-10-binary.tar.gz")  # stands for the official URL
    with pytest.raises(UserError, match="md5 is .* expected c32a1d4ab5d03f1284b67883e8d87530"):
        data.locate_cifar10(str(tmp_path / "d"), f"{url}/cifar-10-binary.tar.gz")
    assert not (tmp_path / "d").exists()


def test_archive_entries_escaping_the_folder_are_refused(http_server, tmp_path):
    www, url = http_server
    evil = tmp_path / "evil.txt"
    evil.write_text("x")
    with tarfile.open(www / "evil.tar.gz", "w:gz") as t:
        t.add(evil, arcname="cifar-10-batches-bin/../../escaped.txt")
    with pytest.raises(UserError, match="outside the target folder"):
        locate_cifar10(str(tmp_path / "d"), f"{url}/evil.tar.gz")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "d" / "cifar-10-batches-bin").exists()


def _views(image, translate, pad_mode):
    """Every image training may make of `image` (CHW uint8): shifts of up to `translate`
    pixels each way, with zeros or the mirror image brought in, each flipped or not."""
    padded = np.pad(image, ((0, 0), (translate,) * 2, (translate,) * 2),
                    mode="reflect" if pad_mode == "reflect" else "constant")
    size = image.shape[1]
    crops = [padded[:, y:y + size, x:x + size] for y in range(2 * translate + 1) for x in range(2 * translate + 1)]
    return np.stack(crops + [c[:, :, ::-1] for c in crops])


@pytest.mark.parametrize("translate, pad_mode", [(2, "reflect"), (4, "zeros"), (0, "zeros")])
def test_training_images_are_shifted_copies_with_the_asked_border(synthetic_cifar, translate, pad_mode):
    src = open_source("cifar10", synthetic_cifar, val_split=0.1, seed=0)
    loader = make_loader(src, "train", 64, 32, (0, 0, 0), (1 / 255,) * 3, train=True, epoch=1, limit_batches=1,
                         translate=translate, pad_mode=pad_mode)
    images, _ = next(loader.create_tuple_iterator(output_numpy=True))
    order = loader_indices(src.indices("train"), train=True, seed=0, epoch=1, batch_size=64, limit_batches=1)
    train = np.concatenate([np.fromfile(os.path.join(synthetic_cifar, f"data_batch_{i}.bin"), np.uint8)
                            .reshape(10000, 3073) for i in range(1, 6)])
    originals = train[order, 1:].reshape(-1, 3, 32, 32)
    shifts = set()
    for got, original in zip(np.rint(images).astype(np.uint8), originals):
        matches = np.flatnonzero((_views(original, translate, pad_mode) == got).all(axis=(1, 2, 3)))
        assert len(matches), "an augmented image is no shifted/flipped copy of its original"
        shifts.add(int(matches[0]) % (2 * translate + 1) ** 2)
    if translate:  # 64 random images take several of the 25 or 81 shifts, not only the centre
        assert len(shifts) > 3
