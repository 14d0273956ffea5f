"""Run records on disk, written atomically, so no reader ever sees half a file."""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path


def clean_json(value):
    """JSON has no NaN or infinity: write them as null rather than emit invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; a record gets what open() would give it
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def remove_stale_temporaries(directory: str | os.PathLike, older_than: float = 600) -> list[Path]:
    """Delete the temporary files of `atomic_path` that a killed process left in `directory`
    (those untouched for `older_than` seconds: a live write finishes long before); returns them."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def exclusive(lock: str | os.PathLike, on_wait=None, poll: float = 1.0):
    """Hold the file `lock` (created exclusively, holding '<pid> <host>') for the block: wait while
    a live process holds it (calling ``on_wait(lock, holder)`` once), take over one that a dead
    process of this host left. Two processes taking over the same stale lock at once may both
    go on: that costs a duplicate run, never a torn record (records are written atomically)."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            break
        except FileExistsError:
            holder = _live_holder(lock)
            if holder is None:
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            if on_wait is not None and not waited:
                on_wait(lock, holder)
                waited = True
            time.sleep(poll)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _live_holder(lock: Path, grace: float = 60) -> str | None:
    """'pid N on HOST' of the live process holding `lock`; None when it is stale or gone."""
    try:
        words, age = lock.read_text().split(), time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    if len(words) != 2 or not words[0].isdigit():   # its holder died between creating and writing it
        return None if age > grace else "a process starting"
    pid, host = int(words[0]), words[1]
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return f"pid {pid} on {host}"


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(clean_json(data), f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")
    return Path(path)


def save_state_atomic(state: dict, path: str | os.PathLike) -> Path:
    """torch.save of a state_dict, atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)
