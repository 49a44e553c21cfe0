"""A run directory: claimed once, locked while written, its logs trimmed on resume. Both entry points
(``ppokit train/grpo/rlhf-ppo`` and ``PPO(..., run_dir=...)`` / ``GRPOTrainer(..., run_dir=...)``
from Python) go through ``claim``, so both refuse a directory that holds a run with one message.

Two processes writing one run directory corrupt it (interleaved ``metrics.csv``, one run's config
beside the other's model). ``RunDirLock`` takes ``fcntl.flock`` on ``RUN_DIR/.lock``: the kernel
releases it when the process ends in any way (SIGKILL and OOM kills included), so a lock is never
left stale, and a second process gets a one-line error naming the holder.

Claiming a new run directory (issue 16, and issue 29 item 5):

1. ``precheck``: the directory is usable (cheap, gives the message at once, before a model is built);
2. ``claim``: ``mkdir`` (``created`` is True only for the process whose ``mkdir`` made it: two
   processes can both see "does not exist" and then both call ``mkdir``), the lock (a holder: "in
   use by another ppokit process"), then, under the lock, "holds a run?" and ``config.yaml``
   created exclusively (``O_EXCL``). Of two processes exactly one gets both.

A loser never removes anything: issue 29 found that the loser of the lock, having seen the directory
missing beforehand, ``rmtree``'d the winner's lock, config and metrics, so both runs failed. Only
``Claim.abandon`` removes files, and only while it holds the lock.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from ppokit.config import short
from ppokit.errors import ConfigError, RunDirError
from ppokit.tracking import trim_log
from ppokit.train.files import atomic_write

LOCK_NAME = ".lock"
CONFIG = "config.yaml"
# the SHA-256 of the config.yaml ppokit last wrote: a resume tells the user's edit of config.yaml
# (refused, naming the keys) from ppokit's own rewrite with a resume's --set/--max-steps (issue 34)
CONFIG_DIGEST = ".config.sha256"
# What makes a directory "hold a run": a CLI run has config.yaml from its first moment; a run started
# from Python before issue 29 had only metrics.csv and checkpoints/ (and a saved model/).
RUN_MARKERS = (CONFIG, "metrics.csv", "checkpoints", "model")


class RunDirLock:
    """Hold ``run_dir``'s lock from construction until ``release`` (or the process's end)."""

    def __init__(self, run_dir: str | Path):
        self.fd: int | None = None  # set once held (__del__ runs even when __init__ raised)
        self.path = Path(run_dir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_NOFOLLOW (issue 34): a `.lock` symlinked elsewhere would make us lock, truncate and
            # write our pid into whatever file it points to
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise RunDirError(
                f"{str(self.path)!r} is a symbolic link; ppokit refuses to lock through it "
                "(remove it, or choose another run directory)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"run directory {str(self.path.parent)!r} is in use by another ppokit process "
                f"(pid {holder}); wait for it to finish or choose another run directory"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError as e:
            # a full disk at start: name the path and leave no `.lock` behind (issue 34); the lock is
            # ours (held), so removing the file takes nothing from another process
            self.path.unlink(missing_ok=True)
            os.close(fd)
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        self.fd = fd

    def __del__(self) -> None:  # an object dropped without release() must not keep the lock
        self.release()

    def release(self) -> None:
        """Let another process use the run directory."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds (the start of) a run: a config, metrics, a model or a checkpoint (the
    ``.tmp-*`` leftovers of a killed checkpoint writer alone are no run: the next writer removes them)."""
    checkpoints = path / "checkpoints"
    if checkpoints.is_dir() and any(not p.name.startswith(".") for p in checkpoints.iterdir()):
        return True
    return any((path / name).exists() for name in RUN_MARKERS if name != "checkpoints")


def _held(path: Path, resume_hint: str, flag: str) -> ConfigError:
    return ConfigError(
        f"run directory {short(str(path))} already holds a run; use `{resume_hint}` or choose another {flag}"
    )


def precheck(given: str | Path, resume_hint: str, flag: str = "--run-dir") -> Path:
    """``given`` as a Path, refused at once when it is a file or already holds a run. ``flag``: how
    the caller's option is spelt in the message (``--run-dir``, ``run_dir=``)."""
    path = Path(given)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {short(str(path))} is a file, not a directory")
    if holds_run(path):
        raise _held(path, resume_hint, flag)
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
        and release the lock. Runs only while the lock is held, so nothing of another run goes."""
        try:
            if self.lock.fd is not None:
                if self.created:
                    shutil.rmtree(self.path, ignore_errors=True)
                else:
                    (self.path / CONFIG).unlink(missing_ok=True)
                    (self.path / CONFIG_DIGEST).unlink(missing_ok=True)
                    (self.path / LOCK_NAME).unlink(missing_ok=True)
        finally:
            self.lock.release()


def claim(
    path: Path | None, default_name: str, config_yaml: str, resume_hint: str, flag: str = "--run-dir"
) -> Claim:
    """Create and lock the run directory (``path``, or a fresh ``runs/<default_name>-<stamp>``) and
    create its ``config.yaml`` holding ``config_yaml`` exclusively; see the module docstring."""
    for _ in range(100):
        target = path if path is not None else default_run_dir(default_name)
        if target.exists() and not target.is_dir():
            raise ConfigError(f"{flag} {short(str(target))} is a file, not a directory")
        try:
            target.mkdir(parents=True)
            created = True  # this process's mkdir made it: only then may abandon() remove it
        except FileExistsError:
            if path is None:  # a default name taken meanwhile: the next one
                continue
            created = False
        try:
            lock = RunDirLock(target)
        except RunDirError:
            # the lock is another process's: whatever is in the directory is its, not ours to remove
            if path is None:
                continue
            raise
        # decided under the lock: a run another process claimed and released is seen here
        if path is not None and holds_run(target):
            lock.release()
            raise _held(target, resume_hint, flag)
        try:
            fd = os.open(target / CONFIG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            lock.release()
            if path is None:
                continue
            raise _held(target, resume_hint, flag) from None
        except BaseException:
            Claim(target, lock, created).abandon()
            raise
        try:
            with os.fdopen(fd, "w") as f:
                f.write(config_yaml)
                f.flush()
                os.fsync(f.fileno())
            record_config(target, config_yaml)
        except OSError as e:  # a full disk names the file (it said only "No space left on device")
            Claim(target, lock, created).abandon()
            raise OSError(e.errno, e.strerror, e.filename or str(target / CONFIG)) from None
        except BaseException:
            Claim(target, lock, created).abandon()
            raise
        return Claim(target, lock, created)
    raise RunDirError(f"could not claim a fresh run directory under runs/ for {default_name!r}")


def config_text(config: Any) -> str:
    """The text of a run's ``config.yaml`` for a config dataclass (what ``config.save_yaml`` writes):
    ``claim`` creates the file with it exclusively."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def record_config(run_dir: Path, config_yaml: str) -> None:
    """Remember (``CONFIG_DIGEST``) that ppokit wrote ``config_yaml`` as the run's config.yaml."""
    atomic_write(Path(run_dir) / CONFIG_DIGEST, _digest(config_yaml) + "\n")


def write_config(run_dir: Path, config_yaml: str) -> None:
    """Rewrite the run's ``config.yaml`` (atomically, never through a link) and record it."""
    atomic_write(Path(run_dir) / CONFIG, config_yaml)
    record_config(run_dir, config_yaml)


def config_edited(run_dir: Path) -> bool | None:
    """Whether ``config.yaml`` differs from what ppokit last wrote there (None: not known, a run
    written before the digest existed)."""
    try:
        recorded = (Path(run_dir) / CONFIG_DIGEST).read_text().strip()
        return _digest((Path(run_dir) / CONFIG).read_bytes()) != recorded
    except OSError:
        return None


def trim_logs(run_dir: Path, step: int, logs: dict[str, str]) -> None:
    """Drop the rows logged after ``step`` from each ``{file name: step column}`` of ``run_dir``
    (work lost with the process), atomically (``tracking.trim_log``), so a resumed run's logs read
    as if it had never stopped. Call it holding the run's lock: two resumes of one run both trimmed
    its logs, then both appended (issue 16)."""
    for name, column in logs.items():
        trim_log(run_dir / name, column, step)
