"""Image files: listing, integrity checks, and the one decoder every path uses.

Training, evaluation, prediction and pictures all decode image files with
`decode` (Pillow), so one file gives the same pixels everywhere, whatever its
format: 8- or 16-bit, grayscale, palette, alpha, CMYK, EXIF-rotated. (The
native decoder of mindspore.dataset reads a 16-bit PNG as a white image and
takes the whole process down, SIGFPE, on a JPEG cut off after its header.)
Files are still checked cheaply before training (`scan`), so that a broken
one is named before any work starts rather than in the middle of an epoch.
"""
import io
import os

import numpy as np

# What Pillow reads and data sets hold; other files in a class folder are
# counted and reported, never silently dropped.
IMAGE_EXTENSIONS = tuple(e for ext in (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
                         for e in (ext, ext.upper()))
# A JPEG larger than this on a side is decoded at a reduced scale (DCT
# scaling: the full image is never in memory); any other format that large is
# refused, since it would be decoded whole.
MAX_SIDE = 8192
DRAFT_SIDE = 2048


def is_image_name(name):
    return name.endswith(IMAGE_EXTENSIONS)


def _to_rgb8(im):
    """Pillow image of any mode -> HWC uint8 RGB."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit (or 32-bit) gray: keep the full range
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(np.rint(a * 255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "F":  # float gray: 0-1 by convention
        a = np.asarray(im, dtype=np.float64)
        a = a * 255.0 if a.max() <= 1.0 else a
        return np.repeat(np.clip(np.rint(a), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):  # transparent parts: shown over white
        from PIL import Image
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def decode(source):
    """HWC uint8 RGB pixels of an image file (a path, or its bytes).

    EXIF orientation is applied. Raises ValueError with a reason a user can
    act on when the file cannot be decoded.
    """
    from PIL import Image, ImageOps
    Image.MAX_IMAGE_PIXELS = None  # sizes are checked here, before decoding
    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(f) as im:
            w, h = im.size
            if w < 1 or h < 1:
                raise ValueError(f"size {w}x{h}")
            if max(w, h) > MAX_SIDE:
                if im.format != "JPEG":
                    raise ValueError(f"{w}x{h} pixels is too large to decode (at most {MAX_SIDE} a side "
                                     "for non-JPEG files); downscale it first")
                k = max(w, h) / DRAFT_SIDE  # draft keeps both sides at least what is asked
                im.draft("RGB", (max(1, int(w / k)), max(1, int(h / k))))
            im.load()
            return _to_rgb8(ImageOps.exif_transpose(im))
    except ValueError:
        raise
    except Exception as e:  # Pillow raises many types for bad files; all mean "cannot decode"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"not a readable image ({reason})") from None


def list_images(folder, class_names):
    """(files, others): (path, label) of every image, in the order
    ImageFolderDataset reads them (classes by label, then file names sorted
    byte-wise), and the paths of other files in the class folders."""
    files, others = [], []
    for label, name in enumerate(class_names):
        d = os.path.join(folder, name)
        for f in sorted(os.listdir(d)):
            path = os.path.join(d, f)
            if not os.path.isfile(path):
                continue
            if is_image_name(f):  # hidden ones too: ImageFolderDataset reads them
                files.append((path, label))
            elif not f.startswith("."):  # .DS_Store and the like are not worth a word
                others.append(path)
    return files, others


def _tail(path, n):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - n))
        return f.read(), size


def image_ok(path):
    """True when the file is a complete image that Pillow can size.

    JPEG, PNG and BMP are checked by their end markers (cheap); other formats
    are decoded once.
    """
    from PIL import Image
    try:
        with Image.open(path) as im:
            fmt, (w, h) = im.format, im.size
    except Exception:  # PIL raises many types for garbage; all mean "unreadable"
        return False
    if w <= 0 or h <= 0:
        return False
    tail, size = _tail(path, 1024)
    if fmt == "JPEG":
        return b"\xff\xd9" in tail  # EOI; some writers pad after it
    if fmt == "PNG":
        return b"IEND" in tail[-16:]
    if fmt == "BMP":
        with open(path, "rb") as f:
            head = f.read(6)
        return int.from_bytes(head[2:6], "little") <= size
    try:
        decode(path)
    except ValueError:
        return False
    return True


def scan(folder, class_names):
    """(files, indices of the good ones, paths of the bad ones, other files) over list_images."""
    files, others = list_images(folder, class_names)
    ok = [image_ok(path) for path, _ in files]
    return (files, [i for i, k in enumerate(ok) if k], [files[i][0] for i, k in enumerate(ok) if not k],
            others)
