"""Ctrl-C (SIGINT) and SIGTERM on a run (the verbs ``train``, ``resume``, ``grpo``, ``rlhf-ppo``
enter it; a Python user may too): the first signal asks the run to stop after the current update or
step, so the checkpoint it then writes sits on a boundary and resumes exactly; the verb exits 130 /
143. A second
signal stops at once (``StopNow``, a ``KeyboardInterrupt`` that knows its signal): the run loop then
writes a checkpoint when the state is still that of the last completed step (else names the newest
complete one) and the verb exits with the same code, 130 for SIGINT and 143 for SIGTERM (a second
SIGTERM exited 130 without a checkpoint before issue 34)."""

from __future__ import annotations

import signal
import sys
from typing import Any


class StopNow(KeyboardInterrupt):
    """The second SIGINT/SIGTERM: stop at once. ``signum`` is the signal (the exit code is 128 + it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def exit_code(interrupt: BaseException) -> int:
    """The exit code of a run stopped by ``interrupt``: 128 + its signal (130 for a plain
    ``KeyboardInterrupt``, which is what Ctrl-C raises without ``StopOnSignal``)."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


class StopOnSignal:
    """While entered, SIGINT/SIGTERM set ``target.stop_requested`` to the signal number (the run
    loop, ``train/loop.py``, checks it between updates/steps); a second signal raises ``StopNow``.
    ``unit`` names what is finished first in the message ("update" or "step")."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, target: Any, unit: str = "update"):
        self.target, self.unit = target, unit
        self.previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if getattr(self.target, "stop_requested", None) is not None:
            raise StopNow(signum)
        self.target.stop_requested = signum
        name = signal.Signals(signum).name
        print(f"{name}: stopping after this {self.unit} (again: stop now)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnSignal:
        self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


__all__ = ["StopNow", "StopOnSignal", "exit_code"]
