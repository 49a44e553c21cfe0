"""The run loop's callback hooks, and ``as_loop_callback``: every spelling of ``callback=`` a user may
pass, made into one object the loop calls (``train/loop.py``).

Accepted (the same for ``PPO.learn(callback=...)`` and the language-model trainers):

- ``None``;
- a function ``f(trainable, metrics) -> bool | None``, called after each step; ``False`` stops
  (the behaviour of ``PPO.learn(callback=...)`` since wave 1);
- an object with any of ``on_start(trainable)``, ``on_step(trainable, metrics) -> bool | None``
  (``False`` stops), ``on_end(trainable)`` and, optional, ``on_step_begin(trainable)`` (TRL's
  ``on_step_begin`` goes through it) and ``on_save(trainable, path)`` after each checkpoint (TRL's
  ``on_save``); methods it lacks are skipped (SB3-style callback classes are
  built on these three);
- a list or tuple of any of these, called in order (every ``on_step`` runs, then the loop stops if
  any returned ``False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ppokit.errors import ConfigError

HOOKS = ("on_start", "on_step_begin", "on_step", "on_save", "on_end")


class LoopCallback:
    """The callbacks of one run, flattened: ``on_start``, ``on_step_begin``, ``on_step`` (returns
    whether training goes on) and ``on_end``, each calling every item that has that hook."""

    def __init__(self, items: Sequence[Any]):
        self.items = list(items)

    def _call(self, hook: str, *args: Any) -> list[Any]:
        out = []
        for item in self.items:
            method = getattr(item, hook, None)
            if method is not None:
                out.append(method(*args))
            elif hook == "on_step" and not any(hasattr(item, h) for h in HOOKS):
                out.append(item(*args))  # a plain function f(trainable, metrics)
        return out

    def on_start(self, trainable: Any) -> None:
        """Before the first step of this call of the loop."""
        self._call("on_start", trainable)

    def on_step_begin(self, trainable: Any) -> None:
        """Before each step."""
        self._call("on_step_begin", trainable)

    def on_step(self, trainable: Any, metrics: dict[str, Any]) -> bool:
        """After each step, with its metrics row; False when any callback asked to stop."""
        return all(answer is not False for answer in self._call("on_step", trainable, metrics))

    def on_save(self, trainable: Any, path: Any) -> None:
        """After the loop wrote a checkpoint (``path``), on the cadence, at the end or on a failure."""
        self._call("on_save", trainable, path)

    def on_end(self, trainable: Any) -> None:
        """After the last step (also when a callback or a signal stopped the run)."""
        self._call("on_end", trainable)


def as_loop_callback(callback: Any) -> LoopCallback:
    """``callback`` (None, a function, a hook object or a list of those; see the module docstring)
    as one ``LoopCallback``; anything else is refused naming what is accepted."""
    items = list(callback) if isinstance(callback, (list, tuple)) else [] if callback is None else [callback]
    for item in items:
        if not (callable(item) or any(callable(getattr(item, h, None)) for h in HOOKS)):
            raise ConfigError(
                f"callback={item!r} is not allowed; give a function f(model, metrics) -> bool | None, "
                f"an object with any of {', '.join(HOOKS)}, or a list of those"
            )
    return LoopCallback(items)
