"""Reward plumbing: loading user reward functions, calling them, combining their scores.

A reward function has TRL's signature::

    def my_reward(prompts: list, completions: list[str], **columns) -> list[float | None]

``columns`` holds every other field of the prompt rows (e.g. ``answer``), repeated once per
completion, so ``columns["answer"][i]`` belongs to ``completions[i]``. ``None`` means "not scored":
that function is left out of the completion's weighted sum (as TRL does with NaN).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ppokit.config import is_number
from ppokit.errors import ConfigError

RewardFn = Callable[..., Sequence[float | None]]


def reward_name(fn: RewardFn) -> str:
    """The name metrics use: ``rewards/<name>/mean``."""
    return getattr(fn, "__name__", None) or type(fn).__name__


def load_reward_function(spec: str) -> RewardFn:
    """Import ``module:function`` or ``path/to/file.py:function``; ConfigError names what went wrong."""
    if ":" not in spec:
        raise ConfigError(f"--reward {spec!r} must look like module:function or path/file.py:function")
    target, name = spec.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ConfigError(f"--reward {spec!r}: file {target!r} does not exist")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as e:
        raise ConfigError(f"--reward {spec!r}: cannot import {target!r}: {e}") from None
    except ConfigError:
        raise
    except Exception as e:  # a SyntaxError or an error at import time in the user's file
        raise ConfigError(f"--reward {spec!r}: importing {target!r} raised {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"--reward {spec!r}: {target!r} has no callable named {name!r}")
    return fn


def score_completions(
    reward_funcs: Sequence[RewardFn],
    weights: Sequence[float] | None,
    prompts: list[Any],
    completions: list[str],
    columns: dict[str, list[Any]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Call every reward function; return ``(total [B], per_function [B, F])``.

    ``per_function`` holds NaN where a function returned None. ``total`` is the weighted sum over the
    functions that scored the completion; it is NaN where none did (the trainer leaves such a
    completion out of the loss).
    """
    weights = list(weights) if weights is not None else [1.0] * len(reward_funcs)
    if len(weights) != len(reward_funcs):
        raise ConfigError(
            f"reward_weights has {len(weights)} entries for {len(reward_funcs)} reward functions"
        )
    cols = []
    for fn in reward_funcs:
        kwargs = accepted_keywords(fn, {"prompts": prompts, "completions": completions, **columns})
        try:
            values = fn(**kwargs)
        except TypeError as e:
            if not _signature_error(e, fn):
                raise
            raise ConfigError(
                f"reward function {reward_name(fn)!r} cannot be called as fn(prompts=..., completions=..., "
                f"**kwargs) with the keywords {sorted(kwargs)}: {e}"
            ) from None
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
            raise ConfigError(
                f"reward function {reward_name(fn)!r} returned {type(values).__name__}; it must return a "
                "list with one float (or None) per completion"
            )
        values = list(values)
        if len(values) != len(completions):
            raise ConfigError(
                f"reward function {reward_name(fn)!r} returned {len(values)} values "
                f"for {len(completions)} completions"
            )
        bad = [v for v in values if v is not None and not is_number(v)]
        if bad:
            raise ConfigError(
                f"reward function {reward_name(fn)!r} returned {bad[0]!r} ({type(bad[0]).__name__}); "
                "each value must be a number (not a bool) or None"
            )
        cols.append([math.nan if v is None else float(v.item() if hasattr(v, "item") else v) for v in values])
    per_fn = torch.tensor(cols, dtype=torch.float32).T.reshape(len(completions), len(reward_funcs))
    w = torch.tensor(weights, dtype=torch.float32)
    scored = ~torch.isnan(per_fn)
    total = (torch.nan_to_num(per_fn) * w).sum(-1)
    total = torch.where(scored.any(-1), total, torch.full_like(total, math.nan))
    return total, per_fn


def accepted_keywords(fn: RewardFn, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The part of ``kwargs`` that ``fn``'s signature takes: all of it when ``fn`` has ``**kwargs``
    (TRL's reward functions do), else the keywords it names."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C function: pass everything
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in names}


def _signature_error(error: TypeError, fn: RewardFn) -> bool:
    """Whether a TypeError came from calling ``fn`` with the wrong arguments (not from inside it)."""
    tb = error.__traceback__
    return tb is not None and tb.tb_next is None and "argument" in str(error)


def repeat_columns(
    rows: list[dict[str, Any]], times: int, skip: tuple[str, ...] = ("prompt",)
) -> dict[str, list[Any]]:
    """Column-wise view of prompt rows, each row repeated ``times`` (once per completion of its group)."""
    keys = [k for k in (rows[0] if rows else {}) if k not in skip]
    return {k: [row.get(k) for row in rows for _ in range(times)] for k in keys}
