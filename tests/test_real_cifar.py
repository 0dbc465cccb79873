"""One short training on the real CIFAR-10 (the JPEG q75 copy in ../shared/datasets/cifar10)."""
import csv
import os

from conftest import run_script


def test_short_training_on_real_cifar10_learns(real_cifar, tmp_path):
    out = tmp_path / "real"
    run_script("train.py", "--data_dir", real_cifar, "--output_dir", out, "--model", "resnet18",
               "--pretrained", "none", "--batch_size", 64, "--epochs", 2, "--limit_train_batches", 30,
               "--limit_val_batches", 8, "--lr", 0.05, "--warmup_epochs", 0.3)
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    # 512 validation images: chance is 0.10 with a standard error of about 0.013.
    assert max(float(r["val_acc"]) for r in rows) > 0.15
    assert os.path.getsize(out / "best.ckpt") > 40_000_000  # ResNet-18 in float32
