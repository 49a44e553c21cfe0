"""Sub-environments of a *sync* vector env, checked as async workers are (``envs.CheckedAsyncVectorEnv``).

Issue 16: under the default sync vectorization, an environment that raised in ``step``/``reset``,
returned an observation of the wrong shape, used the old 4-tuple API or returned an array as its
reward ended ``ppokit train`` in a traceback from deep inside Gymnasium's ``SyncVectorEnv`` (the same
faults under async gave clear errors). ``CheckedEnv`` wraps each sub-environment: every such fault
becomes an ``EnvStepError`` naming the environment index, its step and what was wrong, which the CLI
prints as one line (``--debug`` shows the traceback).

The checks are a few comparisons per step (the tuple's length, the observation's shape and kind, the
reward being one real number, ``terminated``/``truncated`` being booleans, the spaces staying the
ones the run was built for); the numpy-vectorised CartPole (``vector_entry_point``) does not go
through here.

Issue 34 (reliability round three) added the checks where silence was wrong: ``terminated="no"`` (a
truthy string) ended every episode; an array ``terminated``, a complex reward or a string/object
observation ended in a traceback deep in Gymnasium or torch; an action space replaced mid-run was
never noticed; and ``sys.exit()`` inside ``step`` ended ``ppokit train`` with exit code 0 and no
message (``SystemExit`` is no ``Exception``). Each is now an ``EnvStepError`` naming the env and step.
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


# What user code may raise that is not an ``Exception`` but is still its failure, not the user's wish
# to stop ppokit: ``sys.exit()``/``exit()`` in an env (issue 34: it exited 0 with no message).
USER_CODE_FAILURES = (Exception, SystemExit)


def _is_flag(value: Any) -> bool:
    """Whether ``value`` is one boolean as Gymnasium's API asks for ``terminated``/``truncated``
    (Python or numpy bool; 0/1 ints are accepted as many envs return them)."""
    if isinstance(value, np.ndarray) and value.shape == ():  # a 0-d array: its one element
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return True
    return isinstance(value, (int, np.integer)) and value in (0, 1)


class CheckedEnv(gym.Wrapper):
    """``env`` (sub-environment ``index`` of a sync vector env) with faults reported by index and step."""

    def __init__(self, env: gym.Env, index: int, in_worker: bool = False):
        super().__init__(env)
        self.index = index
        # In an async worker, gymnasium already reports an env's exception with its traceback: only
        # what it cannot report (SystemExit ends the worker silently) is turned into EnvStepError.
        self.in_worker = in_worker
        self.env_steps = 0  # steps of this sub-environment since it was made
        self._shape = tuple(getattr(env.observation_space, "shape", None) or ())
        # the spaces the policy was built for: an env that swaps them mid-run is refused (issue 34)
        # (two attributes: spaces are structure to envstate.capture, a tuple of them is not)
        self._obs_space, self._action_space = env.observation_space, env.action_space

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
        kind = np.asarray(obs).dtype.kind
        if kind not in "biuf":  # strings, objects, complex numbers: no policy input (issue 34)
            raise self._fail(
                f"returned an observation of dtype {np.asarray(obs).dtype} ({_short(obs)}); a Box "
                "observation must hold real numbers",
                call,
            )

    def _check_spaces(self) -> None:
        for name, was, now in (
            ("observation_space", self._obs_space, self.env.observation_space),
            ("action_space", self._action_space, self.env.action_space),
        ):
            if now is not was and now != was:
                raise self._fail(
                    f"changed its {name} from {_short(was)} to {_short(now)}; the spaces are fixed for a run "
                    "(the policy was built for the first)"
                )

    def step(self, action: Any) -> Any:  # noqa: D102 (gymnasium's docstring applies)
        self.env_steps += 1
        try:
            result = self.env.step(action)
        except PPOKitError:
            raise
        except USER_CODE_FAILURES as e:
            if self.in_worker and not isinstance(e, SystemExit):
                raise
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
        if np.asarray(reward).dtype.kind not in "biuf":  # complex, str, object: not a real number
            raise self._fail(f"returned reward {_short(reward)}; it must be one real number")
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            if not _is_flag(flag):  # "no" is truthy: it silently ended every episode (issue 34)
                raise self._fail(f"returned {name}={_short(flag)} ({type(flag).__name__}); it must be a bool")
        self._check_spaces()
        if not isinstance(info, dict):
            raise self._fail(f"returned info {_short(info)} ({type(info).__name__}); it must be a dict")
        return result

    def reset(self, **kwargs: Any) -> Any:  # noqa: D102
        try:
            result = self.env.reset(**kwargs)
        except PPOKitError:
            raise
        except USER_CODE_FAILURES as e:
            if self.in_worker and not isinstance(e, SystemExit):
                raise
            raise self._fail(f"raised {_what(e)}", "reset") from e
        if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[1], dict):
            raise self._fail(
                f"returned {_short(result)}; reset must return (observation, info) (the Gymnasium API)",
                "reset",
            )
        self._check_obs(result[0], "reset")
        return result


def _make_checked(factory: Callable[[], gym.Env], index: int, in_worker: bool) -> gym.Env:
    try:
        env = factory()
    except PPOKitError:
        raise
    except USER_CODE_FAILURES as e:
        if type(e).__name__ == "DependencyNotInstalled":  # the CLI prints gymnasium's install hint
            raise
        raise EnvConfigError(f"environment {index} could not be made: {_what(e)}") from e
    if not isinstance(env, gym.Env):
        raise EnvConfigError(f"environment {index}: the factory returned {_short(env)}, not a gymnasium.Env")
    space = env.observation_space
    if isinstance(space, gym.spaces.Box) and int(np.prod(space.shape)) == 0:
        env.close()
        raise EnvConfigError(f"environment {index}: observation space {space} is empty (0 elements)")
    return CheckedEnv(env, index, in_worker)


def checked_factories(
    fns: list[Callable[[], gym.Env]], in_worker: bool = False
) -> list[Callable[[], gym.Env]]:
    """The factories of a vector env, each making its environment wrapped in ``CheckedEnv``
    (``in_worker``: for an async vector env's worker processes)."""
    return [functools.partial(_make_checked, fn, i, in_worker) for i, fn in enumerate(fns)]


__all__ = ["CheckedEnv", "checked_factories"]
