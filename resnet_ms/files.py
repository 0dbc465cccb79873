"""Writing files so that a crash never leaves half of one under its final name.

Every module that writes an output (checkpoints, metrics.csv, config.yaml,
JSON reports, pictures, exports, downloads) goes through `atomic_path`: the
content goes to a temporary file beside the target, is flushed to disk, and
`os.replace` swaps it in, so readers see either the old file or the whole new
one. Temporaries start with TMP_PREFIX, so a later run can sweep up what a
killed one left (`remove_temporaries`).
"""
import contextlib
import json
import os
import shutil
import tempfile

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path in `path`'s folder; on success it becomes `path`.

    The temporary name ends like the final one: some writers (MindSpore's
    checkpoints, matplotlib) choose the format from the suffix.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix="-" + os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            f.write(text)
    return path


def write_json(path, data):
    return write_text(path, json.dumps(data, indent=2) + "\n")


def remove_temporaries(folder):
    """Delete the temporaries a killed process left in `folder` (never mistaken for outputs)."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(TMP_PREFIX):
                path = os.path.join(folder, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def cache_dir():
    """Downloads and built kernels: $RESNET_MS_CACHE, else $XDG_CACHE_HOME/resnet_ms or ~/.cache/resnet_ms."""
    if os.environ.get("RESNET_MS_CACHE"):
        return os.environ["RESNET_MS_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "resnet_ms")
