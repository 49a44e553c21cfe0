"""Checks on what reward functions do, so a broken one stops the run with one clear line.

Issue 16 found: a reward function that raised ended the run with a traceback and no checkpoint; one
that returned a string, a dict or a list of lists gave a traceback from ``float()`` or ``torch``; a
``+inf`` became 3.4e38 and was trained on; None or NaN for every completion trained the whole run at
gradient 0 and exited 0. Here:

- ``CheckedReward`` wraps each reward function (the trainer wraps them all): an exception becomes a
  ``RewardFunctionError`` naming the function, the first prompt row it fails on (found by calling it
  again one row at a time) and the exception; a result that is not one number (or None) per completion
  names the function, the index and the value; ``+-inf`` names the function and the index.
- ``require_scored`` stops a training step in which no completion was scored at all.

The loop writes a checkpoint before it reports a ``RewardFunctionError`` (``ppokit.train.loop``).

Issue 34 found ``sys.exit()`` inside a reward function (rewards that run generated code meet
``exit()`` in completions) passing these checks and ending the run with exit status 0, no summary
and no checkpoint. Any ``BaseException`` a reward function raises (``SystemExit``, ``GeneratorExit``,
``asyncio.CancelledError``, ...) is now that function's failure, a ``RewardFunctionError``, except
``KeyboardInterrupt``: it cannot be told apart from the user's Ctrl-C arriving while the function
runs, so it goes on to the run's own interrupt handling (a checkpoint under ``ppokit train``), as a
Ctrl-C anywhere else would. ``async def`` reward functions (TRL accepts them) are awaited here, with
the same checks on what they raise and return. Values that ``float()`` cannot hold (``10**400``) and
complex numbers are named like any other bad value.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch

from ppokit.config import is_number, one_line, short
from ppokit.errors import PPOKitError
from ppokit.llm.rewards import RewardFn

BISECT_LIMIT = 64  # rows tried one at a time to find the first that makes a function raise


class RewardFunctionError(PPOKitError):
    """A reward function raised, returned something that is not a number per completion, returned
    +-inf, or scored no completion of a training step."""


class CheckedReward:
    """``fn`` with its results checked (see the module docstring); keeps ``__name__``, so metrics
    and messages keep the function's name."""

    def __init__(self, fn: RewardFn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", None) or type(fn).__name__
        self.__wrapped__ = fn

    def __getattr__(self, name: str) -> Any:  # anything else (a reward model's device, ...) is fn's
        return getattr(self.__dict__["fn"], name)

    def __call__(self, *args: Any, **kwargs: Any) -> list[float | None]:
        completions = kwargs.get("completions", args[1] if len(args) > 1 else None)
        n = len(completions) if isinstance(completions, (list, tuple)) else None
        try:
            values = self._call(*args, **kwargs)
        except KeyboardInterrupt:  # the user's Ctrl-C, as far as anyone can tell (module docstring)
            raise
        except BaseException as e:  # sys.exit() in a reward exited 0 silently (issue 34)
            raise self._raised(e, args, kwargs, n) from None
        return self._checked(values, n)

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, awaited when it is an ``async def`` function (or returns an
        awaitable)."""
        values = self.fn(*args, **kwargs)
        if inspect.isawaitable(values):
            values = run_awaitable(values)
        return values

    def _raised(self, e: BaseException, args: tuple, kwargs: dict, n: int | None) -> RewardFunctionError:
        row = self._first_failing_row(args, kwargs, n)
        where = f" on prompt row {row}" if row is not None else ""
        prompt = ""
        if row is not None and isinstance(kwargs.get("prompts"), (list, tuple)):
            prompt = f" (prompt {short(kwargs['prompts'][row])})"
        detail = one_line(e, 300)
        if isinstance(e, SystemExit):  # exit() / sys.exit(3): say so, the bare code reads as nothing
            detail = f"it called exit({e.code!r}); a reward function must return its scores"
        return RewardFunctionError(
            f"reward function {self.__name__!r} raised {type(e).__name__}{where}{prompt}: {detail}"
        )

    def _first_failing_row(self, args: tuple, kwargs: dict, n: int | None) -> int | None:
        """Call ``fn`` on single rows (every list argument of length n sliced alike); the first index
        that raises, or None (it fails only on the whole batch, or rows cannot be told apart)."""
        if args or n is None or n < 2:
            return 0 if n == 1 else None
        for i in range(min(n, BISECT_LIMIT)):
            one = {
                k: (v[i : i + 1] if isinstance(v, (list, tuple)) and len(v) == n else v)
                for k, v in kwargs.items()
            }
            try:
                self._call(**one)
            except KeyboardInterrupt:
                raise
            except BaseException:
                return i
        return None

    def _checked(self, values: Any, n: int | None) -> list[float | None]:
        name = self.__name__
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().reshape(-1).tolist() if values.dim() <= 1 else values
        elif hasattr(values, "tolist") and getattr(values, "ndim", 2) <= 1:  # a numpy array
            values = values.tolist()
        if isinstance(values, (str, bytes, dict)) or not isinstance(values, Sequence):
            raise RewardFunctionError(
                f"reward function {name!r} returned {type(values).__name__} {short(values)}; it must "
                f"return a list with one number (or None) per completion"
                + (f" ({n} completions)" if n is not None else "")
            )
        if n is not None and len(values) != n:
            raise RewardFunctionError(
                f"reward function {name!r} returned {len(values)} values for {n} completions"
            )
        out: list[float | None] = []
        for i, v in enumerate(values):
            if v is None:
                out.append(None)
                continue
            if not is_number(v):
                raise RewardFunctionError(
                    f"reward function {name!r} returned {short(v)} ({type(v).__name__}) for completion "
                    f"{i}; each value must be a number (not a bool) or None"
                )
            try:
                x = float(v.item() if hasattr(v, "item") else v)
            except OverflowError:  # an int beyond float's range (10**400) was a traceback (issue 34)
                raise RewardFunctionError(
                    f"reward function {name!r} returned {short(v)} for completion {i}; it is too large "
                    f"for a float (at most ~1.8e308): rewards must be finite numbers"
                ) from None
            if math.isinf(x):
                raise RewardFunctionError(
                    f"reward function {name!r} returned {x} for completion {i}; rewards must be finite "
                    "(return None to leave a completion unscored)"
                )
            out.append(x)
        return out


async def _awaited(awaitable: Any) -> Any:
    """The result of ``awaitable`` (``asyncio.run`` takes a coroutine, not any awaitable)."""
    return await awaitable


def run_awaitable(awaitable: Any) -> Any:
    """The result of ``awaitable``, run to completion in a fresh event loop; in a thread of its own
    when this thread already runs one (a notebook), since ``asyncio.run`` refuses to nest."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running here: the common case
        return asyncio.run(_awaited(awaitable))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _awaited(awaitable)).result()


def checked_rewards(funcs: Sequence[Any]) -> list[Any]:
    """Each reward function wrapped in ``CheckedReward`` (once)."""
    return [f if isinstance(f, CheckedReward) else CheckedReward(f) for f in funcs]


def require_scored(total: torch.Tensor, names: Sequence[str], step: int) -> None:
    """Stop when no completion of training step ``step`` was scored (every function returned None
    or NaN for every completion): such a step has no signal, and a whole run of them trains at
    gradient 0 and looks fine (issue 16)."""
    if total.numel() and bool(torch.isnan(total).all()):
        raise RewardFunctionError(
            f"no completion of step {step} was scored: the reward functions {list(names)} returned "
            f"None or NaN for all {total.numel()} completions, so there is nothing to learn from; check "
            "that they get the columns they need (prompt rows' keys are passed by name) and what they "
            "return"
        )


__all__ = ["CheckedReward", "RewardFunctionError", "checked_rewards", "require_scored"]
