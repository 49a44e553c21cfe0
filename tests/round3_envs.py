"""Environments for ``test_reliability_round3.py`` (issue 34), importable by subprocesses too:
``import round3_envs`` with ``tests/`` on PYTHONPATH registers the ids below."""

from __future__ import annotations

import sys
import time

import gymnasium as gym
import numpy as np


class _Base(gym.Env):
    """CartPole's shapes (obs [4], 2 actions), episodes of 10 steps."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = self.life = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        self.life += 1
        return np.full(4, 0.1 * self.t, np.float32), 1.0, self.t >= 10, False, {}


class SleepyEnv(_Base):
    """Sleeps ``seconds`` at its ``sleep_at``-th step (a step that hangs)."""

    def __init__(self, sleep_at: int = 40, seconds: float = 120.0) -> None:
        super().__init__()
        self.sleep_at, self.seconds = sleep_at, seconds

    def step(self, action):
        if self.life + 1 == self.sleep_at:
            time.sleep(self.seconds)
        return super().step(action)


CLOSED = []


class CloseRaisesEnv(_Base):
    """Its first ``close()`` in the process raises (the training env's); later ones do not."""

    def close(self):
        if not CLOSED:
            CLOSED.append(True)
            raise RuntimeError("close failed on purpose")


class CloseExitsEnv(_Base):
    """Its first ``close()`` in the process calls sys.exit(0) (user code ending the process
    "successfully")."""

    def close(self):
        if not CLOSED:
            CLOSED.append(True)
            sys.exit(0)


gym.register("PPOKitR3/Plain-v0", entry_point=_Base)
gym.register("PPOKitR3/Sleepy-v0", entry_point=SleepyEnv)
gym.register("PPOKitR3/CloseRaises-v0", entry_point=CloseRaisesEnv)
gym.register("PPOKitR3/CloseExits-v0", entry_point=CloseExitsEnv)
