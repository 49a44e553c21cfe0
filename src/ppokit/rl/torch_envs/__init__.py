"""Batched environments written in torch: N instances stepped as tensors on one device.

Registered as Gymnasium vector envs, so ``gym.make_vec("ppokit/CartPoleTorch-v0", num_envs=4096)``
and ``ppokit train --env ppokit/CartPoleTorch-v0`` find them (docs/batched-envs.md):

- ``ppokit/CartPoleTorch-v0``: Gymnasium's CartPole-v1 dynamics (target return 475 of 500);
- ``ppokit/PendulumTorch-v0``: Gymnasium's Pendulum-v1 dynamics (good policies reach about -200);
- ``ppokit/PointMassTorch-v0``: a 2-D point mass reaching a goal, with a privileged critic group.

``RslRlVecEnv`` shows any of them through rsl_rl's VecEnv interface.
"""

from __future__ import annotations

import gymnasium as gym

from ppokit.rl.torch_envs.base import TorchVectorEnv
from ppokit.rl.torch_envs.classic import CartPoleTorch, PendulumTorch
from ppokit.rl.torch_envs.point_mass import PointMassTorch
from ppokit.rl.torch_envs.rsl import RslRlVecEnv

__all__ = ["CartPoleTorch", "PendulumTorch", "PointMassTorch", "RslRlVecEnv", "TorchVectorEnv", "ENV_IDS"]

ENV_IDS = {
    "ppokit/CartPoleTorch-v0": CartPoleTorch,
    "ppokit/PendulumTorch-v0": PendulumTorch,
    "ppokit/PointMassTorch-v0": PointMassTorch,
}

for _id, _cls in ENV_IDS.items():
    if _id not in gym.registry:
        gym.register(_id, vector_entry_point=f"{_cls.__module__}:{_cls.__name__}")
