"""Claiming a new run directory for ``train``, ``grpo`` and ``rlhf-ppo``.

Issue 16: two ``ppokit train --run-dir X`` started together both passed the "already holds a run"
check; one crashed, the other finished with the loser's ``config.yaml`` beside its own model. And a
failed start (a mistyped env, a bad device) left a directory holding only ``config.yaml`` that
``train`` then refused and ``resume`` could not continue. So a verb

1. checks early that the directory is usable (``precheck``: cheap, gives the message at once),
2. builds and checks everything (environments, model, prompts) with no run directory yet,
3. then claims it (``claim``): creates it, takes the run-directory lock (``RunDirLock``, held for
   the life of the process) and creates ``config.yaml`` exclusively (``O_EXCL``). Of two processes,
   exactly one gets both; the other gets a one-line error and writes nothing.

A run that crashed before its first checkpoint is not a dead end: ``ppokit resume`` starts it again
from its ``config.yaml`` (``cli/rl.py``, ``cli/lm.py``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ppokit.config import short
from ppokit.errors import ConfigError, RunDirError
from ppokit.train.rundir import LOCK_NAME, RunDirLock

CONFIG = "config.yaml"


def _held(path: Path, resume_hint: str) -> ConfigError:
    return ConfigError(
        f"run directory {short(str(path))} already holds a run; use `{resume_hint}` or choose "
        "another --run-dir"
    )


def precheck(given: str | Path, resume_hint: str) -> Path:
    """``given`` as a Path, refused at once when it is a file or already holds a run."""
    path = Path(given)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir {short(str(path))} is a file, not a directory")
    if (path / CONFIG).exists():
        raise _held(path, resume_hint)
    return path


def default_run_dir(name: str) -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when taken; ``claim`` re-checks)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = name.replace("/", "-").replace(":", "-")  # ALE/Pong-v5, module:Id: one folder, not a path
    path, n = Path("runs") / f"{name}-{stamp}", 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{name}-{stamp}-{n}"
    return path


class Claim:
    """A claimed run directory: ``path``, its held ``lock``, and whether this process created it.
    ``abandon()`` undoes the claim when the start fails before training wrote anything."""

    def __init__(self, path: Path, lock: RunDirLock, created: bool):
        self.path, self.lock, self.created = path, lock, created

    def abandon(self) -> None:
        """Remove what the claim made (the directory if this process created it, else config.yaml)
        and release the lock."""
        try:
            if self.created:
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                (self.path / CONFIG).unlink(missing_ok=True)
                (self.path / LOCK_NAME).unlink(missing_ok=True)
        finally:
            self.lock.release()


def claim(path: Path | None, default_name: str, config_yaml: str, resume_hint: str) -> Claim:
    """Create and lock the run directory (``path``, or a fresh ``runs/<default_name>-<stamp>``) and
    create its ``config.yaml`` holding ``config_yaml`` exclusively; see the module docstring."""
    for _ in range(100):
        target = path if path is not None else default_run_dir(default_name)
        if path is not None:
            precheck(target, resume_hint)
        created = not target.exists()
        try:
            target.mkdir(parents=True, exist_ok=path is not None)
        except FileExistsError:  # a default name taken meanwhile: the next one
            continue
        try:
            lock = RunDirLock(target)
        except RunDirError:
            if created:
                shutil.rmtree(target, ignore_errors=True)
            if path is None:
                continue
            raise
        try:
            fd = os.open(target / CONFIG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            lock.release()
            if path is None:
                continue
            raise _held(target, resume_hint) from None
        except BaseException:
            Claim(target, lock, created).abandon()
            raise
        try:
            with os.fdopen(fd, "w") as f:
                f.write(config_yaml)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            Claim(target, lock, created).abandon()
            raise
        return Claim(target, lock, created)
    raise RunDirError(f"could not claim a fresh run directory under runs/ for {default_name!r}")


__all__ = ["CONFIG", "Claim", "claim", "default_run_dir", "precheck"]
