"""``TorchVectorEnv``: N environment instances stepped together as torch tensors on one device.

A Gymnasium ``VectorEnv`` (``step`` returns ``(obs, reward, terminated, truncated, info)`` of shape
``[N, ...]`` / ``[N]``, all torch tensors on ``device``) with SAME_STEP autoreset: the step that ends
an episode returns the reset observation and keeps the true last one in ``info["final_obs"]``
(``[N, obs_dim]``, meaningful where ``info["_final_obs"]`` is True). Each instance counts its own
episode length (``episode_length_buf``, writable, as Isaac Lab's envs have it) and is truncated at
``max_episode_steps``. Subclasses give the dynamics as batched tensor maths (no per-env Python).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space


class TorchVectorEnv(gym.vector.VectorEnv):
    """Base class: subclasses set the spaces and implement ``_reset_idx``, ``_step_state``, ``_obs``."""

    max_episode_steps: int = 200
    single_observation_space: gym.spaces.Box
    single_action_space: gym.Space

    def __init__(
        self, num_envs: int = 1, device: str | torch.device = "cpu", max_episode_steps: int | None = None
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} is not allowed; give a positive integer")
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        if max_episode_steps is not None:
            self.max_episode_steps = int(max_episode_steps)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "torch_tensors": True}
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0)
        self.episode_length_buf = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.state = torch.zeros(self.num_envs, self.state_dim, device=self.device)
        self._all = torch.arange(self.num_envs, device=self.device)

    state_dim: int = 1

    def _uniform(self, n: int, k: int, low: float | torch.Tensor, high: float | torch.Tensor) -> torch.Tensor:
        """``[n, k]`` uniform draws in [low, high) from the env's own generator."""
        u = torch.rand(n, k, generator=self.generator, device=self.device)
        return low + (high - low) * u

    def _reset_idx(self, idx: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _step_state(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """Advance ``self.state`` one step; return ``(reward [N], terminated [N] bool)``."""
        raise NotImplementedError

    def _obs(self) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def critic_obs(self) -> torch.Tensor | None:
        """Privileged observations for an asymmetric critic (None: the env has none)."""
        return None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Reset every instance (``seed`` reseeds the env's generator)."""
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._reset_idx(self._all)
        self.episode_length_buf.zero_()
        return self._obs(), {}

    def step(self, actions: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One step of every instance; finished instances are reset in the same step (module docstring)."""
        actions = torch.as_tensor(actions, device=self.device)
        reward, terminated = self._step_state(actions)
        self.episode_length_buf += 1
        truncated = (self.episode_length_buf >= self.max_episode_steps) & ~terminated
        done = terminated | truncated
        obs = self._obs()
        info: dict[str, Any] = {}
        if bool(done.any()):
            info["final_obs"], info["_final_obs"] = obs.clone(), done
            critic = self.critic_obs()
            if critic is not None:
                info["final_critic_obs"] = critic.clone()
            idx = done.nonzero().squeeze(-1)
            self._reset_idx(idx)
            self.episode_length_buf[idx] = 0
            obs = self._obs()
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The instances' exact state (physics, episode lengths, generator): restores bit-identically."""
        return {
            "state": self.state.clone(),
            "episode_length_buf": self.episode_length_buf.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict``."""
        self.state.copy_(state["state"].to(self.device))
        self.episode_length_buf.copy_(state["episode_length_buf"].to(self.device))
        self.generator.set_state(state["generator"].cpu())

    def close(self, **kwargs: Any) -> None:
        """Nothing to release (no processes, no windows)."""


def box(low: Any, high: Any) -> gym.spaces.Box:
    """A float32 Box from bound lists."""
    return gym.spaces.Box(np.asarray(low, np.float32), np.asarray(high, np.float32), dtype=np.float32)
