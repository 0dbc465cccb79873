"""Test-time augmentation: logits averaged over mirrored and shifted copies of each image.

The views are those training showed the network (flips, small translations),
so their average is a cheap ensemble. Translations shift by one pixel with the
border reflected, as the training crops' padding does not matter at 1 px.
"""
import numpy as np

import mindspore as ms

from .runtime import fetch

# name -> the views, as (weight, flip, (dy, dx)); the weights sum to 1.
# flip_translate weighs the unshifted pair as much as the four shifted views
# together, as airbench does.
VIEWS = {
    "none": [(1.0, False, (0, 0))],
    "flip": [(0.5, False, (0, 0)), (0.5, True, (0, 0))],
    "flip_translate": [(0.25, False, (0, 0)), (0.25, True, (0, 0))]
                      + [(0.125, f, s) for s in ((-1, -1), (1, 1)) for f in (False, True)],
}
TTA = tuple(VIEWS)


def describe(tta):
    """The views of `tta` in words, with their weights (for reports)."""
    out = []
    for weight, flip, (dy, dx) in VIEWS[tta]:
        parts = (["flipped"] if flip else []) + ([f"shifted ({dy:+d}, {dx:+d}) px"] if dy or dx else [])
        out.append(f"{weight:g} x {' and '.join(parts) or 'as is'}")
    return out


def resolve_tta(tta, record):
    """`auto`: the TTA of the checkpoint's own recipe (its config's tta), else none."""
    return (record.config or {}).get("tta", "none") if tta == "auto" else tta


def view(images, flip, shift):
    """One view of an NCHW batch: mirrored left-right and/or shifted by (dy, dx) pixels."""
    if flip:
        images = images[..., ::-1]
    dy, dx = shift
    if dy or dx:
        p = max(abs(dy), abs(dx))
        padded = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
        h, w = images.shape[2:]
        images = padded[:, :, p - dy:p - dy + h, p - dx:p - dx + w]
    return np.ascontiguousarray(images)


def tta_logits(eval_step, images, tta="none"):
    """float64 logits of an NCHW batch (Tensor or array), averaged over the views of `tta`."""
    if tta == "none":
        return fetch(eval_step(images if isinstance(images, ms.Tensor) else ms.Tensor(images)))[0].astype(np.float64)
    x = images.asnumpy() if isinstance(images, ms.Tensor) else np.asarray(images)
    out = 0.0
    for weight, flip, shift in VIEWS[tta]:
        out = out + weight * fetch(eval_step(ms.Tensor(view(x, flip, shift))))[0].astype(np.float64)
    return out
