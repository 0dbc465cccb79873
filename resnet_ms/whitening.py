"""Patch-whitening initialisation of a network's first convolution.

The stem's k x k filters are set to the eigenvectors of the covariance of
k x k patches of training images, each scaled by 1/sqrt(eigenvalue + eps),
and to their negatives (the ReLU after it would otherwise discard half of
each direction). Its outputs are then decorrelated, unit-variance inputs:
the first layer starts where training would take many steps to get
(Page, "How to train your ResNet" part 8; airbench). A stem of n filters
holds the n/2 strongest directions: all 12 of SmallResNet's 2x2 stem, the
32 strongest of the 147 in ResNet's 7x7 one.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WHITEN = ("none", "init", "frozen")  # init: trained from there on; frozen: kept fixed
EPS = 5e-4  # keeps near-zero eigenvalues (flat patches) from blowing up
CHUNK = 250  # images per pass: 7x7 patches of 250 32-px images take 0.2 GB in float64
POSITIONS = 32  # patch positions per axis and image: larger images are sampled on a grid


def patch_covariance(batches, kernel):
    """Mean and covariance of the k x k patches of NCHW images: one array, or batches of them
    (a loader's, so that large images never sit in memory at once)."""
    total = outer = None
    count = 0
    for batch in [batches] if isinstance(batches, np.ndarray) else batches:
        step = -(-(min(batch.shape[2:]) - kernel + 1) // POSITIONS)  # ceil: at most POSITIONS a row
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start:start + CHUNK].astype(np.float64)
            patches = sliding_window_view(chunk, (kernel, kernel), axis=(2, 3))[:, :, ::step, ::step]
            patches = patches.transpose(0, 2, 3, 1, 4, 5).reshape(-1, chunk.shape[1] * kernel * kernel)
            if total is None:
                total, outer = np.zeros(patches.shape[1]), np.zeros((patches.shape[1],) * 2)
            total += patches.sum(0)
            outer += patches.T @ patches
            count += len(patches)
    if not count:
        raise ValueError("patch whitening needs at least one image")
    mean = total / count
    return mean, outer / count - np.outer(mean, mean)


def patch_whitening(images, kernel, out_channels, eps=EPS):
    """Conv weights (out_channels, C, k, k) whitening the k x k patches of NCHW `images`
    (an array or an iterable of batches)."""
    values, vectors = np.linalg.eigh(patch_covariance(images, kernel)[1])
    order = np.argsort(values)[::-1]  # strongest directions first
    filters = (vectors[:, order] / np.sqrt(np.maximum(values[order], 0) + eps)).T
    if out_channels > 2 * len(filters):
        raise ValueError(f"{out_channels} channels: patch whitening fills at most {2 * len(filters)}")
    half = filters[:(out_channels + 1) // 2]  # the strongest directions, then the same negated
    both = np.concatenate([half, -half])[:out_channels]
    return both.reshape(out_channels, -1, kernel, kernel).astype(np.float32)


def whiten_stem(net, images, frozen=False):
    """Set net.conv1 from `images` (normalised NCHW training images, or batches of them);
    frozen: not trained."""
    import mindspore as ms
    conv = net.conv1
    weight = patch_whitening(images, conv.kernel_size[0], conv.out_channels)
    conv.weight.set_data(ms.Tensor(weight))
    if frozen:
        conv.weight.requires_grad = False
    return weight
