"""A 2-D point mass that must reach a goal: the small continuous-control task of batched-env demos."""

from __future__ import annotations

import torch

from ppokit.rl.torch_envs.base import TorchVectorEnv, box


class PointMassTorch(TorchVectorEnv):
    """A unit mass in the plane pushed by a force in [-1, 1]^2, with velocity damping, towards a goal
    drawn uniformly in [-1, 1]^2. State ``(px, py, vx, vy, gx, gy)``. The actor sees the offset to the
    goal and the velocity ``[4]``; the critic's privileged group (``critic_obs``) adds the absolute
    position and the goal ``[8]``. Reward ``-|p - g| - 0.01 |a|^2`` per step; an episode ends
    (terminated) within 0.05 of the goal at speed < 0.1, with reward +10; truncated at 200 steps."""

    dt, damping, goal_radius = 0.05, 0.5, 0.05
    max_episode_steps = 200
    state_dim = 6
    single_observation_space = box([-10.0] * 4, [10.0] * 4)
    single_action_space = box([-1.0, -1.0], [1.0, 1.0])

    def _reset_idx(self, idx: torch.Tensor) -> None:
        n = len(idx)
        self.state[idx] = torch.cat(
            (
                self._uniform(n, 2, -1.0, 1.0),
                torch.zeros(n, 2, device=self.device),
                self._uniform(n, 2, -1.0, 1.0),
            ),
            dim=-1,
        )

    def _step_state(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = actions.reshape(self.num_envs, 2).float().clamp(-1.0, 1.0)
        p, v, g = self.state[:, :2], self.state[:, 2:4], self.state[:, 4:]
        v = v + (a - self.damping * v) * self.dt  # semi-implicit Euler
        p = (p + v * self.dt).clamp(-2.0, 2.0)
        self.state = torch.cat((p, v, g), dim=-1)
        dist = (p - g).norm(dim=-1)
        reached = (dist < self.goal_radius) & (v.norm(dim=-1) < 0.1)
        reward = -dist - 0.01 * a.square().sum(-1) + 10.0 * reached
        return reward, reached

    def _obs(self) -> torch.Tensor:
        return torch.cat((self.state[:, :2] - self.state[:, 4:], self.state[:, 2:4]), dim=-1)

    def critic_obs(self) -> torch.Tensor:
        """``[N, 8]``: the actor's observation, the absolute position and the goal."""
        return torch.cat((self._obs(), self.state[:, :2], self.state[:, 4:]), dim=-1)
