"""resnet_ms's opt-in oneDNN CPU kernels (cpu_kernels.py, csrc/onednn_ops.cc) against
MindSpore's own, in subprocesses with RESNET_MS_KERNELS=onednn (the kernels load
before MindSpore does): one training step, the same weights, every gradient and the
running statistics compared."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

from resnet_ms import cpu_kernels


def check(*args):
    env = dict(os.environ, RESNET_MS_KERNELS="onednn", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "kernel_check.py"), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["onednn"]:
        pytest.skip(out["kernels"])
    return out


def test_off_by_default():
    assert not cpu_kernels.active() and "the default" in cpu_kernels.describe()


# conv 3x3 (stride 1 and 2 'same', the latter with its appended zeros), BatchNorm,
# ReLU, conv 1x1, at the map sizes ResNet meets at 32 and 224 px
@pytest.mark.parametrize("batch, channels, size, stride", [(16, 64, 8, 1), (16, 64, 8, 2), (8, 32, 2, 2),
                                                           (4, 16, 56, 2), (16, 128, 4, 1)])
def test_one_block_matches_mindspores_kernels(batch, channels, size, stride):
    out = check("block", batch, channels, size, stride)
    assert out["loss"] < 1e-5 and out["stats"] < 1e-5
    assert max(out["grads"].values()) < 1e-4, out["grads"]


@pytest.mark.xfail(strict=True, reason="known, open: a whole ResNet's layer2 gradients differ by 1-5% from "
                                        "MindSpore's (possibly ReLU masks flipped by rounding; see cpu_kernels.py); "
                                        "the kernels stay opt-in until this is explained")
def test_a_whole_resnet18_step_matches_mindspores_kernels():
    out = check("resnet18", 16, 32, "pytorch", "nopool")
    assert out["loss"] < 1e-5 and out["stats"] < 1e-4
    assert max(out["grads"].values()) < 1e-3, sorted(out["grads"].items(), key=lambda kv: -kv[1])[:3]
