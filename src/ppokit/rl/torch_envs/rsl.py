"""``RslRlVecEnv``: a ``TorchVectorEnv`` behind rsl_rl's VecEnv interface, the one Isaac Lab's
``RslRlVecEnvWrapper`` gives (rsl_rl 2.x-5.x: ``num_envs``, ``num_actions``, ``max_episode_length``,
``episode_length_buf``, ``device``, ``get_observations()``, ``step(actions) -> (obs, rewards, dones,
extras)`` with ``extras["time_outs"]``; observations as groups ``{"policy": ..., "critic": ...}``).
It tests ppokit's rsl_rl adapter (rl/batched.py) on real dynamics, and lets rsl_rl run on ppokit's envs.
"""

from __future__ import annotations

from typing import Any

import torch

from ppokit.rl.torch_envs.base import TorchVectorEnv


class RslRlVecEnv:
    """rsl_rl's VecEnv view of ``env``. Like rsl_rl's envs it drops the true final observation of a
    same-step reset unless ``keep_final_obs`` (then ``extras["final_obs"]`` holds the groups)."""

    def __init__(self, env: TorchVectorEnv, keep_final_obs: bool = False, seed: int = 0):
        self.env = env
        self.num_envs = env.num_envs
        self.num_actions = (
            int(torch.tensor(env.single_action_space.shape).prod()) if env.single_action_space.shape else 1
        )
        self.max_episode_length = env.max_episode_steps
        self.device = env.device
        self.single_action_space = env.single_action_space  # the bounds (rsl_rl itself ignores them)
        self.keep_final_obs = keep_final_obs
        self.cfg: dict[str, Any] = {}
        self._obs, _ = env.reset(seed=seed)

    @property
    def episode_length_buf(self) -> torch.Tensor:
        """Each instance's step count in its episode (writable, as rsl_rl expects)."""
        return self.env.episode_length_buf

    @episode_length_buf.setter
    def episode_length_buf(self, value: torch.Tensor) -> None:
        self.env.episode_length_buf = value

    def _groups(self, obs: torch.Tensor, critic: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"policy": obs} if critic is None else {"policy": obs, "critic": critic}

    def get_observations(self) -> dict[str, torch.Tensor]:
        """The current observation groups."""
        return self._groups(self._obs, self.env.critic_obs())

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, dict]:
        """``(obs groups, rewards [N], dones [N], extras)``; ``extras["time_outs"]`` marks truncations."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._obs = obs
        extras: dict[str, Any] = {"time_outs": truncated}
        if self.keep_final_obs and "final_obs" in info:
            extras["final_obs"] = self._groups(info["final_obs"], info.get("final_critic_obs"))
        return self.get_observations(), reward, terminated | truncated, extras

    def close(self) -> None:
        """Close the underlying env."""
        self.env.close()
