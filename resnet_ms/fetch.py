"""Downloads that are checked before anything trusts them.

The transfer itself is the `download` package's (the course uses it); what it
does not do is done here: a fresh temporary file per attempt (files.atomic_path;
`download` itself would resume a stale `.part`), a checksum of what arrived, extraction into a temporary
folder that refuses entries escaping it, and an atomic rename into place, so a
failed attempt leaves nothing that a later run could take for success.
"""
import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import zlib

from .errors import UserError
from .files import atomic_path


def file_digest(path, algorithm="sha256"):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_digest(path, expected):
    """`expected` is "md5:HEX" or "sha256:HEX"; raises UserError on mismatch."""
    algorithm, _, want = expected.partition(":")
    got = file_digest(path, algorithm)
    if got != want.lower():
        raise UserError(f"{path}: {algorithm} is {got}, expected {want}; "
                        "the download is corrupt or not the file you meant: delete it and retry")


def fetch_file(url, dest, checksum=None, timeout=30.0, verify=None):
    """Download `url` to `dest` (atomically) unless a verified copy is there.

    `verify(path)` (raising UserError) checks what arrived when no checksum
    is known, before it gets its final name.
    """
    if os.path.isfile(dest):
        if checksum:
            check_digest(dest, checksum)
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    with atomic_path(dest) as tmp:
        _transfer(url, tmp, timeout)
        if checksum:
            check_digest(tmp, checksum)
        if verify is not None:
            try:
                verify(tmp)
            except UserError as e:
                raise UserError(f"{url}: {str(e).replace(tmp + ': ', '')}") from None
    return dest


def _transfer(url, path, timeout):
    from download import download  # imported here: only needed when fetching
    # download passes its timeout to the first request only; the transfer's own
    # reads would wait forever on a stalled server without a default timeout.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        download(url, path, kind="file", progressbar=False, replace=True,
                 timeout=timeout, verbose=False)
    except (RuntimeError, urllib.error.URLError, OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[-1].removeprefix("Error: ")
        raise UserError(f"cannot download {url} ({reason}); if you are offline, "
                        "fetch it elsewhere and pass the local file or folder") from None
    finally:
        socket.setdefaulttimeout(previous)
        if os.path.exists(path + ".part"):  # download's own partial file: never resumed
            os.remove(path + ".part")
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise UserError(f"cannot download {url}: nothing arrived")


def check_tar(path):
    """Raise UserError unless `path` is a complete, readable tar archive."""
    try:
        with tarfile.open(path) as tar:
            for _ in tar:  # reading every header decompresses to the end: truncation shows
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise UserError(f"{path}: not a complete tar archive ({e}); the download was cut short "
                        "or is not the data set") from None


def _safe_members(tar, root):
    root = os.path.realpath(root)
    for m in tar.getmembers():
        target = os.path.realpath(os.path.join(root, m.name))
        if not (m.isfile() or m.isdir()):
            raise UserError(f"{tar.name}: refusing archive entry {m.name!r} (links and devices are not extracted)")
        if os.path.isabs(m.name) or os.path.commonpath([root, target]) != root:
            raise UserError(f"{tar.name}: refusing archive entry {m.name!r} (it points outside the target folder)")
        yield m


def extract_tar(archive, dest_parent, top_folder):
    """Extract `archive` whose files sit under `top_folder/`; returns the final path.

    Extracts into a temporary sibling folder, then renames `top_folder` into
    `dest_parent` in one step.
    """
    final = os.path.join(dest_parent, top_folder)
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=dest_parent)
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, members=list(_safe_members(tar, tmp)))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise UserError(f"{archive}: not a readable tar archive ({e}); delete it and download again") from None
        inside = os.path.join(tmp, top_folder)
        if not os.path.isdir(inside):
            raise UserError(f"{archive}: has no folder {top_folder}/ inside")
        os.replace(inside, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
