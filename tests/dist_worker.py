"""Run by tests/test_distributed.py under torchrun: one rank of a short data-parallel PPO run.

Usage: torchrun --standalone --nproc_per_node N tests/dist_worker.py MODE OUT_DIR
  train  train a few updates; dump parameters, normaliser statistics and every raw observation seen
  grad   one loss/backward on this rank's share of a fixed batch; dump the averaged gradients
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ppokit import distributed
from ppokit.rl.normalization import ObsNormalizer
from ppokit.rl.ppo import PPO

SMALL = dict(num_envs=4, n_steps=16, batch_size=32, n_epochs=2, tensorboard=False, seed=5)


def train(out: Path) -> None:
    seen: list[np.ndarray] = []
    original = ObsNormalizer.__call__

    def recording(self, obs, update=False):
        if update:
            seen.append(np.array(obs, dtype=np.float64))
        return original(self, obs, update)

    ObsNormalizer.__call__ = recording
    info = distributed.init("cpu")
    model = PPO("CartPole-v1", normalize_obs=True, run_dir=out / "run" if info.is_main else None, **SMALL)
    model.learn(3 * 64 * info.world_size)
    tensors = {f"param.{k}": v for k, v in model.policy.state_dict().items()}
    tensors["rms.mean"] = torch.from_numpy(model.obs_norm.rms.mean)
    tensors["rms.var"] = torch.from_numpy(model.obs_norm.rms.var)
    tensors["rms.count"] = torch.tensor(model.obs_norm.rms.count, dtype=torch.float64)
    tensors["seen"] = torch.from_numpy(np.concatenate(seen))
    tensors["num_timesteps"] = torch.tensor(model.num_timesteps)
    model.close()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"rank{info.rank}.safetensors"))


def fixed_batch(model: PPO, n: int) -> dict[str, torch.Tensor]:
    """The same synthetic minibatch on every rank (seeded), shaped like a CartPole rollout."""
    g = torch.Generator().manual_seed(123)
    return {
        "obs": torch.randn(n, 4, generator=g),
        "actions": torch.randint(0, 2, (n,), generator=g),
        "logp_old": -torch.rand(n, generator=g) - 0.3,
        "values_old": torch.randn(n, generator=g),
        "advantages": torch.randn(n, generator=g) * 3 + 1,
        "returns": torch.randn(n, generator=g),
    }


def grad(out: Path, total: int = 64) -> None:
    info = distributed.init("cpu")
    model = PPO("CartPole-v1", vf_clip_range=0.2, ent_coef=0.01, **SMALL)
    data = fixed_batch(model, total)
    share = total // info.world_size
    mine = {k: v[info.rank * share : (info.rank + 1) * share] for k, v in data.items()}
    loss, _ = model.loss(mine, 0.2)
    loss.backward()
    distributed.average_gradients([opt.flat_grad for opt in model.optimizers])
    grads = {k: p.grad.clone() for k, p in model.policy.named_parameters()}
    save_file(grads, str(out / f"grad{info.world_size}-rank{info.rank}.safetensors"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, out = sys.argv[1], Path(sys.argv[2])
    (train if mode == "train" else grad)(out)
    distributed.shutdown()
