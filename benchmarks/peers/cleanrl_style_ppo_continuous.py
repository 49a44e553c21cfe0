"""A CleanRL-*style* single-file PPO for continuous actions, WRITTEN BY THE PPOKIT AUTHORS.

This is NOT CleanRL's code: CleanRL's own scripts cannot run on this machine's stack (PyPI's newest
cleanrl for Python 3.11, 0.4.8, ships the 2020 ``ppo.py`` for gym <= 0.21; cleanrl 1.x requires
Python < 3.11). It follows the algorithm and the default hyperparameters documented for CleanRL's
``ppo_continuous_action.py`` (https://docs.cleanrl.dev/rl-algorithms/ppo/#ppo_continuous_actionpy):
one env, 2,048 steps per rollout, 32 minibatches, 10 epochs, lr 3e-4 annealed to 0 over the run,
gamma 0.99, GAE lambda 0.95, clip 0.2 also on the value, no entropy bonus, value 0.5, grad norm 0.5,
1M steps; a 64-64 tanh actor giving a Normal's mean with a state-independent log std, a separate
64-64 tanh critic; the env wrapped as there: actions clipped to the bounds, observations normalised
by running statistics and clipped to [-10, 10], rewards scaled by a running estimate of the return's
std (gymnasium's ``NormalizeReward``) and clipped to [-10, 10]; truncation treated as termination.
It shows how a straightforward single-file PPO does here, not a measurement of CleanRL itself. One
torch thread, as the other contestants (CleanRL leaves torch's default).

Used by issue 17's goal 4 (``benchmarks/side_by_side.py``) beside SB3 and ppokit: the same options
and output files as ``sb3_run.py`` (episodes.csv, checkpoints.csv + checkpoints/, result.json):
``--time-limit-s`` stops training that many seconds after ``BENCH_T0`` (the harness's clock just
before launch), ``--curve-target`` stops evaluating checkpoints (after training, outside the timed
part) at the first whose deterministic mean return reaches it. A checkpoint holds the networks and
the observation statistics, which its evaluation uses frozen.
"""

from __future__ import annotations

import os
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))  # first, before the slow imports below

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributions import Normal  # noqa: E402


def layer(in_dim: int, out_dim: int, std: float = np.sqrt(2)) -> nn.Linear:
    """Orthogonal weights, zero bias (Huang et al. 2022, implementation detail 2)."""
    lin = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(lin.weight, std)
    nn.init.constant_(lin.bias, 0.0)
    return lin


def gae(rewards, values, dones, next_value, next_done, gamma: float, gae_lambda: float):
    """Advantages and returns of a rollout (https://arxiv.org/abs/1506.02438), bootstrapping the
    value after the last step unless the episode ended there."""
    num_steps = rewards.shape[0]
    next_value = next_value.reshape(1, -1)
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal, nextvalues = 1.0 - next_done, next_value
        else:
            nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values


def update(
    agent, optimizer, batch, epochs, minibatch_size, clip_coef, ent_coef, vf_coef, max_grad_norm
) -> None:
    """Optimizing the policy and value network: clipped surrogate, value loss clipped around the
    rollout's values, minibatch-normalised advantages (CleanRL's update, both of our files)."""
    b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values = batch
    b_inds = np.arange(b_obs.shape[0])
    for _epoch in range(epochs):
        np.random.shuffle(b_inds)
        for start in range(0, len(b_inds), minibatch_size):
            mb = b_inds[start : start + minibatch_size]
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions[mb])
            ratio = (newlogprob - b_logprobs[mb]).exp()
            mb_adv = b_advantages[mb]
            mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            pg_loss = torch.max(
                -mb_adv * ratio, -mb_adv * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
            ).mean()
            newvalue = newvalue.view(-1)
            v_unclipped = (newvalue - b_returns[mb]) ** 2
            v_clipped = b_values[mb] + torch.clamp(newvalue - b_values[mb], -clip_coef, clip_coef)
            v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b_returns[mb]) ** 2).mean()
            loss = pg_loss - ent_coef * entropy.mean() + v_loss * vf_coef
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
            optimizer.step()


