"""Hostile inputs: broken downloads, broken images, broken checkpoints, killed runs.

Each case must end in one clear UserError (or exit code 2 for scripts) and
leave nothing behind that a later run could mistake for good data.
"""
import http.server
import io
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, TINY_TRAIN_ARGS, run_script, synthetic_images, write_image_folder

from resnet_ms.checkpoint import read_checkpoint, save_checkpoint
from resnet_ms.data import locate_cifar10, open_source
from resnet_ms.errors import UserError
from resnet_ms.fetch import fetch_file
from resnet_ms.images import image_ok
from resnet_ms import build_model
from resnet_ms.weights import resolve


def _tar(path, entries):
    """entries: (name, bytes | ('symlink', target))"""
    with tarfile.open(path, "w:gz") as t:
        for name, payload in entries:
            info = tarfile.TarInfo(name)
            if isinstance(payload, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, payload[1]
                t.addfile(info)
            else:
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))


def _truncated_archive(path):
    _tar(path, [("cifar-10-batches-bin/data_batch_1.bin", os.urandom(200_000))])
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


ARCHIVES = [
    ("truncated", _truncated_archive, "not a complete tar archive"),
    ("parent path", lambda p: _tar(p, [("cifar-10-batches-bin/../../up.txt", b"x")]), "outside the target folder"),
    ("absolute path", lambda p: _tar(p, [("/tmp/abs-resnet-ms.txt", b"x")]), "outside the target folder"),
    ("symlink", lambda p: _tar(p, [("cifar-10-batches-bin/data_batch_1.bin", ("symlink", "/etc/passwd"))]),
     "links and devices are not extracted"),
    ("wrong layout", lambda p: _tar(p, [("other/readme.txt", b"x")]), "no folder cifar-10-batches-bin/"),
    ("not CIFAR", lambda p: _tar(p, [("cifar-10-batches-bin/data_batch_1.bin", b"x" * 10)]), "data_batch_1.bin: 10 bytes"),
]


