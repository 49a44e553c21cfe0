"""EnvPool as an env backend (``env_backend: envpool``, issue 33): C++ threads step the environments.

EnvPool (https://github.com/sail-sg/envpool) runs MuJoCo, Atari, classic-control and other envs in a
C++ thread pool. Version 1.2 presents its pools as a Gymnasium ``VectorEnv`` with NEXT_STEP autoreset
(``envpool/python/gymnasium_envpool.py``): the step that ends an episode returns its real last
observation (terminated or time-limit truncated), and the next step ignores the action and returns
the reset observation with reward 0. That is the rollout's NEXT_STEP path (rl/rollout.py): the reset
step is stored as not valid, and the value computed there is V(final obs), so a truncation is
bootstrapped exactly as with Gymnasium's own envs.

What this module adds around the pool:

- **ids**: a Gymnasium id maps to EnvPool's (``ALE/Pong-v5`` -> ``Pong-v5``); an id EnvPool lacks is
  refused, naming its closest ids.
- **seeding**: EnvPool fixes its seeds when the pool is built (``reset(seed=)`` only warns), so the
  pool is built at the first ``reset``, with that reset's seed; a later ``reset(seed=)`` builds a new
  pool. ``reset(seed=s)`` therefore reproduces the same episodes, as with Gymnasium
  (a resumed run re-seeds, ``PPO.resume``).
- **env_kwargs**: the ALE vector env's names the Atari presets use become EnvPool's (``frameskip`` ->
  ``frame_skip``, ``grayscale`` -> ``gray_scale``, ``reward_clipping`` -> ``reward_clip``); an unknown
  key is refused, naming the ones the id takes.
- **episode returns**: for Atari with ``reward_clip`` or ``episodic_life`` the training rewards are
  clipped and a lost life ends the training episode; ``episode_view`` gives the rollout's episode
  statistics the raw reward (``info["reward"]``) and the end of the whole game (``info["terminated"]``
  or truncation), the return Gymnasium's RecordEpisodeStatistics reports on the unwrapped game.
- **resume**: the C++ state cannot be saved, so ``envstate`` reports it as not capturable and a
  resumed run re-seeds and resets the envs (as for MuJoCo under Gymnasium).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from ppokit.errors import ConfigError, EnvConfigError, MissingDependencyError

BACKENDS = ("gymnasium", "envpool")
INSTALL = "pip install 'ppokit[envpool]'"
# The ALE vector env's keyword names (the presets' configs/ALE) -> EnvPool's Atari config keys.
ALE_KWARGS = {"frameskip": "frame_skip", "grayscale": "gray_scale", "reward_clipping": "reward_clip"}
# Keys ppokit sets itself: the number of envs and the seed (from the config), and batch_size, which
# must equal num_envs (EnvPool's async mode returns a subset of envs each step; the rollout steps all).
RESERVED_KWARGS = ("num_envs", "batch_size", "seed", "env_seed")


def _envpool() -> Any:
    """The envpool module, or MissingDependencyError with the install command."""
    if importlib.util.find_spec("envpool") is None:
        raise MissingDependencyError(f"env_backend='envpool' needs the envpool package: {INSTALL}")
    import envpool

    return envpool


@functools.cache
def envpool_ids() -> tuple[str, ...]:
    """Every env id EnvPool registers (its own spelling: ``Pong-v5``, ``HalfCheetah-v5``)."""
    return tuple(_envpool().list_all_envs())


def envpool_id(env_id: str) -> str:
    """EnvPool's id for a Gymnasium ``env_id`` (``ALE/Pong-v5`` -> ``Pong-v5``); an id EnvPool does not
    have raises EnvConfigError naming the closest ids it has."""
    name = env_id.removeprefix("ALE/")
    ids = envpool_ids()
    if name in ids:
        return name
    close = difflib.get_close_matches(name, ids, n=3)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise EnvConfigError(
        f"env_id={env_id!r} is not allowed with env_backend='envpool': EnvPool has no such env{hint} "
        "(envpool.list_all_envs() lists all; or use env_backend: gymnasium)"
    )


def envpool_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` in EnvPool's names (ALE_KWARGS); ``maxpool: true`` is dropped (EnvPool's Atari
    always max-pools the last two frames of a frame skip), anything ppokit sets itself is refused."""
    out = {}
    for key, value in env_kwargs.items():
        if key in RESERVED_KWARGS:
            raise EnvConfigError(
                f"env_kwargs={{{key!r}: {value!r}}} is not allowed with env_backend='envpool': ppokit "
                "sets it (num_envs and seed from the config)"
            )
        if key == "maxpool":
            if value is not True:
                raise EnvConfigError(
                    f"env_kwargs={{'maxpool': {value!r}}} is not allowed with env_backend='envpool': "
                    "EnvPool always max-pools the last two frames; use true or leave it out"
                )
            continue
        out[ALE_KWARGS.get(key, key) if env_id.startswith("ALE/") else key] = value
    return out


