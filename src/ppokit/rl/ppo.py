"""PPO for Gymnasium environments: the file to read first.

    PPO("CartPole-v1", PPOConfig()).learn(100_000)

Sections: construction (env, networks, optimizers) -> ``learn`` (rollout, then update, then log)
-> ``update`` (GAE, epochs of minibatches, the loss) -> prediction and saving (``state.py``).
References: Schulman et al. 2017 (PPO, https://arxiv.org/abs/1707.06347); Huang et al. 2022,
"The 37 Implementation Details of PPO" (https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppokit import distributed
from ppokit.config import ConfigError
from ppokit.errors import NonFiniteError
from ppokit.functional import (
    adaptive_beta,
    approx_kl,
    explained_variance,
    gae,
    normalize,
    policy_loss,
    value_loss,
)
from ppokit.optim import FlatAdam, clip_grad_norm
from ppokit.rl import state
from ppokit.rl.config import PPOConfig
from ppokit.rl.envs import EnvSpec, autoreset_mode, make_vec_env
from ppokit.rl.manual_grad import ManualGrad, loss_and_grads
from ppokit.rl.networks import ActorCritic
from ppokit.rl.normalization import ObsNormalizer, RewardScaler
from ppokit.rl.rollout import Collector, RolloutBuffer
from ppokit.seeding import seed_everything
from ppokit.tracking import PROCESS_START


class PPO:
    """Actor-critic PPO. ``env`` is a Gymnasium id or a factory returning a ``gym.Env``."""

    def __init__(
        self,
        env: EnvSpec | None = None,
        config: PPOConfig | dict | None = None,
        run_dir: str | Path | None = None,
        **overrides: Any,
    ):
        if isinstance(config, dict) or config is None:
            config = PPOConfig.from_dict({**(config or {}), **overrides})
        elif overrides:
            config = config.replace(**overrides)
        if isinstance(env, str):
            config = config.replace(env_id=env)
        self.config = cfg = config
        self.env_fn = env if env is not None and not isinstance(env, str) else None
        self.env_spec: EnvSpec = env if env is not None else cfg.env_id
        torch.set_num_threads(cfg.torch_threads)
        self.np_rng = seed_everything(cfg.seed)
        self.dist = distributed.init(cfg.device)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={cfg.device!r} is not allowed; CUDA is not available on this machine")
        self.venv = make_vec_env(self.env_spec, cfg.num_envs, cfg.vectorization, cfg.env_kwargs)
        autoreset_mode(self.venv)
        self.observation_space = self.venv.single_observation_space
        self.action_space = self.venv.single_action_space
        obs_shape = self.observation_space.shape
        self.policy = ActorCritic(int(np.prod(obs_shape)), self.action_space, cfg.network).to(self.device)
        distributed.broadcast_parameters(self.policy)  # every rank starts from rank 0's networks
        # Each rank samples and steps its own environments with a seed derived from the run seed.
        rank_seed = cfg.seed + 100_003 * self.dist.rank
        if self.dist.enabled:
            self.np_rng = seed_everything(rank_seed)
        self.optimizers = self._make_optimizers()
        self.manual_grad = ManualGrad(self.policy) if cfg.manual_grad else None
        self.obs_norm = ObsNormalizer(obs_shape, cfg.obs_clip) if cfg.normalize_obs else None
        self.reward_scaler = (
            RewardScaler(cfg.num_envs, cfg.gamma, cfg.reward_clip) if cfg.normalize_reward else None
        )
        self.collector = Collector(
            self.venv, self.policy, self.device, rank_seed, self.obs_norm, self.reward_scaler, cfg.nan_policy
        )
        box = self.policy.kind == "box"
        action_shape = self.action_space.shape if self.policy.kind != "discrete" else ()
        self.buffer = RolloutBuffer.allocate(
            cfg.n_steps,
            cfg.num_envs,
            obs_shape,
            action_shape,
            torch.float32 if box else torch.long,
        )
        self.kl_beta = cfg.kl_beta
        self.num_timesteps = self.num_updates = 0
        self.nonfinite_skipped = self.nonfinite_in_a_row = 0  # optimizer steps with a non-finite loss
        self.target_timesteps: int | None = None  # the `total` of the current run (schedules need it)
        self.stop_requested: int | None = None  # a signal number: stop cleanly after this update
        self.last_checkpoint_step, self.last_checkpoint_path = 0, None
        self.resume_info: dict[str, Any] | None = None  # set by PPO.resume: what was restored
        self.run_dir: Path | None = None
        self.tracker = None
        if run_dir is not None:
            self.set_run_dir(run_dir)

    def set_run_dir(self, run_dir: str | Path, append: bool = False) -> None:
        """Log metrics (CSV, TensorBoard) and write checkpoints under ``run_dir``."""
        from ppokit.tracking import Tracker

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tracker = Tracker(self.run_dir, tensorboard=self.config.tensorboard, append=append)

    def _make_optimizers(self) -> list[FlatAdam]:
        """One Adam over all parameters, or one for the actor and one for the critic (FlatAdam: see
        ``ppokit/optim.py`` for why not torch.optim.Adam)."""
        cfg = self.config
        kw = {"betas": tuple(cfg.adam_betas), "eps": cfg.adam_eps}
        if not cfg.separate_optimizers:
            return [FlatAdam(list(self.policy.parameters()), lr=cfg.learning_rate, **kw)]
        critic_lr = cfg.critic_learning_rate or cfg.learning_rate
        return [
            FlatAdam(self.policy.actor_parameters(), lr=cfg.learning_rate, **kw),
            FlatAdam(self.policy.critic_parameters(), lr=critic_lr, **kw),
        ]

    # -- schedules ---------------------------------------------------------------------------------
    def _progress_remaining(self, total: int) -> float:
        return max(0.0, 1.0 - self.num_timesteps / max(total, 1))

    def _set_schedules(self, total: int) -> float:
        """Set this update's learning rates; return its clip range (linear: from full to 0, as SB3)."""
        cfg, frac = self.config, self._progress_remaining(total)
        lr_scale = frac if cfg.lr_schedule == "linear" else 1.0
        lrs = [cfg.learning_rate, cfg.critic_learning_rate or cfg.learning_rate]
        for opt, lr in zip(self.optimizers, lrs):
            for group in opt.param_groups:
                group["lr"] = lr * lr_scale
        return cfg.clip_range * (frac if cfg.clip_range_schedule == "linear" else 1.0)

    # -- the loop ------------------------------------------------------------------------------------
    def learn(
        self,
        total_timesteps: int | None = None,
        progress_bar: bool = False,
        callback: Callable[[PPO, dict], bool | None] | None = None,
    ) -> PPO:
        """Train until ``total_timesteps`` env steps (counted over the whole run, as SB3 with
        ``reset_num_timesteps=False``; a resumed model defaults to its run's total, so schedules
        continue exactly). ``callback(ppo, metrics)`` runs after each update; returning False stops
        training, and so does ``stop_requested``. See docs/reliability.md for checkpoints and faults."""
        from ppokit.tracking import ProgressBar

        total = next(
            t for t in (total_timesteps, self.target_timesteps, self.config.total_timesteps) if t is not None
        )
        self.target_timesteps = total
        start_steps, start_time = self.num_timesteps, time.time()
        with ProgressBar(total, f"PPO {state.env_label(self)}", "return", enabled=progress_bar) as bar:
            bar.update(self.num_timesteps, done_since_start=0)
            while self.num_timesteps < total and self.stop_requested is None:
                clip_range = self._set_schedules(total)
                self.collector.collect(self.buffer)
                self._sync_normalizers()
                self.num_timesteps += self.config.rollout_size * self.dist.world_size
                try:
                    metrics = self.update(clip_range)
                except NonFiniteError as e:
                    raise state.emergency_stop(self, e) from None
                fps = (self.num_timesteps - start_steps) / max(time.time() - start_time, 1e-9)
                metrics.update(self._rollout_metrics(fps))
                self._log(metrics)
                bar.update(
                    self.num_timesteps,
                    self.collector.episodes.mean_return(),
                    done_since_start=self.num_timesteps - start_steps,
                )
                state.maybe_checkpoint(self)
                if callback is not None and callback(self, metrics) is False:
                    break
                self._agree_on_stop()
        state.checkpoint_now(self)  # with a run directory, training always ends on a checkpoint
        return self

    def _agree_on_stop(self) -> None:
        """Under torchrun a signal reaches the ranks at different moments: if any rank was asked to
        stop, all stop after this same update (SIGTERM stands in for the signal they did not get)."""
        if self.dist.enabled and not distributed.all_agree(self.stop_requested is None):
            self.stop_requested = self.stop_requested or int(signal.SIGTERM)

    def _sync_normalizers(self) -> None:
        """With several ranks, merge every rank's new normalisation statistics (identical after)."""
        if self.dist.enabled:
            for rms in (getattr(self.obs_norm, "rms", None), getattr(self.reward_scaler, "rms", None)):
                if rms is not None:
                    rms.sync()

    def _rollout_metrics(self, fps: float) -> dict[str, float]:
        ep = self.collector.episodes
        mean_return, mean_length = ep.mean_return(), ep.mean_length()
        if self.dist.enabled:  # episode statistics over all ranks' recent episodes
            parts = distributed.all_gather_objects(list(ep.recent))
            recent = [x for part in parts for x in part]
            if recent:
                mean_return = float(np.mean([r for r, _ in recent]))
                mean_length = float(np.mean([n for _, n in recent]))
        return {
            "rollout/ep_rew_mean": mean_return,
            "rollout/ep_len_mean": mean_length,
            "time/fps": fps,
            "time/total_timesteps": self.num_timesteps,
            "time/elapsed_s": time.time() - PROCESS_START,
            "time/iterations": self.num_updates,
            "rollout/nonfinite_skipped": self.collector.skipped_nonfinite,
        }

    def _log(self, metrics: dict[str, float]) -> None:
        episodes = self.collector.episodes.drain()
        if self.tracker is not None:
            if self.num_updates % self.config.log_every == 0:
                self.tracker.log(self.num_timesteps, metrics)
            self.tracker.log_episodes(episodes)

    # -- the update ----------------------------------------------------------------------------------
    def _flatten_rollout(self) -> dict[str, torch.Tensor]:
        """GAE over ``[T, N]``, then the valid transitions flattened to ``[B]`` for minibatching."""
        cfg, buf = self.config, self.buffer.to(self.device)
        advantages, returns = gae(
            buf.rewards, buf.values, buf.next_values, buf.terminated, buf.done, cfg.gamma, cfg.gae_lambda
        )
        valid = buf.valid.reshape(-1)
        flat = lambda x: x.reshape(-1, *x.shape[2:])[valid]
        return {
            "obs": flat(buf.obs),
            "actions": flat(buf.actions),
            "logp_old": flat(buf.logp),
            "values_old": flat(buf.values),
            "advantages": flat(advantages),
            "returns": flat(returns),
        }

    def loss(
        self,
        mb: dict[str, torch.Tensor],
        clip_range: float,
        outputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The PPO loss on one minibatch: ``policy - ent_coef * entropy + vf_coef * value``.

        Returns the scalar loss and detached terms/diagnostics. The minus sign on the entropy makes
        the bonus *raise* entropy when the loss is minimised. ``outputs`` are the networks' (policy
        output, value) when already computed; by default, ``policy(obs)``. With ``manual_grad`` (the
        default) the update uses ``manual_grad.loss_and_grads`` instead, the same loss with its gradient
        written out (tested equal); a subclass that changes this loss should set ``manual_grad=False``.
        """
        cfg = self.config
        out, values = outputs if outputs is not None else self.policy(mb["obs"])
        logp, entropy = self.policy.log_prob_entropy(out, mb["actions"])
        adv = self._normalize_advantages(mb["advantages"]) if cfg.normalize_advantage else mb["advantages"]
        pg, ratio, kl = policy_loss(logp, mb["logp_old"], adv, cfg.objective, clip_range, self.kl_beta)
        vf, vf_clipped = value_loss(
            values, mb["returns"], mb["values_old"], cfg.vf_clip_range, cfg.value_loss, cfg.huber_delta
        )
        pg, vf, ent = pg.mean(), vf.mean(), entropy.mean()
        total = pg - cfg.ent_coef * ent + cfg.vf_coef * vf
        terms = {
            "policy_loss": pg,
            "value_loss": vf,
            "entropy": ent,
            "loss": total,
            "kl": kl.mean(),
            "approx_kl": approx_kl(logp.detach(), mb["logp_old"]),
            "clip_fraction": ((ratio - 1.0).abs() > clip_range).float().mean(),
            "value_clip_fraction": vf_clipped.float().mean(),
            "ratio_mean": ratio.mean(),
        }
        return total, {k: v.detach() for k, v in terms.items()}

    def _normalize_advantages(self, adv: torch.Tensor) -> torch.Tensor:
        """Per-minibatch normalisation; with several ranks, over the union of their minibatches."""
        if not self.dist.enabled:
            return normalize(adv)
        mean, std, n = distributed.global_mean_std(adv)
        return adv if n <= 1 else (adv - mean) / (std + 1e-8)

    def update(self, clip_range: float) -> dict[str, float]:
        """Several epochs of minibatch gradient steps on the latest rollout (the update)."""
        cfg = self.config
        data = self._flatten_rollout()
        n = data["obs"].shape[0]
        n_minibatches = cfg.rollout_size // cfg.batch_size
        sums: dict[str, float] = {}
        count, stop = 0, False
        for _epoch in range(cfg.n_epochs):
            # One minibatch per epoch (the zoo's CartPole settings) is the whole rollout: its order
            # does not change the gradient, so it is used as it is, without a permuted copy.
            perm = torch.randperm(n, device=self.device) if n_minibatches > 1 else None
            for idx in torch.tensor_split(perm, n_minibatches) if perm is not None else [None]:
                if idx is not None and idx.numel() == 0 and not self.dist.enabled:
                    continue  # with several ranks an empty share still takes part: see _step
                mb = {k: v[idx] for k, v in data.items()} if idx is not None else data
                loss, terms, backward = self._loss_and_backward(mb, clip_range)
                # Target-KL early stop, checked before this minibatch's step (SB3's 1.5 * target_kl rule).
                if cfg.target_kl is not None:
                    kl_now = (
                        distributed.all_reduce_mean(terms["approx_kl"])
                        if self.dist.enabled
                        else terms["approx_kl"]
                    )
                    if kl_now > 1.5 * cfg.target_kl:
                        stop = True
                        break
                if not self._step(loss, backward):
                    continue  # a skipped step: its non-finite terms stay out of the averages
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
            if stop:
                break
        self.num_updates += 1
        # the logged losses are the mean over ranks (every rank has the same keys: they step together)
        metrics = distributed.aggregate_metrics({f"train/{k}": v / max(count, 1) for k, v in sums.items()})
        metrics["train/kl_beta"] = self.kl_beta
        if cfg.objective == "kl_adaptive":
            self.kl_beta = adaptive_beta(self.kl_beta, self._kl_after_update(data), cfg.kl_target)
        metrics.update(
            {
                "train/explained_variance": float(explained_variance(data["values_old"], data["returns"])),
                "train/clip_range": clip_range,
                "train/learning_rate": self.optimizers[0].param_groups[0]["lr"],
                "train/n_updates": self.num_updates,
                "train/minibatch_steps": count,
                "train/early_stopped": float(stop),
                "train/nonfinite_skipped": self.nonfinite_skipped,
            }
        )
        return metrics

    def _loss_and_backward(
        self, mb: dict[str, torch.Tensor], clip_range: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Callable[[], None]]:
        """The minibatch loss, its terms, and the function that fills the parameters' gradients:
        autograd's ``loss.backward``, or (``manual_grad``) autograd from the loss to the network
        outputs followed by the hand-written backward through the networks."""
        if self.manual_grad is None:
            loss, terms = self.loss(mb, clip_range)
            return loss, terms, loss.backward
        out, values, saved = self.policy.infer(mb["obs"])
        cfg = self.config
        adv = self._normalize_advantages(mb["advantages"]) if cfg.normalize_advantage else mb["advantages"]
        loss, terms, grads = loss_and_grads(self.policy, cfg, mb, adv, out, values, clip_range, self.kl_beta)

        def backward() -> None:
            if "log_std" in grads:
                self.policy.actor_log_std.grad.copy_(grads["log_std"])
            self.manual_grad.backward(saved, grads["out"], grads["value"])

        return loss, terms, backward

    def _step(self, loss: torch.Tensor, backward: Callable[[], None]) -> bool:
        """One optimizer step; returns whether it was taken. A non-finite loss or gradient skips
        the step (parameters and Adam moments stay untouched) and is counted; after
        ``nonfinite_stop_after`` in a row, ``NonFiniteError``."""
        for opt in self.optimizers:
            opt.zero_grad()
        if torch.isfinite(loss):
            backward()
        else:  # a NaN gradient instead: through the all-reduce every rank sees it and skips this step too
            for opt in self.optimizers:
                opt.flat_grad.fill_(math.nan)
        # One collective per step: ranks agree on skipping because they share the averaged gradient.
        distributed.average_gradients([opt.flat_grad for opt in self.optimizers])
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm is not None else math.inf
        finite = bool(torch.isfinite(clip_grad_norm(self.optimizers, max_norm)))
        if not finite:
            self.nonfinite_skipped += 1
            self.nonfinite_in_a_row += 1
            if self.nonfinite_in_a_row >= self.config.nonfinite_stop_after:
                raise NonFiniteError(
                    f"the loss or its gradient was non-finite in {self.nonfinite_in_a_row} optimizer steps "
                    f"in a row (update {self.num_updates + 1}, step {self.num_timesteps}; "
                    f"nonfinite_stop_after={self.config.nonfinite_stop_after})"
                )
            return False
        self.nonfinite_in_a_row = 0
        for opt in self.optimizers:
            opt.step()
        return True

    @torch.no_grad()
    def _kl_after_update(self, data: dict[str, torch.Tensor]) -> float:
        """Mean KL(pi_old || pi_new) over the whole rollout, for the adaptive-beta rule."""
        logp, _, _ = self.policy.evaluate(data["obs"], data["actions"])
        return float(distributed.all_reduce_mean(approx_kl(logp, data["logp_old"])))

    # -- using the policy ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3-style ``(action, None)`` for one observation or a batch (normalised like training)."""
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.shape == self.observation_space.shape
        batch = obs[None] if single else obs
        if self.obs_norm is not None:
            batch = self.obs_norm(batch, update=False)
        out, _ = self.policy(torch.as_tensor(batch, device=self.device))
        action, _ = self.policy.sample(out, deterministic=deterministic)
        action = action.cpu().numpy()
        if self.policy.kind == "box":
            action = np.clip(action, self.action_space.low, self.action_space.high)
        return (action[0] if single else action), None

    def evaluate(self, episodes: int = 20, deterministic: bool = True, seed: int = 10_000) -> dict[str, Any]:
        """Mean and std of the return over ``episodes`` fresh episodes (see ``evaluation.py``)."""
        from ppokit.rl.evaluation import evaluate_policy

        return evaluate_policy(self, episodes, deterministic, seed)

    def save(self, path: str | Path) -> Path:
        """Save networks, normalisation statistics and config (safetensors + JSON, no pickle)."""
        return state.save_model(self, Path(path))

    @classmethod
    def load(cls, path: str | Path, env: EnvSpec | None = None, **overrides: Any) -> PPO:
        """Load a model saved by ``save`` (or a checkpoint directory); ``env`` defaults to the saved id."""
        return state.load_model(cls, Path(path), env, **overrides)

    @classmethod
    def resume(cls, path: str | Path, env: EnvSpec | None = None, run_dir: str | Path | None = None) -> PPO:
        """Continue a run from a training checkpoint or a run directory's newest complete one: all
        training state and, where possible, the envs' (``resume_info``; docs/reliability.md)."""
        return state.resume(cls, Path(path), env, run_dir)

    def close(self) -> None:
        """Close the environments and the metric writers."""
        self.venv.close()
        if self.tracker is not None:
            self.tracker.close()
