"""What the scripts share: flags that mean the same everywhere, and the one-line error exit."""
import argparse
import os
import tempfile

from .errors import UserError, run_cli  # noqa: F401  (scripts take run_cli from here)
from .models import MODEL_NAMES


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag ends like every other bad input: one `error:` line, exit 2."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def parser(doc):
    """A Parser described by a script's docstring (first line; the rest as epilog)."""
    first, _, rest = doc.strip().partition("\n")
    return Parser(description=first, epilog=rest.strip() or None,
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def writable_folder(path, flag):
    """Raise unless `path` is (or can be made as) a folder this process may write into."""
    if not path:
        raise UserError(f"{flag}: empty; give a folder")
    out = os.path.abspath(path)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"{flag} {path}: a file, not a folder")
    parent = out
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    try:  # a real probe: permission bits say yes to root on read-only and virtual file systems
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=parent))
    except OSError:
        raise UserError(f"{flag} {path}: not a writable folder") from None
    return path


def writable_file(path, flag, suffix=None):
    """Raise unless `path` can be written: an existing folder, a writable one, the right suffix."""
    if not path or path.endswith(os.sep):
        raise UserError(f"{flag} {path!r}: give a file name")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path}: a folder; give a file name inside it")
    if suffix and not path.lower().endswith(suffix):
        raise UserError(f"{flag} {path}: must be a {suffix} file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UserError(f"{flag} {path}: not writable")
    return path


def positive(value, flag, zero_ok=False):
    if value < 0 or (value == 0 and not zero_ok):
        raise UserError(f"{flag} {value}: must be {'0 or more' if zero_ok else 'at least 1'}")
    return value


def workers(value, flag="--num_workers"):
    """A data-worker count the machine can give (at least 1, at most its cores)."""
    cores = os.cpu_count() or 1  # the bound mindspore.dataset enforces
    if not 1 <= value <= cores:
        raise UserError(f"{flag} {value}: must be between 1 and this machine's {cores} cores")
    return value


def add_checkpoint_flags(p, required=True):
    """--ckpt, and --model/--num_classes for plain-weights files (the course's format)."""
    p.add_argument("--ckpt", required=required, help="checkpoint file (resnet_ms, or plain weights)")
    p.add_argument("--model", choices=MODEL_NAMES, help="for plain-weights checkpoints")
    p.add_argument("--num_classes", type=int, default=0, help="for plain-weights checkpoints")
    return p


def add_data_flags(p, data_required=True):
    """--data_dir, --split and --dataset: which images of which data set."""
    p.add_argument("--data_dir", required=data_required, help="CIFAR-10 folder or image folder data set")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--dataset", choices=["cifar10", "imagefolder"], help="default: the checkpoint's")
    return p


def progress(total, desc):
    """A callback advancing a progress bar by n (a terminal only; logs get the summary line)."""
    import sys
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
    return bar.update
