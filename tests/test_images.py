"""One decoder for every path: the same pixels in training, evaluation, prediction and pictures,
for the formats and bit depths a user's folder may hold."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from resnet_ms.data import open_source
from resnet_ms.images import DRAFT_SIDE, decode
from resnet_ms.inference import load_image_files

GRAY = 0x8000  # a 16-bit mid-grey: 128 in 8 bits, not white


def _write(path, make):
    path.parent.mkdir(parents=True, exist_ok=True)
    make(str(path))
    return str(path)


def _exif_rotated(path):
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    im.paste((10, 10, 200), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    im.save(path, "JPEG", quality=95, exif=exif.tobytes())


# name, file name, writer, what decode must give (H, W, and a check of the pixels)
FORMATS = [
    ("16-bit grey PNG", "g16.png", lambda p: Image.fromarray(np.full((20, 30), GRAY, np.uint16)).save(p),
     (20, 30), lambda a: np.all(a == 128)),
    ("8-bit grey PNG", "g8.png", lambda p: Image.fromarray(np.full((20, 30), 77, np.uint8)).save(p),
     (20, 30), lambda a: np.all(a == 77)),
    ("palette PNG", "p.png", lambda p: Image.new("RGB", (30, 20), (0, 128, 255)).convert("P").save(p),
     (20, 30), lambda a: np.abs(a[0, 0].astype(int) - [0, 128, 255]).max() <= 40),
    ("RGBA PNG, transparent", "a.png", lambda p: Image.new("RGBA", (30, 20), (0, 0, 0, 0)).save(p),
     (20, 30), lambda a: np.all(a == 255)),  # transparent parts over white, not the hidden black
    ("CMYK JPEG", "c.jpg", lambda p: Image.new("CMYK", (30, 20), (0, 0, 0, 0)).save(p, "JPEG", quality=95),
     (20, 30), lambda a: a.min() >= 250),  # no ink: white
    ("EXIF-rotated JPEG", "r.jpg", _exif_rotated,
     (40, 20), lambda a: a[2, 10, 2] > 150 and a[37, 10, 0] > 150),  # blue on top after rotation, red below
    ("WebP", "w.webp", lambda p: Image.new("RGB", (30, 20), (10, 200, 10)).save(p, "WEBP", lossless=True),
     (20, 30), lambda a: np.all(a == [10, 200, 10])),
]


@pytest.mark.parametrize("name, file, make, shape, check", FORMATS, ids=[f[0] for f in FORMATS])
def test_decode_gives_the_right_pixels(name, file, make, shape, check, tmp_path):
    a = decode(_write(tmp_path / file, make))
    assert a.dtype == np.uint8 and a.shape == (*shape, 3) and check(a), a[:2, :2]


def test_training_evaluation_and_prediction_see_the_same_pixels(tmp_path):
    """An image-folder data set of every format: the dataset engine's images are decode()'s."""
    root = tmp_path / "mixed"
    paths = []
    for k, (name, file, make, _, _) in enumerate(FORMATS):
        for split in ("train", "test"):
            paths.append(_write(root / split / ("a" if k % 2 else "b") / file, make))
    src = open_source("imagefolder", str(root), val_split=0)
    for split in ("train", "test"):
        idx = src.indices(split)
        got = [img for img, _ in src.leaf(split, idx, 1).create_tuple_iterator(output_numpy=True)]
        files = sorted((p for p in paths if f"/{split}/" in p), key=lambda p: (p.split("/")[-2], p.split("/")[-1]))
        assert len(got) == len(files) == len(FORMATS)
        for img, path in zip(got, files):
            np.testing.assert_array_equal(img, load_image_files([path])[0], err_msg=path)


def test_a_huge_jpeg_is_decoded_small_and_a_huge_png_refused(tmp_path):
    big = Image.new("RGB", (9000, 300), (90, 90, 90))
    big.save(tmp_path / "wide.jpg", "JPEG")
    a = decode(str(tmp_path / "wide.jpg"))
    assert DRAFT_SIDE <= a.shape[1] < 9000 and a.shape[2] == 3  # DCT-scaled while decoding
    Image.new("L", (9000, 10)).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match="too large to decode"):
        decode(str(tmp_path / "wide.png"))


def test_other_files_in_a_class_folder_are_reported_not_dropped_silently(tmp_path, caplog):
    for split in ("train",):
        for c in ("a", "b"):
            for i in range(3):
                _write(tmp_path / split / c / f"{i}.png", lambda p: Image.new("RGB", (8, 8)).save(p))
    (tmp_path / "train" / "a" / "scan.pdf").write_bytes(b"%PDF-1.4")
    with caplog.at_level("WARNING", logger="resnet_ms"):
        src = open_source("imagefolder", str(tmp_path), val_split=0)
    assert len(src.indices("train")) == 6
    assert "not read: 1 file(s)" in caplog.text and "scan.pdf" in caplog.text


def test_decode_reports_garbage_with_a_reason(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(50))
    with pytest.raises(ValueError, match="not a readable image"):
        decode(str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="not a readable image"):
        decode(io.BytesIO(b"").getvalue())
