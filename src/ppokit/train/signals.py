"""Ctrl-C (SIGINT) and SIGTERM on a run (the verbs ``train``, ``resume``, ``grpo``, ``rlhf-ppo``
enter it; a Python user may too): the first signal asks the run to stop after the current update or
step, so the checkpoint it then writes sits on a boundary and resumes exactly; the verb exits 130 /
143. A second
signal stops at once (``KeyboardInterrupt``), keeping the newest complete checkpoint (a half-done
update is not worth saving)."""

from __future__ import annotations

import signal
import sys
from typing import Any


class StopOnSignal:
    """While entered, SIGINT/SIGTERM set ``target.stop_requested`` to the signal number (the run
    loop, ``train/loop.py``, checks it between updates/steps); a second signal raises
    ``KeyboardInterrupt``. ``unit`` names what is finished first in the message ("update" or "step")."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, target: Any, unit: str = "update"):
        self.target, self.unit = target, unit
        self.previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if getattr(self.target, "stop_requested", None) is not None:
            raise KeyboardInterrupt
        self.target.stop_requested = signum
        name = signal.Signals(signum).name
        print(f"{name}: stopping after this {self.unit} (again: stop now)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnSignal:
        self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


__all__ = ["StopOnSignal"]
