import os

import numpy as np
import pytest

import mindspore as ms

from resnet_ms.checkpoint import (META_KEY, CheckpointRecord, load_optimizer_state, load_weights, read_checkpoint,
                                  save_checkpoint)
from resnet_ms.engine import build_optimizer
from resnet_ms.errors import UserError
from resnet_ms import build_model, resnet50
from resnet_ms.weights import load_model, resolve


@pytest.fixture(scope="module")
def course_ckpt(tmp_path_factory):
    """A checkpoint in the course's format: plain weights of resnet50(1000), no metadata."""
    ms.set_seed(7)
    path = str(tmp_path_factory.mktemp("course") / "resnet50_224_new.ckpt")
    ms.save_checkpoint(resnet50(1000), path)
    return path


def _params(net):
    return {p.name: p.asnumpy() for p in net.get_parameters()}


def test_course_checkpoint_loads_fully_with_a_new_head(course_ckpt, capsys):
    source = _params(build_model("resnet50", 1000, pretrained=course_ckpt))  # same classes: exact copy
    ms.set_seed(0)
    head_before = build_model("resnet50", 10).fc.weight.asnumpy().copy()
    ms.set_seed(0)
    net = build_model("resnet50", 10, pretrained=course_ckpt)
    out = capsys.readouterr().out
    assert "replaced fc.bias, fc.weight" in out and "loaded 265 tensors" in out
    loaded = _params(net)
    assert all(np.array_equal(loaded[k], v) for k, v in source.items() if not k.startswith("fc."))
    assert np.array_equal(loaded["fc.weight"], head_before) and loaded["fc.weight"].shape == (10, 2048)


def test_missing_tensor_fails_and_names_it(course_ckpt, tmp_path):
    tensors, _ = read_checkpoint(course_ckpt)
    del tensors["layer3.2.norm2.moving_variance"]
    path = str(tmp_path / "cut.ckpt")
    ms.save_checkpoint([{"name": k, "data": v} for k, v in tensors.items()], path)
    with pytest.raises(UserError, match=r"cut.ckpt: does not fit .* missing layer3.2.norm2.moving_variance"):
        build_model("resnet50", 10, pretrained=path)


def test_wrong_architecture_lists_unexpected_and_mismatched(course_ckpt):
    tensors, _ = read_checkpoint(course_ckpt)
    with pytest.raises(UserError) as e:
        load_weights(build_model("resnet18", 1000), tensors, "r50.ckpt", replace_head=True)
    msg = str(e.value)
    assert "unexpected" in msg and "layer1.0.conv3.weight" in msg and "shape mismatch" in msg
    assert "(+" in msg and "\n" not in msg  # long lists are cut, on one line


def test_mindspore_silent_partial_load_is_caught(course_ckpt):
    """Renamed tensors (mindcv's bn1 for norm) would load 'fine' with a warning in MindSpore."""
    tensors, _ = read_checkpoint(course_ckpt)
    renamed = {k.replace("norm.", "bn1."): v for k, v in tensors.items()}
    net = build_model("resnet50", 1000)
    not_loaded, _ = ms.load_param_into_net(build_model("resnet50", 1000), renamed)
    assert len(not_loaded) == 4  # MindSpore itself only reports, and goes on
    with pytest.raises(UserError, match="missing norm.beta, norm.gamma.*unexpected bn1"):
        load_weights(net, renamed, "mindcv-style.ckpt")


def test_pretrained_from_url_is_cached(course_ckpt, http_server, tmp_path, monkeypatch):
    www, url = http_server
    os.link(course_ckpt, www / "r50.ckpt")
    monkeypatch.setenv("RESNET_MS_CACHE", str(tmp_path / "cache"))
    path, record = resolve("resnet50", f"{url}/r50.ckpt")
    assert path == str(tmp_path / "cache" / "r50.ckpt") and record is None
    (www / "r50.ckpt").unlink()  # second time: from the cache, no server needed
    assert resolve("resnet50", f"{url}/r50.ckpt")[0] == path
    net = build_model("resnet50", 10, pretrained=f"{url}/r50.ckpt")
    assert net.fc.weight.shape == (10, 2048)


def test_pretrained_choices_are_checked():
    with pytest.raises(UserError, match="resnet20 has no default weights"):
        resolve("resnet20", "default")
    with pytest.raises(UserError, match="weights for resnet50, not resnet34"):
        resolve("resnet34", "course_resnet50")
    with pytest.raises(UserError, match="--pretrained nowhere.ckpt: no such file"):
        resolve("resnet50", "nowhere.ckpt")
    assert resolve("resnet50", "none") == (None, None)


