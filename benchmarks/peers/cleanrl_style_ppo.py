"""A CleanRL-*style* single-file PPO for discrete actions, WRITTEN BY THE PPOKIT AUTHORS.

This is NOT CleanRL's code. CleanRL's ``ppo.py`` cannot run on this machine's stack: PyPI's newest
cleanrl for Python 3.11 (0.4.8) ships the 2020 ``ppo.py`` for gym <= 0.21 (it stops at
``from gym.wrappers import Monitor``), and cleanrl 1.x requires Python < 3.11 (see
``peers_setup.check_cleanrl``; issue 17's ``side_by_side.py`` no longer runs this file or the check:
its goals name SB3, and goal 4 needs continuous actions, which this file lacks). So that it shows
the shape of CleanRL's program -- one loop, ``torch.distributions.Categorical``, a Python
``SyncVectorEnv`` -- this file follows the algorithm and the default hyperparameters documented for
CleanRL's ``ppo.py`` (4 envs, 128 steps, 4 minibatches, 4 epochs, lr 2.5e-4 annealed, gamma 0.99,
GAE lambda 0.95, clip 0.2 also on the value, entropy 0.01, value 0.5, grad norm 0.5, 500k steps;
truncation treated as termination, as there). Its speed says how a straightforward single-file PPO
does here; it is not a measurement of CleanRL itself. Known differences that make it *faster* than
CleanRL's script would be: no TensorBoard/W&B writes, and one torch thread (CleanRL leaves torch's
default, all cores, which on 2 shared cores mostly spins).

Writes the files of ``sb3_run.py`` (episodes.csv, checkpoints.csv, result.json) into ``--out``.
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
from torch.distributions import Categorical  # noqa: E402


def layer(in_dim: int, out_dim: int, std: float = np.sqrt(2)) -> nn.Linear:
    """Orthogonal weights, zero bias (Huang et al. 2022, implementation detail 2)."""
    lin = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(lin.weight, std)
    nn.init.constant_(lin.bias, 0.0)
    return lin


class Agent(nn.Module):
    """Separate 64-64 tanh actor and critic."""

    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        self.critic = nn.Sequential(
            layer(obs_dim, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 1, 1.0)
        )
        self.actor = nn.Sequential(
            layer(obs_dim, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, n_actions, 0.01)
        )

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        dist = Categorical(logits=self.actor(x))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(x)


def evaluate(agent: Agent, env_id: str, episodes: int, seed: int = 10_000) -> list[float]:
    """Deterministic (argmax) returns of the first episode of each of ``episodes`` envs."""
    venv = gym.make_vec(env_id, num_envs=episodes, vectorization_mode="sync")
    obs, _ = venv.reset(seed=seed)
    returns, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    with torch.no_grad():
        while not finished.all():
            action = agent.actor(torch.as_tensor(obs, dtype=torch.float32)).argmax(-1).numpy()
            obs, reward, terminated, truncated, _ = venv.step(action)
            returns += np.where(finished, 0.0, reward)
            finished |= terminated | truncated
    venv.close()
    return returns.tolist()


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


def main() -> None:  # noqa: C901 - one loop top to bottom, as in CleanRL
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=500_000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=20)
    a = p.parse_args()
    num_envs, num_steps, num_minibatches, update_epochs = 4, 128, 4, 4
    lr, gamma, gae_lambda, clip_coef, ent_coef, vf_coef, max_grad_norm = (
        2.5e-4,
        0.99,
        0.95,
        0.2,
        0.01,
        0.5,
        0.5,
    )
    batch_size = num_envs * num_steps
    minibatch_size = batch_size // num_minibatches
    num_iterations = a.total_timesteps // batch_size
    (a.out / "checkpoints").mkdir(parents=True, exist_ok=True)

    # seeding
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    torch.backends.cudnn.deterministic = True
    torch.set_num_threads(1)  # as the other contestants

    # env setup: SAME_STEP autoreset gives the gymnasium 0.29 behaviour CleanRL's ppo.py was written for
    envs = gym.make_vec(
        a.env,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    obs_dim, n_actions = envs.single_observation_space.shape[0], envs.single_action_space.n
    agent = Agent(obs_dim, n_actions)
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr, eps=1e-5)

    # storage
    obs = torch.zeros((num_steps, num_envs, obs_dim))
    actions = torch.zeros((num_steps, num_envs))
    logprobs = torch.zeros((num_steps, num_envs))
    rewards = torch.zeros((num_steps, num_envs))
    dones = torch.zeros((num_steps, num_envs))
    values = torch.zeros((num_steps, num_envs))

    global_step, episodes, checkpoints, last_ckpt = 0, [], [], 0
    ep_return, ep_len = np.zeros(num_envs), np.zeros(num_envs, dtype=np.int64)
    next_obs = torch.tensor(envs.reset(seed=a.seed)[0], dtype=torch.float32)
    next_done = torch.zeros(num_envs)
    learn_start = time.time()
    for iteration in range(1, num_iterations + 1):
        # annealing the learning rate
        optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * lr

        # the rollout
        for step in range(num_steps):
            global_step += num_envs
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step], logprobs[step] = action, logprob
            raw, reward, terminations, truncations, _ = envs.step(action.numpy())
            done = np.logical_or(terminations, truncations)
            rewards[step] = torch.tensor(reward, dtype=torch.float32)
            next_obs, next_done = (
                torch.tensor(raw, dtype=torch.float32),
                torch.tensor(done, dtype=torch.float32),
            )
            ep_return += reward
            ep_len += 1
            for i in np.flatnonzero(done):  # the episode statistics CleanRL logs as episodic_return
                episodes.append((global_step, float(ep_return[i]), int(ep_len[i]), time.time() - T0))
                ep_return[i], ep_len[i] = 0.0, 0

        with torch.no_grad():
            advantages, returns = gae(
                rewards, values, dones, agent.get_value(next_obs), next_done, gamma, gae_lambda
            )
        batch = (obs.reshape(-1, obs_dim), actions.reshape(-1).long(), logprobs.reshape(-1))
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
            path = a.out / "checkpoints" / f"step_{global_step}.pt"
            torch.save(agent.state_dict(), path)
            checkpoints.append((global_step, time.time() - T0, path))

    learn_s, train_end_s = time.time() - learn_start, time.time() - T0
    if a.checkpoint_every and last_ckpt != global_step:  # the final policy too, as the other drivers
        path = a.out / "checkpoints" / f"step_{global_step}.pt"
        torch.save(agent.state_dict(), path)
        checkpoints.append((global_step, train_end_s, path))
    envs.close()
    with open(a.out / "episodes.csv", "w", newline="") as f:
        csv.writer(f).writerows([("step", "return", "length", "time_s"), *episodes])
    result = {
        "library": "cleanrl-style (ours)",
        "total_timesteps": global_step,
        "learn_s": learn_s,
        "train_end_s": train_end_s,
        "fps": global_step / learn_s,
        "versions": {
            "python": platform.python_version(),
            **{k: metadata.version(k) for k in ("torch", "gymnasium", "numpy")},
        },
    }
    if a.eval_episodes:
        r = evaluate(agent, a.env, a.eval_episodes)
        result.update(eval_mean=float(np.mean(r)), eval_std=float(np.std(r)), eval_returns=r)
        curve = []
        for step, t, path in checkpoints:  # after training: outside the timed part
            agent.load_state_dict(torch.load(path))
            curve.append((step, round(t, 4), float(np.mean(evaluate(agent, a.env, a.eval_episodes)))))
        with open(a.out / "checkpoints.csv", "w", newline="") as f:
            csv.writer(f).writerows([("step", "time_s", "eval_mean"), *curve])
    (a.out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
