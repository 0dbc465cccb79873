import re

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from resnet_ms import build_model, resnet50
from resnet_ms.checkpoint import CheckpointRecord, load_weights, read_checkpoint, save_checkpoint
from resnet_ms.models import MODEL_NAMES, Bottleneck, ResidualBlock, ResidualBlockBase, make_layer
from resnet_ms.weights import load_model

PARAM_COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                "resnet101": 44_549_160, "resnet152": 60_192_808,
                # by hand: stem 2x2 conv 3->24 + BN, per stage conv + BN (+ 2 conv + 2 BN per block), fc
                "resnet9": 7_033_400, "resnet_hour": 2_190_776}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_trainable_parameter_counts(name):
    net = build_model(name, 1000)
    assert sum(p.size for p in net.trainable_params()) == PARAM_COUNTS[name]


def test_resnet50_names_and_shapes_match_the_course_checkpoint():
    params = {p.name: tuple(p.shape) for p in resnet50(num_classes=1000).get_parameters()}
    assert len(params) == 267
    assert params["conv1.weight"] == (64, 3, 7, 7)
    assert params["fc.weight"] == (1000, 2048) and params["fc.bias"] == (1000,)
    for k in ("gamma", "beta", "moving_mean", "moving_variance"):
        assert params[f"norm.{k}"] == (64,)
        assert params[f"layer4.2.norm3.{k}"] == (2048,)
        assert params[f"layer3.0.down_sample.1.{k}"] == (1024,)
    assert params["layer1.0.down_sample.0.weight"] == (256, 64, 1, 1)
    assert params["layer2.0.conv2.weight"] == (128, 128, 3, 3)  # the 3x3 carries the stride
    pattern = re.compile(r"^(conv1\.weight|norm\.\w+|fc\.(weight|bias)|"
                         r"layer[1-4]\.\d+\.(conv[123]\.weight|norm[123]\.\w+)|"
                         r"layer[1-4]\.0\.down_sample\.(0\.weight|1\.\w+))$")
    assert [n for n in params if not pattern.match(n)] == []
    # Exactly one shortcut projection per stage, in the first block.
    assert sorted({n.split(".")[0] for n in params if "down_sample" in n}) == [
        "layer1", "layer2", "layer3", "layer4"]


def test_basic_block_has_two_batch_norms_and_the_right_widths():
    params = {p.name: tuple(p.shape) for p in build_model("resnet18", 10).get_parameters()}
    assert params["layer2.0.conv1.weight"] == (128, 64, 3, 3)
    assert params["layer2.0.conv2.weight"] == (128, 128, 3, 3)  # the course built it from 64
    assert params["layer2.1.norm1.gamma"] == (128,) and params["layer2.1.norm2.gamma"] == (128,)
    assert not any(".norm." in n for n in params if n.startswith("layer"))
    assert ResidualBlock is Bottleneck


def test_make_layer_adds_a_projection_only_when_the_shape_changes():
    same = make_layer(64, ResidualBlockBase, 64, 2)
    wider = make_layer(64, Bottleneck, 64, 3)
    strided = make_layer(256, Bottleneck, 128, 4, stride=2)
    assert isinstance(same, nn.SequentialCell) and len(same) == 2
    assert same[0].down_sample is None
    assert wider[0].down_sample is not None and wider[1].down_sample is None
    assert strided[0].down_sample[0].stride == (2, 2) and len(strided) == 4


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_depth_runs_at_32_64_and_224_px(name, pynative):
    net = build_model(name, 7)
    net.set_train(False)
    for size in (32, 64, 224):
        out = net(ms.Tensor(np.random.default_rng(size).standard_normal((2, 3, size, size)), ms.float32))
        assert out.shape == (2, 7)
        assert np.isfinite(out.asnumpy()).all()


def test_stage_outputs_have_strides_4_8_16_32(pynative):
    net = resnet50(10)
    net.set_train(False)
    feats = net.forward_features(ms.Tensor(np.zeros((1, 3, 64, 64), np.float32)))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 16, 16), (1, 512, 8, 8),
                                              (1, 1024, 4, 4), (1, 2048, 2, 2)]


