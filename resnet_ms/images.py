"""Image files of a folder-per-class data set: listing and integrity checks.

MindSpore's native JPEG decoder takes the whole process down (SIGFPE) on a
file cut off after its header, where no Python code can catch it. So every
file is checked here first, cheaply: a header PIL can parse with a non-zero
size, and the format's end marker where it belongs (JPEG EOI, PNG IEND, BMP
declared size). A truncated file fails the last test.
"""
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG", ".BMP")


def list_images(folder, class_names):
    """(path, label) of every image, in the order ImageFolderDataset reads them:
    classes by label, then file names sorted byte-wise; sub-folders and other
    extensions are not read."""
    files = []
    for label, name in enumerate(class_names):
        d = os.path.join(folder, name)
        files += [(os.path.join(d, f), label) for f in sorted(os.listdir(d))
                  if f.endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(d, f))]
    return files


def _tail(path, n):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - n))
        return f.read(), size


def image_ok(path):
    """True when the file is a complete JPEG, PNG or BMP that PIL can size."""
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
    return False  # another format behind an image extension: the decoder may not cope


def scan(folder, class_names):
    """(files, indices of the good ones, paths of the bad ones) over list_images."""
    files = list_images(folder, class_names)
    ok = [image_ok(path) for path, _ in files]
    return files, [i for i, k in enumerate(ok) if k], [files[i][0] for i, k in enumerate(ok) if not k]
