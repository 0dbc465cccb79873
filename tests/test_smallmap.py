"""Convolutions on 1x1/2x2 maps as matrix products give nn.Conv2d's numbers.

The whole-network check (training losses with and without the setting) is in
test_bench.py, next to the other speed setting's.
"""
import itertools

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from resnet_ms import build_model
from resnet_ms.layers import Conv2d
from resnet_ms.smallmap import tap_table

# ResNet's convolutions under both padding conventions, on 1x1, 2x2 and 4x4
# inputs (4x4 must fall back to the convolution).
CASES = [(mode, k, s, n) for (mode, k, s), n in itertools.product(
    [("same", 3, 1), ("same", 3, 2), ("same", 1, 1), ("same", 1, 2),
     ("pad", 3, 1), ("pad", 3, 2), ("pad", 1, 1), ("pad", 1, 2)], (1, 2, 4))]


@pytest.mark.parametrize("pad_mode,kernel,stride,size", CASES)
def test_output_and_gradients_equal_the_convolution(pad_mode, kernel, stride, size, pynative):
    pad = {"pad_mode": pad_mode, "padding": kernel // 2 if pad_mode == "pad" else 0}
    fast = Conv2d(12, 10, kernel, stride=stride, has_bias=False, dense=True, **pad)
    plain = nn.Conv2d(12, 10, kernel, stride=stride, has_bias=False, **pad)
    plain.weight.set_data(fast.weight.data.copy())
    rng = np.random.default_rng(size * 10 + kernel)
    x = ms.Tensor(rng.standard_normal((4, 12, size, size)).astype(np.float32))
    y_fast, y_plain = fast(x), plain(x)
    assert y_fast.shape == y_plain.shape
    np.testing.assert_allclose(y_fast.asnumpy(), y_plain.asnumpy(), rtol=1e-5, atol=1e-5)

    probe = ms.Tensor(rng.standard_normal(y_plain.shape).astype(np.float32))
    grads = [ms.grad(lambda v, c=cell: (c(v) * probe).sum(), grad_position=0, weights=cell.trainable_params())(x)
             for cell in (fast, plain)]
    for got, want in zip((grads[0][0], grads[0][1][0]), (grads[1][0], grads[1][1][0])):
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-5)


def test_the_dense_form_is_used_only_where_it_is_mostly_taps():
    assert tap_table(1, 3, 1, "same", 0).shape == (9, 1, 1)      # layer4: the centre tap
    assert tap_table(2, 3, 1, "same", 0).shape == (9, 4, 4)      # layer3: every pixel pair is a tap
    assert tap_table(2, 3, 2, "pad", 1).shape == (9, 4, 1)       # layer4.0's stride-2 3x3
    assert tap_table(2, 3, 1, "same", 0).sum() == 16
    assert tap_table(2, 1, 1, "same", 0) is None                 # a 1x1 conv on 2x2: 4x the work
    assert tap_table(2, 1, 2, "same", 0) is None                 # the shortcut's stride-2 1x1
    assert tap_table(4, 3, 1, "same", 0) is None                 # 256 products for 100 taps
    assert not Conv2d(4, 4, 3, dense=False, has_bias=False).dense


def test_the_setting_keeps_parameter_names_and_can_be_turned_off(monkeypatch):
    from resnet_ms.runtime import native_layers
    with native_layers():  # the setting of MindSpore's own convolutions
        monkeypatch.setenv("RESNET_MS_SMALL_MAPS", "matmul")
        fast = build_model("resnet50", 10)
        monkeypatch.setenv("RESNET_MS_SMALL_MAPS", "conv")
        plain = build_model("resnet50", 10)
    assert [p.name for p in fast.get_parameters()] == [p.name for p in plain.get_parameters()]
    assert fast.layer4[1].conv2.dense and not plain.layer4[1].conv2.dense
