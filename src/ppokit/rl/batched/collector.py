"""The rollout of a device-resident batched env: storage, normalisation and episode statistics
stay on the env's device; the hot loop is a few tensor ops per step for all N instances at once (no
numpy, no per-env Python, no host sync: non-finite checks and episode returns are read once per
rollout).

Time-outs (issue 32; Pardo et al. 2018, "Time Limits in Reinforcement Learning",
https://arxiv.org/abs/1712.00378): a truncated step is bootstrapped either with V(true final
observation) (``final_obs``, when the env gives it), or with V(s_t), the value of the observation the
last action was taken in (``value_of_obs``: rsl_rl's ``rewards += gamma * values * time_outs``; with
``next_values[t] = V(s_t)`` GAE's ``r + gamma V(s_t) - V(s_t)`` is exactly that). ``auto`` takes
``final_obs`` wherever the env gives one.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ppokit import distributed
from ppokit.errors import EnvStepError
from ppokit.rl.batched.adapter import BatchedEnv
from ppokit.rl.distributions import ActionDistribution
from ppokit.rl.normalization import merge_moments
from ppokit.rl.policy import Policy
from ppokit.rl.rollout import EpisodeStats, RolloutBuffer

log = logging.getLogger("ppokit")


class DeviceRunningMeanStd:
    """Running mean/variance (Chan et al.'s parallel merge, as ``normalization.RunningMeanStd``) kept
    as float64 tensors on the device; same ``state_dict`` keys, so models save and load alike."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, epsilon: float = 1e-4):
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        self.count = torch.tensor(epsilon, dtype=torch.float64, device=device)
        # several ranks (torchrun): the statistics every rank shared at the last sync, and the moments
        # of this rank's data since then, as ``normalization.RunningMeanStd`` keeps them
        self.synced = (self.mean, self.var, self.count)
        self.fresh: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def update(self, batch: torch.Tensor) -> None:
        """Fold a batch ``[B, *shape]`` in (no host sync)."""
        b = batch.to(torch.float64)
        n = b.shape[0]
        mean, var = b.mean(0), b.var(0, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        self.var = (self.var * self.count + var * n + delta.square() * self.count * n / total) / total
        self.mean = self.mean + delta * n / total
        self.count = total
        if distributed.info().enabled:  # only sync() reads them
            moments = (mean, var, torch.tensor(float(n), dtype=torch.float64, device=b.device))
            self.fresh = moments if self.fresh is None else merge_moments([self.fresh, moments])

    def sync(self) -> None:
        """Merge every rank's data since the last sync into the statistics all ranks shared then (once
        per rollout, through ``distributed.all_gather_objects`` on host copies); afterwards every rank
        holds the statistics of all ranks' data, as one process that saw all of it would."""
        dev = self.mean.device
        fresh = self.fresh or (torch.zeros_like(self.mean), torch.ones_like(self.var), self.count * 0.0)
        parts = distributed.all_gather_objects(tuple(x.cpu() for x in fresh))
        merged = merge_moments([self.synced, *(tuple(x.to(dev) for x in part) for part in parts)])
        self.mean, self.var, self.count = merged
        self.synced, self.fresh = merged, None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Mean, variance and count (float64, on the CPU)."""
        return {"mean": self.mean.cpu(), "var": self.var.cpu(), "count": self.count.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict``."""
        dev = self.mean.device
        self.mean = state["mean"].to(dev, torch.float64)
        self.var = state["var"].to(dev, torch.float64)
        self.count = state["count"].to(dev, torch.float64).reshape(())
        self.synced, self.fresh = (self.mean, self.var, self.count), None  # resume: all ranks load the same


class DeviceObsNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` on the device; numpy in, numpy out for
    ``PPO.predict``."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, clip: float = 10.0, eps: float = 1e-8):
        self.rms = DeviceRunningMeanStd(shape, device)
        self.clip, self.eps = clip, eps

    def __call__(self, obs, update: bool = False):
        if not isinstance(obs, torch.Tensor):
            return self(torch.as_tensor(np.asarray(obs), device=self.rms.mean.device), update).cpu().numpy()
        if update:
            self.rms.update(obs)
        out = (obs - self.rms.mean) / torch.sqrt(self.rms.var + self.eps)
        return out.clamp(-self.clip, self.clip).float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The running statistics."""
        return self.rms.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict``."""
        self.rms.load_state_dict(state)


class DeviceRewardScaler:
    """Rewards divided by the running std of the discounted return (as ``normalization.RewardScaler``)."""

    def __init__(
        self, num_envs: int, gamma: float, device: torch.device, clip: float = 10.0, eps: float = 1e-8
    ):
        self.rms = DeviceRunningMeanStd((), device)
        self.returns = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.gamma, self.clip, self.eps = gamma, clip, eps

    def __call__(self, rewards: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns)
        self.returns = torch.where(done, 0.0, self.returns)
        return (rewards / torch.sqrt(self.rms.var + self.eps)).clamp(-self.clip, self.clip).float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The return statistics and each env's running discounted return."""
        return {**self.rms.state_dict(), "returns": self.returns.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict`` (``returns`` is optional: a model file has none)."""
        self.rms.load_state_dict(state)
        if "returns" in state:
            self.returns = state["returns"].to(self.returns.device, torch.float64).clone()


def to_env_actions(dist: ActionDistribution, actions: torch.Tensor) -> torch.Tensor:
    """``ActionDistribution.to_env`` in torch, on the device: clipped Gaussian, squashed tanh,
    scaled Beta, or categories shifted by the space's start."""
    if dist.kind in ("box", "squashed_box", "beta"):
        low = torch.as_tensor(dist.low, dtype=torch.float32, device=actions.device)
        high = torch.as_tensor(dist.high, dtype=torch.float32, device=actions.device)
        if dist.kind == "squashed_box":
            actions = low + (torch.tanh(actions) + 1.0) * (high - low) / 2.0
        elif dist.kind == "beta":
            actions = low + actions * (high - low)
        return torch.maximum(torch.minimum(actions, high), low)
    if dist.kind == "discrete":
        return actions + dist.start if dist.start else actions
    if dist.kind == "multidiscrete" and np.any(dist.start != 0):
        return actions + torch.as_tensor(dist.start, device=actions.device)
    return actions


class BatchedCollector:
    """Fills a device ``RolloutBuffer`` from a ``BatchedEnv``; the same surface as
    ``rollout.Collector`` (``collect``, ``episodes``, ``skipped_nonfinite``, ``state_dict``)."""

    mask_source = None  # batched envs give no action masks

    def __init__(
        self, env: BatchedEnv, policy: Policy, device: torch.device, seed: int, obs_norm, reward_scaler,
        gamma: float, timeout_bootstrap: str, nan_policy: str = "raise",
    ):  # fmt: skip
        self.env, self.policy, self.device = env, policy, device
        self.obs_norm, self.reward_scaler, self.nan_policy = obs_norm, reward_scaler, nan_policy
        self.gamma, self.rule = gamma, timeout_bootstrap
        how = {
            "final_obs": "V(true final observation)",
            "value_of_obs": "V(s) of the last observation (rsl_rl's rule)",
            "auto": "V(true final observation) where the env gives it, else V(s) (rsl_rl's rule)",
        }[timeout_bootstrap]
        log.info("time-outs (timeout_bootstrap=%s) bootstrap with %s on %s", timeout_bootstrap, how, env.name)
        self.num_envs = env.num_envs
        self.episodes = EpisodeStats(self.num_envs, window=max(100, self.num_envs))
        self.skipped_nonfinite = 0
        self.steps = 0
        self.raw_obs = env.reset(seed=seed)
        self.obs = self._normalize(self.raw_obs, update=True)
        self.ep_return = torch.zeros(self.num_envs, dtype=torch.float64, device=device)
        self.ep_length = torch.zeros(self.num_envs, dtype=torch.long, device=device)
        self.final_bootstraps = self.timeouts = 0

    def _normalize(self, raw: torch.Tensor, update: bool) -> torch.Tensor:
        return self.obs_norm(raw, update=update) if self.obs_norm is not None else raw

    @torch.inference_mode()
    def collect(self, buf: RolloutBuffer) -> None:
        """Fill ``buf`` (on the device) with ``T`` steps of every instance."""
        T, N = buf.obs.shape[0], self.num_envs
        dist = self.policy.dist
        final_obs = torch.zeros_like(buf.obs)  # normalised true final observations of truncations
        has_final = torch.zeros_like(buf.done)
        truncated_all = torch.zeros_like(buf.done)
        bad_all = torch.zeros_like(buf.done)
        ep_ret, ep_len = torch.full_like(buf.rewards, float("nan")), torch.zeros_like(buf.rewards)
        values_from_act = True
        for t in range(T):
            action, logp, values = self.policy.act(self.obs)
            buf.obs[t] = self.obs
            buf.actions[t] = action
            buf.logp[t] = logp.float()
            if values is None:
                values_from_act = False
            else:
                buf.values[t] = values.float()
            raw, reward, terminated, truncated, final = self.env.step(to_env_actions(dist, action))
            bad = ~(torch.isfinite(raw).all(-1) & torch.isfinite(reward))
            bad_all[t] = bad
            raw = torch.where(bad[:, None], 0.0, raw)
            reward = torch.where(bad, 0.0, reward)
            done = terminated | truncated
            self.ep_return += reward
            self.ep_length += 1
            ep_ret[t] = torch.where(done, self.ep_return, float("nan")).float()
            ep_len[t] = self.ep_length.float()
            self.ep_return = torch.where(done, 0.0, self.ep_return)
            self.ep_length = torch.where(done, 0, self.ep_length)
            buf.rewards[t] = self.reward_scaler(reward, done) if self.reward_scaler is not None else reward
            buf.terminated[t], buf.done[t], buf.valid[t] = terminated, done, ~bad
            truncated_all[t] = truncated
            if final is not None and self.rule != "value_of_obs":
                final_obs[t] = self._normalize(torch.where(bad[:, None], 0.0, final), update=False)
                has_final[t] = truncated
            self.raw_obs = raw
            self.obs = self._normalize(raw, update=True)
        self.steps += T * N
        self._finish(buf, final_obs, has_final, truncated_all, values_from_act)
        self._check_nonfinite(bad_all, buf)
        self._record_episodes(ep_ret, ep_len)

    def _finish(self, buf, final_obs, has_final, truncated, values_from_act: bool) -> None:
        """The values of every stored observation (one batched pass when ``act`` gave none) and the
        bootstrap values: V(next obs), or for a truncation V(final obs) / V(s_t) (module docstring)."""
        T, N = buf.rewards.shape
        obs_shape = buf.obs.shape[2:]
        if not values_from_act:
            buf.values[:] = self.policy.value(buf.obs.reshape(T * N, *obs_shape)).float().reshape(T, N)
        last = self.policy.value(self.obs).float()
        buf.next_values[:-1] = buf.values[1:]
        buf.next_values[-1] = last
        missing = truncated & ~has_final  # time-outs without a final observation
        if self.rule == "auto":  # rsl_rl's rule where the env gave no final observation
            buf.next_values[:] = torch.where(missing, buf.values, buf.next_values)
        elif self.rule == "value_of_obs":
            buf.next_values[:] = torch.where(truncated, buf.values, buf.next_values)
        if self.rule != "value_of_obs":
            if self.rule == "final_obs" and bool(missing.any()):
                raise EnvStepError(
                    "timeout_bootstrap='final_obs' needs the true final observation of every time-out, and "
                    f"{self.env.name} gave none (rsl_rl-style envs: extras['final_obs']); use auto or "
                    "value_of_obs"
                )
            if bool(has_final.any()):
                buf.next_values[has_final] = self.policy.value(final_obs[has_final]).float()
        self.timeouts += int(truncated.sum())
        self.final_bootstraps += int(has_final.sum())

    def _check_nonfinite(self, bad: torch.Tensor, buf: RolloutBuffer) -> None:
        """nan_policy raise: name the first bad env and step; skip: count them (they are invalid)."""
        n_bad = int(bad.sum())
        if not n_bad:
            return
        if self.nan_policy == "raise":
            t, i = (int(x) for x in bad.nonzero()[0])
            raise EnvStepError(
                f"environment {i} returned a non-finite observation or reward at step "
                f"{self.steps - (buf.obs.shape[0] - t - 1) * self.num_envs} (set nan_policy=skip to skip "
                "them)"
            )
        self.skipped_nonfinite += n_bad

    def _record_episodes(self, ep_ret: torch.Tensor, ep_len: torch.Tensor) -> None:
        """Finished episodes' returns and lengths into ``episodes`` (one host copy per rollout)."""
        finished = ~torch.isnan(ep_ret)
        rets, lens = ep_ret[finished].cpu().tolist(), ep_len[finished].cpu().tolist()
        now = time.time()
        for r, n in zip(rets, lens):
            self.episodes.recent.append((float(r), int(n)))
            self.episodes.new.append((float(r), int(n), self.steps, now))
        self.episodes.returns = self.ep_return.cpu().numpy().copy()
        self.episodes.lengths = self.ep_length.cpu().numpy().copy()

    def resync(self) -> None:
        """Continue from the env's current observation after something else stepped it (evaluation
        on the training env): the running episode sums restart from zero."""
        self.raw_obs = self.env.reset()
        self.obs = self._normalize(self.raw_obs, update=False)
        self.ep_return = torch.zeros_like(self.ep_return)  # new tensors: the old are inference tensors
        self.ep_length = torch.zeros_like(self.ep_length)

    def metrics(self) -> dict[str, float]:
        """The fraction of time-outs bootstrapped with V(final obs) so far (1: final_obs, 0: V(s))."""
        return {"rollout/timeout_final_obs_fraction": self.final_bootstraps / max(self.timeouts, 1)}

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters, episode statistics and, when the env can save it, its exact state with the
        rollout's current observation."""
        env_state, missing = self.env.state_dict()
        state = {
            "steps": self.steps,
            "skipped_nonfinite": self.skipped_nonfinite,
            "episodes": self.episodes.state_dict(),
            "env": {"tensors": env_state or {}, "tree": None, "missing": missing},
            "timeouts": [self.timeouts, self.final_bootstraps],
        }
        if missing is None:
            state.update(raw_obs=self.raw_obs.cpu(), obs=self.obs.cpu(),
                         ep_return=self.ep_return.cpu(), ep_length=self.ep_length.cpu())  # fmt: skip
        return state

    def load_state_dict(self, state: dict) -> str | None:
        """Restore ``state_dict``; returns None when the env was restored exactly, else why not.
        Restore the observation normaliser first (a fresh observation is re-normalised with it)."""
        self.steps, self.skipped_nonfinite = int(state["steps"]), int(state["skipped_nonfinite"])
        self.timeouts, self.final_bootstraps = (int(x) for x in state["timeouts"])
        missing = state["env"]["missing"]
        rank = distributed.info().rank
        if missing is None and rank > 0:  # torchrun: restoring rank 0's envs here would repeat its data
            missing = f"rank {rank} keeps its own envs (the checkpoint holds rank 0's)"
        if missing is None:
            self.env.load_state_dict(state["env"]["tensors"], state["raw_obs"])
            self.raw_obs = state["raw_obs"].to(self.device)
            self.obs = state["obs"].to(self.device)
            self.ep_return = state["ep_return"].to(self.device)
            self.ep_length = state["ep_length"].to(self.device)
        else:
            self.obs = self._normalize(self.raw_obs, update=False)
        self.episodes.load_state_dict(state["episodes"], running=missing is None)
        return missing
