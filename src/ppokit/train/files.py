"""How ppokit writes the files of a run directory: atomically, and never through a symbolic link.

A run directory is input another person (or a program) may have prepared (issue 34): a ``config.yaml``
or ``eval.json`` planted as a symbolic link to a file outside the directory made ppokit overwrite that
file. And a kill in the middle of a plain ``write_text`` leaves a 0-byte ``config.yaml``, which the
next resume read as "all defaults". So every whole-file write goes through ``atomic_write`` /
``atomic_file``: the bytes go to a fresh temporary sibling (``O_CREAT | O_EXCL | O_NOFOLLOW``: it
cannot be a planted link), are fsync'ed, and ``os.replace`` puts it in place; a rename replaces a
link rather than writing through it, and a reader sees the old file or the new one, never half of
one. Files that grow row by row (``metrics.csv``, ``completions.jsonl``) are opened with
``open_append`` (``O_NOFOLLOW``). The run directory's ``.lock`` has its own ``O_NOFOLLOW``
(``rundir.RunDirLock``). New files get mode 0666 less the umask, as ``open()`` gives them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ppokit.errors import RunDirError


def _link_error(path: Path) -> RunDirError:
    return RunDirError(
        f"{str(path)!r} is a symbolic link; ppokit does not write through links in a run directory "
        "(remove it, or choose another run directory)"
    )


def refuse_link(path: str | Path) -> None:
    """RunDirError when ``path`` is a symbolic link (for a directory ppokit is about to write into,
    e.g. ``checkpoints/``, ``tb/``, ``plots/``: ``mkdir(exist_ok=True)`` would follow it)."""
    if Path(path).is_symlink():
        raise _link_error(Path(path))


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """An open file whose contents replace ``path`` atomically when the block ends without an error
    (else the temporary file is removed and ``path`` is left as it was). ``mode``: ``"w"`` or ``"wb"``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of this pid's killed predecessor (a link is removed, not followed)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(tmp, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_error(tmp) from None
        raise
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Replace ``path`` with ``data`` atomically, never through a link (see the module docstring)."""
    binary = isinstance(data, bytes)
    with atomic_file(path, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
        f.write(data)
    return Path(path)


def open_append(path: str | Path, **open_kwargs: Any) -> IO[Any]:
    """``open(path, "a")`` that refuses a symbolic link (RunDirError) instead of appending through it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_error(path) from None
        raise
    return os.fdopen(fd, "a", **open_kwargs)


def open_rw(path: str | Path) -> IO[bytes]:
    """``open(path, "r+b")`` that refuses a symbolic link (RunDirError) instead of following it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_error(path) from None
        raise
    return os.fdopen(fd, "r+b")


__all__ = ["atomic_file", "atomic_write", "open_append", "open_rw", "refuse_link"]
