"""Mistaken input to every script, as a user types it: one whole `error:` line, exit 2,
no traceback, and nothing written (the folders involved are compared before and after).

Each row: script, arguments ({data}, {folder}, {ckpt}, {tmp} filled in), words the
line must contain.
"""
import os

import pytest

from conftest import one_error_line, run_script, tree

TRAIN = ["--model", "resnet18", "--pretrained", "none", "--batch_size", 32, "--epochs", 1,
         "--limit_train_batches", 2, "--limit_val_batches", 1, "--num_workers", 1]

CASES = [
    # train.py: machine, device, paths, numbers, files of the wrong kind
    ("train.py", ["--data_dir", "{data}", "--device_target", "GPU"], "this MindSpore 2.10.0 is the CPU build"),
    ("train.py", ["--data_dir", "{data}", "--num_workers", 512], "--num_workers 512: must be between 1 and"),
    ("train.py", ["--data_dir", "{folder}"], "pass --dataset imagefolder"),
    ("train.py", ["--data_dir", ""], "--data_dir: empty"),
    ("train.py", ["--data_dir", "{tmp}/file.txt"], "a file, not a folder"),
    ("train.py", ["--data_dir", "{tmp}/nowhere", "--dataset", "imagefolder"], "no train/ folder"),
    ("train.py", ["--data_dir", "{data}", "--val_split", 1.5], "a fraction below 1, or a whole number"),
    ("train.py", ["--data_dir", "{data}", "--epochs", 0], "--epochs 0: must be at least 1"),
    ("train.py", ["--data_dir", "{data}", "--image_size", 100000], "--image_size 100000: at most 1024"),
    ("train.py", ["--data_dir", "{data}", "--batch_size", "big"], "argument --batch_size: invalid int value"),
    ("train.py", ["--data_dir", "{data}", "--lr", -1], "need 0 <= min_lr <= lr"),
    ("train.py", ["--data_dir", "{data}", "--output_dir", "{tmp}/file.txt"], "a file, not a folder"),
    ("train.py", ["--data_dir", "{data}", "-c", "{tmp}/missing.yaml"], "cannot read"),
    ("train.py", ["--data_dir", "{data}", "-c", "{tmp}/bad_type.yaml"], "lr: 'fast' is not a float"),
    ("train.py", ["--data_dir", "{data}", "--pretrained", "{tmp}/file.txt"], "damaged or not a MindSpore checkpoint"),
    ("train.py", ["--data_dir", "{data}", "--freeze", "layer9"], "--freeze layer9: choose one of"),
    ("train.py", ["--data_dir", "{data}", "--class_weights", "inverse"], "--class_weights inverse: none or balanced"),
    ("train.py", ["--data_dir", "{data}", "--patience", -2], "--patience -2: must not be negative"),
    ("train.py", ["--data_dir", "{data}", "--log_interval", -1], "--log_interval -1: must not be negative"),
    ("train.py", ["--data_dir", "{data}", "--resume", "{tmp}/file.txt"], "give a run folder or its last.ckpt"),
    ("train.py", ["--data_dir", "{data}", "--resume", "{ckpt}"], "give a run folder or its last.ckpt"),
    ("train.py", ["--data_dir", "{data}", "--resume", "{tmp}/no_run"], "--resume: no"),
    # the fast-training fields (issue 14)
    ("train.py", ["--data_dir", "{data}", "--stem", "cifar", "--whiten", "frozen"], "--whiten frozen: the cifar stem's 64"),
    ("train.py", ["--data_dir", "{data}", "--ema_decay", 1.5], "--ema_decay 1.5: 0 (off) or in (0, 1)"),
    ("train.py", ["--data_dir", "{data}", "--keep", "last", "--patience", 2], "with --keep last nothing is compared"),
    ("train.py", ["--data_dir", "{data}", "--stem", "small"], "--stem small: resnet18 takes --stem imagenet, nopool"),
    ("train.py", ["--data_dir", "{data}", "--schedule", "step"], "--schedule step: choose one of cosine, linear"),
    ("train.py", ["--data_dir", "{data}", "--tta", "mirror"], "--tta mirror: choose one of none, flip"),
    ("train.py", ["--data_dir", "{data}", "--translate", -1], "--translate -1: 0 to 16 pixels"),
    ("train.py", ["--data_dir", "{data}", "--translate", 40], "--translate 40: 0 to 16 pixels"),
    ("train.py", ["--data_dir", "{data}", "--pad_mode", "edge"], "--pad_mode edge: choose one of zeros, reflect"),
    # eval.py
    ("eval.py", ["--ckpt", "{ckpt}", "--data_dir", "{data}", "--limit_batches", -1], "--limit_batches -1: must be 0 or more"),
    ("eval.py", ["--ckpt", "{tmp}", "--data_dir", "{data}"], "a folder; pass a checkpoint file in it"),
    ("eval.py", ["--ckpt", "{tmp}/weights.pth", "--data_dir", "{data}"], "convert it first"),
    ("eval.py", ["--ckpt", "{tmp}/file.txt", "--data_dir", "{data}"], "damaged or not a MindSpore checkpoint"),
    ("eval.py", ["--ckpt", "{ckpt}", "--data_dir", "{data}", "--num_workers", 0], "--num_workers 0: must be between"),
    ("eval.py", ["--ckpt", "{ckpt}", "--data_dir", "{data}", "--output_dir", "/proc/x"], "not a writable folder"),
    ("eval.py", ["--ckpt", "{ckpt}", "--data_dir", "{folder}"], "pass --dataset imagefolder"),
    ("eval.py", ["--ckpt", "{ckpt}", "--data_dir", "{data}", "--model", "resnet20"], "argument --model: invalid choice"),
    ("eval.py", ["--ckpt", "{ckpt}", "--data_dir", "{data}", "--tta", "mirror"], "argument --tta: invalid choice"),
    # visualize.py
    ("visualize.py", ["--ckpt", "{ckpt}", "--data_dir", "{data}", "--output", "{tmp}/p.jpg"], "must be a .png file"),
    ("visualize.py", ["--ckpt", "{ckpt}", "--data_dir", "{data}", "--output", "{tmp}/no/p.png"], "does not exist"),
    ("visualize.py", ["--ckpt", "{ckpt}", "--images", "{tmp}/file.txt", "--output", "{tmp}/p.png"], "cannot read this image"),
    ("visualize.py", ["--ckpt", "{ckpt}", "--data_dir", "{data}", "--num_images", 0, "--output", "{tmp}/p.png"],
     "--num_images 0: must be at least 1"),
    ("visualize.py", ["--ckpt", "{ckpt}", "--output", "{tmp}/p.png"], "pass --data_dir"),
    # predict.py
    ("predict.py", ["--ckpt", "{ckpt}", "--source", "{folder}", "--topk", 0, "--output", "{tmp}/p.csv"], "--topk 0: must be at least 1"),
    ("predict.py", ["--ckpt", "{ckpt}", "--source", "{tmp}/nowhere", "--output", "{tmp}/p.csv"], "no such file or folder"),
    ("predict.py", ["--ckpt", "{ckpt}", "--source", "{folder}", "--output", "{tmp}/p.txt"], "must be a .csv file"),
    ("predict.py", ["--ckpt", "{ckpt}", "--source", "{tmp}/empty", "--output", "{tmp}/p.csv"], "no image files found"),
    ("predict.py", ["--ckpt", "{ckpt}", "--source", "{folder}", "--output", "{tmp}"], "a folder; give a file name"),
    ("predict.py", ["--ckpt", "{ckpt}", "--source", "{folder}", "--batch_size", 0, "--output", "{tmp}/p.csv"],
     "--batch_size 0: must be at least 1"),
    ("predict.py", ["--ckpt", "{tmp}/weights.pth", "--source", "{folder}", "--output", "{tmp}/p.csv"], "convert it first"),
    # export.py and convert.py
    ("export.py", ["--ckpt", "{ckpt}", "--batch_size", 0], "--batch_size 0: must be at least 1"),
    ("export.py", ["--ckpt", "{ckpt}", "--image_size", 8], "--image_size 8: must be at least 32"),
    ("export.py", ["--ckpt", "{ckpt}", "--output", "{tmp}/m.onnx"], "MINDIR files end in .mindir"),
    ("convert.py", ["--from", "mindcv", "{tmp}/missing.ckpt", "{tmp}/out.ckpt"], "missing.ckpt: no such checkpoint file"),
    ("convert.py", ["--from", "keras", "{tmp}/file.txt", "{tmp}/out.ckpt"], "argument --from: invalid choice"),
]


