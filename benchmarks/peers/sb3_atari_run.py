"""Stable-Baselines3 PPO ``CnnPolicy`` on Pong for the Atari speed comparison (runs in the peers venv).

    benchmarks/.peers/bin/python benchmarks/peers/sb3_atari_run.py --total-timesteps 3072 --out FILE.json

SB3's own Atari pipeline (``make_atari_env``: no-op reset, frameskip 4 with max-pool, episodic life,
FIRE reset, 84x84 gray, reward clipping; ``VecFrameStack`` 4) on ``PongNoFrameskip-v4`` (no sticky
actions), with CleanRL's ``ppo_atari.py`` hyperparameters. Writes steps/s of ``learn()`` to ``--out``.
Imports SB3, gymnasium, ale-py and torch only (not ppokit: another venv).
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import metadata

import ale_py
import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecFrameStack


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--total-timesteps", type=int, default=3072)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=8, seed=args.seed), n_stack=4)
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=128,
        batch_size=256,
        n_epochs=4,
        learning_rate=lambda f: 2.5e-4 * f,
        clip_range=0.1,
        clip_range_vf=0.1,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        gamma=0.99,
        gae_lambda=0.95,
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
        "learn_s": elapsed,
        "steps_per_s": model.num_timesteps / elapsed,
        "cpu_s": cpu,
        "steps_per_cpu_s": model.num_timesteps / cpu,
        "versions": {k: metadata.version(k) for k in ("stable-baselines3", "torch", "gymnasium", "ale-py")},
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
