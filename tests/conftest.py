"""Shared fixtures: small test environments with known dynamics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch


class CountingEnv(gym.Env):
    """obs = [steps taken in this episode], reward = 1 + that count after the step.

    Terminates when the count reaches ``terminate_at`` (if set); the TimeLimit wrapper truncates at
    ``max_episode_steps``. Every buffer entry of a rollout is therefore known in advance.
    """

    def __init__(self, terminate_at: int | None = None):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([float(self.t)], np.float32), float(self.t), terminated, False, {}


def counting_env(max_steps: int = 5, terminate_at: int | None = None):
    """A factory (as PPO accepts) for a TimeLimit-wrapped CountingEnv."""
    return lambda: gym.wrappers.TimeLimit(CountingEnv(terminate_at), max_episode_steps=max_steps)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
