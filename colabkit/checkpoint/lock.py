"""One writer per store: an OS lock (flock) on `<store>/.lock`, held for the writer's life.

Two kernels saving into one store replace each other's checkpoints and sweep each other's commits
in flight, so the kernel that writes a store holds its lock, and so does its writer process (it
inherits the locked file): a kernel killed mid-save leaves the lock with its writer until that
commit is done, and a writer killed mid-save leaves it with the kernel. The kernel that holds the
lock alone may sweep the store's leftovers. Another kernel gets a read-only view (restore and list
work). flock is released by the OS when its holders die, so a lock is never stale.

Checkpointers of one kernel share its hold; the one that saved last is the only one that saves
(checkpointer.Checkpointer._take_over: a second `%checkpoint every` replaces the first).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ColabkitError, say

LOCK = ".lock"
ORPHAN_WAIT = 180.0  # seconds to wait for a dead kernel's writer to finish its last commit (and Drive copy)

log = logging.getLogger(__name__)


@dataclass
class _Hold:
    fd: int | None  # None where the file system has no flock (then nothing is locked)
    users: int


_holds: dict[Path, _Hold] = {}
_guard = threading.Lock()


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a store: its lock's fd when this kernel writes there, else why not."""

    root: Path
    fd: int | None = None
    refused: str | None = None  # why this kernel's view is read-only
    first: bool = False  # this kernel took the lock just now: what is in the store is nobody's
    unwritable: bool = False  # refused because the folder takes no file (not because another kernel writes)

    @property
    def writes(self) -> bool:
        return self.refused is None

    def release(self) -> None:
        if self.writes:
            _release(self.root)

    def refusal(self) -> str:
        """What a refused save says: why, and how to save from this kernel."""
        return (f"{self.refused} This kernel's view of it is read-only: %checkpoint list and restore work, saves "
                "are refused. To save from this kernel, give it a store of its own: %checkpoint every ... --to "
                "ANOTHER-FOLDER (to=... in Python).")


def claim(root: Path) -> Claim:
    """Make this kernel the writer of the store at `root`, or say why it can't be (read-only view)."""
    from .. import storage

    root = Path(root)
    try:
        storage.ensure_writable(root)
    except ColabkitError as exc:
        return Claim(root, refused=str(exc), unwritable=True)
    with _guard:
        hold = _holds.get(root)
        if hold is not None:
            hold.users += 1
            return Claim(root, hold.fd)
        try:
            fd = _lock(root)
        except _Held as held:
            if held.orphaned:
                return Claim(root, refused=f"{root} is still being written by the writer of a kernel that ended "
                                           f"(process {held.pid}'s): it has been finishing that kernel's last save "
                                           f"or its copy to Drive for over {ORPHAN_WAIT:.0f} s. Run this again once "
                                           "it is done.")
            return Claim(root, refused=f"{root} is in use by another kernel (process {held.pid}), which saves its "
                                       "checkpoints there; two writers on one store would replace each other's "
                                       "checkpoints.")
        _holds[root] = _Hold(fd, 1)
        return Claim(root, fd, first=True)


class _Held(Exception):
    def __init__(self, pid: int | None, orphaned: bool = False):
        self.pid = pid
        self.orphaned = orphaned  # its kernel is gone; its writer still holds the lock


def _lock(root: Path) -> int | None:
    """flock the store's lock file, waiting for a dead kernel's writer to finish; its fd."""
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    waited = False
    deadline = time.monotonic() + ORPHAN_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):  # no flock here (some FUSE mounts)
                log.debug("no flock in %s (%s): the store is not locked", root, exc)
                os.close(fd)
                return None
        pid = _holder(fd)
        if (pid is not None and _alive(pid)) or time.monotonic() > deadline:
            os.close(fd)
            raise _Held(pid, orphaned=pid is None or not _alive(pid))
        if not waited:  # the kernel that wrote here is gone: its writer is finishing its last commit
            say(f"waiting for the last save of the previous kernel's writer (process {pid}) to finish in {root}.")
            waited = True
        time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _holder(fd: int) -> int | None:
    """The kernel that took the lock (its writer, which holds it too, has no say in the file)."""
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "x")
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release(root: Path) -> None:
    with _guard:
        hold = _holds.get(root)
        if hold is None:
            return
        hold.users -= 1
        if hold.users == 0:
            del _holds[root]
            if hold.fd is not None:
                os.close(hold.fd)  # the writer, if still finishing, holds it until it exits
