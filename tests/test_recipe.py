"""The fast-training techniques (issue 14), each checked for what it computes, and a
run that uses them all: schedule, Nesterov, weight average, patch whitening, test-time
augmentation, keeping the last epoch, and an exact --resume with a weight average."""
import csv
import json

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from conftest import kill_after_first_epoch, run_script
from resnet_ms.checkpoint import read_checkpoint
from resnet_ms.ema import WeightAverage, ema_decay
from resnet_ms.engine import build_optimizer, linear_lr, make_train_step
from resnet_ms.tta import VIEWS, tta_logits, view
from resnet_ms.whitening import patch_covariance, patch_whitening


def test_linear_schedule_rises_then_falls_in_straight_lines():
    assert linear_lr(1.0, 0.0, 6, 2) == pytest.approx([0.5, 1.0, 1.0, 2 / 3, 1 / 3, 0.0])
    assert linear_lr(0.4, 0.1, 4) == pytest.approx([0.4, 0.3, 0.2, 0.1])


def _dense(seed=0):
    net = nn.Dense(3, 2, weight_init=ms.Tensor(np.random.default_rng(seed).standard_normal((2, 3)), ms.float32))
    return net


def _data(seed):
    rng = np.random.default_rng(seed)
    return (ms.Tensor(rng.standard_normal((4, 3)), ms.float32), ms.Tensor(rng.integers(0, 2, 4), ms.int32))


def test_nesterov_momentum_takes_the_look_ahead_step():
    # MindSpore's nn.Momentum(use_nesterov=True) takes plain momentum steps on CPU: 1, then m*1
    w = ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")
    plain = nn.Momentum([w], 1.0, 0.5, use_nesterov=True)

    @ms.jit
    def step(g):
        return plain((g,))

    step(ms.Tensor(np.ones(1, np.float32)))
    assert w.asnumpy()[0] == -1.0  # Nesterov's first step would be -(1 + 0.5)
    net = _dense()
    lr, m = 0.1, 0.9
    step = make_train_step(net, nn.CrossEntropyLoss(), build_optimizer(net, [lr] * 3, m, 0.0, nesterov=True))
    def loss(x, y):
        return nn.CrossEntropyLoss()(net(x), y)

    loss_grad = ms.grad(loss, None, net.trainable_params())
    w, v = net.weight.asnumpy().astype(np.float64), 0.0
    for s in range(3):
        x, y = _data(s)
        g = loss_grad(x, y)[0].asnumpy()
        v = m * v + g  # PyTorch's and MindSpore's form: w -= lr * (g + m * v)
        w = w - lr * (g + m * v)
        step(x, y)
        np.testing.assert_allclose(net.weight.asnumpy(), w, rtol=1e-5, atol=1e-6)


