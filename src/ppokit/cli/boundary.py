"""The command line's one error boundary: which failures are the user's to fix (one line, exit 2) and
which are ppokit's bugs (a traceback).

User-fixable: every ``PPOKitError`` (config, environment, checkpoint, reward function, run
directory, ...); an ``OSError`` on a path (a file given as ``--run-dir``, a read-only directory, a
full disk, a name too long); an optional dependency that is not installed (Gymnasium's
``DependencyNotInstalled`` names its install command). Each prints as ONE line on stderr, shortened
(``one_line``): a 10 MB value or a multi-line PyYAML/transformers message does not flood the
terminal. ``ppokit --debug VERB`` re-raises instead, with the traceback. Anything else (a
``TypeError`` inside ppokit, ...) is a bug: it keeps its traceback so it can be reported.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Any

from ppokit.config import one_line, short
from ppokit.errors import PPOKitError

# errno values that describe the user's paths or machine, not ppokit's code
USER_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.ENAMETOOLONG,
    errno.ELOOP,
    errno.EFBIG,
    errno.EMFILE,
    errno.ENFILE,
    errno.ENOTEMPTY,
    errno.EXDEV,
}
MAX_MESSAGE = 1000  # characters of the one line


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``ppokit train: error: ...; see ppokit train --help``),
    exit code 2 as argparse's; a huge bad value is shortened like every other message."""

    def error(self, message: str) -> Any:  # noqa: D102 (argparse's docstring applies)
        hint = f"; see {self.prog} --help"
        sys.stderr.write(f"{self.prog}: error: {one_line(message, MAX_MESSAGE - 100)}{hint}\n")
        sys.exit(2)


def user_message(e: BaseException) -> str | None:
    """The one-line message of a user-fixable failure, or None when ``e`` is a bug in ppokit."""
    if isinstance(e, PPOKitError):
        return str(e)
    if isinstance(e, OSError) and e.errno in USER_ERRNOS:
        where = short(str(e.filename)) if e.filename is not None else ""
        if e.filename2 is not None:
            where = f"{where} -> {short(str(e.filename2))}"
        what = e.strerror or type(e).__name__
        return f"{where}: {what}" if where else what
    if type(e).__name__ == "DependencyNotInstalled":  # gymnasium.error: names the pip command
        return f"a missing optional dependency: {e}"
    return None


def report(e: BaseException, command: str) -> int | None:
    """Print ``e`` as one line and return the exit code (2), or None to let it propagate (a bug)."""
    message = user_message(e)
    if message is None:
        return None
    print(one_line(f"ppokit {command}: error: {message}", MAX_MESSAGE), file=sys.stderr)
    details = getattr(e, "details", None)
    if details:  # e.g. the traceback of a failed environment worker, which the user needs
        print(str(details).rstrip(), file=sys.stderr)
    return 2


__all__ = ["MAX_MESSAGE", "OneLineParser", "report", "user_message"]