def test_cifar_stem_keeps_resolution(pynative):
    net = build_model("resnet18", 10, stem="cifar")
    net.set_train(False)
    assert tuple(net.conv1.weight.shape) == (64, 3, 3, 3)
    feats = net.forward_features(ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    assert [tuple(f.shape)[2:] for f in feats] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    with pytest.raises(ValueError, match="stem"):
        build_model("resnet18", 10, stem="tiny")


def test_nopool_stem_halves_less_and_takes_the_imagenet_weights(pynative, tmp_path):
    imagenet = build_model("resnet50", 10)
    nopool = build_model("resnet50", 10, stem="nopool")
    nopool.set_train(False)
    feats = nopool.forward_features(ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    assert [tuple(f.shape)[2:] for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    shapes = lambda net: {p.name: tuple(p.shape) for p in net.get_parameters()}  # noqa: E731
    assert shapes(nopool) == shapes(imagenet)
    # ImageNet-stem weights load strictly, and a checkpoint brings its stem back.
    save_checkpoint(str(tmp_path / "imagenet.ckpt"), imagenet)
    load_weights(nopool, read_checkpoint(str(tmp_path / "imagenet.ckpt"))[0], "imagenet.ckpt")
    record = CheckpointRecord("resnet50", 10, tuple("abcdefghij"), 32, (0.5,) * 3, (0.25,) * 3,
                              stem="nopool", dataset="cifar10")
    save_checkpoint(str(tmp_path / "nopool.ckpt"), nopool, record)
    loaded, record = load_model(str(tmp_path / "nopool.ckpt"))
    x = ms.Tensor(np.random.default_rng(1).standard_normal((2, 3, 32, 32)), ms.float32)
    assert record.stem == "nopool"
    np.testing.assert_allclose(loaded(x).asnumpy(), nopool(x).asnumpy(), rtol=1e-5, atol=1e-6)
    imagenet.set_train(False)  # same weights, but the max-pool changes the numbers
    assert not np.allclose(imagenet(x).asnumpy(), nopool(x).asnumpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet_hour"])
def test_every_trainable_parameter_receives_a_gradient(name, pynative):
    net = build_model(name, 10)
    net.set_train(True)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)), ms.float32)
    y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
    loss_fn = nn.CrossEntropyLoss()
    params = net.trainable_params()
    grads = ms.grad(lambda a, b: loss_fn(net(a), b), None, params)(x, y)
    dead = [p.name for p, g in zip(params, grads) if not np.any(g.asnumpy() != 0)]
    assert len(grads) == len(params) and dead == []


def test_zero_init_residual_starts_blocks_as_identity():
    net = build_model("resnet50", 10, zero_init_residual=True)
    gammas = {p.name: p.asnumpy() for p in net.get_parameters() if p.name.endswith("norm3.gamma")}
    assert len(gammas) == 16 and all(not g.any() for g in gammas.values())
    assert build_model("resnet50", 10).layer1[0].norm3.gamma.asnumpy().min() == 1.0


def test_small_image_resnet_keeps_resolution_and_is_built_from_the_basic_block(pynative):
    net = build_model("resnet_hour", 10)
    net.set_train(False)
    assert tuple(net.conv1.weight.shape) == (24, 3, 2, 2) and net.stem == "small"
    feats = net.forward_features(ms.Tensor(np.zeros((2, 3, 32, 32), np.float32)))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 15, 15), (2, 128, 7, 7), (2, 256, 3, 3)]
    blocks = [c for _, c in net.cells_and_names() if isinstance(c, ResidualBlockBase)]
    assert len(blocks) == 3 and all(b.down_sample is None for b in blocks)
    assert len([c for _, c in build_model("resnet9", 10).cells_and_names() if isinstance(c, ResidualBlockBase)]) == 2
    for stem in ("imagenet", "cifar"):
        with pytest.raises(ValueError, match="own stem"):
            build_model("resnet_hour", 10, stem=stem)
    with pytest.raises(ValueError, match="stem"):
        build_model("resnet18", 10, stem="small")