def test_weight_average_follows_its_formula_and_leaves_training_alone():
    net = _dense()
    ema = WeightAverage(net, decay=0.5)
    step = make_train_step(net, nn.CrossEntropyLoss(), build_optimizer(net, [0.5] * 6, 0.9, 0.0), ema=ema)
    expected = net.weight.asnumpy().astype(np.float64)
    for t in range(4):
        step(*_data(t))
        d = ema_decay(0.5, t)
        expected = d * expected + (1 - d) * net.weight.asnumpy()
    assert [ema_decay(0.5, t) for t in (0, 1, 2, 3, 100)] == pytest.approx([0.1, 2 / 11, 0.25, 4 / 13, 0.5])
    average = dict(ema.state())
    np.testing.assert_allclose(average["ema/weight"].asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert float(average["ema/updates"].asnumpy()) == 4
    trained = net.weight.asnumpy().copy()
    assert not np.allclose(expected, trained, atol=1e-3)
    step(*_data(4))  # the step still trains the network itself
    assert not np.allclose(net.weight.asnumpy(), trained, atol=1e-6)


def test_set_data_after_compiling_detaches_a_parameter_from_the_step():
    """Why kept networks are copies (trainer.kept_network): the first recipe run swapped
    the average in and out with set_data, and trained on unseen while its checkpoints froze."""
    net = _dense()
    step = make_train_step(net, nn.CrossEntropyLoss(), build_optimizer(net, [0.5] * 3, 0.9, 0.0))
    step(*_data(0))
    net.weight.set_data(ms.Tensor(net.weight.asnumpy()))
    before = net.weight.asnumpy().copy()
    step(*_data(1))
    np.testing.assert_array_equal(net.weight.asnumpy(), before)


def test_patch_whitening_decorrelates_the_stem_outputs(pynative):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((64, 1, 16, 16))
    images = np.concatenate([base, 0.5 * base + 0.1 * rng.standard_normal(base.shape),
                             rng.standard_normal(base.shape)], 1).astype(np.float32)  # correlated channels
    weight = patch_whitening(images, 2, 24, eps=1e-9)
    assert weight.shape == (24, 3, 2, 2)
    np.testing.assert_array_equal(weight[12:], -weight[:12])
    conv = nn.Conv2d(3, 24, 2, pad_mode="valid", has_bias=False, weight_init=ms.Tensor(weight))
    out = conv(ms.Tensor(images)).asnumpy()[:, :12].transpose(0, 2, 3, 1).reshape(-1, 12).astype(np.float64)
    cov = np.cov(out, rowvar=False)
    np.testing.assert_allclose(cov, np.eye(12), atol=1e-3)
    # The default eps shrinks only weak directions (variance below 1, never above), rotations unchanged.
    softened = patch_whitening(images, 2, 24)
    assert np.all(np.linalg.norm(softened.reshape(24, -1), axis=1) <= np.linalg.norm(weight.reshape(24, -1), axis=1))
    with pytest.raises(ValueError, match="at most 24"):
        patch_whitening(images, 2, 25)


def test_patch_whitening_fills_a_7x7_stem_with_its_strongest_directions(pynative):
    rng = np.random.default_rng(2)
    smooth = rng.standard_normal((40, 3, 20, 20)).cumsum(2).cumsum(3)  # neighbours correlate, as in photographs
    images = (smooth / smooth.std()).astype(np.float32)
    weight = patch_whitening(images, 7, 64, eps=1e-9)
    assert weight.shape == (64, 3, 7, 7)
    np.testing.assert_array_equal(weight[32:], -weight[:32])  # 32 directions and their negatives, not 64 of 147
    norms = np.linalg.norm(weight[:32].reshape(32, -1), axis=1)
    assert np.all(np.diff(norms) >= 0)  # strongest first: 1/sqrt(eigenvalue) grows
    conv = nn.Conv2d(3, 64, 7, pad_mode="valid", has_bias=False, weight_init=ms.Tensor(weight))
    out = conv(ms.Tensor(images)).asnumpy()[:, :32].transpose(0, 2, 3, 1).reshape(-1, 32).astype(np.float64)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.eye(32), atol=1e-3)


def test_patch_statistics_are_the_same_read_in_batches_and_sampled_on_large_images():
    images = np.random.default_rng(3).standard_normal((7, 3, 70, 70)).astype(np.float32)
    whole = patch_covariance(images, 7)
    batched = patch_covariance(iter([images[:2], images[2:]]), 7)
    for a, b in zip(whole, batched):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # 64 positions a row at 70 px: every second one, 32 a row, is read
    grid = np.lib.stride_tricks.sliding_window_view(images.astype(np.float64), (7, 7), axis=(2, 3))[:, :, ::2, ::2]
    patches = grid.transpose(0, 2, 3, 1, 4, 5).reshape(-1, 147)
    assert grid.shape[2:4] == (32, 32)
    np.testing.assert_allclose(whole[1], np.cov(patches, rowvar=False, ddof=0), atol=1e-10)
    with pytest.raises(ValueError, match="at least one image"):
        patch_covariance(iter([]), 7)


def test_a_frozen_whitened_stem_is_left_out_of_the_optimizer():
    from resnet_ms import build_model
    from resnet_ms.whitening import whiten_stem
    images = np.random.default_rng(1).standard_normal((8, 3, 8, 8)).astype(np.float32)
    for name, frozen in (("resnet_hour", False), ("resnet_hour", True), ("resnet50", True)):
        net = build_model(name, 10)
        weight = whiten_stem(net, images, frozen)
        np.testing.assert_array_equal(net.conv1.weight.asnumpy(), weight)
        optimized = {p.name for p in build_optimizer(net, [0.1]).parameters}
        assert ("conv1.weight" in optimized) == (not frozen) and "norm.gamma" in optimized


def test_views_flip_and_shift_with_reflected_borders():
    x = np.arange(2 * 1 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4)
    np.testing.assert_array_equal(view(x, True, (0, 0)), x[..., ::-1])
    shifted = view(x, False, (1, 1))  # content moves down and right; the border is reflected
    np.testing.assert_array_equal(shifted[:, :, 1:, 1:], x[:, :, :-1, :-1])
    np.testing.assert_array_equal(shifted[:, :, 0, 1:], x[:, :, 1, :-1])
    np.testing.assert_array_equal(view(x, False, (-1, -1))[:, :, :-1, :-1], x[:, :, 1:, 1:])
    assert all(sum(w for w, _, _ in v) == pytest.approx(1.0) for v in VIEWS.values())


