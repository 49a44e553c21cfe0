"""Sub-environments of a *sync* vector env, checked as async workers are (``envs.CheckedAsyncVectorEnv``).

Issue 16: under the default sync vectorization, an environment that raised in ``step``/``reset``,
returned an observation of the wrong shape, used the old 4-tuple API or returned an array as its
reward ended ``ppokit train`` in a traceback from deep inside Gymnasium's ``SyncVectorEnv`` (the same
faults under async gave clear errors). ``CheckedEnv`` wraps each sub-environment: every such fault
becomes an ``EnvStepError`` naming the environment index, its step and what was wrong, which the CLI
prints as one line (``--debug`` shows the traceback).

The checks are a few comparisons per step (the tuple's length, the observation's shape, the reward
being a scalar); the numpy-vectorised CartPole (``vector_entry_point``) does not go through here.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from ppokit.errors import EnvConfigError, EnvStepError, PPOKitError


def _short(value: Any) -> str:
    from ppokit.config import short

    return short(value)


def _what(e: BaseException) -> str:
    from ppokit.config import one_line

    return f"{type(e).__name__}: {one_line(e, 300)}"


class CheckedEnv(gym.Wrapper):
    """``env`` (sub-environment ``index`` of a sync vector env) with faults reported by index and step."""

    def __init__(self, env: gym.Env, index: int):
        super().__init__(env)
        self.index = index
        self.env_steps = 0  # steps of this sub-environment since it was made
        self._shape = tuple(getattr(env.observation_space, "shape", None) or ())

    def _fail(self, what: str, call: str = "step") -> EnvStepError:
        at = f"at its step {self.env_steps}" if call == "step" else f"in reset (after {self.env_steps} steps)"
        return EnvStepError(f"environment {self.index} {at}: {what}")

    def _check_obs(self, obs: Any, call: str) -> None:
        if not isinstance(self.observation_space, gym.spaces.Box):
            return
        shape = np.shape(obs)
        if shape != self._shape:
            raise self._fail(
                f"returned an observation of shape {shape} ({_short(obs)}); its observation_space has "
                f"shape {self._shape}",
                call,
            )

    def step(self, action: Any) -> Any:  # noqa: D102 (gymnasium's docstring applies)
        self.env_steps += 1
        try:
            result = self.env.step(action)
        except PPOKitError:
            raise
        except Exception as e:
            raise self._fail(f"raised {_what(e)}") from e
        if not isinstance(result, tuple) or len(result) != 5:
            n = len(result) if isinstance(result, tuple) else type(result).__name__
            hint = " (the old gym API: return obs, reward, terminated, truncated, info)" if n == 4 else ""
            raise self._fail(f"returned {n} values instead of 5{hint}")
        obs, reward, terminated, truncated, info = result
        self._check_obs(obs, "step")
        if not isinstance(reward, (numbers.Real, np.number, np.bool_)) and np.shape(reward) != ():
            raise self._fail(
                f"returned reward {_short(reward)} of shape {np.shape(reward)}; it must be one number"
            )
        if not isinstance(info, dict):
            raise self._fail(f"returned info {_short(info)} ({type(info).__name__}); it must be a dict")
        return result

    def reset(self, **kwargs: Any) -> Any:  # noqa: D102
        try:
            result = self.env.reset(**kwargs)
        except PPOKitError:
            raise
        except Exception as e:
            raise self._fail(f"raised {_what(e)}", "reset") from e
        if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[1], dict):
            raise self._fail(
                f"returned {_short(result)}; reset must return (observation, info) (the Gymnasium API)",
                "reset",
            )
        self._check_obs(result[0], "reset")
        return result


def _make_checked(factory: Callable[[], gym.Env], index: int) -> gym.Env:
    try:
        env = factory()
    except PPOKitError:
        raise
    except Exception as e:
        if type(e).__name__ == "DependencyNotInstalled":  # the CLI prints gymnasium's install hint
            raise
        raise EnvConfigError(f"environment {index} could not be made: {_what(e)}") from e
    if not isinstance(env, gym.Env):
        raise EnvConfigError(f"environment {index}: the factory returned {_short(env)}, not a gymnasium.Env")
    space = env.observation_space
    if isinstance(space, gym.spaces.Box) and int(np.prod(space.shape)) == 0:
        env.close()
        raise EnvConfigError(f"environment {index}: observation space {space} is empty (0 elements)")
    return CheckedEnv(env, index)


def checked_factories(fns: list[Callable[[], gym.Env]]) -> list[Callable[[], gym.Env]]:
    """The factories of a sync vector env, each making its environment wrapped in ``CheckedEnv``."""
    return [functools.partial(_make_checked, fn, i) for i, fn in enumerate(fns)]


__all__ = ["CheckedEnv", "checked_factories"]
