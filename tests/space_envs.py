"""Tiny environments for every kind of space (tests/test_rl_spaces.py). Each has a learnable signal a
random policy cannot exploit, and episodes of ``horizon`` steps, so a mean return says how much was
learned: random play scores about half of the maximum, a learned policy nearly all of it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class _Episodic(gym.Env):
    """Fixed-length episodes; subclasses draw a fresh observation each step (``_draw``) and score the
    action against it (``_score``, in [0, 1])."""

    horizon = 8

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.obs = self._draw()
        return self.obs, {}

    def step(self, action):
        reward = float(self._score(action))
        self.t += 1
        self.obs = self._draw()
        return self.obs, reward, False, self.t >= self.horizon, {}


def _bright_side_image(rng: np.random.Generator, shape: tuple[int, int, int], side: int) -> np.ndarray:
    """A dim noisy image (H, W, C) with a bright 3x3 square in its left (0) or right (1) half."""
    h, w, c = shape
    img = rng.integers(0, 60, size=shape, dtype=np.uint8)
    row = int(rng.integers(0, h - 3))
    col = int(rng.integers(0, w // 2 - 3)) + (w // 2 if side else 0)
    img[row : row + 3, col : col + 3, :] = 255
    return img


class BrightSideEnv(_Episodic):
    """Pixels: which half of the image holds the bright square? Action 0 (left) or 1 (right).

    ``channels``: ``last`` (H, W, C) or ``first`` (C, H, W)."""

    def __init__(self, size: int = 12, channels: str = "last"):
        self.size, self.channels = size, channels
        shape = (size, size, 1) if channels == "last" else (1, size, size)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def _draw(self):
        self.side = int(self.np_random.integers(2))
        img = _bright_side_image(self.np_random, (self.size, self.size, 1), self.side)
        return img if self.channels == "last" else np.ascontiguousarray(img.transpose(2, 0, 1))

    def _score(self, action):
        return int(action) == self.side


class DictObsEnv(_Episodic):
    """Dict observation (image + vector + discrete); MultiDiscrete action whose three parts each read
    one key: the bright side of the image, the sign of the vector's first entry, the discrete value."""

    def __init__(self):
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (10, 10, 1), np.uint8),
                "vector": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                "mode": gym.spaces.Discrete(3),
            }
        )
        self.action_space = gym.spaces.MultiDiscrete([2, 2, 3])

    def _draw(self):
        self.side = int(self.np_random.integers(2))
        return {
            "image": _bright_side_image(self.np_random, (10, 10, 1), self.side),
            "vector": self.np_random.uniform(-1, 1, 2).astype(np.float32),
            "mode": int(self.np_random.integers(3)),
        }

    def _score(self, action):
        a = np.asarray(action)
        right = [self.side, int(self.obs["vector"][0] > 0), self.obs["mode"]]
        return float(np.mean(a == np.asarray(right)))


class CopyBitsEnv(_Episodic):
    """MultiBinary actions: copy the observed bits (reward: the fraction copied right)."""

    def __init__(self, n: int = 4):
        self.n = n
        self.observation_space = gym.spaces.MultiBinary(n)
        self.action_space = gym.spaces.MultiBinary(n)

    def _draw(self):
        return self.np_random.integers(0, 2, self.n).astype(np.int8)

    def _score(self, action):
        return float(np.mean(np.asarray(action) == self.obs))


class MatrixTargetEnv(_Episodic):
    """2-D Box actions: output the observed 2x2 target matrix (reward 1 - mean absolute error / 2)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)

    def _draw(self):
        return self.np_random.uniform(-1, 1, (2, 2)).astype(np.float32)

    def _score(self, action):
        assert np.asarray(action).shape == (2, 2)
        return 1.0 - float(np.mean(np.abs(np.asarray(action) - self.obs))) / 2.0


class TupleObsEnv(_Episodic):
    """Tuple observation (Discrete, Box): choose the discrete value when the Box entry is positive,
    else the next one."""

    def __init__(self):
        self.observation_space = gym.spaces.Tuple(
            (gym.spaces.Discrete(3, start=1), gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
        )
        self.action_space = gym.spaces.Discrete(3)

    def _draw(self):
        return (int(self.np_random.integers(1, 4)), self.np_random.uniform(-1, 1, 1).astype(np.float32))

    def _score(self, action):
        k, x = self.obs
        return int(action) == ((k - 1) + (0 if x[0] > 0 else 1)) % 3


def register_all() -> None:
    """Register the envs above as ``ppokit-test/<Name>-v0`` (idempotent)."""
    for cls in (BrightSideEnv, DictObsEnv, CopyBitsEnv, MatrixTargetEnv, TupleObsEnv):
        env_id = f"ppokit-test/{cls.__name__}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=f"{__name__}:{cls.__name__}")