def test_tta_logits_are_the_weighted_average_over_views():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    probe = rng.standard_normal((3 * 8 * 8, 4)).astype(np.float32)

    def eval_step(images):  # a linear "network" that sees position: views give different logits
        return ms.Tensor(images.asnumpy().reshape(len(x), -1) @ probe)

    plain = tta_logits(eval_step, ms.Tensor(x), "none")
    np.testing.assert_allclose(plain, x.reshape(3, -1) @ probe, rtol=1e-5)
    want = sum(w * (view(x, f, s).reshape(3, -1) @ probe) for w, f, s in VIEWS["flip_translate"])
    got = tta_logits(eval_step, ms.Tensor(x), "flip_translate")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, plain, atol=1e-2)


# ---------------------------------------------------------------- a run with all of them

RECIPE = ["--model", "resnet_hour", "--pretrained", "none", "--batch_size", 32, "--epochs", 3, "--lr", 0.05,
          "--schedule", "linear", "--warmup_epochs", 1, "--nesterov", "--ema_decay", 0.9, "--whiten", "frozen",
          "--keep", "last", "--val_split", 0, "--tta", "flip", "--limit_train_batches", 4,
          "--limit_val_batches", 2, "--num_workers", 1]


@pytest.fixture(scope="module")
def recipe_run(synthetic_cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "run"
    proc = run_script("train.py", "--data_dir", synthetic_cifar, "--output_dir", out, *RECIPE)
    return out, proc


def metrics_rows(out):
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_recipe_keeps_the_last_epochs_average_and_the_whitened_stem(recipe_run, synthetic_cifar):
    out, proc = recipe_run
    rows = metrics_rows(out)
    assert [r["val_acc"] != "" for r in rows] == [False, False, True]  # test only reports, once, at the end
    tensors, record = read_checkpoint(str(out / "last.ckpt"))
    best, best_record = read_checkpoint(str(out / "best.ckpt"))
    assert record.best_epoch == best_record.epoch == 3 and record.config["keep"] == "last"
    for name in ("fc.weight", "layer3.0.weight", "layer1.4.0.norm2.moving_mean"):
        np.testing.assert_array_equal(best[name].asnumpy(), tensors["ema/" + name].asnumpy())
        assert not np.array_equal(best[name].asnumpy(), tensors[name].asnumpy())
    assert float(tensors["ema/updates"].asnumpy()) == 12  # 3 epochs of 4 steps
    # Frozen whitening: conv1 is exactly the whitening of the first 5,000 training images.
    from resnet_ms.data import CIFAR10_MEAN, CIFAR10_STD, make_loader, open_source
    source = open_source("cifar10", synthetic_cifar, 0)
    loader = make_loader(source, "train", 500, 32, CIFAR10_MEAN, CIFAR10_STD, limit_batches=10, workers=1)
    images = np.concatenate([x for x, _ in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)])
    np.testing.assert_allclose(tensors["conv1.weight"].asnumpy(), patch_whitening(images, 2, 24), rtol=1e-5)
    assert "*best*" not in proc.stdout and "kept (last) epoch 3" in proc.stdout


def test_eval_applies_the_recipes_tta_unless_told_not_to(recipe_run, synthetic_cifar, tmp_path):
    out, _ = recipe_run
    numbers = {}
    for tta in ("auto", "none", "flip_translate"):
        run_script("eval.py", "--ckpt", out / "best.ckpt", "--data_dir", synthetic_cifar, "--tta", tta,
                   "--output_dir", tmp_path / tta, "--num_workers", 1)
        numbers[tta] = json.loads((tmp_path / tta / "eval_test_metrics.json").read_text())
    assert numbers["auto"]["tta"] == "flip" and numbers["auto"]["views"] == ["0.5 x as is", "0.5 x flipped"]
    assert numbers["none"]["tta"] == "none" and len(numbers["flip_translate"]["views"]) == 6
    assert all(n["images"] == 10000 and 0 <= n["top1"] <= 1 for n in numbers.values())
    assert numbers["auto"]["loss"] != numbers["none"]["loss"]  # different logits, not a relabelled copy



