"""Stable-Baselines3 PPO ``CnnPolicy`` on Pong for the Atari speed comparison (runs in the peers venv).

    benchmarks/.peers/bin/python benchmarks/peers/sb3_atari_run.py --total-timesteps 3072 --out DIR

SB3's own Atari pipeline (``make_atari_env``: no-op reset, frameskip 4 with max-pool, episodic life,
FIRE reset, 84x84 gray, reward clipping; ``VecFrameStack`` 4) on ``PongNoFrameskip-v4`` (no sticky
actions), with CleanRL's ``ppo_atari.py`` hyperparameters. Writes steps/s of ``learn()`` to
``--out``/result.json. ``--num-envs``, ``--batch-size`` and ``--features-dim`` (the width of the
linear layer after the convolutions, 512 in the Nature CNN) are the knobs of the growth tables.
Imports SB3, gymnasium, ale-py and torch only (not ppokit: another venv).
"""

from __future__ import annotations

import os
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))  # first, before the slow imports below

import argparse  # noqa: E402
import json  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import ale_py  # noqa: E402
import gymnasium as gym  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_atari_env  # noqa: E402
from stable_baselines3.common.vec_env import VecFrameStack  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--total-timesteps", type=int, default=3072)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--features-dim", type=int, default=512)
    p.add_argument("--out", type=Path, required=True, help="Directory for result.json.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gym.register_envs(ale_py)
    env = make_atari_env("PongNoFrameskip-v4", n_envs=args.num_envs, seed=args.seed)
    env = VecFrameStack(env, n_stack=4)
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=128,
        batch_size=args.batch_size,
        n_epochs=4,
        learning_rate=lambda f: 2.5e-4 * f,
        clip_range=0.1,
        clip_range_vf=0.1,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        gamma=0.99,
        gae_lambda=0.95,
        policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=args.features_dim)),
        device="cpu",
        seed=args.seed,
        verbose=0,
    )
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(args.total_timesteps)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    result = {
        "library": "sb3",
        "steps": int(model.num_timesteps),
        "total_timesteps": int(model.num_timesteps),
        "learn_s": elapsed,
        "steps_per_s": model.num_timesteps / elapsed,
        "fps": model.num_timesteps / elapsed,
        "train_end_s": time.time() - T0,
        "cpu_s": cpu,
        "steps_per_cpu_s": model.num_timesteps / cpu,
        "versions": {k: metadata.version(k) for k in ("stable-baselines3", "torch", "gymnasium", "ale-py")},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
