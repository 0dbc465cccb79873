"""A float64 NumPy referee for tests/kernel_check.py's whole-network comparisons.

    RESNET_MS_KERNELS=onednn python tests/reference64.py resnet18 16 32 pytorch nopool

One training step of ResNet-18/34 (basic blocks, symmetric 'pytorch' padding)
computed in float64 by hand, forward and backward, with the weights and batch
kernel_check gives both MindSpore networks; prints JSON: for MindSpore's kernels
and for resnet_ms's, each parameter's largest gradient difference from the
float64 one, relative to that gradient's largest element. Whichever side is
far from float64 is the one that is wrong.
"""
import json
import sys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import kernel_check  # noqa: E402  (imports resnet_ms, then MindSpore)

EPS = 1e-5  # nn.BatchNorm2d's


def conv(x, w, stride, pad):
    """(output, backward) of a convolution; backward(dout) -> (dx, dw)."""
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # n c ho wo k k
    out = np.einsum("nchwij,ocij->nohw", cols, w, optimize=True)

    def backward(dout):
        dw = np.einsum("nchwij,nohw->ocij", cols, dout, optimize=True)
        dcols = np.einsum("nohw,ocij->nchwij", dout, w, optimize=True)
        dxp = np.zeros_like(xp)
        ho, wo = dout.shape[2:]
        for i in range(k):
            for j in range(k):
                dxp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += dcols[..., i, j]
        return dxp[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]], dw
    return out, backward


def batch_norm(x, gamma, beta):
    """(output, backward) in training mode; backward(dy) -> (dx, dgamma, dbeta)."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    invstd = 1 / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + EPS)
    xhat = (x - mean) * invstd
    g = gamma.reshape(1, -1, 1, 1)
    m = x.shape[0] * x.shape[2] * x.shape[3]

    def backward(dy):
        dxhat = dy * g
        dx = invstd / m * (m * dxhat - dxhat.sum(axis=(0, 2, 3), keepdims=True)
                           - xhat * (dxhat * xhat).sum(axis=(0, 2, 3), keepdims=True))
        return dx, (dy * xhat).sum(axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))
    return xhat * g + beta.reshape(1, -1, 1, 1), backward


class Backprop:
    """One float64 training step of a basic-block ResNet, backward by hand."""

    def __init__(self, params, layers, stem):
        self.p, self.layers, self.stem = params, layers, stem

    def run(self, x, y):
        p, grads = self.p, {}
        cache = []

        def conv_(h, name, stride, pad):
            out, back = conv(h, p[name], stride, pad)
            cache.append(("conv", name, back))
            return out

        def norm_(h, name):
            out, back = batch_norm(h, p[name + ".gamma"], p[name + ".beta"])
            cache.append(("norm", name, back))
            return out

        def relu_(h):
            cache.append(("relu", h > 0, None))
            return np.maximum(h, 0)

        def mark(kind, value):  # residual bookkeeping: where a block's input splits and joins
            cache.append((kind, value, None))

        if self.stem not in ("nopool", "cifar"):
            raise SystemExit("reference64: only the nopool and cifar stems are written (no max-pool)")
        stride, pad = (2, 3) if self.stem == "nopool" else (1, 1)
        h = relu_(norm_(conv_(x, "conv1.weight", stride, pad), "norm"))
        for li, n in enumerate(self.layers, 1):
            for b in range(n):
                prefix = f"layer{li}.{b}"
                stride = 2 if li > 1 and b == 0 else 1
                down = prefix + ".down_sample.0.weight" in p
                mark("split", prefix)
                identity = h
                if down:
                    identity = norm_(conv_(h, prefix + ".down_sample.0.weight", stride, 0), prefix + ".down_sample.1")
                    mark("side_end", prefix)
                t = relu_(norm_(conv_(h, prefix + ".conv1.weight", stride, 1), prefix + ".norm1"))
                t = norm_(conv_(t, prefix + ".conv2.weight", 1, 1), prefix + ".norm2")
                mark("join", prefix)
                h = relu_(t + identity)
        feat = h.mean(axis=(2, 3))
        logits = feat @ p["fc.weight"].T + p["fc.bias"]
        z = logits - logits.max(1, keepdims=True)
        prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        loss = -np.log(prob[np.arange(len(y)), y]).mean()
        dlogits = prob.copy()
        dlogits[np.arange(len(y)), y] -= 1
        dlogits /= len(y)
        grads["fc.weight"] = dlogits.T @ feat
        grads["fc.bias"] = dlogits.sum(0)
        dh = np.repeat(np.repeat((dlogits @ p["fc.weight"])[:, :, None, None], h.shape[2], 2), h.shape[3], 3)
        dh = dh / (h.shape[2] * h.shape[3])
        stack = []  # per open block: the gradient reaching its output (the identity path's)
        for kind, a, back in reversed(cache):
            if kind == "relu":
                dh = dh * a
            elif kind == "conv":
                dh, grads[a] = back(dh)
            elif kind == "norm":
                dh, grads[a + ".gamma"], grads[a + ".beta"] = back(dh)
            elif kind == "join":  # going backwards: the sum's gradient goes to both branches
                stack.append(dh)
            elif kind == "side_end":  # the main branch is done: continue on the shortcut's convolution
                main, dh = dh, stack.pop()
                stack.append(("main", main))
            elif kind == "split":  # both branches reached the block's input: add them
                top = stack.pop()
                dh = dh + top[1] if isinstance(top, tuple) else dh + top
        return loss, grads


def main(argv):
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE)
    native, fast, x, y, _ = kernel_check.networks(argv)
    layers = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}[argv[0]]
    params = {p.name: p.asnumpy().astype(np.float64) for p in native.get_parameters()}
    loss64, g64 = Backprop(params, layers, argv[4]).run(x.asnumpy().astype(np.float64), y.asnumpy())
    out = {"loss64": loss64, "onednn": bool(fast.conv1.onednn)}  # whether the comparison ran as meant
    for side, net in (("mindspore", native), ("resnet_ms", fast)):
        loss, grads, _ = kernel_check.step(net, x, y)
        names = [p.name for p in net.trainable_params()]
        out[side] = {"loss": abs(loss - loss64) / loss64,
                     "grads": {n: float(np.abs(g - g64[n]).max() / (np.abs(g64[n]).max() + 1e-30))
                               for n, g in zip(names, grads)}}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
