"""Weights from mindcv and torchvision: converted strictly, and giving the source's logits.

The checkpoints are made here with the real names and shapes: mindcv's own
networks saved with ms.save_checkpoint, and torchvision-format state dicts
written with torch.save (skipped when torch is not installed). The torchvision
reference is a float64 NumPy forward pass written below, over the same tensors.
"""
import dataclasses
import os

import numpy as np
import pytest

import mindspore as ms

from conftest import run_script

from resnet_ms.checkpoint import read_checkpoint
from resnet_ms.convert import convert
from resnet_ms.formats import from_torchvision, read_torchvision
from resnet_ms.errors import UserError
from resnet_ms.weights import load_model
from resnet_ms import build_model
from resnet_ms.weights import WEIGHTS

TOL = 1e-5  # relative logit difference allowed in float32


def rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def randomise_batch_norms(net, seed):
    """Give every BN non-trivial statistics, so that a swapped field would show in the logits."""
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        field = p.name.rsplit(".", 1)[-1]
        if field in ("gamma", "moving_variance"):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
        elif field in ("beta", "moving_mean"):
            p.set_data(ms.Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))


def images(size, n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def logits(net, x):
    net.set_train(False)
    return net(ms.Tensor(x)).asnumpy()


# ---------------------------------------------------------------- mindcv

def mindcv_checkpoint(folder, arch, seed, extra=()):
    """mindcv's own `arch` with random weights and BN statistics, saved as mindcv saves it."""
    models = pytest.importorskip("mindcv.models")
    ms.set_seed(seed)
    net = getattr(models, arch)(num_classes=1000)
    randomise_batch_norms(net, seed)
    path = os.path.join(folder, f"mindcv_{arch}.ckpt")
    items = [{"name": p.name, "data": p} for p in net.get_parameters()]
    items += [{"name": name, "data": ms.Tensor(np.array(value, np.float32))} for name, value in extra]
    ms.save_checkpoint(items, path)
    return net, path


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_mindcv_conversion_gives_mindcv_logits(arch, tmp_path, pynative):
    # A training loop's step counters next to the weights are dropped, not refused.
    source, path = mindcv_checkpoint(str(tmp_path), arch, seed=1,
                                     extra=[("global_step", [1000]), ("learning_rate", [0.1])])
    tensors, _ = read_checkpoint(path)
    assert len(tensors) == {"resnet18": 102, "resnet50": 267}[arch] + 2
    out = str(tmp_path / "converted.ckpt")
    record = convert(path, out, "mindcv")
    assert record.model == arch and record.padding == "symmetric" and record.num_classes == 1000
    net, record = load_model(out)
    assert net.padding == "symmetric"
    x = images(64)
    want = logits(source, x)
    assert rel_diff(logits(net, x), want) < TOL
    # The same weights under the course's padding: clearly other numbers.
    wrong = build_model(arch, 1000, padding="same")
    ms.load_param_into_net(wrong, {p.name: p for p in net.get_parameters()}, strict_load=True)
    assert rel_diff(logits(wrong, x), want) > 1e-3


def test_mindcv_checkpoint_as_pretrained_loads_every_tensor(tmp_path, http_server, monkeypatch, capsys, pynative):
    """The issue's quiet failure (69 of 267 tensors loaded) is now a complete load, from a record."""
    source, path = mindcv_checkpoint(str(tmp_path), "resnet50", seed=2)
    www, url = http_server
    os.link(path, www / "resnet50-e0733ab8.ckpt")
    monkeypatch.setenv("RESNET_MS_CACHE", str(tmp_path / "cache"))
    record = WEIGHTS["mindcv_resnet50"]
    assert record.padding == "symmetric" and record.top1 == 76.69
    monkeypatch.setitem(WEIGHTS, record.name, dataclasses.replace(record, url=f"{url}/resnet50-e0733ab8.ckpt"))
    net = build_model("resnet50", 1000, pretrained="mindcv_resnet50")
    assert "loaded 267 tensors" in capsys.readouterr().out and net.padding == "symmetric"
    x = images(64)
    assert rel_diff(logits(net, x), logits(source, x)) < TOL
    # A local mindcv file works too; with 10 classes only the classifier is new.
    net10 = build_model("resnet50", 10, pretrained=path)
    assert "loaded 265 tensors" in capsys.readouterr().out and net10.padding == "symmetric"
    # A network built by hand with another convention is refused, not silently wrong.
    with pytest.raises(UserError, match="need padding 'symmetric'.*built with 'same'"):
        build_model("resnet50", 1000, pretrained=path, padding="same")


def test_mindcv_conversion_is_strict(tmp_path):
    _, path = mindcv_checkpoint(str(tmp_path), "resnet18", seed=3)
    tensors, _ = read_checkpoint(path)
    del tensors["layer2.1.bn2.moving_mean"]
    tensors["layer4.1.extra.weight"] = tensors["conv1.weight"]
    cut = str(tmp_path / "cut.ckpt")
    ms.save_checkpoint([{"name": k, "data": v} for k, v in tensors.items()], cut)
    with pytest.raises(UserError, match=r"cut.ckpt: does not fit .*missing layer2.1.norm2.moving_mean.*"
                                        r"unexpected layer4.1.extra.weight"):
        convert(cut, str(tmp_path / "out.ckpt"), "mindcv")
    with pytest.raises(UserError, match="--model resnet34: .* holds resnet18 weights"):
        convert(path, str(tmp_path / "out.ckpt"), "mindcv", model="resnet34")
    assert sorted(os.listdir(tmp_path)) == ["cut.ckpt", "mindcv_resnet18.ckpt"]  # nothing written
    with pytest.raises(UserError, match="mindcv's names; convert it first: python convert.py --from mindcv"):
        load_model(path, "resnet18")


def test_convert_script(tmp_path, monkeypatch):
    # A record name: its file is taken from the cache, where a download would put it.
    cache = tmp_path / "cache"
    cache.mkdir()
    _, path = mindcv_checkpoint(str(cache), "resnet18", seed=4)
    os.rename(path, cache / "resnet18-1e65cd21.ckpt")
    path = str(cache / "resnet18-1e65cd21.ckpt")
    monkeypatch.setenv("RESNET_MS_CACHE", str(cache))
    out = tmp_path / "r18.ckpt"
    proc = run_script("convert.py", "--from", "mindcv", "mindcv_resnet18", out)
    assert f"{path}: 102 tensors as resnet18 (1000 classes, padding symmetric)" in proc.stdout
    record = read_checkpoint(str(out))[1]
    assert record.padding == "symmetric" and record.weights == "mindcv_resnet18"
    bad = run_script("convert.py", "--from", "mindcv", path, out, "--model", "resnet50", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        f"error: --model resnet50: {path} holds resnet18 weights")


# ---------------------------------------------------------------- torchvision

def torchvision_state_dict(layers, seed, bottleneck=False, num_classes=1000):
    """Random float32 tensors under torchvision's ResNet names and shapes (NumPy)."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, o, i, k):
        sd[name + ".weight"] = rng.normal(0, np.sqrt(2 / (o * k * k)), (o, i, k, k)).astype(np.float32)

    def bn(name, c):
        sd[name + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[name + ".bias"] = rng.normal(0, 0.2, c).astype(np.float32)
        sd[name + ".running_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
        sd[name + ".running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[name + ".num_batches_tracked"] = np.array(1000, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin, expansion = 64, 4 if bottleneck else 1
    for stage, (width, n) in enumerate(zip((64, 128, 256, 512), layers), 1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            if bottleneck:
                conv(p + ".conv1", width, cin, 1), bn(p + ".bn1", width)
                conv(p + ".conv2", width, width, 3), bn(p + ".bn2", width)
                conv(p + ".conv3", width * 4, width, 1), bn(p + ".bn3", width * 4)
            else:
                conv(p + ".conv1", width, cin, 3), bn(p + ".bn1", width)
                conv(p + ".conv2", width, width, 3), bn(p + ".bn2", width)
            if b == 0 and (stage > 1 or cin != width * expansion):
                conv(p + ".downsample.0", width * expansion, cin, 1), bn(p + ".downsample.1", width * expansion)
            cin = width * expansion
    sd["fc.weight"] = rng.normal(0, 0.01, (num_classes, cin)).astype(np.float32)
    sd["fc.bias"] = rng.normal(0, 0.01, num_classes).astype(np.float32)
    return sd


def save_pth(sd, path):
    torch = pytest.importorskip("torch", reason="writing torchvision .pth files needs torch (optional)")
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, path)
    return path


# The reference: torchvision's ResNet forward in float64 NumPy.

def np_conv(x, w, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True)


def np_bn(x, sd, name, eps=1e-5):
    scale = sd[name + ".weight"] / np.sqrt(sd[name + ".running_var"] + eps)
    shift = sd[name + ".bias"] - sd[name + ".running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def np_max_pool(x):  # kernel 3, stride 2, padding 1 (with -inf, as torch pads)
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(-2, -1))


def np_resnet(sd, x, layers, bottleneck=False):
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    x = np_max_pool(relu(np_bn(np_conv(x.astype(np.float64), sd["conv1.weight"], 2, 3), sd, "bn1")))
    for stage, n in enumerate(layers, 1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            stride = 2 if stage > 1 and b == 0 else 1
            identity = x
            if p + ".downsample.0.weight" in sd:
                identity = np_bn(np_conv(x, sd[p + ".downsample.0.weight"], stride, 0), sd, p + ".downsample.1")
            if bottleneck:
                out = relu(np_bn(np_conv(x, sd[p + ".conv1.weight"], 1, 0), sd, p + ".bn1"))
                out = relu(np_bn(np_conv(out, sd[p + ".conv2.weight"], stride, 1), sd, p + ".bn2"))
                out = np_bn(np_conv(out, sd[p + ".conv3.weight"], 1, 0), sd, p + ".bn3")
            else:
                out = relu(np_bn(np_conv(x, sd[p + ".conv1.weight"], stride, 1), sd, p + ".bn1"))
                out = np_bn(np_conv(out, sd[p + ".conv2.weight"], 1, 1), sd, p + ".bn2")
            x = relu(out + identity)
    return x.mean(axis=(2, 3)) @ sd["fc.weight"].T + sd["fc.bias"]


R18 = (2, 2, 2, 2)


@pytest.fixture(scope="module")
def tv_resnet18(tmp_path_factory):
    sd = torchvision_state_dict(R18, seed=5)
    return sd, save_pth(sd, str(tmp_path_factory.mktemp("tv") / "resnet18-tv.pth"))


def test_torchvision_conversion_gives_the_reference_logits(tv_resnet18, tmp_path, pynative):
    sd, pth = tv_resnet18
    out = str(tmp_path / "tv18.ckpt")
    record = convert(pth, out, "torchvision", model="resnet18")
    assert record.padding == "pytorch" and record.converted_from == {"format": "torchvision",
                                                                         "file": "resnet18-tv.pth"}
    assert len(read_checkpoint(out)[0]) == 102  # 122 in the .pth, less 20 num_batches_tracked
    net, _ = load_model(out)
    assert net.padding == "pytorch"
    # 64 px is even, where 'same' and torch's padding differ; 49 px is odd.
    for size in (64, 49):
        x = images(size, seed=size)
        want = np_resnet(sd, x, R18)
        assert rel_diff(logits(net, x), want) < TOL
    x = images(64)
    want = np_resnet(sd, x, R18)
    # --pretrained with the .pth itself: the same network, built with torch's padding.
    direct = build_model("resnet18", 1000, pretrained=pth)
    assert direct.padding == "pytorch" and rel_diff(logits(direct, x), want) < TOL
    # Under the other conventions the numbers move.
    for padding in ("same", "symmetric"):
        wrong = build_model("resnet18", 1000, padding=padding)
        ms.load_param_into_net(wrong, {p.name: p for p in net.get_parameters()}, strict_load=True)
        assert rel_diff(logits(wrong, x), want) > 1e-3


def test_torchvision_bottleneck_names_convert(tmp_path):
    """ResNet-50's names (conv3/bn3, downsample in layer1) map completely; no forward pass needed."""
    sd = torchvision_state_dict((3, 4, 6, 3), seed=6, bottleneck=True, num_classes=10)
    tensors, dropped = from_torchvision(sd)
    own = {p.name: tuple(p.shape) for p in build_model("resnet50", 10).get_parameters()}
    assert {k: tuple(np.shape(v)) for k, v in tensors.items()} == own and len(dropped) == 53
    out = str(tmp_path / "tv50.ckpt")
    assert convert(save_pth(sd, str(tmp_path / "tv50.pth")), out, "torchvision").model == "resnet50"
    assert np.array_equal(read_checkpoint(out)[0]["layer1.0.down_sample.1.moving_variance"].asnumpy(),
                          sd["layer1.0.downsample.1.running_var"])


def test_torchvision_conversion_is_strict(tv_resnet18, tmp_path):
    sd, _ = tv_resnet18
    bad = dict(sd)
    bad["fc.weight"] = bad["fc.weight"][:, :256]
    bad["layer1.0.bn1.scale"] = bad.pop("layer1.0.bn1.weight")
    pth = save_pth(bad, str(tmp_path / "bad.pth"))
    with pytest.raises(UserError, match=r"bad.pth: does not fit .*missing layer1.0.norm1.gamma.*"
                                        r"unexpected layer1.0.norm1.scale.*shape mismatch fc.weight"):
        convert(pth, str(tmp_path / "out.ckpt"), "torchvision")
    assert not (tmp_path / "out.ckpt").exists()


class Payload:
    """An object that is not a tensor or a plain container: unpickling it could run code."""


def test_pth_files_are_read_weights_only(tmp_path):
    torch = pytest.importorskip("torch", reason="writing .pth files needs torch (optional)")
    torch.save({"conv1.weight": torch.zeros(1), "obj": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="evil.pth: not a loadable weights-only PyTorch file"):
        read_torchvision(str(tmp_path / "evil.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="junk.pth: not a loadable"):
        read_torchvision(str(tmp_path / "junk.pth"))


def test_pth_without_torch_says_what_to_install(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(UserError, match=r"x.pth: reading .pth files needs PyTorch \(pip install torch\)"):
        read_torchvision(str(tmp_path / "x.pth"))
