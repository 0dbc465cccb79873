"""The three scripts, run as a user runs them: in subprocesses, on data the tests write."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, TINY_TRAIN_ARGS, kill_after_first_epoch, run_script

from resnet_ms.checkpoint import read_checkpoint

TRAIN_ARGS = TINY_TRAIN_ARGS


def metrics(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def run(tiny_run):
    return tiny_run


def test_training_writes_every_output_and_best_is_the_best_epoch(run):
    out, proc, _ = run
    assert sorted(os.listdir(out)) == ["best.ckpt", "config.yaml", "confusion.png", "curves.png", "last.ckpt", "metrics.csv"]
    rows = metrics(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    val = [float(r["val_acc"]) for r in rows]
    _, best = read_checkpoint(os.path.join(out, "best.ckpt"))
    _, last = read_checkpoint(os.path.join(out, "last.ckpt"))
    assert best.epoch == 1 + int(np.argmax(val)) and best.best_acc == pytest.approx(max(val), abs=1e-5)
    assert last.epoch == 3 and last.best_epoch == best.epoch
    assert best.class_names[0] == "airplane" and best.num_classes == 10 and best.image_size == 32
    # learnable synthetic colours: well above chance (0.1), in training and in validation
    assert max(float(r["train_acc"]) for r in rows) > 0.5 and max(val) > 0.25
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert "epoch 3/3" in proc.stdout and f"at epoch {best.epoch}" in proc.stdout
    with Image.open(os.path.join(out, "curves.png")) as im:
        assert im.size[0] > 600
    with Image.open(os.path.join(out, "confusion.png")) as im:  # the best epoch's, beside best.ckpt
        assert im.size[0] > 600


def _printed_top1(stdout):
    return float(stdout.split("top-1 ")[1].split()[0])


def test_eval_reproduces_the_validation_accuracy_of_the_best_epoch(run, synthetic_cifar, tmp_path):
    out, _, _ = run
    _, record = read_checkpoint(os.path.join(out, "best.ckpt"))
    # The same 4 batches training validated on: the same number, printed, marked partial, not written.
    proc = run_script("eval.py", "--ckpt", os.path.join(out, "best.ckpt"), "--data_dir", synthetic_cifar,
                      "--split", "val", "--batch_size", 32, "--limit_batches", 4, "--output_dir", tmp_path)
    assert _printed_top1(proc.stdout) == pytest.approx(record.best_acc, abs=1e-4)
    assert "val (128 images)" in proc.stdout and "partial: 128 of the 5000 val images" in proc.stdout
    assert os.listdir(tmp_path) == []  # no number is written for a split that was only partly read
    # The whole split: the report, the confusion matrix and the most confident mistakes.
    proc = run_script("eval.py", "--ckpt", os.path.join(out, "best.ckpt"), "--data_dir", synthetic_cifar,
                      "--split", "val", "--output_dir", tmp_path)
    report = json.loads((tmp_path / "eval_val_metrics.json").read_text())
    confusion = np.array(report["confusion"])
    assert report["images"] == 5000 == confusion.sum() and set(report["per_class"]) == set(record.class_names)
    assert report["top1"] == pytest.approx(np.trace(confusion) / 5000) == _printed_top1(proc.stdout)
    for k, name in enumerate(record.class_names):  # precision over the column, recall over the row
        row = report["classes"][name]
        assert row["support"] == confusion[k].sum() and row["recall"] == pytest.approx(confusion[k, k] / confusion[k].sum())
        if confusion[:, k].sum():
            assert row["precision"] == pytest.approx(confusion[k, k] / confusion[:, k].sum())
    f1 = [report["classes"][n]["f1"] for n in record.class_names]
    assert report["average"]["macro"]["f1"] == pytest.approx(np.mean(f1))
    assert "top5" in report and "macro avg" in proc.stdout and "airplane" in proc.stdout
    assert (tmp_path / "eval_val_confusion.png").stat().st_size > 10000
    if report["top1"] < 1:
        with Image.open(tmp_path / "eval_val_mistakes.png") as im:
            assert im.size[0] > 300


def test_eval_of_plain_course_format_weights(run, synthetic_cifar, tmp_path):
    import mindspore as ms
    out, _, _ = run
    tensors, record = read_checkpoint(os.path.join(out, "best.ckpt"))
    plain = str(tmp_path / "plain.ckpt")
    ms.save_checkpoint([{"name": k, "data": v} for k, v in tensors.items()], plain)  # no metadata
    proc = run_script("eval.py", "--ckpt", plain, "--data_dir", synthetic_cifar, "--split", "val",
                      "--model", "resnet18", "--num_classes", 10, "--limit_batches", 4, "--batch_size", 32)
    assert _printed_top1(proc.stdout) == pytest.approx(record.best_acc, abs=1e-4)
    assert "resnet18 on val (128 images)" in proc.stdout
    no_model = run_script("eval.py", "--ckpt", plain, "--data_dir", synthetic_cifar, check=False)
    assert no_model.returncode == 2 and "pass --model" in no_model.stderr


def test_visualize_draws_a_grid_from_data_and_from_files(run, synthetic_cifar, tmp_path):
    out, _, _ = run
    ckpt = os.path.join(out, "best.ckpt")
    proc = run_script("visualize.py", "--ckpt", ckpt, "--data_dir", synthetic_cifar, "--num_images", 8,
                      "--output", tmp_path / "grid.png")
    right = int(proc.stdout.split("/8 right")[0].split()[-1])
    assert 0 <= right <= 8
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size[0] > 600 and im.size[1] > 300
    from conftest import synthetic_images
    for k, img in enumerate(synthetic_images(np.array([0, 8]), size=100)):
        Image.fromarray(img).save(tmp_path / f"mine{k}.jpg")
    run_script("visualize.py", "--ckpt", ckpt, "--images", tmp_path / "mine0.jpg", tmp_path / "mine1.jpg",
               "--output", tmp_path / "mine.png")
    assert (tmp_path / "mine.png").stat().st_size > 5000


def test_killed_run_resumes_at_the_next_epoch_and_matches_an_uninterrupted_run(run, synthetic_cifar, tmp_path):
    reference, _, _ = run
    out = tmp_path / "train"
    done = kill_after_first_epoch(out, "--data_dir", synthetic_cifar, *TRAIN_ARGS)
    # The run's folder alone: its config.yaml supplies every other flag.
    resumed = run_script("train.py", "--resume", out)
    assert f"at epoch {done + 1}" in resumed.stderr + resumed.stdout
    assert f"epoch {done}/3" not in resumed.stdout
    rows, ref_rows = metrics(out), metrics(reference)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_acc"):
        assert [float(r[key]) for r in rows] == pytest.approx([float(r[key]) for r in ref_rows], rel=1e-3)
    assert read_checkpoint(str(out / "best.ckpt"))[1].epoch == read_checkpoint(
        os.path.join(reference, "best.ckpt"))[1].epoch


def test_fine_tuning_on_an_image_folder(image_folder, tmp_path):
    out = tmp_path / "ft"
    run_script("train.py", "--dataset", "imagefolder", "--data_dir", image_folder, "--output_dir", out,
               "--model", "resnet18", "--pretrained", "none", "--batch_size", 8, "--epochs", 2,
               "--image_size", 48, "--val_split", 0.25, "--lr", 0.02)
    _, record = read_checkpoint(str(out / "best.ckpt"))
    assert record.class_names == ("cat", "dog", "fox") and record.image_size == 48
    assert record.mean == pytest.approx([0.485, 0.456, 0.406])  # no weights: ImageNet statistics
    proc = run_script("eval.py", "--ckpt", out / "best.ckpt", "--data_dir", image_folder)
    assert "on test (12 images)" in proc.stdout and "top-5" not in proc.stdout  # 3 classes: top-5 says nothing


@pytest.fixture(scope="module")
def bad_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("yaml") / "bad.yaml"
    path.write_text("model: resnet18\nlearning_rate: 0.1\n")
    return path


@pytest.mark.parametrize("args, message", [
    (["--batch_size", 0], "--batch_size 0: must be at least 1"),
    (["--epochs", -1], "--epochs -1: must be at least 1"),
    (["--image_size", 16], "--image_size 16: must be at least 32"),
    (["--model", "resnet20"], "--model resnet20: choose one of"),
    (["--stem", "tiny"], "--stem tiny: choose one of imagenet, nopool, cifar"),
    (["--num_classes", 5], "--num_classes 5: the data in"),
    (["-c", "BAD_YAML"], "unknown key(s) learning_rate"),
    (["--output_dir", "/proc/version"], "a file, not a folder"),
    (["--resume"], "--resume: no"),
])
def test_bad_input_is_one_clear_line_and_exit_2(args, message, synthetic_cifar, bad_yaml, tmp_path):
    args = [bad_yaml if a == "BAD_YAML" else a for a in args]
    base = ["--data_dir", synthetic_cifar, "--pretrained", "none", "--model", "resnet18",
            "--output_dir", tmp_path / "out"]
    proc = run_script("train.py", *base, *args, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_an_existing_run_is_not_overwritten(run, synthetic_cifar):
    out, _, _ = run
    before = os.path.getmtime(os.path.join(out, "best.ckpt"))
    proc = run_script("train.py", "--data_dir", synthetic_cifar, "--output_dir", out, *TRAIN_ARGS, check=False)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert os.path.getmtime(os.path.join(out, "best.ckpt")) == before


@pytest.mark.parametrize("recipe", sorted(os.listdir(os.path.join(REPO, "configs"))))
def test_every_shipped_recipe_resolves_and_writes_only_under_runs(recipe, tmp_path, monkeypatch):
    import argparse
    from resnet_ms.config import add_arguments, resolve
    monkeypatch.chdir(tmp_path)  # relative output folders are checked from here
    args = add_arguments(argparse.ArgumentParser()).parse_args(["-c", os.path.join(REPO, "configs", recipe)])
    cfg = resolve(args)  # unknown keys, wrong types and bad values raise
    assert cfg.output_dir.startswith("runs/") and cfg.data_dir.startswith("data/")  # both git-ignored
    if cfg.pretrained == "none":
        assert cfg.lr >= 0.01 and cfg.warmup_epochs > 0  # a from-scratch rate (1e-3 fine-tunes), ramped
