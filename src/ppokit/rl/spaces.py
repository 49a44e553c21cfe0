"""Observation spaces: how an environment's observations are stored in the rollout and read by the
policy (``ObsLayout``), for every standard Gymnasium space.

- **Box** (any shape, not an image): stored float32 in its own shape; the MLP flattens it.
- **image** (a uint8 Box in [0, 255] of shape ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with C <= 4):
  stored as uint8 in its own shape (4x less memory than float32), scaled by 1/255 on the device
  by the CNN encoder (``rl/encoders.py``), as SB3 and CleanRL do.
- **Discrete, MultiDiscrete, MultiBinary, Dict, Tuple** (nested freely): *packed* into one flat
  vector per observation, one slot per leaf value (an index for Discrete and each MultiDiscrete
  entry, the bits of a MultiBinary, the values of a Box, the pixels of an image); uint8 when every
  leaf fits in a byte, else float32. The policy's encoder unpacks it with ``leaves``: one-hot for
  discrete leaves, a CNN for images, the values for vectors.

Other spaces (Text, Graph, Sequence, OneOf) are refused with an error naming the key (fail closed).
``encode`` takes a batch as a vector env returns it; ``is_single`` tells one observation from a batch
(``PPO.predict`` accepts both, exactly as the env gives them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ppokit.errors import EnvConfigError

LEAF_KINDS = ("box", "image", "discrete", "multidiscrete", "multibinary")
LAYOUT_KINDS = ("box", "image", "packed")


def image_layout(space: gym.Space) -> str | None:
    """``"last"`` (H, W, C), ``"first"`` (C, H, W) or ``"gray"`` (H, W) for an image space, else None.

    An image is a uint8 Box with bounds 0 and 255 (SB3's ``is_image_space`` rule); with 3 dims the
    channel axis is the one of size <= 4 (channels-last when both ends qualify)."""
    if not isinstance(space, gym.spaces.Box) or space.dtype != np.uint8:
        return None
    if not (np.all(space.low == 0) and np.all(space.high == 255)):
        return None
    if len(space.shape) == 2:
        return "gray"
    if len(space.shape) == 3:
        if space.shape[-1] <= 4:
            return "last"
        if space.shape[0] <= 4:
            return "first"
    return None


@dataclass
class Leaf:
    """One leaf of an observation space: ``path`` (the keys/indices to it), ``kind`` (LEAF_KINDS),
    ``shape`` (its own shape), ``offset``/``size`` (its slots in a packed vector), ``nvec`` (category
    counts of discrete leaves), ``start`` (their offsets), ``channels`` (images: first/last/gray)."""

    path: tuple
    kind: str
    shape: tuple[int, ...]
    offset: int
    size: int
    nvec: tuple[int, ...] = ()
    start: tuple[int, ...] = ()
    channels: str = ""


def _leaves(space: gym.Space, path: tuple, out: list[Leaf], offset: int) -> int:
    """Append the leaves of ``space`` to ``out`` (depth first, Dict keys in the space's order)."""
    where = "observation" + "".join(f"[{p!r}]" for p in path)
    if isinstance(space, gym.spaces.Dict):
        for key, sub in space.spaces.items():
            offset = _leaves(sub, (*path, key), out, offset)
        return offset
    if isinstance(space, gym.spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            offset = _leaves(sub, (*path, i), out, offset)
        return offset
    if isinstance(space, gym.spaces.Discrete):
        leaf = Leaf(path, "discrete", (), offset, 1, (int(space.n),), (int(space.start),))
    elif isinstance(space, gym.spaces.MultiDiscrete):
        nvec, start = np.asarray(space.nvec).ravel(), np.asarray(space.start).ravel()
        leaf = Leaf(path, "multidiscrete", tuple(space.shape), offset, len(nvec))
        leaf.nvec, leaf.start = tuple(int(n) for n in nvec), tuple(int(s) for s in start)
    elif isinstance(space, gym.spaces.MultiBinary):
        shape = tuple(np.atleast_1d(space.n).tolist()) if space.shape is None else tuple(space.shape)
        leaf = Leaf(path, "multibinary", shape, offset, int(np.prod(shape)))
    elif isinstance(space, gym.spaces.Box):
        channels = image_layout(space) or ""
        leaf = Leaf(
            path, "image" if channels else "box", tuple(space.shape), offset, int(np.prod(space.shape))
        )
        leaf.channels = channels
    else:
        raise EnvConfigError(
            f"{where} space {space} is not supported; supported: Box, Discrete, MultiDiscrete, "
            "MultiBinary, and Dict/Tuple of those (drop or convert other keys with a wrapper in "
            "env_wrappers, e.g. gymnasium.wrappers.FilterObservation or minigrid.wrappers.ImgObsWrapper)"
        )
    out.append(leaf)
    return offset + leaf.size


def _fits_uint8(leaf: Leaf) -> bool:
    if leaf.kind in ("image", "multibinary"):
        return True
    if leaf.kind in ("discrete", "multidiscrete"):
        return max(leaf.nvec) <= 256
    return False


class ObsLayout:
    """How observations of ``space`` are stored (``kind``, ``shape``, ``dtype``) and unpacked
    (``leaves``); see the module docstring."""

    def __init__(self, space: gym.Space):
        self.space = space
        self.leaves: list[Leaf] = []
        size = _leaves(space, (), self.leaves, 0)
        top = self.leaves[0] if len(self.leaves) == 1 and self.leaves[0].path == () else None
        if top is not None and top.kind in ("box", "image"):
            self.kind = top.kind
            self.shape = tuple(space.shape)
            self.np_dtype = np.dtype(np.uint8 if top.kind == "image" else np.float32)
        else:
            self.kind = "packed"
            self.shape = (size,)
            self.np_dtype = np.dtype(np.uint8 if all(map(_fits_uint8, self.leaves)) else np.float32)
        self.dtype = torch.uint8 if self.np_dtype == np.uint8 else torch.float32

    def __repr__(self) -> str:
        return f"ObsLayout(kind={self.kind!r}, shape={self.shape}, dtype={self.np_dtype.name})"

    @staticmethod
    def _get(obs: Any, path: tuple) -> Any:
        for p in path:
            obs = obs[p]
        return obs

    def encode(self, obs: Any) -> np.ndarray:
        """A batch of observations as a vector env gives it -> ``[B, *shape]`` in the storage dtype."""
        if self.kind != "packed":
            return np.asarray(obs, dtype=self.np_dtype)
        parts = []
        for leaf in self.leaves:
            x = np.asarray(self._get(obs, leaf.path))
            x = x.reshape(x.shape[0], -1) if x.ndim > 0 else x.reshape(1, 1)
            if leaf.kind in ("discrete", "multidiscrete"):
                x = x - np.asarray(leaf.start)  # store 0-based category indices
            parts.append(x.astype(self.np_dtype, copy=False))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def encode_one(self, obs: Any) -> np.ndarray:
        """One observation -> ``[*shape]`` (e.g. ``info["final_obs"][i]`` of a vector env)."""
        return self.encode(self.batch_of_one(obs))[0]

    def batch_of_one(self, obs: Any) -> Any:
        """One observation as a batch of one (nested like the space)."""
        if isinstance(obs, dict):
            return {k: self.batch_of_one(v) for k, v in obs.items()}
        if isinstance(obs, tuple):
            return tuple(self.batch_of_one(v) for v in obs)
        return np.asarray(obs)[None]

    def is_single(self, obs: Any) -> bool:
        """Whether ``obs`` is one observation (else a batch): its first leaf has the leaf's own shape."""
        leaf = self.leaves[0]
        return np.ndim(self._get(obs, leaf.path)) == len(leaf.shape)

    def signature(self) -> dict[str, Any]:
        """JSON description saved with a model (``envs.space_signature``)."""
        if self.kind != "packed":
            return {"obs_shape": list(self.shape)}
        return {
            "obs_shape": list(self.shape),
            "obs_leaves": [
                [list(map(str, lf.path)), lf.kind, list(lf.shape), list(lf.nvec)] for lf in self.leaves
            ],
        }
