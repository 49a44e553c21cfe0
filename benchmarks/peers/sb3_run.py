"""One Stable-Baselines3 PPO run for the side-by-side benchmark (runs in the peers venv).

    benchmarks/.peers/bin/python benchmarks/peers/sb3_run.py --env CartPole-v1 --hparams zoo \
        --seed 0 --total-timesteps 100000 --out benchmarks/out/.../sb3-zoo-s0

Writes into ``--out`` the same files the ppokit driver writes, so every library is measured the
same way by ``benchmarks/side_by_side.py``:

- ``episodes.csv``: every finished training episode: ``step, return, length, time_s``, where
  ``time_s`` counts from ``BENCH_T0`` (the harness's clock just before it launched this process), so
  interpreter start-up and imports are inside the measured time, as for every library.
- ``checkpoints.csv`` + ``checkpoints/step_N.zip``: the policy every ``--checkpoint-every`` steps
  with the wall-clock time it was taken, evaluated *after* training (outside the timed part) for
  the plot of evaluation return against wall-clock seconds.
- ``result.json``: steps/s of ``learn()``, the final evaluation and the library versions.

This file only imports SB3, gymnasium and torch; it must not import ppokit (another venv).
"""

from __future__ import annotations

import os
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))  # first, before the slow imports below

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402


def linear(start: float):
    """SB3 schedule from ``start`` down to 0 (the zoo's ``lin_<value>``)."""
    return lambda progress_remaining: progress_remaining * start


# rl-baselines3-zoo hyperparams/ppo.yml, entry CartPole-v1 (n_timesteps 1e5, MlpPolicy).
ZOO = {
    "CartPole-v1": {
        "n_envs": 8,
        "kwargs": dict(
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=linear(1e-3),
            clip_range=linear(0.2),
        ),
    }
}


class Recorder(BaseCallback):
    """Logs finished episodes (from the Monitor wrapper's ``info["episode"]``) and saves checkpoints."""

    def __init__(self, out: Path, checkpoint_every: int):
        super().__init__()
        self.out, self.every = out, checkpoint_every
        self.episodes: list[tuple[int, float, int, float]] = []
        self.checkpoints: list[tuple[int, float, str]] = []
        self.last_ckpt = 0

    def _on_step(self) -> bool:
        now = time.time() - T0
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is not None:
                self.episodes.append((self.num_timesteps, float(ep["r"]), int(ep["l"]), now))
        if self.every and self.num_timesteps // self.every > self.last_ckpt // self.every:
            self.save_checkpoint(now)
        return True

    def save_checkpoint(self, now: float) -> None:
        self.last_ckpt = self.num_timesteps
        path = self.out / "checkpoints" / f"step_{self.num_timesteps}.zip"
        self.model.save(path)
        self.checkpoints.append((self.num_timesteps, now, str(path)))


def evaluate(model: PPO, env_id: str, episodes: int, seed: int = 10_000) -> list[float]:
    """Deterministic returns of ``episodes`` fresh episodes, the first episode of each env counted
    (the protocol of ppokit's ``evaluate``: seeds ``seed + i``; counting episodes as they finish
    would over-represent short ones)."""
    venv = gym.make_vec(env_id, num_envs=episodes, vectorization_mode="sync")
    obs, _ = venv.reset(seed=seed)
    returns, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not finished.all():
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = venv.step(action)
        returns += np.where(finished, 0.0, reward)
        finished |= terminated | truncated
    venv.close()
    return returns.tolist()


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--hparams", choices=("zoo", "defaults"), default="zoo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--total-timesteps", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num-envs", type=int, help="Override the number of envs (growth sweep).")
    p.add_argument("--width", type=int, help="Hidden width of both 2-layer MLPs (growth sweep).")
    p.add_argument("--batch-size", type=int, help="Override the minibatch size (growth sweep).")
    p.add_argument("--eval-episodes", type=int, default=20, help="0: no final evaluation.")
    p.add_argument("--checkpoint-every", type=int, default=0, help="Steps between curve checkpoints.")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default, as SB3 ships).")
    args = p.parse_args()
    (args.out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if args.threads:  # 1 by default, as ppokit's torch_threads=1 (small MLPs: one thread is fastest)
        torch.set_num_threads(args.threads)

    if args.hparams == "zoo" and args.env not in ZOO:
        p.error(f"--hparams zoo is written down here for {', '.join(ZOO)} only, not {args.env}")
    hp = ZOO[args.env] if args.hparams == "zoo" else {"n_envs": 1, "kwargs": {}}
    kwargs = dict(hp["kwargs"])
    n_envs = args.num_envs or hp["n_envs"]
    if args.batch_size:
        kwargs["batch_size"] = args.batch_size
    if args.width:
        kwargs["policy_kwargs"] = dict(net_arch=dict(pi=[args.width] * 2, vf=[args.width] * 2))
    env = make_vec_env(args.env, n_envs=n_envs, seed=args.seed)  # DummyVecEnv + Monitor, as the zoo
    model = PPO("MlpPolicy", env, seed=args.seed, device="cpu", verbose=0, **kwargs)
    rec = Recorder(args.out, args.checkpoint_every)
    start = time.time()
    model.learn(args.total_timesteps, callback=rec)
    learn_s = time.time() - start
    train_end_s = time.time() - T0
    if args.checkpoint_every and rec.last_ckpt != model.num_timesteps:
        rec.save_checkpoint(train_end_s)  # the final policy, as ppokit's final checkpoint
    write_csv(args.out / "episodes.csv", ["step", "return", "length", "time_s"], rec.episodes)

    result = {
        "library": "stable-baselines3",
        "hparams": args.hparams,
        "n_envs": n_envs,
        "total_timesteps": int(model.num_timesteps),
        "learn_s": learn_s,
        "train_end_s": train_end_s,
        "fps": model.num_timesteps / learn_s,
        "versions": {
            "python": platform.python_version(),
            **{k: metadata.version(k) for k in ("stable-baselines3", "torch", "gymnasium", "numpy")},
        },
    }
    if args.eval_episodes:
        returns = evaluate(model, args.env, args.eval_episodes)
        result.update(
            eval_mean=float(np.mean(returns)), eval_std=float(np.std(returns)), eval_returns=returns
        )
        curve = []
        for step, t, path in rec.checkpoints:  # after training: outside the timed part
            r = evaluate(PPO.load(path, device="cpu"), args.env, args.eval_episodes)
            curve.append((step, round(t, 4), float(np.mean(r))))
        write_csv(args.out / "checkpoints.csv", ["step", "time_s", "eval_mean"], curve)
    (args.out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