class Agent(nn.Module):
    """Separate 64-64 tanh actor (Normal mean, state-independent log std) and critic."""

    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()
        self.critic = nn.Sequential(
            layer(obs_dim, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 1, 1.0)
        )
        self.actor_mean = nn.Sequential(
            layer(obs_dim, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, act_dim, 0.01)
        )
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        mean = self.actor_mean(x)
        dist = Normal(mean, self.actor_logstd.expand_as(mean).exp())
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action).sum(1), dist.entropy().sum(1), self.critic(x)


def make_env(env_id: str, gamma: float, train: bool = True):
    """The wrappers of CleanRL's continuous script; ``train=False``: observation part only."""

    def thunk() -> gym.Env:
        env = gym.wrappers.RecordEpisodeStatistics(gym.wrappers.FlattenObservation(gym.make(env_id)))
        env = gym.wrappers.ClipAction(env)  # the raw return is recorded before the reward wrappers
        env = gym.wrappers.NormalizeObservation(env)
        env = gym.wrappers.TransformObservation(env, lambda o: np.clip(o, -10, 10), env.observation_space)
        if train:
            env = gym.wrappers.NormalizeReward(env, gamma=gamma)
            env = gym.wrappers.TransformReward(env, lambda r: float(np.clip(r, -10, 10)))
        return env

    return thunk


def obs_stats(envs: gym.vector.SyncVectorEnv) -> dict:
    rms = envs.envs[0].get_wrapper_attr("obs_rms")
    return {"mean": rms.mean.copy(), "var": rms.var.copy(), "count": float(rms.count)}


def evaluate(agent: Agent, env_id: str, stats: dict, episodes: int, seed: int = 10_000) -> list[float]:
    """Deterministic (mean action) returns of ``episodes`` episodes, observations normalised with
    the training statistics ``stats``, frozen."""
    returns = []
    for i in range(episodes):
        env = make_env(env_id, 0.99, train=False)()
        rms = env.get_wrapper_attr("obs_rms")
        rms.mean, rms.var, rms.count = stats["mean"].copy(), stats["var"].copy(), stats["count"]
        env.set_wrapper_attr("update_running_mean", False)
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        with torch.no_grad():
            while not done:
                mean = agent.actor_mean(torch.as_tensor(obs, dtype=torch.float32)[None])
                obs, reward, terminated, truncated, _ = env.step(mean[0].numpy())
                total, done = total + float(reward), terminated or truncated
        env.close()
        returns.append(total)
    return returns


