"""Environments that fail on purpose, for the reliability tests (importable by subprocesses too).

``python -c "import faulty_envs; ..."`` with ``tests/`` on PYTHONPATH registers the ids below, so a
``ppokit`` command run in a child process can train on them.
"""

from __future__ import annotations

import multiprocessing
import os
import re

import gymnasium as gym
import numpy as np


class FaultyEnv(gym.Env):
    """CartPole-like shapes (obs [4], 2 actions); misbehaves at the ``fail_at``-th step of env
    ``fail_env`` (counted over the env's whole life), as ``mode`` says:

    - ``nan_obs`` / ``nan_reward``: a NaN observation / reward;
    - ``huge_obs``: a float64 observation of 1e300 (finite, but inf once cast to float32);
    - ``raise``: raises RuntimeError("injected failure");
    - ``exit``: the process exits with code 3 (a crash with no Python error).
    """

    instances = 0

    def __init__(self, mode: str = "raise", fail_at: int = 5, fail_env: int = 1, episode: int = 10):
        dtype = np.float64 if mode == "huge_obs" else np.float32
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), dtype)
        self.action_space = gym.spaces.Discrete(2)
        self.mode, self.fail_at, self.episode = mode, fail_at, episode
        # The index of this copy in its vector env: an async worker's process name ends with it;
        # in one process, copies are built in order.
        worker = re.fullmatch(r"Worker<.*>-(\d+)", multiprocessing.current_process().name)
        self.index = int(worker.group(1)) if worker else FaultyEnv.instances
        FaultyEnv.instances += 1
        self.fail_env = fail_env
        self.life_steps = self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.normal(size=4).astype(self.observation_space.dtype), {}

    def step(self, action):
        self.t += 1
        self.life_steps += 1
        obs = self.np_random.normal(size=4).astype(self.observation_space.dtype)
        reward = 1.0
        if self.index == self.fail_env and self.life_steps == self.fail_at:
            if self.mode == "nan_obs":
                obs[2] = np.nan
            elif self.mode == "huge_obs":
                obs[2] = 1e300
            elif self.mode == "nan_reward":
                reward = float("inf")
            elif self.mode == "raise":
                raise RuntimeError("injected failure")
            elif self.mode == "exit":
                os._exit(3)
        return obs, reward, False, self.t >= self.episode, {}


def faulty_factory(mode: str, fail_at: int = 5, fail_env: int = 1):
    """A factory (as PPO accepts) whose ``fail_env``-th copy misbehaves at its ``fail_at``-th step."""

    def make() -> gym.Env:
        return FaultyEnv(mode, fail_at, fail_env)

    FaultyEnv.instances = 0
    make.__name__ = f"faulty-{mode}"
    return make


# Registered ids for command-line tests: environment 1 raises in its worker at its 40th step.
gym.register("PPOKitTest/RaiseAt40-v0", entry_point=FaultyEnv, kwargs={"mode": "raise", "fail_at": 40})
