"""Small environments that need memory or action masks: the learning checks of rl/recurrent.py and
rl/masking.py (tests, ``benchmarks/recurrent_masking.py``). They are registered in the ``ppokit/``
namespace (``make_vec_env`` imports this module for such an id), so
``ppokit train --env ppokit/RememberFirst-v0 --set network.recurrent=lstm`` works.

- ``CartPoleNoVel-v1``: CartPole-v1 with the two velocities removed from the observation (cart
  position and pole angle left), as sb3-contrib benchmarks RecurrentPPO: a memoryless policy cannot
  estimate the velocities from one observation. Numpy-vectorised (NEXT_STEP autoreset) like CartPole.
- ``RememberFirst-v0``: the first observation shows a cue (one of ``n_cues``); the next ``delay``
  observations are blank, and the last one asks for the cue: reward 1 for the action equal to the cue,
  else 0. A memoryless policy gets ``1 / n_cues`` on average; one that remembers gets 1.
- ``MaskedChoice-v0``: ``n_actions`` actions, of which ``n_valid`` are valid at each step (a fresh
  random set); the observation shows the valid set and which of them is the best one. The best action
  pays 1, another valid one 0.1, and an invalid one ends the episode with reward -1. The valid set is
  given as an ``action_masks()`` method, as ``info["action_mask"]`` or as the ``action_mask`` key of a
  Dict observation (``mask_via``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

NAMESPACE = "ppokit"
CARTPOLE_KEEP = [0, 2]  # cart position, pole angle (1 and 3 are the velocities)


class NoVelocityObservation(gym.ObservationWrapper):
    """Keeps observation entries ``CARTPOLE_KEEP`` of a CartPole (a FilterObservation by index)."""

    def __init__(self, env: gym.Env, keep: list[int] = CARTPOLE_KEEP):
        super().__init__(env)
        self.keep = list(keep)
        box = env.observation_space
        self.observation_space = gym.spaces.Box(box.low[self.keep], box.high[self.keep], dtype=box.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


class NoVelocityVectorObservation(gym.vector.VectorObservationWrapper):
    """The same for a vector env (``[N, 4] -> [N, 2]``), so the numpy-vectorised CartPole is kept."""

    def __init__(self, env: gym.vector.VectorEnv, keep: list[int] = CARTPOLE_KEEP):
        super().__init__(env)
        self.keep = list(keep)
        box = env.single_observation_space
        self.single_observation_space = gym.spaces.Box(
            box.low[self.keep], box.high[self.keep], dtype=box.dtype
        )
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def observations(self, observations: np.ndarray) -> np.ndarray:
        return observations[:, self.keep]


def make_cartpole_novel(**kwargs: Any) -> gym.Env:
    """CartPoleNoVel-v1 (one env)."""
    return NoVelocityObservation(gym.make("CartPole-v1", **kwargs))


def make_cartpole_novel_vec(num_envs: int = 1, **kwargs: Any) -> gym.vector.VectorEnv:
    """CartPoleNoVel-v1, numpy-vectorised."""
    kwargs.setdefault("max_episode_steps", 500)
    return NoVelocityVectorObservation(CartPoleVectorEnv(num_envs=num_envs, **kwargs))


class RememberFirst(gym.Env):
    """The memory task of the module docstring. Observation ``[cue one-hot (n_cues), query flag]``;
    ``delay`` blank steps between the cue and the query; actions are the cues (ignored until the query)."""

    def __init__(self, n_cues: int = 4, delay: int = 6):
        self.n_cues, self.delay = int(n_cues), int(delay)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.n_cues + 1,), np.float32)
        self.action_space = gym.spaces.Discrete(self.n_cues)
        self.cue, self.t = 0, 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.n_cues + 1, np.float32)
        if self.t == 0:
            obs[self.cue] = 1.0
        if self.t == self.delay + 1:
            obs[-1] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.cue, self.t = int(self.np_random.integers(self.n_cues)), 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        query = self.t == self.delay + 1
        reward = float(query and int(action) == self.cue)
        self.t += 1
        return self._obs(), reward, query, False, {}


class MaskedChoice(gym.Env):
    """The masking task of the module docstring. Observation ``[valid set (n_actions), best action
    one-hot (n_actions)]``; episodes last ``length`` steps unless an invalid action ends them."""

    def __init__(self, n_actions: int = 16, n_valid: int = 3, length: int = 16, mask_via: str = "method"):
        if mask_via not in ("method", "info", "dict"):
            raise ValueError(f"mask_via={mask_via!r} is not one of method, info, dict")
        self.n, self.k, self.length, self.mask_via = int(n_actions), int(n_valid), int(length), mask_via
        box = gym.spaces.Box(0.0, 1.0, (2 * self.n,), np.float32)
        self.observation_space = (
            gym.spaces.Dict({"observation": box, "action_mask": gym.spaces.MultiBinary(self.n)})
            if mask_via == "dict"
            else box
        )
        self.action_space = gym.spaces.Discrete(self.n)
        self.valid = np.zeros(self.n, dtype=bool)
        self.best, self.t = 0, 0
        if mask_via == "method":  # an instance attribute: the other conventions have no such method
            self.action_masks = self._action_masks

    def _draw(self) -> None:
        chosen = self.np_random.choice(self.n, size=self.k, replace=False)
        self.valid[:] = False
        self.valid[chosen] = True
        self.best = int(chosen[0])

    def _out(self) -> tuple[Any, dict]:
        obs = np.zeros(2 * self.n, np.float32)
        obs[: self.n] = self.valid
        obs[self.n + self.best] = 1.0
        if self.mask_via == "dict":
            return {"observation": obs, "action_mask": self.valid.astype(np.int8)}, {}
        return obs, ({"action_mask": self.valid.copy()} if self.mask_via == "info" else {})

    def _action_masks(self) -> np.ndarray:
        """The valid actions (sb3-contrib's ``action_masks()``), offered only with ``mask_via="method"``."""
        return self.valid.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        self._draw()
        return self._out()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        a = int(action)
        self.t += 1
        if not self.valid[a]:
            obs, info = self._out()
            return obs, -1.0, True, False, {**info, "invalid_action": True}
        reward = 1.0 if a == self.best else 0.1
        self._draw()
        obs, info = self._out()
        return obs, reward, False, self.t >= self.length, info


def register() -> None:
    """Register the ids (idempotent)."""
    specs = {
        "CartPoleNoVel-v1": dict(
            entry_point=make_cartpole_novel,
            vector_entry_point=make_cartpole_novel_vec,
            reward_threshold=475.0,
        ),
        "RememberFirst-v0": dict(entry_point=RememberFirst),
        "MaskedChoice-v0": dict(entry_point=MaskedChoice),
    }
    for name, kwargs in specs.items():
        if f"{NAMESPACE}/{name}" not in gym.registry:
            gym.register(f"{NAMESPACE}/{name}", **kwargs)


register()
