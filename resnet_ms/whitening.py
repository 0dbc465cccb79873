"""Patch-whitening initialisation of a network's first convolution.

The stem's k x k filters are set to the eigenvectors of the covariance of
k x k patches of training images, each scaled by 1/sqrt(eigenvalue + eps),
and to their negatives (the ReLU after it would otherwise discard half of
each direction). Its outputs are then decorrelated, unit-variance inputs:
the first layer starts where training would take many steps to get
(Page, "How to train your ResNet" part 8; airbench).
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WHITEN = ("none", "init", "frozen")  # init: trained from there on; frozen: kept fixed
EPS = 5e-4  # keeps near-zero eigenvalues (flat patches) from blowing up


def patch_whitening(images, kernel, out_channels, eps=EPS):
    """Conv weights (out_channels, C, k, k) whitening the k x k patches of NCHW `images`."""
    c = images.shape[1]
    patches = sliding_window_view(images.astype(np.float64), (kernel, kernel), axis=(2, 3))
    patches = patches.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)
    patches = patches - patches.mean(0)
    values, vectors = np.linalg.eigh(patches.T @ patches / len(patches))
    order = np.argsort(values)[::-1]  # strongest directions first
    filters = (vectors[:, order] / np.sqrt(values[order] + eps)).T
    both = np.concatenate([filters, -filters])
    if out_channels > len(both):
        raise ValueError(f"{out_channels} channels: patch whitening fills at most {len(both)}")
    return both[:out_channels].reshape(out_channels, c, kernel, kernel).astype(np.float32)


def whiten_stem(net, images, frozen=False):
    """Set net.conv1 from `images` (normalised NCHW training images); frozen: not trained."""
    import mindspore as ms
    conv = net.conv1
    weight = patch_whitening(images, conv.kernel_size[0], conv.out_channels)
    conv.weight.set_data(ms.Tensor(weight))
    if frozen:
        conv.weight.requires_grad = False
    return weight
