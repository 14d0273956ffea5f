"""Locks on the run cache: a run that a notebook and a `fill` (or two fills) may race for is
trained by whoever holds its lock. A lock is a file holding '<pid> <host>', created exclusively and
touched while held; one whose holder is gone (a dead process of this host) or that nobody touched
for `LOCK_STALE` seconds (a holder on any host that died or lost the file system) is reported and
broken, so a lock never blocks for longer than its holder lives."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path


LOCK_BEAT = 20.0     # seconds between the touches that show a held lock's holder is alive
LOCK_STALE = 120.0   # a lock untouched this long is stale, whatever host its holder is on


class RunLock:
    """The file `path` held by this process: created exclusively, holding '<pid> <host>', touched
    every `LOCK_BEAT` seconds while held (so a lock whose holder died, on this host or another, goes
    stale), removed on release."""

    def __init__(self, path: str | os.PathLike):
        self.path, self._stop = Path(path), None

    def try_acquire(self) -> str | None:
        """Take the lock (None), or say who holds it ('pid N on HOST'). A stale lock is broken and taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
                break
            except FileExistsError:
                holder = live_holder(self.path)
                if holder is not None:
                    return holder
                with contextlib.suppress(OSError):
                    warnings.warn(f"breaking the stale lock {self.path} ({self.path.read_text().strip() or 'empty'}: "
                                  f"that process is gone or has not touched it for {LOCK_STALE:.0f} s)")
                    self.path.unlink()
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(self._stop,), daemon=True).start()
        return None

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(LOCK_BEAT):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


@contextlib.contextmanager
def exclusive(lock: str | os.PathLike, on_wait=None, poll: float = 1.0):
    """Hold the file `lock` (a `RunLock`) for the block: wait while a live process holds it
    (calling ``on_wait(lock, holder)`` once), take over one whose holder died. A holder is live
    while it touches the lock (every `LOCK_BEAT` s) and, on this host, its process exists: a lock
    never blocks for longer than its holder lives plus `LOCK_STALE` s. Two processes taking over
    the same stale lock at once may both go on: that costs a duplicate run, never a torn record
    (records are written atomically)."""
    held, waited = RunLock(lock), False
    while (holder := held.try_acquire()) is not None:
        if on_wait is not None and not waited:
            on_wait(Path(lock), holder)
            waited = True
        time.sleep(poll)
    try:
        yield
    finally:
        held.release()


def live_holder(lock: Path, grace: float = 60) -> str | None:
    """'pid N on HOST' of the live process holding `lock`; None when it is stale or gone: its
    process is gone (this host), or it has not been touched for `LOCK_STALE` seconds (any host)."""
    try:
        words, age = lock.read_text().split(), time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    if len(words) != 2 or not words[0].isdigit():   # its holder died between creating and writing it
        return None if age > grace else "a process starting"
    pid, host = int(words[0]), words[1]
    if age > LOCK_STALE:
        return None
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return f"pid {pid} on {host}"


# SIGTERM (a batch system's time limit, `kill`) as SystemExit, so that `finally` blocks give the locks
# back; held off while a lock changes hands, so that no lock is left that no `finally` knows of.
_held_off = {"depth": 0, "signal": None}     # SIGTERM waits while a lock changes hands (sigterm_held_off)


def _exit_on_sigterm(signum, frame):
    """SIGTERM as SystemExit, so that `finally` blocks run: the fill cancels its tasks, closes its
    cluster and gives up its runs' locks before it goes. Inside `sigterm_held_off` it waits for
    the end of that block."""
    if _held_off["depth"]:
        _held_off["signal"] = signum
        return
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_held_off():
    """A block that SIGTERM does not cut short: between taking a run's lock and recording it as
    in flight (or between taking it out and releasing it), an exit would leave a lock that no
    `finally` knows of. A SIGTERM that comes meanwhile exits at the end of the block."""
    _held_off["depth"] += 1
    try:
        yield
    finally:
        _held_off["depth"] -= 1
        if not _held_off["depth"] and _held_off["signal"] is not None:
            signum, _held_off["signal"] = _held_off["signal"], None
            raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_exits():
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