@pytest.fixture(scope="module")
def places(tiny_run, synthetic_cifar, image_folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "file.txt").write_text("not a checkpoint, not an image\n")
    (tmp / "weights.pth").write_bytes(b"\x80\x02not really")
    (tmp / "bad_type.yaml").write_text("lr: fast\n")
    (tmp / "empty").mkdir()
    return {"data": synthetic_cifar, "folder": image_folder, "ckpt": os.path.join(tiny_run[0], "best.ckpt"),
            "tmp": str(tmp)}


@pytest.mark.parametrize("script, args, words", CASES, ids=[f"{c[0]}:{' '.join(map(str, c[1]))[:60]}" for c in CASES])
def test_bad_input_ends_in_one_line_and_writes_nothing(script, args, words, places):
    args = [str(a).format(**places) for a in args]
    if script == "train.py":
        args = TRAIN + ["--output_dir", os.path.join(places["tmp"], "run")] + args
    watched = [places["tmp"], places["folder"], os.path.dirname(places["data"]), os.path.dirname(places["ckpt"])]
    before = [tree(w) for w in watched]
    proc = run_script(script, *args, check=False)
    line = one_error_line(proc)
    assert words in line
    assert [tree(w) for w in watched] == before  # nothing written, downloaded or left half-done


@pytest.mark.parametrize("lr, words", [(50, "the loss reached"), (1e6, "the loss ")])
def test_diverging_training_stops_at_the_first_bad_loss(lr, words, synthetic_cifar, tmp_path):
    """--lr far too high: the loss explodes (to NaN, given time); the run stops at once and names the step."""
    out = tmp_path / "run"
    args = [a if a != 2 else 6 for a in TRAIN]  # six steps
    proc = run_script("train.py", "--data_dir", synthetic_cifar, "--output_dir", out, *args, "--lr", lr,
                      "--warmup_epochs", 0, check=False)
    line = one_error_line(proc)
    assert "epoch 1 step 2:" in line and words in line and f"Lower --lr (now {lr:g})" in line
    assert not (out / "best.ckpt").exists()  # no diverged network is ever marked best
