"""Two data-parallel CPU workers on 127.0.0.1, started by msrun as a user would."""
import csv
import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO

import mindspore as ms

from resnet_ms.checkpoint import read_checkpoint
from resnet_ms.data import loader_indices, open_source


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(synthetic_cifar, tmp_path_factory):
    msrun = shutil.which("msrun", path=os.path.dirname(sys.executable))
    if msrun is None:
        pytest.skip("msrun is not installed beside this Python")
    root = tmp_path_factory.mktemp("dist")
    out, dump, logs = root / "train", root / "dump", root / "logs"
    dump.mkdir()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               PYTHONUNBUFFERED="1")
    cmd = [msrun, "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "--join=True", f"--log_dir={logs}",
           os.path.join(REPO, "tests", "distributed_worker.py"), str(dump),
           "--distribute", "--data_dir", synthetic_cifar, "--output_dir", str(out),
           # the small-image ResNet with its whitened stem and a weight average: both must agree across ranks
           "--model", "resnet_hour", "--whiten", "frozen", "--ema_decay", "0.9",
           "--pretrained", "none", "--batch_size", "32", "--epochs", "2",
           "--lr", "0.05", "--limit_train_batches", "5", "--limit_val_batches", "3", "--num_workers", "1"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    worker_logs = [(logs / f"worker_{r}.log").read_text() for r in range(2)]
    assert proc.returncode == 0, proc.stderr[-3000:] + worker_logs[0][-3000:]
    return out, dump, worker_logs


def test_each_rank_says_who_it_is(two_ranks):
    _, _, logs = two_ranks
    assert "rank 0 of 2" in logs[0] and "rank 1 of 2" in logs[1]


def test_weights_are_identical_on_both_ranks(two_ranks):
    _, dump, _ = two_ranks
    a, b = (ms.load_checkpoint(str(dump / f"rank{r}.ckpt")) for r in range(2))
    assert a.keys() == b.keys() and len(a) == 52
    for name in a:  # trained weights and the averaged BatchNorm statistics
        np.testing.assert_array_equal(a[name].asnumpy(), b[name].asnumpy(), err_msg=name)
    assert not np.array_equal(a["conv1.weight"].asnumpy(), 0)
    # What each rank evaluated and keeps is the weight average, not its trained weights.
    last = read_checkpoint(str(two_ranks[0] / "last.ckpt"))[0]
    np.testing.assert_array_equal(a["fc.weight"].asnumpy(), last["ema/fc.weight"].asnumpy())
    assert not np.array_equal(a["fc.weight"].asnumpy(), last["fc.weight"].asnumpy())


def test_only_rank_0_writes_one_set_of_outputs(two_ranks):
    out, _, _ = two_ranks
    assert sorted(os.listdir(out)) == ["best.ckpt", "config.yaml", "confusion.png", "curves.png", "last.ckpt", "metrics.csv"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())["resolved"]
    assert resolved["world_size"] == 2 and resolved["global_batch_size"] == 32
    assert resolved["batch_size_per_rank"] == 16
    assert read_checkpoint(str(out / "last.ckpt"))[1].world_size == 2


def test_metrics_file_equals_what_each_rank_reports(two_ranks):
    out, _, logs = two_ranks
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for log in logs:  # every rank prints the numbers reduced over both ranks
        printed = [float(x) for x in re.findall(r"val acc (\d\.\d+)", log)]
        assert printed == pytest.approx([float(r["val_acc"]) for r in rows], abs=1e-4)


def test_validation_covered_both_shards(two_ranks, synthetic_cifar):
    out, _, logs = two_ranks
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["val_images"]) for r in rows] == [96, 96]  # 3 batches of 16 on each of 2 ranks
    src = open_source("cifar10", synthetic_cifar, 0.1, 0)
    shards = [loader_indices(src.indices("val"), shard=(r, 2))[:48] for r in range(2)]
    assert len(np.intersect1d(*shards)) == 0
    assert "32 images (2 ranks x 16)" in logs[0] and "no scaling" in logs[0]


def test_training_shards_are_disjoint_and_cover_the_training_set(synthetic_cifar):
    src = open_source("cifar10", synthetic_cifar, 0.1, 0)
    train = src.indices("train")
    shards = [loader_indices(train, train=True, seed=0, epoch=1, shard=(r, 2)) for r in range(2)]
    assert len(np.intersect1d(*shards)) == 0
    assert np.array_equal(np.sort(np.concatenate(shards)), train)
