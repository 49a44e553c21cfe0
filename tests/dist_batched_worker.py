"""Run by tests/test_distributed.py under torchrun: one rank of a short data-parallel PPO run
on a batched torch env (issue 32).

Usage: torchrun --standalone --nproc_per_node N tests/dist_batched_worker.py OUT_DIR [resume]
Trains a few updates on ppokit/CartPoleTorch-v0 with the observation normaliser and reward scaling
on; dumps the parameters, the normaliser's statistics and every raw observation folded into them.
``resume``: continue from the newest checkpoint of OUT_DIR/run for one more rollout instead.
``grad``: one loss/backward of an asymmetric actor-critic with Beta actions on this rank's share of a
fixed batch; dumps the averaged gradients (N ranks with batch B must equal 1 rank with N*B).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ppokit import distributed
from ppokit.rl.batched.collector import DeviceObsNormalizer
from ppokit.rl.ppo import PPO
from ppokit.rl.torch_envs import PointMassTorch, RslRlVecEnv

SMALL = dict(num_envs=16, n_steps=8, batch_size=64, n_epochs=2, tensorboard=False, seed=5)


def main(out: Path, resume: bool) -> None:
    seen: list[torch.Tensor] = []
    original = DeviceObsNormalizer.__call__

    def recording(self, obs, update=False):
        if update:
            seen.append(torch.as_tensor(obs, dtype=torch.float64).clone())
        return original(self, obs, update)

    DeviceObsNormalizer.__call__ = recording
    info = distributed.init("cpu")
    if resume:  # a checkpoint (not the run directory): no rank writes
        model = PPO.resume(max((out / "run" / "checkpoints").iterdir()))
        seen.clear()  # only what each rank collects after the resume
        model.learn(16 * 8 * info.world_size, reset_num_timesteps=False)
    else:
        model = PPO(
            "ppokit/CartPoleTorch-v0", normalize_obs=True, normalize_reward=True,
            run_dir=out / "run" if info.is_main else None, **SMALL,
        )  # fmt: skip
        model.learn(3 * 16 * 8 * info.world_size)
    tensors = {f"param.{k}": v for k, v in model.policy.state_dict().items()}
    tensors.update({f"rms.{k}": v for k, v in model.obs_norm.state_dict().items()})
    tensors["reward_rms.count"] = model.reward_scaler.rms.count.cpu()
    tensors["seen"] = torch.cat(seen)
    tensors["num_timesteps"] = torch.tensor(model.num_timesteps)
    model.close()
    tensors["env_state_restored"] = torch.tensor(bool(resume and model.resume_info["env_state_restored"]))
    name = f"{'resumed-' if resume else ''}rank{info.rank}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / name))


def grad(out: Path, total: int = 64) -> None:
    info = distributed.init("cpu")
    env = RslRlVecEnv(PointMassTorch(num_envs=16, max_episode_steps=10))
    model = PPO(env, network={"action_bounds": "beta"}, vf_clip_range=0.2, ent_coef=0.01, **SMALL)
    g = torch.Generator().manual_seed(123)  # the same batch on every rank, shaped like a rollout
    data = {
        "obs": torch.randn(total, 12, generator=g),
        "actions": torch.rand(total, 2, generator=g).clamp(0.05, 0.95),
        "logp_old": -torch.rand(total, generator=g) - 0.3,
        "values_old": torch.randn(total, generator=g),
        "advantages": torch.randn(total, generator=g) * 3 + 1,
        "returns": torch.randn(total, generator=g),
    }
    share = total // info.world_size
    mine = {k: v[info.rank * share : (info.rank + 1) * share] for k, v in data.items()}
    loss, _ = model.loss(mine, 0.2)
    loss.backward()
    distributed.average_gradients([p.grad for p in model.policy.parameters()])
    grads = {k: p.grad.clone() for k, p in model.policy.named_parameters()}
    save_file(grads, str(out / f"grad{info.world_size}-rank{info.rank}.safetensors"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[2:] == ["grad"]:
        grad(Path(sys.argv[1]))
    else:
        main(Path(sys.argv[1]), sys.argv[2:] == ["resume"])
    distributed.shutdown()
