"""Making vectorized Gymnasium environments and checking that ppokit supports their spaces."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from ppokit.errors import EnvError

EnvSpec = str | Callable[[], gym.Env]


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id``; an unknown id raises EnvError with the closest names."""
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EnvError(f"env_id={env_id!r} is not a registered Gymnasium environment{hint}") from None


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """Raise EnvError unless observations are a Box and actions Discrete, MultiDiscrete or Box."""
    if not isinstance(observation_space, gym.spaces.Box):
        raise EnvError(
            f"observation space {observation_space} is not supported; ppokit needs a Box "
            "(wrap dict/tuple spaces with gymnasium.wrappers.FlattenObservation)"
        )
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box)):
        raise EnvError(f"action space {action_space} is not supported; use Discrete, MultiDiscrete or Box")
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1:
        raise EnvError(f"Box action space of shape {action_space.shape} is not supported; it must be 1-D")


def make_vec_env(
    env: EnvSpec, num_envs: int, vectorization: str = "auto", env_kwargs: dict[str, Any] | None = None
) -> gym.vector.VectorEnv:
    """A vector env of ``num_envs`` copies of ``env`` (an id or a factory returning a ``gym.Env``).

    ``auto`` uses the environment's numpy-vectorised entry point when it registers one (CartPole:
    one numpy call steps all copies) and ``sync`` otherwise. ``sync``/``async`` use SAME_STEP
    autoreset (the final observation comes in ``info["final_obs"]``); vector entry points keep their
    own mode, which the rollout reads from ``metadata["autoreset_mode"]``.
    """
    env_kwargs = dict(env_kwargs or {})
    if isinstance(env, str):
        spec = check_env_id(env)
        if vectorization == "auto":
            vectorization = "vector_entry_point" if spec.vector_entry_point else "sync"
        if vectorization == "vector_entry_point" and not spec.vector_entry_point:
            raise EnvError(f"env_id={env!r} has no vector entry point; use vectorization sync or async")
        if vectorization == "vector_entry_point":
            venv = gym.make_vec(env, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)
        else:
            venv = gym.make_vec(
                env,
                num_envs=num_envs,
                vectorization_mode=vectorization,
                vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                **env_kwargs,
            )
    else:
        if vectorization in ("auto", "vector_entry_point", "sync"):
            venv = gym.vector.SyncVectorEnv([env] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            venv = gym.vector.AsyncVectorEnv([env] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    check_spaces(venv.single_observation_space, venv.single_action_space)
    return venv


def autoreset_mode(venv: gym.vector.VectorEnv) -> AutoresetMode:
    """The vector env's autoreset mode (Gymnasium 1.x defaults to NEXT_STEP when unspecified)."""
    mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode == AutoresetMode.DISABLED:
        raise EnvError("vector envs with autoreset disabled are not supported")
    return mode


def env_name(env: EnvSpec) -> str:
    """A short name for run directories and logs."""
    return env if isinstance(env, str) else getattr(env, "__name__", "custom-env")


def space_signature(observation_space: gym.Space, action_space: gym.Space) -> dict[str, Any]:
    """JSON description of the spaces, saved with a model and checked when it is loaded."""
    sig: dict[str, Any] = {
        "obs_shape": list(observation_space.shape),
        "action_type": type(action_space).__name__,
    }
    if isinstance(action_space, gym.spaces.Discrete):
        sig["action_n"] = int(action_space.n)
    elif isinstance(action_space, gym.spaces.MultiDiscrete):
        sig["action_nvec"] = [int(n) for n in np.asarray(action_space.nvec).ravel()]
    else:
        sig["action_shape"] = list(action_space.shape)
        sig["action_low"] = np.asarray(action_space.low, dtype=float).tolist()
        sig["action_high"] = np.asarray(action_space.high, dtype=float).tolist()
    return sig
