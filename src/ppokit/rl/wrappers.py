"""Gymnasium wrappers from the config (``env_wrappers``), as rl-zoo's ``env_wrapper``.

Each entry is a dotted name, or a one-key mapping from the dotted name to its keyword arguments::

    env_wrappers:
      - gymnasium.wrappers.FlattenObservation
      - gymnasium.wrappers.TimeLimit: {max_episode_steps: 200}

They are applied in order, innermost first, to every sub-environment (training, ``evaluate``,
``ppokit eval``, ``resume`` and ``PPO.load`` all build their environments from the saved config).
From the command line: ``--set 'env_wrappers=[gymnasium.wrappers.FlattenObservation]'``.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

from ppokit.errors import ConfigError
from ppokit.rl.envfind import import_module


def parse_wrappers(entries: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """``[(dotted name, kwargs)]`` of ``env_wrappers`` entries; a malformed entry is a ConfigError."""
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            name, kwargs = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, kwargs = next(iter(entry.items()))
            kwargs = {} if kwargs is None else kwargs
        else:
            name, kwargs = None, None
        if not isinstance(name, str) or "." not in name or not isinstance(kwargs, dict):
            raise ConfigError(
                f"env_wrappers[{i}]={entry!r} is not allowed; give a dotted name "
                "(gymnasium.wrappers.FlattenObservation) or {dotted.Name: {kwarg: value}}"
            )
        out.append((name, dict(kwargs)))
    return out


def resolve_wrapper(name: str) -> Any:
    """The class (or function) that ``name`` (``package.module.Name``) refers to."""
    module, _, attr = name.rpartition(".")
    import_module(module, f"env_wrappers entry {name!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except AttributeError:
        raise ConfigError(f"env_wrappers entry {name!r} is not allowed: {module} has no {attr!r}") from None


def check_wrappers(entries: list[Any]) -> None:
    """Resolve every entry now (in the main process) so a typo fails before any env is built."""
    for name, _ in parse_wrappers(entries):
        resolve_wrapper(name)


def apply_wrappers(env: gym.Env, entries: list[Any]) -> gym.Env:
    """``env`` wrapped by each entry in order (the first entry is innermost)."""
    for name, kwargs in parse_wrappers(entries):
        try:
            env = resolve_wrapper(name)(env, **kwargs)
        except TypeError as e:
            raise ConfigError(f"env_wrappers entry {name!r} with {kwargs} is not allowed: {e}") from None
    return env