@pytest.mark.parametrize("name, make, message", ARCHIVES, ids=[a[0] for a in ARCHIVES])
def test_bad_archives_are_refused_and_leave_nothing(name, make, message, http_server, tmp_path):
    www, url = http_server
    make(str(www / "c.tar.gz"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(UserError, match=message):
        locate_cifar10(str(data_dir), f"{url}/c.tar.gz")
    left = sorted(os.listdir(data_dir))
    assert "cifar-10-batches-bin" not in left or name == "not CIFAR"
    assert not [n for n in left if n.startswith(".")]  # no temporary folders or partial files
    assert not (tmp_path / "up.txt").exists() and not os.path.exists("/tmp/abs-resnet-ms.txt")
    # The same call again fails the same way: nothing was taken for success.
    if name != "not CIFAR":
        with pytest.raises(UserError):
            locate_cifar10(str(data_dir), f"{url}/c.tar.gz")


def test_an_empty_data_folder_is_not_a_data_set(tmp_path):
    (tmp_path / "cifar-10-batches-bin").mkdir()
    with pytest.raises(UserError, match="no CIFAR-10 binary files there"):
        locate_cifar10(str(tmp_path), "")


def test_a_bad_speed_setting_stops_train_py_with_one_line(synthetic_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_MS_SMALL_MAPS", "fast")
    out = tmp_path / "run"
    proc = run_script("train.py", "--data_dir", synthetic_cifar, "--output_dir", out, "--model", "resnet18",
                      "--pretrained", "none", "--epochs", "1", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: RESNET_MS_SMALL_MAPS=fast: set it to matmul, conv or auto")
    assert not out.exists() or not any(out.iterdir())


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 1000)
        self.wfile.flush()
        time.sleep(4)  # bounded: the server thread ends by itself

    def log_message(self, *args):
        pass


def test_a_stalled_transfer_times_out(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "f.bin"
        start = time.monotonic()
        with pytest.raises(UserError, match="cannot download"):
            fetch_file(f"http://127.0.0.1:{server.server_address[1]}/f.bin", str(dest), timeout=1.0)
        assert time.monotonic() - start < 4  # gave up before the server's stall ended
        assert os.listdir(tmp_path) == []
    finally:
        server.shutdown()
        server.server_close()


def test_a_stale_partial_file_is_never_resumed(http_server, tmp_path):
    www, url = http_server
    (www / "w.ckpt").write_bytes(b"0123456789" * 1000)
    dest = tmp_path / "w.ckpt"
    (tmp_path / "w.ckpt.part").write_bytes(b"stale")
    fetch_file(f"{url}/w.ckpt", str(dest), checksum=None)
    assert dest.read_bytes() == b"0123456789" * 1000


def test_a_truncated_weight_download_is_not_cached(http_server, tmp_path, monkeypatch):
    www, url = http_server
    good = tmp_path / "good.ckpt"
    save_checkpoint(str(good), build_model("resnet18", 10))
    (www / "r18.ckpt").write_bytes(good.read_bytes()[:-5000])
    monkeypatch.setenv("RESNET_MS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="damaged or not a MindSpore checkpoint"):
        resolve("resnet18", f"{url}/r18.ckpt")
    assert os.listdir(tmp_path / "cache") == []


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "best.ckpt"
    save_checkpoint(str(path), build_model("resnet18", 10))
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(UserError, match="best.ckpt: damaged"):
        read_checkpoint(str(path))


# ---------------------------------------------------------------- images

def _jpeg(path, cut=None):
    buf = io.BytesIO()
    Image.fromarray(synthetic_images(np.array([1]), 40)[0]).save(buf, "JPEG")
    data = buf.getvalue()
    path.write_bytes(data[:cut] if cut else data)


def _png(path, cut=None):
    buf = io.BytesIO()
    Image.fromarray(synthetic_images(np.array([2]), 40)[0]).save(buf, "PNG")
    data = buf.getvalue()
    path.write_bytes(data[:cut] if cut else data)


IMAGES = [
    ("good jpeg", lambda p: _jpeg(p), True),
    ("good png", lambda p: _png(p), True),
    ("jpeg cut after its header", lambda p: _jpeg(p, 400), False),
    ("png cut short", lambda p: _png(p, 300), False),
    ("text named .jpg", lambda p: p.write_text("not an image"), False),
    ("empty file", lambda p: p.write_bytes(b""), False),
]


@pytest.mark.parametrize("name, make, ok", IMAGES, ids=[i[0] for i in IMAGES])
def test_image_check(name, make, ok, tmp_path):
    path = tmp_path / ("x.png" if "png" in name else "x.jpg")
    make(path)
    assert image_ok(str(path)) is ok


@pytest.fixture
def folder_with_broken_jpeg(tmp_path):
    root = write_image_folder(str(tmp_path / "imgs"), per_class=(12, 3))
    _jpeg(tmp_path / "imgs" / "train" / "dog" / "050.jpg", 400)
    (tmp_path / "imgs" / "train" / "dog" / "notes.txt").write_text("ignored")
    return root


def test_broken_image_stops_or_is_skipped(folder_with_broken_jpeg):
    with pytest.raises(UserError, match=r"dog/050.jpg: truncated or not a readable image \(1 such"):
        open_source("imagefolder", folder_with_broken_jpeg, 0.25)
    src = open_source("imagefolder", folder_with_broken_jpeg, 0.25, bad_images="skip")
    used = np.concatenate([src.indices("train"), src.indices("val")])
    assert len(used) == 36 and 24 not in used  # the 37 files less the broken one (index 24)


def test_training_skips_a_truncated_jpeg_instead_of_crashing(folder_with_broken_jpeg, tmp_path):
    proc = run_script("train.py", "--dataset", "imagefolder", "--data_dir", folder_with_broken_jpeg,
                      "--output_dir", tmp_path / "out", "--model", "resnet18", "--pretrained", "none",
                      "--batch_size", 9, "--epochs", 1, "--val_split", 0.25, "--bad_images", "skip")
    assert "skipping 1 unreadable image" in proc.stderr
    assert (tmp_path / "out" / "best.ckpt").exists()
    stopped = run_script("train.py", "--dataset", "imagefolder", "--data_dir", folder_with_broken_jpeg,
                         "--output_dir", tmp_path / "out2", "--model", "resnet18", "--pretrained", "none",
                         check=False)
    assert stopped.returncode == 2 and "--bad_images skip" in stopped.stderr
    assert "Traceback" not in stopped.stderr


def test_empty_class_folder_after_skipping(tmp_path):
    root = write_image_folder(str(tmp_path / "imgs"), per_class=(4, 2))
    shutil.rmtree(tmp_path / "imgs" / "train" / "fox")
    (tmp_path / "imgs" / "train" / "fox").mkdir()
    _jpeg(tmp_path / "imgs" / "train" / "fox" / "a.jpg", 300)
    with pytest.raises(UserError, match="fox: class folder has no"):
        open_source("imagefolder", root, 0.25, bad_images="skip")


# ---------------------------------------------------------------- killed runs

KILL_ARGS = TINY_TRAIN_ARGS


def test_killed_again_and_again_then_resumed_ends_like_an_uninterrupted_run(synthetic_cifar, tiny_run, tmp_path):
    """SIGKILL at staggered moments (in a step, in evaluation, in a save), resume each time.

    The moments are fractions of an uninterrupted run's wall time on this
    machine, so they fall at different places of the epoch loop wherever it runs.
    """
    import csv
    reference, _, total = tiny_run
    reference = pathlib.Path(reference)
    out = tmp_path / "killed"
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--data_dir", synthetic_cifar,
           "--output_dir", str(out), *map(str, KILL_ARGS)]
    kills = 0
    for fraction in (0.5, 0.62, 0.74, 0.86):
        args = cmd + (["--resume"] if (out / "last.ckpt").exists() else [])
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=fraction * total)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        if (out / "best.ckpt").exists():  # whatever the moment, best.ckpt is whole
            read_checkpoint(str(out / "best.ckpt"))
        if proc.returncode == 0:
            break
    assert kills >= 1
    if not (out / "curves.png").exists():  # finish without interruption
        resume = ["--resume"] if (out / "last.ckpt").exists() else []
        run_script("train.py", "--data_dir", synthetic_cifar, "--output_dir", out, *resume, *KILL_ARGS)
    with open(out / "metrics.csv") as f, open(reference / "metrics.csv") as g:
        rows, ref = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for key in ("train_loss", "val_acc"):
        assert [float(r[key]) for r in rows] == pytest.approx([float(r[key]) for r in ref], rel=1e-3)
    assert read_checkpoint(str(out / "best.ckpt"))[1].best_epoch == \
        read_checkpoint(str(reference / "best.ckpt"))[1].best_epoch
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_a_run_killed_after_its_last_checkpoint_gets_its_curves_and_loses_its_temporaries(tiny_run, tmp_path):
    """Killed while drawing its pictures: --resume has nothing to train, and sweeps up the
    half-written file and draws the curves that were missing."""
    import shutil
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    (out / "curves.png").unlink()
    (out / ".tmp-abc123-confusion.png").write_bytes(b"\x89PNG half")
    proc = run_script("train.py", "--resume", out / "last.ckpt")
    assert "nothing to do" in proc.stdout
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