def main() -> None:  # noqa: C901 - one loop top to bottom, as in CleanRL
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--time-limit-s", type=float, default=0.0, help="Stop training this long after BENCH_T0.")
    p.add_argument("--curve-target", type=float, help="Stop evaluating checkpoints at the first reaching it.")
    a = p.parse_args()
    num_envs, num_steps, num_minibatches, update_epochs = 1, 2048, 32, 10
    lr, gamma, gae_lambda, clip_coef, ent_coef, vf_coef, max_grad_norm = 3e-4, 0.99, 0.95, 0.2, 0.0, 0.5, 0.5
    batch_size = num_envs * num_steps
    minibatch_size = batch_size // num_minibatches
    num_iterations = a.total_timesteps // batch_size
    (a.out / "checkpoints").mkdir(parents=True, exist_ok=True)

    # seeding
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)  # as the other contestants

    # env setup: SAME_STEP autoreset, the gymnasium 0.29 behaviour CleanRL's script was written for
    envs = gym.vector.SyncVectorEnv(
        [make_env(a.env, gamma) for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = Agent(obs_dim, act_dim)
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr, eps=1e-5)

    # storage
    obs = torch.zeros((num_steps, num_envs, obs_dim))
    actions = torch.zeros((num_steps, num_envs, act_dim))
    logprobs, rewards, dones, values = (torch.zeros((num_steps, num_envs)) for _ in range(4))

    global_step, episodes, checkpoints, last_ckpt, capped = 0, [], [], 0, False
    next_obs = torch.tensor(envs.reset(seed=a.seed)[0], dtype=torch.float32)
    next_done = torch.zeros(num_envs)

    def save_checkpoint(now: float) -> None:
        path = a.out / "checkpoints" / f"step_{global_step}.pt"
        torch.save({"agent": agent.state_dict(), "obs_rms": obs_stats(envs)}, path)
        checkpoints.append((global_step, now, path))

    learn_start = time.time()
    for iteration in range(1, num_iterations + 1):
        optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * lr

        # the rollout
        for step in range(num_steps):
            global_step += num_envs
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step], logprobs[step] = action, logprob
            raw, reward, terminations, truncations, infos = envs.step(action.numpy())
            done = np.logical_or(terminations, truncations)
            rewards[step] = torch.tensor(reward, dtype=torch.float32)  # normalised and clipped
            next_obs, next_done = (
                torch.tensor(raw, dtype=torch.float32),
                torch.tensor(done, dtype=torch.float32),
            )
            final = infos.get("final_info", {})  # SAME_STEP autoreset: the finished episode's info
            for i in np.flatnonzero(final.get("_episode", [])):  # the raw return, as CleanRL logs it
                ep = final["episode"]
                episodes.append((global_step, float(ep["r"][i]), int(ep["l"][i]), time.time() - T0))
        if a.time_limit_s and time.time() - T0 >= a.time_limit_s:
            capped = True

        with torch.no_grad():
            advantages, returns = gae(
                rewards, values, dones, agent.get_value(next_obs), next_done, gamma, gae_lambda
            )
        batch = (obs.reshape(-1, obs_dim), actions.reshape(-1, act_dim), logprobs.reshape(-1))
        batch += (advantages.reshape(-1), returns.reshape(-1), values.reshape(-1))
        update(
            agent,
            optimizer,
            batch,
            update_epochs,
            minibatch_size,
            clip_coef,
            ent_coef,
            vf_coef,
            max_grad_norm,
        )

        if a.checkpoint_every and global_step // a.checkpoint_every > last_ckpt // a.checkpoint_every:
            last_ckpt = global_step
            save_checkpoint(time.time() - T0)
        if capped:
            break

    learn_s, train_end_s = time.time() - learn_start, time.time() - T0
    if a.checkpoint_every and last_ckpt != global_step:  # the final policy too, as the other drivers
        save_checkpoint(train_end_s)
    final_stats = obs_stats(envs)
    envs.close()
    with open(a.out / "episodes.csv", "w", newline="") as f:
        csv.writer(f).writerows([("step", "return", "length", "time_s"), *episodes])
    result = {
        "library": "cleanrl-style (ours)",
        "total_timesteps": global_step,
        "learn_s": learn_s,
        "train_end_s": train_end_s,
        "fps": global_step / learn_s,
        "capped": capped,
        "time_limit_s": a.time_limit_s or None,
        "versions": {
            "python": platform.python_version(),
            **{k: metadata.version(k) for k in ("torch", "gymnasium", "numpy")},
        },
    }
    if a.eval_episodes:
        r = evaluate(agent, a.env, final_stats, a.eval_episodes)
        result.update(eval_mean=float(np.mean(r)), eval_std=float(np.std(r)), eval_returns=r)
        curve = []
        for step, t, path in checkpoints:  # after training: outside the timed part
            ckpt = torch.load(path, weights_only=False)
            agent.load_state_dict(ckpt["agent"])
            curve.append(
                (step, round(t, 4), float(np.mean(evaluate(agent, a.env, ckpt["obs_rms"], a.eval_episodes))))
            )
            if a.curve_target is not None and curve[-1][2] >= a.curve_target:
                break
        with open(a.out / "checkpoints.csv", "w", newline="") as f:
            csv.writer(f).writerows([("step", "time_s", "eval_mean"), *curve])
    (a.out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