def test_checkpoint_round_trip_with_metadata_and_optimizer(tmp_path):
    net = build_model("resnet18", 10)
    opt = build_optimizer(net, [0.1, 0.2, 0.3])
    for m in opt.moments:
        m.set_data(ms.Tensor(np.full(m.shape, 0.5, np.float32)))
    opt.global_step.set_data(ms.Tensor(np.array([2], np.int32)))
    path = str(tmp_path / "last.ckpt")
    record = CheckpointRecord("resnet18", 10, tuple("abcdefghij"), 32, (0.5, 0.4, 0.3), (0.2,) * 3,
                              epoch=3, best_acc=0.5, config={"lr": 0.1})
    save_checkpoint(path, net, record, opt)
    assert os.listdir(tmp_path) == ["last.ckpt"]
    tensors, read = read_checkpoint(path)
    assert read == record
    fresh = build_model("resnet18", 10)
    fresh_opt = build_optimizer(fresh, [0.1, 0.2, 0.3])
    load_weights(fresh, tensors, path)
    load_optimizer_state(fresh_opt, tensors, path)
    assert all(np.array_equal(a, b) for a, b in zip(_params(fresh).values(), _params(net).values()))
    assert int(fresh_opt.global_step.asnumpy()[0]) == 2
    assert all(float(m.asnumpy().mean()) == 0.5 for m in fresh_opt.moments)


def test_flipped_byte_is_caught_by_the_crc(tmp_path):
    path = tmp_path / "best.ckpt"
    save_checkpoint(str(path), build_model("resnet18", 10))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(data)
    with pytest.raises(UserError, match="best.ckpt: damaged or not a MindSpore checkpoint"):
        read_checkpoint(str(path))


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = str(tmp_path / "best.ckpt")
    save_checkpoint(path, build_model("resnet18", 10))
    before = open(path, "rb").read()

    class Unsaveable:  # fails inside mindspore.save_checkpoint, after the temporary file exists
        name = "conv1.weight"

    class Broken:
        def get_parameters(self):
            return [Unsaveable()]

    with pytest.raises((TypeError, ValueError, RuntimeError)):
        save_checkpoint(path, Broken())
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["best.ckpt"]


# The metadata a checkpoint of the first release carries (a run of train.py at
# commit 17981e9 printed it; "config" trimmed, its split changed so that the test
# sees it used): an untyped dict, the split only inside "config".
V1_META = {"model": "resnet18", "num_classes": 10, "class_names": ["airplane", "automobile", "bird", "cat", "deer",
                                                                   "dog", "frog", "horse", "ship", "truck"],
           "image_size": 32, "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616], "stem": "imagenet",
           "padding": "same", "dataset": "cifar10", "selection_split": "val", "world_size": 1,
           "config": {"dataset": "cifar10", "val_split": 0.2, "image_size": 32, "model": "resnet18", "stem": "imagenet",
                      "epochs": 2, "batch_size": 32, "seed": 3},
           "epoch": 2, "best_acc": 0.125, "best_epoch": 1, "val_acc": 0.125}


def test_a_first_release_checkpoint_still_loads(tmp_path):
    import json
    net = build_model("resnet18", 10)
    path = str(tmp_path / "v1.ckpt")
    items = [{"name": p.name, "data": p} for p in net.get_parameters()]
    ms.save_checkpoint(items, path, append_dict={META_KEY: json.dumps(V1_META)}, crc_check=True)
    loaded, record = load_model(path)
    assert record.model == "resnet18" and record.class_names[2] == "bird" and record.epoch == 2
    assert record.val_split == 0.2 and record.split_seed == 3  # evaluation rebuilds the same split
    assert record.mean == (0.4914, 0.4822, 0.4465) and record.best_acc == 0.125
    assert all(np.array_equal(a, b) for a, b in zip(_params(loaded).values(), _params(net).values()))


def test_incomplete_metadata_is_one_line(tmp_path):
    import json
    path = str(tmp_path / "odd.ckpt")
    ms.save_checkpoint(build_model("resnet18", 10), path, append_dict={META_KEY: json.dumps({"epoch": 1})})
    with pytest.raises(UserError, match="odd.ckpt: incomplete metadata"):
        read_checkpoint(path)