def check_envpool_config(env: Any, cfg: Any) -> str:
    """EnvPool's id for ``env`` under ``cfg``, or a one-line error for the settings the EnvPool backend
    does not take (a custom env, wrappers, packages, a vectorization other than auto)."""
    if not isinstance(env, str):
        raise ConfigError(
            f"env_backend='envpool' is not allowed with a {type(env).__name__} env: it makes envs from "
            "an EnvPool id; use env_backend: gymnasium"
        )
    for key, allowed in (("env_wrappers", []), ("gym_packages", []), ("vectorization", "auto")):
        value = getattr(cfg, key)
        if value != allowed:
            raise ConfigError(
                f"{key}={value!r} is not allowed with env_backend='envpool' (EnvPool builds its own C++ "
                f"envs); use {allowed!r} or env_backend: gymnasium"
            )
    return envpool_id(env)


def _spec(pool_id: str, env_id: str, num_envs: int, seed: int, kwargs: dict[str, Any]) -> Any:
    """EnvPool's spec (its spaces, its config), with a bad keyword named in one line."""
    try:
        return _envpool().make_spec(pool_id, num_envs=num_envs, batch_size=num_envs, seed=seed, **kwargs)
    except TypeError as e:
        allowed = sorted(set(_envpool().make_spec(pool_id, num_envs=1)._config_keys) - set(RESERVED_KWARGS))
        raise EnvConfigError(
            f"env_kwargs={kwargs!r} is not allowed for env_id={env_id!r} with env_backend='envpool' "
            f"({str(e).splitlines()[0]}); EnvPool's keys: {', '.join(allowed)}"
        ) from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """EnvPool gives float32 Boxes float64 bounds; Gymnasium warns about it on every space it builds."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered by casting")
        yield


class EnvPoolVectorEnv(gym.vector.VectorEnv):
    """An EnvPool pool as the Gymnasium VectorEnv the rollout steps (NEXT_STEP autoreset; module
    docstring): batched spaces, ``reset(seed=)`` that reseeds, Atari episode statistics of the game."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
    # rl/envstate.py: the env state lives in C++; a resumed run re-seeds and resets instead
    state_not_capturable = "EnvPool keeps its environments' state in C++ (env_backend='envpool')"

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None):
        self.env_id, self.pool_id = env_id, envpool_id(env_id)
        self.kwargs = envpool_kwargs(env_id, dict(env_kwargs or {}))
        spec = _spec(self.pool_id, env_id, num_envs, seed, self.kwargs)
        self.num_envs, self.pool_seed, self._pool = num_envs, seed, None
        with _quiet():
            self.single_observation_space = spec.gymnasium_observation_space
            self.single_action_space = spec.gymnasium_action_space
            self.observation_space = batch_space(self.single_observation_space, num_envs)
            self.action_space = batch_space(self.single_action_space, num_envs)
        self._action_dtype = np.dtype(self.single_action_space.dtype)
        config = dict(zip(spec._config_keys, spec._config_values))
        # Atari: training rewards clipped / a lost life ends the training episode; the statistics
        # follow the game (episode_view)
        self._game_stats = bool(config.get("reward_clip") or config.get("episodic_life"))

    def _build(self, seed: int) -> None:
        if self._pool is not None:
            self._pool.close()
        with _quiet():
            self._pool = _envpool().make_gymnasium(
                self.pool_id, num_envs=self.num_envs, batch_size=self.num_envs, seed=seed, **self.kwargs
            )
            _ = self._pool.observation_space, self._pool.action_space  # built (and cached) here, quietly
        self.pool_seed = seed

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Reset every env; a ``seed`` builds a new pool with it, so that ``reset(seed=s)`` starts the
        same episodes every time, as in Gymnasium (EnvPool seeds only when built; module docstring)."""
        if self._pool is None or seed is not None:
            self._build(self.pool_seed if seed is None else int(seed))
        return self._pool.reset(options=options)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every env (an env whose episode ended on the last step resets instead; NEXT_STEP)."""
        if self._pool is None:
            raise gym.error.ResetNeeded("call reset() before step() (EnvPool is built at the first reset)")
        return self._pool.step(np.asarray(actions, dtype=self._action_dtype))

    def episode_view(
        self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, info: dict
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(reward, done)`` as the episode statistics count them: for Atari with clipped rewards or
        life-loss episodes, the raw reward (``info["reward"]``) and the end of the game (EnvPool's
        ``info["terminated"]`` is the game's own end, whatever ``episodic_life`` says, or a time-limit
        truncation); otherwise as stepped."""
        if not self._game_stats:
            return reward, terminated | truncated
        game_over = np.asarray(info["terminated"], dtype=bool) | truncated
        return np.asarray(info["reward"], dtype=np.float64), game_over

    def close_extras(self, **kwargs: Any) -> None:
        """Release the pool's threads."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def make_envpool_vec(env: Any, cfg: Any) -> EnvPoolVectorEnv:
    """The EnvPool vector env a ``PPOConfig`` with ``env_backend: envpool`` describes (built, with
    ``cfg.seed``, at its first reset)."""
    check_envpool_config(env, cfg)
    return EnvPoolVectorEnv(env, cfg.num_envs, cfg.seed, cfg.env_kwargs)
