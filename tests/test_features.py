"""What users of a classifier trainer expect, run as they would run it: predict to CSV/JSON,
class weights, freezing, early stopping, logs without a terminal, run folders, resume by
path, configs from a run, and the mixed-precision epoch line."""
import argparse
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_script

from resnet_ms.checkpoint import read_checkpoint

TINY = ["--model", "resnet18", "--batch_size", 32, "--limit_train_batches", 6, "--limit_val_batches", 4,
        "--num_workers", 1]


# ---------------------------------------------------------------- predict.py

@pytest.fixture(scope="module")
def photos(synthetic_cifar, tmp_path_factory):
    """Three CIFAR test images as PNG files (exact pixels) in nested folders, a larger JPEG,
    a broken file and a note."""
    from resnet_ms.data import open_source
    root = tmp_path_factory.mktemp("photos")
    src = open_source("cifar10", synthetic_cifar)
    images = [img for img, _ in src.leaf("test", [0, 1, 2], 1).create_tuple_iterator(output_numpy=True)]
    (root / "trip" / "day2").mkdir(parents=True)
    paths = [root / "a.png", root / "trip" / "b.png", root / "trip" / "day2" / "c.png"]
    for img, p in zip(images, paths):
        Image.fromarray(img).save(p)
    Image.fromarray(np.repeat(np.repeat(images[0], 2, 0), 3, 1)).save(root / "trip" / "big.jpg")
    (root / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("holiday")
    return root


def test_predict_writes_a_row_per_image_with_evaluations_numbers(tiny_run, synthetic_cifar, photos, tmp_path,
                                                                 pynative):
    import mindspore as ms
    from resnet_ms.data import make_loader, open_source
    from resnet_ms.inference import softmax
    from resnet_ms.weights import load_model
    ckpt = os.path.join(tiny_run[0], "best.ckpt")
    out = tmp_path / "preds.csv"
    proc = run_script("predict.py", "--ckpt", ckpt, "--source", photos, "--topk", 3, "--output", out)
    with open(out, newline="") as f:
        rows = {os.path.relpath(r["path"], photos): r for r in csv.DictReader(f)}
    assert sorted(rows) == ["a.png", "trip/b.png", "trip/big.jpg", "trip/broken.jpg", "trip/day2/c.png"]
    assert rows["trip/broken.jpg"]["error"].startswith("not a readable image") and not rows["trip/broken.jpg"]["class_1"]
    assert "4 image(s) predicted" in proc.stdout and "1 unreadable" in proc.stdout and "1 non-image" in proc.stdout
    # The same numbers as evaluation's pipeline on the same three test images.
    net, record = load_model(ckpt)
    batch = next(make_loader(open_source("cifar10", synthetic_cifar), "test", 3, 32, record.mean, record.std,
                             limit_batches=1).create_tuple_iterator(output_numpy=True))[0]
    probs = softmax(net(ms.Tensor(batch)).asnumpy().astype(np.float64))
    for name, p in zip(["a.png", "trip/b.png", "trip/day2/c.png"], probs):
        row = rows[name]
        order = np.argsort(-p)[:3]
        assert [row[f"class_{i}"] for i in (1, 2, 3)] == [record.class_names[k] for k in order]
        assert [float(row[f"prob_{i}"]) for i in (1, 2, 3)] == pytest.approx(p[order], abs=1e-5)
    # JSON, by suffix; a file given directly is predicted too.
    proc = run_script("predict.py", "--ckpt", ckpt, "--source", photos / "a.png", "--output", tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert len(data) == 1 and len(data[0]["top"]) == 5 and data[0]["top"][0]["class"] == rows["a.png"]["class_1"]


# ---------------------------------------------------------------- training options

@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    from conftest import synthetic_images
    root = tmp_path_factory.mktemp("imbalanced")
    for split, counts in (("train", (24, 8)), ("val", (4, 4))):
        for k, (name, n) in enumerate(zip(("common", "rare"), counts)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, img in enumerate(synthetic_images(np.full(n, k), 32, seed=k + len(split))):
                Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def test_balanced_class_weights_are_inverse_frequencies(imbalanced):
    from resnet_ms.config import TrainConfig
    from resnet_ms.data import open_source
    from resnet_ms.trainer import class_weights
    src = open_source("imagefolder", str(imbalanced), val_split=0)
    assert src.class_counts("train").tolist() == [24, 8]
    w = class_weights(TrainConfig(dataset="imagefolder", class_weights="balanced"), src)
    assert w.tolist() == pytest.approx([32 / (2 * 24), 32 / (2 * 8)])  # each class weighs 16 images' worth
    assert class_weights(TrainConfig(), src) is None


def test_weighted_loss_is_the_weighted_mean(pynative):
    import mindspore as ms
    from mindspore import nn
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    labels = np.array([0, 1, 1], np.int32)
    w = np.array([0.5, 2.0], np.float32)
    loss = nn.CrossEntropyLoss(weight=ms.Tensor(w))(ms.Tensor(logits), ms.Tensor(labels))
    nll = -np.log(np.exp(logits[range(3), labels]) / np.exp(logits).sum(1))
    assert float(loss.asnumpy()) == pytest.approx((w[labels] * nll).sum() / w[labels].sum(), rel=1e-5)


def test_freezing_logs_and_run_folders(tiny_run, synthetic_cifar, imbalanced, tmp_path):
    """--freeze layer2 from a checkpoint: the stem and layers 1-2 (BatchNorm statistics too) are
    exactly the checkpoint's, the rest trains. Without --output_dir: runs/train, then runs/train2."""
    pretrained = os.path.join(tiny_run[0], "best.ckpt")
    proc = run_script("train.py", "--data_dir", synthetic_cifar, *TINY, "--pretrained", pretrained, "--epochs", 1,
                      "--lr", 0.05, "--freeze", "layer2", "--log_interval", 2, cwd=tmp_path)
    before, _ = read_checkpoint(pretrained)
    after, record = read_checkpoint(str(tmp_path / "runs" / "train" / "last.ckpt"))
    frozen = [k for k in before if k.startswith(("conv1.", "norm.", "layer1.", "layer2."))]
    trained = [k for k in before if k.startswith(("layer3.", "layer4.", "fc.")) and "moving" not in k]
    assert len(frozen) == 5 + 20 + 25  # stem conv + BN, layer1: two blocks of 10, layer2: 20 + its shortcut
    assert all(np.array_equal(before[k].asnumpy(), after[k].asnumpy()) for k in frozen)
    assert all(not np.array_equal(before[k].asnumpy(), after[k].asnumpy()) for k in trained)
    state = [k for k in after if k.startswith("optimizer/")]
    assert [k for k in state if ".layer3." in k] and not [k for k in state if ".layer1." in k]  # frozen: not in it
    # Logs without a terminal: the compile notice, then a line every 2 steps.
    assert "compiling the training graph" in proc.stderr
    line = next(s for s in proc.stderr.splitlines() if s.startswith("epoch 1 step 2/6"))
    assert "loss " in line and "lr " in line and "img/s" in line and "ETA" in line
    assert "epoch 1 step 4/6" in proc.stderr and "training images per class: airplane" in proc.stdout
    # The second run without --output_dir goes next to it, and imbalance is announced.
    proc = run_script("train.py", "--dataset", "imagefolder", "--data_dir", imbalanced, "--model", "resnet18",
                      "--pretrained", "none", "--batch_size", 8, "--epochs", 1,
                      "--class_weights", "balanced", "--num_workers", 1, cwd=tmp_path)
    assert sorted(os.listdir(tmp_path / "runs")) == ["train", "train2"]
    assert "training images per class: common 24, rare 8" in proc.stdout
    assert "class weights (balanced): 0.667, 2" in proc.stderr


def test_patience_stops_and_resume_says_so(tiny_run, synthetic_cifar, tmp_path):
    """Only the classifier trains, at a rate too small to change a prediction: the selection
    accuracy cannot improve, so --patience 1 stops after epoch 2 of 4."""
    out = tmp_path / "run"
    proc = run_script("train.py", "--data_dir", synthetic_cifar, *TINY, "--output_dir", out, "--epochs", 4,
                      "--pretrained", os.path.join(tiny_run[0], "best.ckpt"), "--freeze", "backbone",
                      "--lr", 1e-9, "--min_lr", 0, "--patience", 1)
    reason = "stopped early after epoch 2: no better val accuracy for 1 epoch(s) (--patience 1)"
    assert reason in proc.stdout and "epoch 3/4" not in proc.stdout
    assert (out / "stopped.txt").read_text().strip() == reason
    assert read_checkpoint(str(out / "last.ckpt"))[1].stop_reason == reason
    again = run_script("train.py", "--resume", out / "last.ckpt")
    assert f"nothing to do: {out} has finished ({reason})" in again.stdout
    assert len(list(csv.DictReader(open(out / "metrics.csv")))) == 2


def test_mixed_precision_epoch_line_counts_skipped_steps(synthetic_cifar, tmp_path):
    proc = run_script("train.py", "--data_dir", synthetic_cifar, *TINY, "--pretrained", "none", "--epochs", 1,
                      "--limit_train_batches", 3, "--limit_val_batches", 1, "--lr", 0.05, "--amp_level", "O2",
                      "--output_dir", tmp_path / "amp")
    line = next(s for s in proc.stdout.splitlines() if s.startswith("epoch 1/1"))
    assert "overflow step(s) skipped, loss scale" in line
    skipped = int(line.split("overflow step")[0].split()[-1])
    scale = float(line.split("loss scale ")[1].split()[0])
    assert 0 <= skipped <= 3 and scale == 2.0 ** 16 / 2 ** skipped  # halved once per overflow


# ---------------------------------------------------------------- configuration

def _resolve(argv):
    from resnet_ms.config import add_arguments, resolve
    return resolve(add_arguments(argparse.ArgumentParser()).parse_args(list(map(str, argv))))


def test_yaml_numbers_in_e_notation_and_a_runs_config(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("model: resnet18\nlr: 1e-3\nweight_decay: 5e-5\nepochs: 7\n")
    cfg = _resolve(["-c", tmp_path / "c.yaml"])
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float) and cfg.weight_decay == 5e-5 and cfg.epochs == 7
    assert cfg.output_dir == os.path.join("runs", "train")
    # A run's own config.yaml repeats its settings into a new folder.
    cfg = _resolve(["-c", os.path.join(tiny_run[0], "config.yaml")])
    assert (cfg.model, cfg.lr, cfg.batch_size, cfg.limit_train_batches) == ("resnet18", 0.01, 32, 6)
    assert cfg.output_dir == os.path.join("runs", "train") and not cfg.resume
    # --resume PATH takes the run's folder and settings; flags typed still win.
    cfg = _resolve(["--resume", tiny_run[0], "--num_workers", 1])
    assert cfg.output_dir == tiny_run[0] and cfg.resume and cfg.epochs == 3 and cfg.num_workers == 1

