"""Fetch a public file and accept it only if it is byte-for-byte the file in git.

The upstream repositories are pinned to a commit, and the mirror README records each
file's git blob id, so ``sha1(b"blob <len>\\0" + data)`` proves that a download is
exactly the authors' file. Nothing unverified ever appears at the destination path:
bytes go to a temporary file beside it and are renamed into place only after the check.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

__all__ = ["IntegrityError", "git_blob_id", "file_digests", "fetch_verified"]


class IntegrityError(ValueError):
    """A file's bytes differ from the pinned upstream version."""


def git_blob_id(data: bytes) -> str:
    """The id git gives these bytes as a blob (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_digests(path: str | os.PathLike) -> tuple[str, str]:
    """(sha256, git blob id) of a file in one streamed pass (files can be large)."""
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest()


def fetch_verified(url: str, dest: str | os.PathLike, blob_id: str,
                   opener=urllib.request.urlopen, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` if its git blob id is ``blob_id``.

    ``opener(url, timeout=...)`` must return a readable, closable response; tests pass a
    ``file://`` URL or a fake. On a mismatch the bytes are deleted and
    :class:`IntegrityError` is raised; network errors propagate unchanged.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        got = file_digests(tmp)[1]
        if got != blob_id:
            raise IntegrityError(
                f"refused {url}: its git blob id is {got}, expected {blob_id} "
                f"(the file differs from the pinned upstream version and was deleted)")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
