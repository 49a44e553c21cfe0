"""CartPole and Pendulum as batched torch envs, with the equations and constants of Gymnasium's
classic-control envs (gymnasium/envs/classic_control/cartpole.py and pendulum.py, Gymnasium 1.x;
tests/test_torch_envs.py checks one step against them to 1e-5)."""

from __future__ import annotations

import math

import gymnasium as gym
import torch

from ppokit.rl.torch_envs.base import TorchVectorEnv, box


class CartPoleTorch(TorchVectorEnv):
    """CartPole-v1 (Barto, Sutton & Anderson 1983; Florian 2007's corrected equations, Euler steps):
    push the cart left (0) or right (1); reward 1 per step; ends when |x| > 2.4 or |theta| > 12
    degrees; truncated at 500 steps."""

    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass = masscart + masspole
    polemass_length = masspole * length
    theta_threshold = 12 * 2 * math.pi / 360
    x_threshold = 2.4
    max_episode_steps = 500
    state_dim = 4
    _high = [x_threshold * 2, 3.4e38, theta_threshold * 2, 3.4e38]
    single_observation_space = box([-h for h in _high], _high)
    single_action_space = gym.spaces.Discrete(2)

    def _reset_idx(self, idx: torch.Tensor) -> None:
        self.state[idx] = self._uniform(len(idx), 4, -0.05, 0.05)

    def _step_state(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, x_dot, theta, theta_dot = self.state.unbind(-1)
        force = torch.where(actions.reshape(-1) == 1, self.force_mag, -self.force_mag)
        cos, sin = torch.cos(theta), torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot.square() * sin) / self.total_mass
        thetaacc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos.square() / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * cos / self.total_mass
        self.state = torch.stack(
            (x + self.tau * x_dot, x_dot + self.tau * xacc, theta + self.tau * theta_dot,
             theta_dot + self.tau * thetaacc), dim=-1,
        )  # fmt: skip
        x, theta = self.state[:, 0], self.state[:, 2]
        terminated = (x.abs() > self.x_threshold) | (theta.abs() > self.theta_threshold)
        return torch.ones(self.num_envs, device=self.device), terminated

    def _obs(self) -> torch.Tensor:
        return self.state.clone()


class PendulumTorch(TorchVectorEnv):
    """Pendulum-v1: swing a pendulum up with a torque in [-2, 2]; reward -(theta^2 + 0.1 thetadot^2 +
    0.001 u^2) with theta normalised to [-pi, pi); never terminates; truncated at 200 steps."""

    max_speed, max_torque, dt, g, m, l = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0  # noqa: E741
    max_episode_steps = 200
    state_dim = 2
    single_observation_space = box([-1.0, -1.0, -max_speed], [1.0, 1.0, max_speed])
    single_action_space = box([-max_torque], [max_torque])

    def _reset_idx(self, idx: torch.Tensor) -> None:
        self.state[idx] = self._uniform(len(idx), 2, torch.tensor([-math.pi, -1.0], device=self.device),
                                        torch.tensor([math.pi, 1.0], device=self.device))  # fmt: skip

    def _step_state(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        th, thdot = self.state.unbind(-1)
        u = actions.reshape(self.num_envs, -1)[:, 0].float().clamp(-self.max_torque, self.max_torque)
        norm_th = torch.remainder(th + math.pi, 2 * math.pi) - math.pi  # Gymnasium's angle_normalize
        costs = norm_th.square() + 0.1 * thdot.square() + 0.001 * u.square()
        newthdot = (
            thdot + (3 * self.g / (2 * self.l) * torch.sin(th) + 3.0 / (self.m * self.l**2) * u) * self.dt
        )
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)
        self.state = torch.stack((th + newthdot * self.dt, newthdot), dim=-1)
        return -costs, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _obs(self) -> torch.Tensor:
        th, thdot = self.state.unbind(-1)
        return torch.stack((torch.cos(th), torch.sin(th), thdot), dim=-1)
