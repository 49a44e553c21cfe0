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

``--time-limit-s`` stops ``learn()`` once that many seconds have passed since ``BENCH_T0`` (a
wall-clock cap; the final policy is still saved and evaluated, and ``result.json`` says ``capped``).
``--curve-target`` stops evaluating checkpoints after the first one whose mean reaches it.
With ``--hparams zoo`` on a MuJoCo env the observations and rewards go through ``VecNormalize``
(the zoo's ``normalize: true``), whose statistics are saved with every checkpoint for its evaluation.

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
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402
from torch import nn  # noqa: E402


def linear(start: float):
    """SB3 schedule from ``start`` down to 0 (the zoo's ``lin_<value>``)."""
    return lambda progress_remaining: progress_remaining * start


# rl-baselines3-zoo hyperparams/ppo.yml, entry CartPole-v1 (n_timesteps 1e5, MlpPolicy).
ZOO: dict[str, dict] = {
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
    },
}
# rl-baselines3-zoo hyperparams/ppo.yml, entries HalfCheetah-v4 and Hopper-v4 (the same values as its
# HalfCheetah-v3/Hopper-v3; DLR-RM/rl-baselines3-zoo commit 00128b5d): normalize: true, 1 env,
# 256-256 ReLU networks without orthogonal init, log-std starting at -2. Run here on the v5 envs.
MUJOCO_NET = dict(
    log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[256, 256], vf=[256, 256])
)
ZOO["HalfCheetah-v5"] = {
    "n_envs": 1,
    "normalize": True,
    "kwargs": dict(
        batch_size=64,
        n_steps=512,
        gamma=0.98,
        learning_rate=2.0633e-05,
        ent_coef=0.000401762,
        clip_range=0.1,
        n_epochs=20,
        gae_lambda=0.92,
        max_grad_norm=0.8,
        vf_coef=0.58096,
        policy_kwargs=MUJOCO_NET,
    ),
}
ZOO["Hopper-v5"] = {
    "n_envs": 1,
    "normalize": True,
    "kwargs": dict(
        batch_size=32,
        n_steps=512,
        gamma=0.999,
        learning_rate=9.80828e-05,
        ent_coef=0.00229519,
        clip_range=0.2,
        n_epochs=5,
        gae_lambda=0.99,
        max_grad_norm=0.7,
        vf_coef=0.835671,
        policy_kwargs=MUJOCO_NET,
    ),
}


class Recorder(BaseCallback):
    """Logs finished episodes (from the Monitor wrapper's ``info["episode"]``) and saves checkpoints."""

    def __init__(self, out: Path, checkpoint_every: int, time_limit_s: float = 0.0):
        super().__init__()
        self.out, self.every, self.time_limit_s = out, checkpoint_every, time_limit_s
        self.capped = False
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
        if self.time_limit_s and now >= self.time_limit_s:
            self.capped = True
            return False  # learn() returns; the final policy is saved and evaluated as usual
        return True

    def save_checkpoint(self, now: float) -> None:
        self.last_ckpt = self.num_timesteps
        path = self.out / "checkpoints" / f"step_{self.num_timesteps}.zip"
        self.model.save(path)
        vecnorm = self.model.get_vec_normalize_env()
        if vecnorm is not None:  # its statistics belong to this policy
            vecnorm.save(str(path.with_suffix(".vecnorm.pkl")))
        self.checkpoints.append((self.num_timesteps, now, str(path)))


def load_normalizer(ckpt: str, env_id: str) -> VecNormalize | None:
    """The ``VecNormalize`` statistics saved with checkpoint ``ckpt``, frozen; None without them."""
    stats = Path(ckpt).with_suffix(".vecnorm.pkl")
    if not stats.exists():
        return None
    norm = VecNormalize.load(str(stats), DummyVecEnv([lambda: gym.make(env_id)]))
    norm.training, norm.norm_reward = False, False
    return norm


def evaluate(
    model: PPO, env_id: str, episodes: int, seed: int = 10_000, norm: VecNormalize | None = None
) -> list[float]:
    """Deterministic returns of ``episodes`` fresh episodes, the first episode of each env counted
    (the protocol of ppokit's ``evaluate``: seeds ``seed + i``; counting episodes as they finish
    would over-represent short ones). Raw rewards; observations normalised by ``norm`` if given."""
    venv = gym.make_vec(env_id, num_envs=episodes, vectorization_mode="sync")
    obs, _ = venv.reset(seed=seed)
    returns, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not finished.all():
        action, _ = model.predict(obs if norm is None else norm.normalize_obs(obs), deterministic=True)
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
    p.add_argument("--time-limit-s", type=float, default=0.0, help="Stop learning this long after launch.")
    p.add_argument("--curve-target", type=float, help="Stop evaluating checkpoints once one reaches this.")
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
    if hp.get("normalize"):  # the zoo passes the algorithm's gamma on to VecNormalize
        env = VecNormalize(env, gamma=kwargs.get("gamma", 0.99))
    model = PPO("MlpPolicy", env, seed=args.seed, device="cpu", verbose=0, **kwargs)
    rec = Recorder(args.out, args.checkpoint_every, args.time_limit_s)
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
        "capped": rec.capped,
        "time_limit_s": args.time_limit_s or None,
        "versions": {
            "python": platform.python_version(),
            **{k: metadata.version(k) for k in ("stable-baselines3", "torch", "gymnasium", "numpy")},
        },
    }
    if args.eval_episodes:
        vecnorm = model.get_vec_normalize_env()
        if vecnorm is not None:
            vecnorm.training = False
        returns = evaluate(model, args.env, args.eval_episodes, norm=vecnorm)
        result.update(
            eval_mean=float(np.mean(returns)), eval_std=float(np.std(returns)), eval_returns=returns
        )
        curve = []
        for step, t, path in rec.checkpoints:  # after training: outside the timed part
            norm = load_normalizer(path, args.env)
            r = evaluate(PPO.load(path, device="cpu"), args.env, args.eval_episodes, norm=norm)
            curve.append((step, round(t, 4), float(np.mean(r))))
            if args.curve_target is not None and curve[-1][2] >= args.curve_target:
                break  # the first checkpoint to reach the target is all the benchmark asks of the curve
        write_csv(args.out / "checkpoints.csv", ["step", "time_s", "eval_mean"], curve)
    (args.out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
