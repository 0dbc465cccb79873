"""Deployment files: MINDIR reloaded with nn.GraphCell, ONNX run with onnxruntime.

Both must reproduce the eager network's logits, under every padding convention
(torchvision's padded max-pool is the one that needs an exporting formulation).
The first test trains from mindcv-format weights, so the checkpoint that gets
exported is the trainer's, carrying the weights' padding in its metadata.
"""
import json
import os

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from conftest import run_script

from resnet_ms.checkpoint import CheckpointRecord, read_checkpoint, save_checkpoint
from resnet_ms.errors import UserError
from resnet_ms.export import export_checkpoint
from resnet_ms.weights import load_model
from resnet_ms import build_model

TOL = 1e-5


def rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def eager_logits(ckpt, x):
    net, _ = load_model(ckpt)
    return net(ms.Tensor(x)).asnumpy()


def mindir_logits(path, x):
    return nn.GraphCell(ms.load(path))(ms.Tensor(x)).asnumpy()


def onnx_logits(path, x):
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(onnx.load(path), full_check=True)  # a valid model, with shapes
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def checkpoint(folder, padding, num_classes=5, image_size=64, seed=0, model="resnet18"):
    """A checkpoint as train.py writes one, with random weights under `padding`."""
    ms.set_seed(seed)
    net = build_model(model, num_classes, padding=padding)
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():  # non-trivial BN statistics, as trained weights have
        if p.name.endswith(("moving_variance", "gamma")):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
        elif p.name.endswith(("moving_mean", "beta")):
            p.set_data(ms.Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))
    path = os.path.join(folder, f"r18_{padding}.ckpt" if model == "resnet18" else f"{model}.ckpt")
    save_checkpoint(path, net, CheckpointRecord(model, num_classes, tuple(f"c{i}" for i in range(num_classes)),
                                                image_size, (0.5,) * 3, (0.25,) * 3, stem=net.stem, padding=padding))
    return path


def test_fine_tuned_from_mindcv_weights_exports_to_mindir_and_onnx(image_folder, tmp_path, pynative):
    models = pytest.importorskip("mindcv.models")
    ms.set_seed(0)
    mindcv_ckpt = str(tmp_path / "mindcv_resnet18.ckpt")
    ms.save_checkpoint(models.resnet18(num_classes=1000), mindcv_ckpt)
    out = tmp_path / "run"
    proc = run_script("train.py", "--dataset", "imagefolder", "--data_dir", image_folder, "--output_dir", out,
                      "--model", "resnet18", "--pretrained", mindcv_ckpt, "--image_size", 32,
                      "--stem", "nopool",  # ImageNet weights fit it: the same parameters, no max-pool
                      "--batch_size", 8, "--epochs", 1, "--val_split", 0.25, "--num_workers", 1)
    assert "loaded 100 tensors" in proc.stdout and "mindcv names, padding symmetric" in proc.stdout
    best = str(out / "best.ckpt")
    record = read_checkpoint(best)[1]
    assert record.padding == "symmetric" and record.class_names == ("cat", "dog", "fox")
    assert record.stem == "nopool"
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = eager_logits(best, x)
    run_script("export.py", "--ckpt", best, "--format", "onnx", "--output", tmp_path / "deploy")
    assert rel_diff(onnx_logits(str(tmp_path / "deploy.onnx"), x), want) < TOL
    info = json.loads((tmp_path / "deploy.onnx.json").read_text())
    assert info["input_shape"] == [1, 3, 32, 32] and info["class_names"] == ["cat", "dog", "fox"]
    assert info["padding"] == "symmetric" and info["mean"] == list(record.mean)
    mindir = export_checkpoint(best, "MINDIR", str(tmp_path / "deploy.mindir"))
    assert rel_diff(mindir_logits(mindir, x), want) < TOL


@pytest.mark.parametrize("padding", ["same", "pytorch"])
def test_every_padding_exports_and_reproduces_eager_logits(padding, tmp_path, pynative):
    ckpt = checkpoint(str(tmp_path), padding)
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    want = eager_logits(ckpt, x)
    onnx_file = export_checkpoint(ckpt, "ONNX", str(tmp_path / "m.onnx"), batch_size=2)
    mindir = export_checkpoint(ckpt, "MINDIR", None, batch_size=2)
    assert mindir == ckpt[:-len(".ckpt")] + ".mindir"
    assert rel_diff(onnx_logits(onnx_file, x), want) < TOL
    assert rel_diff(mindir_logits(mindir, x), want) < TOL
    # The exported graph really carries the convention: another one gives other numbers.
    other = eager_logits(checkpoint(str(tmp_path), "symmetric"), x)
    assert rel_diff(other, want) > 1e-3
    assert sorted(os.listdir(tmp_path)) == sorted(["m.onnx", "m.onnx.json", f"r18_{padding}.ckpt",
                                                   f"r18_{padding}.mindir", f"r18_{padding}.mindir.json",
                                                   "r18_symmetric.ckpt"])


def test_export_errors_are_one_line(tmp_path):
    ckpt = checkpoint(str(tmp_path), "same")
    with pytest.raises(UserError, match=r"--output m.mindir: ONNX files end in .onnx"):
        export_checkpoint(ckpt, "ONNX", "m.mindir")
    with pytest.raises(UserError, match="--format TFLITE: choose one of MINDIR, ONNX"):
        export_checkpoint(ckpt, "tflite")
    with pytest.raises(UserError, match="folder .*nowhere does not exist"):
        export_checkpoint(ckpt, "ONNX", str(tmp_path / "nowhere" / "m.onnx"))
    proc = run_script("export.py", "--ckpt", tmp_path / "missing.ckpt", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'missing.ckpt'}: no such checkpoint file")


def test_the_small_image_resnet_exports_and_reproduces_eager_logits(tmp_path, pynative):
    ckpt = checkpoint(str(tmp_path), "same", num_classes=10, image_size=32, model="resnet_hour")
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    want = eager_logits(ckpt, x)
    assert rel_diff(onnx_logits(export_checkpoint(ckpt, "ONNX", str(tmp_path / "h.onnx"), batch_size=2), x), want) < TOL
    assert rel_diff(mindir_logits(export_checkpoint(ckpt, "MINDIR", None, batch_size=2), x), want) < TOL