def test_eval_gives_the_same_numbers_on_resnet_ms_kernels_as_on_mindspores(recipe_run, synthetic_cifar, tmp_path):
    out, _ = recipe_run
    numbers, logs = {}, {}
    for kernels in ("native", "auto"):  # auto: eval.py's default
        proc = run_script("eval.py", "--ckpt", out / "best.ckpt", "--data_dir", synthetic_cifar, "--tta", "none",
                          "--output_dir", tmp_path / kernels, "--num_workers", 1, env={"RESNET_MS_KERNELS": kernels})
        numbers[kernels] = json.loads((tmp_path / kernels / "eval_test_metrics.json").read_text())
        logs[kernels] = proc.stdout + proc.stderr
    if "cpu kernels: oneDNN" not in logs["auto"]:
        pytest.skip("the kernels cannot be built here")
    assert "cpu kernels: MindSpore's own" in logs["native"]
    assert abs(numbers["auto"]["loss"] - numbers["native"]["loss"]) < 1e-5 * max(1.0, numbers["native"]["loss"])
    assert abs(numbers["auto"]["top1"] - numbers["native"]["top1"]) <= 2 / numbers["native"]["images"]  # a near-tie or two

def test_a_killed_run_with_a_weight_average_resumes_exactly(recipe_run, synthetic_cifar, tmp_path):
    reference, _ = recipe_run
    out = tmp_path / "killed"
    kill_after_first_epoch(out, "--data_dir", synthetic_cifar, *RECIPE)
    run_script("train.py", "--resume", out)
    mine, ref = read_checkpoint(str(out / "last.ckpt"))[0], read_checkpoint(str(reference / "last.ckpt"))[0]
    assert sorted(mine) == sorted(ref)
    for name in mine:
        np.testing.assert_allclose(mine[name].asnumpy(), ref[name].asnumpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_predict_applies_the_recipes_tta_as_evaluation_does(recipe_run, synthetic_cifar, tmp_path, pynative):
    from PIL import Image
    from resnet_ms.data import make_loader, open_source
    from resnet_ms.inference import softmax
    from resnet_ms.weights import load_model
    out, _ = recipe_run
    source = open_source("cifar10", synthetic_cifar, 0)
    for i, (image, _) in enumerate(source.leaf("test", [0, 1, 2], 1).create_tuple_iterator(output_numpy=True)):
        Image.fromarray(image).save(tmp_path / f"{i}.png")  # exact pixels
    net, record = load_model(str(out / "best.ckpt"))
    batch = next(make_loader(source, "test", 3, 32, record.mean, record.std, limit_batches=1)
                 .create_tuple_iterator(output_numpy=True))[0]
    for tta in ("auto", "none"):
        run_script("predict.py", "--ckpt", out / "best.ckpt", "--source", *[tmp_path / f"{i}.png" for i in range(3)],
                   "--topk", 10, "--tta", tta, "--output", tmp_path / f"{tta}.csv")
        with open(tmp_path / f"{tta}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        want = softmax(tta_logits(net, batch, "flip" if tta == "auto" else "none"))
        for row, p in zip(rows, want):
            got = {row[f"class_{k}"]: float(row[f"prob_{k}"]) for k in range(1, 11)}
            assert [got[c] for c in record.class_names] == pytest.approx(p, abs=1e-5)


def test_resume_refuses_other_shifts_and_reads_older_runs_as_the_defaults():
    from dataclasses import replace
    from resnet_ms.checkpoint import CheckpointRecord
    from resnet_ms.config import TrainConfig, to_dict
    from resnet_ms.errors import UserError
    from resnet_ms.trainer import _check_resume
    cfg = TrainConfig(model="resnet_hour", stem="small", translate=2, pad_mode="reflect")
    record = CheckpointRecord("resnet_hour", 10, tuple("abcdefghij"), 32, (), (), stem="small", config=to_dict(cfg))
    _check_resume(record, cfg, 10, "last.ckpt")  # the same run: fine
    with pytest.raises(UserError, match="other translate, pad_mode"):
        _check_resume(record, replace(cfg, translate=4, pad_mode="zeros"), 10, "last.ckpt")
    older = {k: v for k, v in to_dict(TrainConfig(model="resnet_hour", stem="small")).items()
             if k not in ("translate", "pad_mode")}  # a run made before these fields existed
    record = CheckpointRecord("resnet_hour", 10, tuple("abcdefghij"), 32, (), (), stem="small", config=older)
    _check_resume(record, TrainConfig(model="resnet_hour", stem="small"), 10, "last.ckpt")
    with pytest.raises(UserError, match="other translate"):
        _check_resume(record, replace(cfg, pad_mode="zeros"), 10, "last.ckpt")
