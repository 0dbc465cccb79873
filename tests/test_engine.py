import math

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from resnet_ms.engine import (build_optimizer, cosine_lr, evaluate, make_eval_step, make_train_step,
                              per_class_accuracy)
from resnet_ms import build_model


def test_cosine_lr_with_warmup_matches_hand_computed_values():
    # 2 warm-up steps to 1.0, then 4 cosine steps from 1.0 to 0.0:
    # 0.5*(1+cos(0)), 0.5*(1+cos(pi/3)), 0.5*(1+cos(2pi/3)), 0.5*(1+cos(pi))
    assert cosine_lr(1.0, 0.0, 6, 2) == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.25, 0.0])


def test_cosine_lr_course_schedule_endpoints():
    lrs = cosine_lr(1e-3, 1e-5, 5 * 176)
    assert len(lrs) == 880 and lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    mid = lrs[439]  # progress 439/879 just under half: just above the midpoint value
    assert mid == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 439 / 879)))
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_weight_decay_skips_batch_norm_and_biases():
    net = build_model("resnet18", 10)
    opt = build_optimizer(net, [0.1] * 4, weight_decay=5e-4)
    decayed = {p.name for p, wd in zip(opt.parameters, opt.weight_decay) if float(wd) > 0}
    assert "conv1.weight" in decayed and "fc.weight" in decayed
    assert not any(n.endswith(("gamma", "beta", "bias")) for n in decayed)
    assert len(decayed) == 21  # 20 convolutions + the classifier


def _batch(seed=0, n=8):
    rng = np.random.default_rng(seed)
    return (ms.Tensor(rng.standard_normal((n, 3, 32, 32)), ms.float32),
            ms.Tensor(rng.integers(0, 10, n), ms.int32))


def _losses(loss_scaler, steps=4):
    ms.set_seed(1)
    net = build_model("resnet18", 10)
    opt = build_optimizer(net, cosine_lr(0.05, 0.001, steps, 1))
    step = make_train_step(net, nn.CrossEntropyLoss(), opt, loss_scaler)
    net.set_train(True)
    out = [float(step(*_batch(i))[0].asnumpy()) for i in range(steps)]
    return out, int(opt.global_step.asnumpy()[0])


def test_loss_scaled_step_gives_the_same_losses_in_fp32():
    plain, n_plain = _losses(None)
    scaled, n_scaled = _losses(ms.amp.DynamicLossScaler(2 ** 10, 2, 1000))
    assert n_plain == n_scaled == 4
    np.testing.assert_allclose(scaled, plain, rtol=1e-4)
    assert plain[-1] != plain[0]


def test_overflowing_step_is_skipped_and_the_scale_halves():
    ms.set_seed(1)
    net = build_model("resnet18", 10)
    opt = build_optimizer(net, [0.1])
    scaler = ms.amp.DynamicLossScaler(3.0e38, 2, 1000)  # scaled loss overflows to inf
    step = make_train_step(net, nn.CrossEntropyLoss(), opt, scaler)
    before = net.conv1.weight.asnumpy().copy()
    net.set_train(True)
    step(*_batch())
    np.testing.assert_array_equal(net.conv1.weight.asnumpy(), before)
    assert float(scaler.scale_value.asnumpy()) == pytest.approx(1.5e38)


def test_evaluate_counts_top1_top5_and_confusion():
    net = build_model("resnet18", 10)
    step = make_eval_step(net)
    import mindspore.dataset as ds
    x, y = _batch(3, 12)
    loader = ds.NumpySlicesDataset({"image": x.asnumpy(), "label": y.asnumpy()}, shuffle=False).batch(5)
    r = evaluate(step, net, loader, 10)
    net.set_train(False)
    logits = net(x).asnumpy()
    labels = y.asnumpy()
    assert r["images"] == 12
    assert r["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    top5 = np.argsort(-logits, 1)[:, :5]
    assert r["top5"] == pytest.approx(np.mean([labels[i] in top5[i] for i in range(12)]))
    assert r["confusion"].sum() == 12 and np.trace(r["confusion"]) == round(r["top1"] * 12)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    assert r["loss"] == pytest.approx(-logp[np.arange(12), labels].mean(), rel=1e-4)
    acc = per_class_accuracy(np.array([[3, 1], [0, 0]]))
    assert acc[0] == 0.75 and np.isnan(acc[1])


def test_fetch_returns_the_values_read_on_a_thread_of_lowest_priority():
    """runtime.fetch: what Tensor.asnumpy returns, waited for on a helper thread at niceness
    19 (asnumpy spins while the graph runs; at 19 that spin yields the cores to the step)."""
    import os
    import threading
    from resnet_ms.runtime import fetch
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    a, b = ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3)), ms.Tensor(np.int32(7))
    x, y = fetch(a * 2, b)
    np.testing.assert_array_equal(x, np.arange(6).reshape(2, 3) * 2)
    assert x.dtype == np.float32 and int(y) == 7
    helper = [t for t in threading.enumerate() if t.name.startswith("resnet_ms-fetch")]
    assert len(helper) == 1 and helper[0] is not threading.current_thread()
    assert os.getpriority(os.PRIO_PROCESS, helper[0].native_id) == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # the caller keeps its own
