"""An exclusive lock on a run directory, held for the life of the process that writes it.

Two processes writing one run directory corrupt it (interleaved ``metrics.csv``, one run's config
beside the other's model). ``RunDirLock`` takes ``fcntl.flock`` on ``RUN_DIR/.lock``: the kernel
releases it when the process ends in any way (SIGKILL and OOM kills included), so a lock is never
left stale, and a second process gets a one-line error naming the holder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ppokit.errors import RunDirError

LOCK_NAME = ".lock"


class RunDirLock:
    """Hold ``run_dir``'s lock from construction until ``release`` (or the process's end)."""

    def __init__(self, run_dir: str | Path):
        self.fd: int | None = None  # set once held (__del__ runs even when __init__ raised)
        self.path = Path(run_dir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"run directory {str(self.path.parent)!r} is in use by another ppokit process "
                f"(pid {holder}); wait for it to finish or choose another run directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def __del__(self) -> None:  # an object dropped without release() must not keep the lock
        self.release()

    def release(self) -> None:
        """Let another process use the run directory."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
