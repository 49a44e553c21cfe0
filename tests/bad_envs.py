"""Environments that break the Gymnasium API on purpose, one way each, for the reliability tests and
``tests/test_reliability_probe.py`` (registered as ``PPOKitBad/<Mode>-v0``; importable by subprocesses
with ``tests/`` on PYTHONPATH, or as ``--env bad_envs:PPOKitBad/<Mode>-v0``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

MODES = (
    "WrongShape",
    "RaiseStep",
    "RaiseReset",
    "OldApi",
    "ArrayReward",
    "EmptyBox",
    "RaiseMake",
    "MissingDep",
    "HugeObs",
)


class BadEnv(gym.Env):
    """Observations of shape (4,), 2 actions; at its ``fail_at``-th step (or in reset) it does ``mode``."""

    def __init__(self, mode: str = "RaiseStep", fail_at: int = 3):
        if mode == "RaiseMake":
            raise RuntimeError("injected failure while making the environment")
        if mode == "MissingDep":  # what gymnasium raises for LunarLander without Box2D
            raise gym.error.DependencyNotInstalled(
                "Box2D is not installed, you can install it by run `pip install swig` followed by "
                '`pip install "gymnasium[box2d]"`'
            )
        shape = (0,) if mode == "EmptyBox" else (4,)
        dtype = np.float64 if mode == "HugeObs" else np.float32  # 1e300 is finite in float64 only
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape, dtype)
        self.action_space = gym.spaces.Discrete(2)
        self.mode, self.fail_at, self.t = mode, fail_at, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.mode == "RaiseReset":
            raise ValueError("injected failure in reset")
        self.t = 0
        return np.zeros(self.observation_space.shape, self.observation_space.dtype), {}

    def step(self, action):
        self.t += 1
        obs = np.zeros(self.observation_space.shape, self.observation_space.dtype)
        if self.t >= self.fail_at:
            if self.mode == "HugeObs":
                obs[1] = 1e300
            if self.mode == "WrongShape":
                return np.zeros(7, np.float32), 1.0, False, False, {}
            if self.mode == "RaiseStep":
                raise RuntimeError("injected failure in step")
            if self.mode == "OldApi":
                return obs, 1.0, False, {}
            if self.mode == "ArrayReward":
                return obs, np.ones(3), False, False, {}
        return obs, 1.0, False, self.t >= 20, {}


for _mode in MODES:
    gym.register(
        f"PPOKitBad/{_mode}-v0", entry_point=BadEnv, kwargs={"mode": _mode}, disable_env_checker=True
    )
