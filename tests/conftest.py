"""Shared test fixtures: data the tests write, a loopback HTTP server, script runs."""
import functools
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import resnet_ms  # noqa: F401  (first: applies the CPU fast path before MindSpore loads)
import mindspore as ms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CIFAR = os.path.join(os.path.dirname(REPO), "shared", "datasets", "cifar10")
# Each class has its own colour, so a network can learn the synthetic sets in a few steps.
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 0, 128]])


def synthetic_images(labels, size=32, seed=0):
    """HWC uint8 images: the class colour plus noise and a random bright square."""
    rng = np.random.default_rng(seed)
    x = PALETTE[labels][:, None, None, :] + rng.normal(0, 25, (len(labels), size, size, 3))
    for i in range(len(labels)):
        r, c = rng.integers(0, size - 8, 2)
        x[i, r:r + 8, c:c + 8] = 255
    return np.clip(x, 0, 255).astype(np.uint8)


def write_cifar_batch(path, images, labels):
    """The official binary record: label byte, then R, G, B planes."""
    pixels = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    np.concatenate([np.asarray(labels, np.uint8)[:, None], pixels], 1).astype(np.uint8).tofile(path)


def write_synthetic_cifar10(folder, seed=0):
    """A full-size CIFAR-10 binary folder (six 10,000-image files) of synthetic images."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for k, name in enumerate(names):
        labels = rng.integers(0, 10, 10000)
        write_cifar_batch(os.path.join(folder, name), synthetic_images(labels, seed=seed + k), labels)
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
        f.write("\n".join(["airplane", "automobile", "bird", "cat", "deer",
                           "dog", "frog", "horse", "ship", "truck"]) + "\n")
    return folder


@pytest.fixture(scope="session")
def synthetic_cifar(tmp_path_factory):
    return write_synthetic_cifar10(str(tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin"))


def write_image_folder(root, classes=("cat", "dog", "fox"), per_class=(12, 4), size=40, seed=0):
    """root/train/<class>/*.png and root/test/<class>/*.png, learnable by colour."""
    from PIL import Image
    for split, n in zip(("train", "test"), per_class):
        for k, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i, img in enumerate(synthetic_images(np.full(n, k), size, seed + 7 * k + len(split))):
                Image.fromarray(img).save(os.path.join(folder, f"{i:03d}.png"))
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp("imagefolder")))


@pytest.fixture(scope="session")
def real_cifar():
    """The real CIFAR-10 (JPEG q75 copy) in the binary layout, prepared once into .cache/."""
    prepare = os.path.join(SHARED_CIFAR, "prepare.py")
    if not os.path.isfile(prepare):
        pytest.skip(f"real CIFAR-10 not available: {SHARED_CIFAR} is absent")
    out = os.path.join(REPO, ".cache", "cifar10")
    subprocess.run([sys.executable, prepare, out], check=True, capture_output=True)
    return os.path.join(out, "cifar-10-batches-bin")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/'www' on 127.0.0.1 (a free port); yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# A training run of a few seconds: ResNet-18, 3 epochs of 6 steps, 4 validation batches.
# lr 0.01: in 18 steps BatchNorm's running statistics keep up with the weights (validation
# loss 1.2-3.0; at 0.05 it was 25-375, and which classes ranked 2nd and 3rd, or whether a
# frozen backbone's first loss passed the divergence limit, came down to rounding).
TINY_TRAIN_ARGS = ["--model", "resnet18", "--pretrained", "none", "--batch_size", 32, "--epochs", 3,
                   "--lr", 0.01, "--warmup_epochs", 0.5, "--limit_train_batches", 6,
                   "--limit_val_batches", 4, "--num_workers", 1]


@pytest.fixture(scope="session")
def tiny_run(synthetic_cifar, tmp_path_factory):
    """One uninterrupted tiny training run: (output folder, CompletedProcess, wall seconds)."""
    import time
    out = str(tmp_path_factory.mktemp("run") / "train")
    start = time.monotonic()
    proc = run_script("train.py", "--data_dir", synthetic_cifar, "--output_dir", out, *TINY_TRAIN_ARGS)
    return out, proc, time.monotonic() - start


def run_script(script, *args, timeout=600, check=True, cwd=REPO, env=None):
    """Run one of the top-level scripts in a fresh interpreter, as a user would (plus `env`)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def kill_after_first_epoch(out, *args):
    """Start train.py --output_dir out *args, SIGKILL it once last.ckpt exists; returns that
    checkpoint's epoch (asserting it was not the last one)."""
    import signal
    import time
    from resnet_ms.checkpoint import read_checkpoint
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--output_dir", str(out), *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(out, "last.ckpt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = read_checkpoint(os.path.join(out, "last.ckpt"))[1]
    assert record.epoch < record.config["epochs"], "the run finished before it could be killed"
    return record.epoch


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def one_error_line(proc):
    """The single `error:` line a script ended with (asserting that it is exactly that)."""
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return errors[0]


def tree(folder):
    """{relative path: size} of every file under folder (to show that nothing was written)."""
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, folder)] = os.path.getsize(p)
    return out
