"""Locks between processes: `fcntl.flock` on a file that holds the holder's pid.

Two commands on one --out would both write into it (progress, results, checkpoints): the second is refused at once
(`out_lock`). Two processes that need one model-cache entry would both train it: the second waits for the first and
then loads what it stored (`cache.py` holds an `EntryLock` from a miss until the entry is stored). A lock ends with
its process, however it ends (the kernel drops a dead process's flocks), so a killed run leaves nothing stuck.
The lock file is removed on release; a process that opened it just before is told apart by its inode and retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from ..world import world


class EntryLock:
    """An exclusive flock on `path` (created beside what it guards), written with this process's pid."""

    def __init__(self, path: str | Path):
        self.path, self.fd = Path(path), None

    def acquire(self, wait: bool) -> bool:
        """Take the lock; False when another process holds it and `wait` is off. A file system without flock
        (some network mounts) counts as taken: locking then protects nothing, as before locks existed."""
        while self.fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError:
                os.close(fd)
                return True
            if _same_file(fd, self.path):  # else the holder before us removed it: that lock guards nothing
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
            else:
                os.close(fd)
        return True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()  # while still held: a waiter then sees another inode and tries again
            os.close(self.fd)
            self.fd = None

    def holder(self) -> str:
        """'process <pid>' of the holder, as far as its file says."""
        try:
            pid = self.path.read_text().strip()
        except OSError:
            pid = ""
        return f"process {pid}" if pid.isdigit() else "another process"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def wait_for(lock: EntryLock, what: str) -> None:
    """Take `lock`, saying on stderr that this process waits when another holds it."""
    if not lock.acquire(wait=False):
        print(f"prunelora: waiting for {lock.holder()}, which is training {what}", file=sys.stderr, flush=True)
        lock.acquire(wait=True)


@contextlib.contextmanager
def out_lock(out: str | Path, flag: str = "--out") -> Iterator[None]:
    """Hold OUT/.lock while a command writes in `out`; a second command there is a UserError naming the first's pid.
    Under torchrun only rank 0 locks (the other ranks write nothing). A folder this creates for the lock is removed
    again if the command leaves it empty (a refused input writes nothing); where the folder cannot be made, the
    command's own checks say why."""
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError:
        created = False
    lock = EntryLock(out / ".lock")
    if world().main and out.is_dir() and not lock.acquire(wait=False):
        raise UserError(f"{flag} '{out}' is in use by {lock.holder()}, another prunelora command writing there; "
                        f"wait for it to finish, or pass another {flag}")
    try:
        yield
    finally:
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty
