"""PPO for Gymnasium environments: the file to read first.

    PPO("CartPole-v1", PPOConfig()).learn(100_000)

Sections: construction (env, policy, optimizers: parts that each own their state) -> ``learn``
(the rollout, ``rollout.py``; the update and the loss, ``update.py``; logging; checkpoints) -> using
the policy (predict, evaluate, save, load). ``state_dict`` is the composition of the parts' states;
``state.py`` composes it (``parts_state``) and writes it to disk. References: Schulman et al. 2017
(PPO, https://arxiv.org/abs/1707.06347); Huang et al. 2022, "The 37 Implementation Details of PPO"
(https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ppokit import distributed
from ppokit.config import ConfigError
from ppokit.errors import NonFiniteError
from ppokit.functional import explained_variance
from ppokit.rl import fast, state
from ppokit.rl.config import PPOConfig, resolve_config
from ppokit.rl.envs import EnvSpec, make_training_envs
from ppokit.rl.masking import mask_dim
from ppokit.rl.networks import PolicySpec, make_policy
from ppokit.rl.normalization import ObsNormalizer, RewardScaler, sync_statistics
from ppokit.rl.predict import predict_actions
from ppokit.rl.recurrent import RecurrentPolicy, flat_valid, sequence_batch
from ppokit.rl.rollout import Collector, RolloutBuffer
from ppokit.rl.update import (
    AdaptiveKL,
    make_optimizers,
    normalize_advantages,
    ppo_loss,
    ppo_update,
    rollout_batch,
)
from ppokit.seeding import seed_everything
from ppokit.tracking import PROCESS_START
from ppokit.train.precision import autocast
from ppokit.train.step import GuardedStep
from ppokit.train.threads import ThreadChooser


class PPO:
    """Actor-critic PPO. ``env`` is a Gymnasium id or a factory returning a ``gym.Env``; ``policy``
    a ``Policy`` (rl/policy.py), or a callable ``(observation_space, action_space) -> Policy``, or
    None for the built-in MLP actor-critic of ``config.network``."""

    def __init__(
        self,
        env: EnvSpec | None = None,
        config: PPOConfig | dict | None = None,
        run_dir: str | Path | None = None,
        policy: PolicySpec = None,
        **overrides: Any,
    ):
        self.config = cfg = resolve_config(config, env, overrides)
        if isinstance(env, gym.Env):  # SB3 accepts one instance; ppokit makes num_envs copies
            raise ConfigError(
                f"env={env!r} is an environment instance; pass its id (e.g. PPO('CartPole-v1')) or a "
                "factory that makes a new one per call (e.g. PPO(lambda: gym.make('CartPole-v1')))"
            )
        self.env_fn = env if env is not None and not isinstance(env, str) else None
        self.env_spec: EnvSpec = env if env is not None else cfg.env_id
        self.threads = ThreadChooser(cfg.torch_threads, cfg.batch_size * max(cfg.network.hidden_sizes))
        self.np_rng = seed_everything(cfg.seed)
        self.dist = distributed.init(cfg.device)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={cfg.device!r} is not allowed; CUDA is not available on this machine")
        # -- the environments and the policy ----------------------------------------------------
        self.venv, self.obs_layout = make_training_envs(self.env_spec, cfg)
        self.observation_space = self.venv.single_observation_space
        self.action_space = self.venv.single_action_space
        spaces = (self.observation_space, self.action_space)
        self.policy = make_policy(policy, *spaces, cfg.network).to(self.device)
        distributed.broadcast_parameters(self.policy)  # every rank starts from rank 0's networks
        # Each rank samples and steps its own environments with a seed derived from the run seed.
        rank_seed = cfg.seed + 100_003 * self.dist.rank
        if self.dist.enabled:
            self.np_rng = seed_everything(rank_seed)
        # -- the parts that own training state (each has state_dict / load_state_dict) ----------------
        self._make_rollout_parts(rank_seed)
        # The CPU fast path (rl/fast/): used only where it computes exactly PPO.loss's gradient.
        own_loss = type(self).loss is PPO.loss
        self.manual_grad = fast.choose(self.policy, cfg, own_loss, self.device, masked=self.masked)
        # FlatAdam where the fast path writes its gradients, torch.optim.Adam for every other policy
        self.optimizers = make_optimizers(self.policy, cfg, flat=self.manual_grad is not None)
        self.guard = GuardedStep(self.optimizers, cfg.max_grad_norm, cfg.nonfinite_stop_after, self._where)
        self.kl = AdaptiveKL(cfg.kl_coef, cfg.adaptive_kl_target, cfg.objective == "kl_adaptive")
        self.num_timesteps = self.num_updates = 0
        self.target_timesteps: int | None = None  # the `total` of the current run (schedules need it)
        # -- run bookkeeping (not training state) -------------------------------------------------
        self.stop_requested: int | None = None  # a signal number: stop cleanly after this update
        self.last_checkpoint_step, self.last_checkpoint_path = 0, None
        self.last_checkpoint_time = time.time()
        self.resume_info: dict[str, Any] | None = None  # set by PPO.resume: what was restored
        self.run_dir: Path | None = None
        self.tracker = None
        if run_dir is not None:
            self.set_run_dir(run_dir)

    def _make_rollout_parts(self, rank_seed: int) -> None:
        """The normalisers, the collector that steps the envs with the policy, and the rollout buffer."""
        cfg, obs_shape = self.config, self.obs_layout.shape
        self.obs_norm = ObsNormalizer(obs_shape, cfg.obs_clip) if cfg.normalize_obs else None
        self.reward_scaler = (
            RewardScaler(cfg.num_envs, cfg.gamma, cfg.reward_clip) if cfg.normalize_reward else None
        )
        self.collector = Collector(
            self.venv, self.policy, self.device, rank_seed, self.obs_norm, self.reward_scaler,
            cfg.nan_policy, cfg.action_masking, state.env_label(self), self.obs_layout,
        )  # fmt: skip
        self.masked = self.collector.mask_source is not None  # the env gives action masks (rl/masking.py)
        self.recurrent = isinstance(self.policy, RecurrentPolicy)
        dist = self.policy.dist
        self.buffer = RolloutBuffer.allocate(
            cfg.n_steps, cfg.num_envs, obs_shape, dist.action_shape, dist.action_dtype,
            mask_dim=mask_dim(self.action_space) if self.masked else None,
            state_size=self.policy.state_size if self.recurrent else None, obs_dtype=self.obs_layout.dtype,
        )  # fmt: skip

    def _where(self) -> str:
        return f"update {self.num_updates + 1}, step {self.num_timesteps}"

    def set_run_dir(self, run_dir: str | Path, append: bool = False, lock: Any = None) -> None:
        """Log metrics (CSV, TensorBoard) and write checkpoints under ``run_dir``. ``lock``: the
        run directory's ``RunDirLock`` when the caller already holds it (it is taken here otherwise)."""
        from ppokit.tracking import Tracker
        from ppokit.train.rundir import RunDirLock

        if self.run_dir is not None and Path(run_dir) == self.run_dir:
            return
        lock = lock or RunDirLock(run_dir)  # one writer per run directory (docs/reliability.md)
        self.close_run_dir()
        self._lock, self.run_dir = lock, Path(run_dir)
        self.tracker = Tracker(self.run_dir, tensorboard=self.config.tensorboard, append=append)

    def close_run_dir(self) -> None:
        """Close the metric writers and release the run directory's lock."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    # -- schedules ---------------------------------------------------------------------------------
    def _set_schedules(self, total: int) -> float:
        """Set this update's learning rates; return its clip range (linear: from full to 0, as SB3)."""
        cfg = self.config
        frac = max(0.0, 1.0 - self.num_timesteps / max(total, 1))
        lr_scale = frac if cfg.lr_schedule == "linear" else 1.0
        lrs = [cfg.learning_rate, cfg.critic_learning_rate or cfg.learning_rate]
        for opt, lr in zip(self.optimizers, lrs):
            for group in opt.param_groups:
                group["lr"] = lr * lr_scale
        return cfg.clip_range * (frac if cfg.clip_range_schedule == "linear" else 1.0)

    # -- the loss and the update ---------------------------------------------------------------------
    def loss(
        self, mb: dict[str, torch.Tensor], clip_range: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The PPO loss on one minibatch and its detached terms (``update.ppo_loss``). Override it to
        re-weight or add a term: a subclass's loss is trained with autograd (the fast path is off)."""
        return ppo_loss(self.policy, mb, clip_range, self.kl.coef, self.config)

    def _loss_and_backward(self, mb: dict[str, torch.Tensor], clip_range: float) -> tuple:
        """The minibatch loss, its terms and the function that fills the gradients: autograd's
        ``loss.backward`` on ``self.loss``, or the fast path's hand-written backward of the same loss."""
        if self.manual_grad is None:
            with autocast(self.device, self.config.bf16):  # the forward only; backward runs outside
                loss, terms = self.loss(mb, clip_range)
            return loss, terms, loss.backward
        cfg = self.config
        adv = normalize_advantages(mb["advantages"]) if cfg.normalize_advantage else mb["advantages"]
        return fast.fast_loss_and_backward(self.manual_grad, cfg, mb, adv, clip_range, self.kl.coef)

    def update(self, clip_range: float) -> dict[str, float]:
        """Several epochs of minibatch gradient steps on the latest rollout (the update)."""
        cfg = self.config
        # a recurrent policy trains on whole env sequences (rl/recurrent.py), others on transitions
        batch = sequence_batch if self.recurrent else rollout_batch
        data = batch(self.buffer, cfg.gamma, cfg.gae_lambda, self.device)
        n_minibatches = cfg.rollout_size // cfg.batch_size
        metrics = ppo_update(
            data, self._loss_and_backward, self.guard, clip_range, cfg.n_epochs, n_minibatches, cfg.target_kl
        )
        self.num_updates += 1
        metrics["train/kl_coef"] = self.kl.coef
        self.kl.update(self.policy, data)
        metrics.update(
            {
                "train/explained_variance": float(
                    explained_variance(flat_valid(data, "values_old"), flat_valid(data, "returns"))
                ),
                "train/clip_range": clip_range,
                "train/learning_rate": self.optimizers[0].param_groups[0]["lr"],
                "train/n_updates": self.num_updates,
                "train/nonfinite_skipped": self.guard.skipped,
                "train/manual_grad": float(self.manual_grad is not None),
                "train/torch_threads": self.threads.threads,
            }
        )
        return metrics

    # -- the loop ------------------------------------------------------------------------------------
    def learn(
        self,
        total_timesteps: int | None = None,
        progress_bar: bool = False,
        callback: Callable[[PPO, dict], bool | None] | None = None,
        reset_num_timesteps: bool = True,
    ) -> PPO:
        """Train ``total_timesteps`` more env steps, as SB3's ``learn``: with ``reset_num_timesteps``
        (SB3's default) the step counter, and with it the linear schedules, starts from 0 again;
        ``False`` continues it (the schedules then span the steps so far plus these). With no
        ``total_timesteps``, continue to the run's own total (a resumed run ends exactly where an
        uninterrupted one would; a new model trains ``config.total_timesteps``).
        ``callback(ppo, metrics)`` runs after each update; returning False stops training, and so
        does ``stop_requested``. See docs/reliability.md for checkpoints and faults."""
        if total_timesteps is None:
            target = self.target_timesteps or self.config.total_timesteps
        else:
            if (
                isinstance(total_timesteps, bool)
                or not isinstance(total_timesteps, int)
                or total_timesteps < 0
            ):
                raise ConfigError(
                    f"total_timesteps={total_timesteps!r} is not allowed; give a whole number of steps >= 0"
                )
            if reset_num_timesteps and self.num_timesteps:
                self.num_timesteps = self.last_checkpoint_step = 0
            target = self.num_timesteps + total_timesteps
        return self._learn_until(target, progress_bar, callback)

    def _learn_until(
        self, total: int, progress_bar: bool, callback: Callable[[PPO, dict], bool | None] | None
    ) -> PPO:
        """The training loop: rollout, update, log, checkpoint, until ``total`` steps in all."""
        from ppokit.tracking import ProgressBar

        self.target_timesteps = total
        start_steps, start_time = self.num_timesteps, time.time()
        with ProgressBar(total, f"PPO {state.env_label(self)}", "return", enabled=progress_bar) as bar:
            bar.update(self.num_timesteps, done_since_start=0)
            while self.num_timesteps < total and self.stop_requested is None:
                clip_range = self._set_schedules(total)
                self.threads.update()  # one thread as soon as other work takes the second core
                with autocast(self.device, self.config.bf16):
                    self.collector.collect(self.buffer)
                sync_statistics(self.obs_norm, self.reward_scaler)
                self.num_timesteps += self.config.rollout_size * self.dist.world_size
                try:
                    metrics = self.update(clip_range)
                except NonFiniteError as e:
                    raise state.emergency_stop(self, e) from None
                fps = (self.num_timesteps - start_steps) / max(time.time() - start_time, 1e-9)
                metrics.update(self.collector.episodes.metrics())
                metrics.update(
                    {
                        "time/fps": fps,
                        "time/total_timesteps": self.num_timesteps,
                        "time/elapsed_s": time.time() - PROCESS_START,
                        "time/iterations": self.num_updates,
                        "rollout/nonfinite_skipped": self.collector.skipped_nonfinite,
                    }
                )
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

    def _log(self, metrics: dict[str, float]) -> None:
        episodes = self.collector.episodes.drain()
        if self.tracker is not None:
            if self.num_updates % self.config.log_every == 0:
                self.tracker.log(self.num_timesteps, metrics)
            self.tracker.log_episodes(episodes)

    # -- state: the composition of the parts' states (state.py) -----------------------------------------
    def state_dict(self, training: bool = True) -> dict[str, Any]:
        """Everything a model needs (policy, normalisers, counters, KL coefficient) and, with
        ``training``, everything a resumed run needs too (optimizers, step guard, collector, RNGs)."""
        return state.parts_state(self, training)

    def load_state_dict(self, sd: dict[str, Any]) -> dict[str, Any]:
        """Restore ``state_dict`` (a model's or a training checkpoint's); returns what was restored."""
        return state.load_parts_state(self, sd)

    @property
    def nonfinite_skipped(self) -> int:
        """Optimizer steps skipped for a non-finite loss or gradient, over the run."""
        return self.guard.skipped

    # -- using the policy ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        obs: Any,
        state: np.ndarray | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(action, state)`` for one observation or a batch, exactly as the env gives them (a dict
        for Dict spaces, an int for Discrete ones), encoded and normalised like training; the action
        as the env takes it (clipped or squashed Box, MultiBinary in the space's dtype). As
        sb3-contrib's ``RecurrentPPO.predict`` / ``MaskablePPO.predict``:

        A recurrent policy (rl/recurrent.py) takes the ``state`` the previous call returned (None: the
        initial state) and ``episode_start`` (bool per env: reset the state before this observation),
        and returns the new state ``[n, state_size]``; other policies return None. ``action_masks``
        (``[n, mask_dim]`` or ``[mask_dim]`` bool, True = allowed; rl/masking.py) restricts the action.
        """
        return predict_actions(self, obs, state, episode_start, deterministic, action_masks)

    def evaluate(self, episodes: int = 20, deterministic: bool = True, seed: int = 10_000) -> dict[str, Any]:
        """Mean and std of the return over ``episodes`` fresh episodes (see ``evaluation.py``)."""
        from ppokit.rl.evaluation import evaluate_policy

        return evaluate_policy(self, episodes, deterministic, seed)

    def save(self, path: str | Path) -> Path:
        """Save the policy, normalisation statistics and config (safetensors + JSON, no pickle)."""
        return state.save_model(self, Path(path))

    @classmethod
    def load(
        cls, path: str | Path, env: EnvSpec | None = None, policy: PolicySpec = None, **overrides: Any
    ) -> PPO:
        """Load a model saved by ``save`` (or a checkpoint); ``env`` defaults to the saved id, and a
        model trained with a custom policy needs the same ``policy`` again."""
        return state.load_model(cls, Path(path), env, policy, **overrides)

    @classmethod
    def resume(
        cls,
        path: str | Path,
        env: EnvSpec | None = None,
        run_dir: str | Path | None = None,
        policy: PolicySpec = None,
    ) -> PPO:
        """Continue a run from a training checkpoint or a run directory's newest complete one: all
        training state and, where possible, the envs' (``resume_info``; docs/reliability.md)."""
        return state.resume(cls, Path(path), env, run_dir, policy)

    def close(self) -> None:
        """Close the environments, the metric writers and the run directory's lock."""
        self.venv.close()
        self.close_run_dir()
