"""PPO for Gymnasium environments: the file to read first.

    PPO("CartPole-v1", PPOConfig()).learn(100_000)

Sections: construction (env, policy, optimizers: parts that each own their state) -> ``learn``
(the rollout, ``rollout.py``; the update and the loss, ``update.py``; logging; checkpoints) -> using
the policy (predict, evaluate, save, load, resume). The run itself (run directory, checkpoint cadence,
signals, emergency checkpoint, callbacks) is ``ppokit.train.loop.RunLoop``'s: ``PPO`` implements its
``Trainable`` protocol (``position``, ``run_step``, ``state_dict``/``load_state_dict``,
``save_checkpoint``). ``state_dict`` is the composition of the parts' states. References: Schulman et al. 2017
(PPO, https://arxiv.org/abs/1707.06347); Huang et al. 2022, "The 37 Implementation Details of PPO"
(https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ppokit import distributed
from ppokit.config import ConfigError
from ppokit.errors import CheckpointError
from ppokit.functional import explained_variance
from ppokit.rl import batched, fast, sb3
from ppokit.rl.adaptive_lr import AdaptiveLR
from ppokit.rl.builtin import PolicySpec, make_policy
from ppokit.rl.callbacks import loop_hooks
from ppokit.rl.config import PPOConfig, resolve_config
from ppokit.rl.envs import EnvSpec, env_name, space_signature
from ppokit.rl.masking import mask_dim
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
from ppokit.tracking import PROCESS_START, ProgressBar, Tracker
from ppokit.train.checkpoint import (
    flatten_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_step_checkpoint,
    unflatten_state,
)
from ppokit.train.loop import RunLoop
from ppokit.train.precision import autocast
from ppokit.train.rng import capture_rng, restore_rng
from ppokit.train.rundir import RunDirLock, config_text
from ppokit.train.step import GuardedStep
from ppokit.train.threads import ThreadChooser

MODEL_KIND = "ppokit.rl.PPO"
STATE_FORMAT = 2  # 1: wave-1 checkpoints (attribute by attribute), no longer read
# the logs of a run directory and their step column: trimmed to the checkpoint's step on resume
LOGS = {"metrics.csv": "time/total_timesteps", "episodes.csv": "step"}


class PPO:
    """Actor-critic PPO. ``env`` is a Gymnasium id or a factory returning a ``gym.Env``; ``policy``
    a ``Policy`` (rl/policy.py), or a callable ``(observation_space, action_space) -> Policy``, or
    None for the built-in MLP actor-critic of ``config.network``."""

    # RunLoop: the step counter moves when a rollout is complete, before the update changes anything,
    # so a failure while it has not moved (an env or the policy failing in the rollout) leaves the
    # last update's parameters to checkpoint (train/loop.py, issue 34)
    counter_moves_first = True

    def __init__(
        self,
        env: EnvSpec | None = None,
        config: PPOConfig | dict | None = None,
        run_dir: str | Path | None = None,
        policy: PolicySpec = None,
        **overrides: Any,
    ):
        # SB3's form PPO("MlpPolicy", env, **sb3_kwargs) and env instances, translated (rl/sb3.py)
        env, config, run_dir, policy, overrides = sb3.accept(self, env, config, run_dir, policy, overrides)
        batched.default_num_envs(env, config, overrides)  # issue 32: a batched env instance sets num_envs
        self.config = cfg = resolve_config(config, env, overrides)
        self.env_fn = env if env is not None and not isinstance(env, str) else None
        self.env_spec: EnvSpec = env if env is not None else cfg.env_id
        self.threads = ThreadChooser(cfg.torch_threads, cfg.batch_size * max(cfg.network.hidden_sizes))
        self.np_rng = seed_everything(cfg.seed)
        self.dist = distributed.init(cfg.device)
        # issue 31: cuda (what device auto is saved as) is this rank's own GPU, cuda:LOCAL_RANK, so that
        # torchrun's ranks spread over the machine's GPUs; no CUDA here is a ConfigError naming device
        self.device = distributed.resolve_device(cfg.device, self.dist.local_rank)
        if self.dist.enabled:  # one process: SB3's verbose "Using <device> device" says it (callbacks.py)
            distributed.announce("ppokit ppo", self.device)
        # -- the environments and the policy ----------------------------------------------------
        # a Gymnasium numpy vector env, or a device-resident batched one (issue 32, rl/batched/)
        self.venv, self.obs_layout = batched.make_training_envs(self.env_spec, cfg)
        self.observation_space = self.venv.single_observation_space
        self.action_space = self.venv.single_action_space
        spaces = (self.observation_space, self.action_space)
        policy = policy if policy is not None else batched.default_policy(self.venv, cfg)  # issue 32
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
        # issue 32: rsl_rl's KL-adaptive learning rate (rl/adaptive_lr.py)
        self.adaptive_lr = (
            AdaptiveLR(cfg.learning_rate, cfg.desired_kl) if cfg.lr_schedule == "adaptive" else None
        )
        self.num_timesteps = self.num_updates = 0
        self.target_timesteps: int | None = None  # the `total` of the current run (schedules need it)
        # -- the run (not training state): run directory, checkpoint cadence, signals -----------------
        self.stop_requested: int | None = None  # a signal number: stop cleanly after this update
        self.resume_info: dict[str, Any] | None = None  # set by PPO.resume: what was restored
        self._learn_start = (0, time.time())  # (steps, time) when learn() began: time/fps counts from here
        self.run_loop = RunLoop(self, cfg.checkpoint_every, cfg.checkpoint_every_seconds, LOGS)
        if run_dir is not None:
            self.set_run_dir(run_dir)

    def _make_rollout_parts(self, rank_seed: int) -> None:
        """The normalisers, the collector that steps the envs with the policy, and the rollout buffer."""
        cfg, obs_shape = self.config, self.obs_layout.shape
        if isinstance(self.venv, batched.BatchedEnv):  # issue 32: the rollout stays on the device
            return batched.make_rollout_parts(self, rank_seed)
        batched.check_numpy_path(cfg)
        self.obs_norm = ObsNormalizer(obs_shape, cfg.obs_clip) if cfg.normalize_obs else None
        self.reward_scaler = (
            RewardScaler(cfg.num_envs, cfg.gamma, cfg.reward_clip) if cfg.normalize_reward else None
        )
        self.collector = Collector(
            self.venv, self.policy, self.device, rank_seed, self.obs_norm, self.reward_scaler,
            cfg.nan_policy, cfg.action_masking, env_name(self.env_spec), self.obs_layout,
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

    @property
    def run_dir(self) -> Path | None:
        """Where this run logs metrics and writes checkpoints (None: nowhere)."""
        return self.run_loop.run_dir

    def set_run_dir(self, run_dir: str | Path, lock: RunDirLock | None = None) -> None:
        """Log metrics (CSV, TensorBoard) and write checkpoints under ``run_dir``, a new run: it is
        claimed as ``ppokit train`` claims it (locked, ``config.yaml`` written), and a directory that
        holds a run is refused, naming ``PPO.resume`` (issue 29: it was overwritten silently).
        ``lock``: the directory's ``RunDirLock`` when the caller already claimed it (the command line)."""
        if self.run_loop.attached and Path(run_dir) == self.run_dir:
            return
        claim_with = None if lock is not None else (config_text(self.config), f"PPO.resume({str(run_dir)!r})")
        self.run_loop.attach(run_dir, lock=lock, claim_with=claim_with, **self._tracker_options())

    def _tracker_options(self) -> dict[str, Any]:
        return Tracker.options(self.config)  # metrics.csv, TensorBoard and wandb as report_to says

    def close_run_dir(self) -> None:
        """Close the metric writers and release the run directory's lock."""
        self.run_loop.detach()

    # -- schedules ---------------------------------------------------------------------------------
    def _set_schedules(self, total: int) -> float:
        """Set this update's learning rates; return its clip range (linear: from full to 0, as SB3)."""
        cfg = self.config
        frac = max(0.0, 1.0 - self.num_timesteps / max(total, 1))
        lr_scale = frac if cfg.lr_schedule == "linear" else 1.0
        if self.adaptive_lr is not None:  # issue 32: the rate the KL rule reached
            lr_scale = self.adaptive_lr.scale
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
        step = self._loss_and_backward
        if self.adaptive_lr is not None:  # issue 32: adapt the rate to each minibatch's KL first
            step = self.adaptive_lr.wrap(step, self.optimizers)
        metrics = ppo_update(data, step, self.guard, clip_range, cfg.n_epochs, n_minibatches, cfg.target_kl)
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
        callback: Any = None,
        reset_num_timesteps: bool = True,
        **sb3_kwargs: Any,
    ) -> PPO:
        """Train ``total_timesteps`` more env steps, as SB3's ``learn``: with ``reset_num_timesteps``
        (SB3's default) the step counter, and with it the linear schedules, starts from 0 again;
        ``False`` continues it (the schedules then span the steps so far plus these). With no
        ``total_timesteps``, continue to the run's own total (a resumed run ends exactly where an
        uninterrupted one would; a new model trains ``config.total_timesteps``).
        ``callback``: ``f(ppo, metrics)`` after each update (returning False stops training), an
        object with ``on_start``/``on_step``/``on_end`` (an SB3-style ``BaseCallback``, rl/callbacks.py),
        or a list (``train/callbacks.py``); ``stop_requested`` stops it too. The loop is
        ``RunLoop.run``; see docs/reliability.md for checkpoints and faults."""
        total_timesteps = sb3.before_learn(self, total_timesteps, sb3_kwargs)  # learn(1e4), log_interval
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
                self.num_timesteps = 0
                self.run_loop.cadence.saved(0, None)
            target = self.num_timesteps + total_timesteps
        self.target_timesteps = target
        self._learn_start = (self.num_timesteps, time.time())  # time/fps counts this call's steps
        label = f"PPO {env_name(self.env_spec)}"
        with ProgressBar(target, label, "return", enabled=progress_bar) as bar:
            self.run_loop.run(loop_hooks(self, callback), bar, headline="rollout/ep_rew_mean")
        return self

    def position(self) -> tuple[int, int]:
        """``(env steps so far, the run's total)``: where ``RunLoop`` stands (the ``Trainable`` protocol)."""
        return self.num_timesteps, self.target_timesteps or self.config.total_timesteps

    def run_step(self) -> dict[str, float]:
        """One update of the run (the ``Trainable`` protocol): collect a rollout with the schedules of
        this step, update on it, log and return its metrics row."""
        clip_range = self._set_schedules(self.target_timesteps or self.config.total_timesteps)
        self.threads.update()  # one thread as soon as other work takes the second core
        with autocast(self.device, self.config.bf16):
            self.collector.collect(self.buffer)
        sync_statistics(self.obs_norm, self.reward_scaler)
        self.num_timesteps += self.config.rollout_size * self.dist.world_size
        metrics = self.update(clip_range)
        start_steps, start_time = self._learn_start
        fps = (self.num_timesteps - start_steps) / max(time.time() - start_time, 1e-9)
        metrics.update(self.collector.episodes.metrics())
        metrics.update(getattr(self.collector, "metrics", dict)())  # batched: the time-out rule (issue 32)
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
        return metrics

    def _log(self, metrics: dict[str, float]) -> None:
        episodes = self.collector.episodes.drain()
        tracker = self.run_loop.tracker
        if tracker is not None:
            if self.num_updates % self.config.log_every == 0:
                tracker.log(self.num_timesteps, metrics)
            tracker.log_episodes(episodes)

    # -- state: the composition of the parts' states ---------------------------------------------------
    # A *model* (``save``) holds ``state_dict(training=False)``: the policy, normalisation statistics,
    # counters and KL coefficient, with the config and the spaces. A *training checkpoint*
    # (``save_checkpoint``) holds the full ``state_dict()``: also optimizer states, the step guard's
    # counters, RNG states, the collector (episode statistics and, when ``envstate.capture`` can save
    # them, the environments' exact state with the rollout's current observation). Resumed at an
    # update boundary on CPU, such a run ends with bit-identical parameters to an uninterrupted one.
    # Environments that cannot be saved (MuJoCo, async workers, custom envs holding other objects)
    # are reset with a seed derived from the run seed and the step count; ``resume_info`` says which.
    # Tensors go to safetensors, the rest to JSON (train/checkpoint.py): nothing is pickled.
    def state_dict(self, training: bool = True) -> dict[str, Any]:
        """Everything a model needs (policy, normalisers, counters, KL coefficient) and, with
        ``training``, everything a resumed run needs too (optimizers, step guard, collector, RNGs):
        each part's own ``state_dict`` under its name."""
        out: dict[str, Any] = {
            "policy": self.policy.state_dict(),
            "counters": {"num_timesteps": self.num_timesteps, "num_updates": self.num_updates},
            "kl": self.kl.state_dict(),
        }
        if self.obs_norm is not None:
            out["obs_norm"] = self.obs_norm.state_dict()
        if self.reward_scaler is not None:
            out["reward_scaler"] = self.reward_scaler.state_dict()
        if training:
            rng_tensors, rng_tree = capture_rng(numpy_generators={"ppo": self.np_rng})
            out["counters"]["target_timesteps"] = self.target_timesteps
            out.update(
                optimizers=[opt.state_dict() for opt in self.optimizers],
                guard=self.guard.state_dict(),
                collector=self.collector.state_dict(),
                rng={"tensors": rng_tensors, "tree": rng_tree},
            )
            if self.adaptive_lr is not None:  # issue 32: resume restores the adapted rate
                out["adaptive_lr"] = self.adaptive_lr.state_dict()
        return out

    def load_state_dict(self, sd: dict[str, Any]) -> dict[str, Any]:
        """Restore ``state_dict`` (a model's or a training checkpoint's): each part restores its own
        state. Returns what was restored: ``{"step", "env_state_restored", "env_state_missing"}``."""
        self.policy.load_state_dict(sd["policy"])
        if self.adaptive_lr is not None and "adaptive_lr" in sd:  # issue 32
            self.adaptive_lr.load_state_dict(sd["adaptive_lr"])
        for part, key in ((self.obs_norm, "obs_norm"), (self.reward_scaler, "reward_scaler")):
            if part is not None:
                part.load_state_dict(sd[key])
        self.num_timesteps = int(sd["counters"]["num_timesteps"])
        self.num_updates = int(sd["counters"]["num_updates"])
        self.kl.load_state_dict(sd["kl"])
        info: dict[str, Any] = {"step": self.num_timesteps, "env_state_restored": False}
        if "optimizers" not in sd:
            return info
        for opt, opt_state in zip(self.optimizers, sd["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        self.guard.load_state_dict(sd["guard"])
        self.target_timesteps = sd["counters"]["target_timesteps"]
        if self.dist.is_main:  # rank 0's generators: other ranks keep the streams seeded per rank
            restore_rng(sd["rng"]["tensors"], sd["rng"]["tree"], numpy_generators={"ppo": self.np_rng})
        missing = self.collector.load_state_dict(sd["collector"])
        if missing is not None and self.reward_scaler is not None:
            self.reward_scaler.returns[:] = 0.0  # fresh episodes: their discounted returns start at 0
        self.run_loop.cadence.saved(self.num_timesteps, None)  # the cadence counts from the checkpoint
        info.update(env_state_restored=missing is None, env_state_missing=missing)
        return info

    def _to_disk(self, training: bool) -> tuple[dict, dict[str, Any]]:
        """``(tensors, meta)`` of ``state_dict(training)`` with the config, spaces and policy class."""
        sd = self.state_dict(training=training)
        tensors, tree = flatten_state("", sd)
        meta = {
            "kind": MODEL_KIND,
            "format": STATE_FORMAT,
            "training": training,
            "config": self.config.to_dict(),
            "env": env_name(self.env_spec),
            "spaces": space_signature(self.observation_space, self.action_space),
            "policy": _policy_name(self.policy),
            "env_factory": self.env_fn is not None,
            "num_timesteps": self.num_timesteps,
            "state": tree,
        }
        if training:  # readable without decoding the state tree: why the envs would be reset on resume
            meta["env_state_missing"] = sd["collector"]["env"]["missing"]
        return tensors, meta

    def _check_compatible(self, meta: dict[str, Any], where: Path) -> None:
        """Refuse a model trained on other spaces or with another policy class (a clear error, not a
        shape crash)."""
        if meta.get("format") != STATE_FORMAT:
            raise CheckpointError(
                f"{str(where)!r} was written by an older ppokit (format {meta.get('format', 1)}); "
                f"this version reads format {STATE_FORMAT}"
            )
        have = space_signature(self.observation_space, self.action_space)
        if meta.get("spaces") != have:
            raise CheckpointError(
                f"model {str(where)!r} was trained on spaces {meta.get('spaces')}, but the environment "
                f"has {have}"
            )
        if meta.get("policy") != _policy_name(self.policy):
            raise CheckpointError(
                f"model {str(where)!r} was trained with policy {meta.get('policy')}, not "
                f"{_policy_name(self.policy)}; pass the same policy (PPO.load(path, policy=...))"
            )

    def _restore(self, tensors: dict, meta: dict[str, Any], where: Path, training: bool) -> dict[str, Any]:
        """Load a model's (or, with ``training``, a training checkpoint's) state. Returns what was
        restored (``load_state_dict``'s answer and ``"checkpoint"``). A checkpoint whose contents do
        not fit the model raises CheckpointError, never a KeyError."""
        self._check_compatible(meta, where)
        try:
            sd = unflatten_state(meta["state"], tensors)
            if not training:
                keep = ("policy", "obs_norm", "reward_scaler", "counters", "kl")
                sd = {k: v for k, v in sd.items() if k in keep}
            info = self.load_state_dict(sd)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
            raise CheckpointError(
                f"checkpoint {str(where)!r} does not fit this model ({type(e).__name__}: {e})"
            ) from None
        return {"checkpoint": str(where), **info}

    def save_checkpoint(self, root: str | Path | None = None) -> Path:
        """A resumable training checkpoint ``root/step_<N>`` (default ``RUN_DIR/checkpoints``) of
        the full ``state_dict()``, keeping the newest ``keep_checkpoints`` (the ``Trainable`` protocol)."""
        if root is None:
            if self.run_dir is None:
                raise ConfigError("save_checkpoint() needs a root or a run directory: PPO(..., run_dir=...)")
            root = self.run_dir / "checkpoints"
        tensors, meta = self._to_disk(training=True)
        keep = self.config.keep_checkpoints
        return save_step_checkpoint(Path(root), self.num_timesteps, tensors, meta, keep=keep)

    def checkpoint(self) -> Path | None:
        """A checkpoint of the current state in the run directory (the newest one when it is of this
        very step; None without a run directory)."""
        return self.run_loop.checkpoint()

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

        if isinstance(self.venv, batched.BatchedEnv):  # issue 32
            return batched.evaluate(self, episodes, deterministic, seed)
        return evaluate_policy(self, episodes, deterministic, seed)

    def save(self, path: str | Path) -> Path:
        """Save the policy, normalisation statistics and config (safetensors + JSON, no pickle),
        atomically."""
        path = Path(path)
        tensors, meta = self._to_disk(training=False)
        return save_checkpoint(path.parent, path.name, tensors, meta)

    @classmethod
    def load(
        cls, path: str | Path, env: EnvSpec | None = None, policy: PolicySpec = None, **overrides: Any
    ) -> PPO:
        """Load a model saved by ``save`` (or a checkpoint, or a run directory's model or newest
        checkpoint); ``env`` defaults to the saved id, and a model trained with a custom policy needs
        the same ``policy`` again."""
        where = _model_path(Path(path))
        tensors, meta = _read(where, need_training=False)
        _require_env(meta, env, where, "load")
        config = PPOConfig.from_dict({**meta["config"], **overrides})
        ppo = cls(env if env is not None else config.env_id, config, policy=policy)
        ppo._restore(tensors, meta, where, training=False)
        return ppo

    @classmethod
    def resume(
        cls,
        path: str | Path,
        env: EnvSpec | None = None,
        run_dir: str | Path | None = None,
        policy: PolicySpec = None,
    ) -> PPO:
        """Continue a run from a training checkpoint or a run directory's newest complete one: all
        training state and, where possible, the envs' (``resume_info``; docs/reliability.md).

        Logs and checkpoints go on in ``run_dir``; by default, when ``path`` is a run directory, in
        that run (its rows after the checkpoint's step are dropped first: that work was lost)."""
        where, own_run = _training_checkpoint(Path(path))
        tensors, meta = _read(where, need_training=True)
        _require_env(meta, env, where, "resume")
        config = PPOConfig.from_dict(meta["config"])
        # Environments that cannot be restored exactly start fresh episodes from a seed derived from
        # the run seed and the step count, so a resumed run does not replay the episodes it saw.
        reseed = (config.seed + int(meta["num_timesteps"])) % 2**63
        ppo = cls(env if env is not None else config.env_id, config.replace(seed=reseed), policy=policy)
        ppo.config = config
        ppo.resume_info = ppo._restore(tensors, meta, where, training=True)
        run_dir = run_dir if run_dir is not None else own_run
        if run_dir is not None:
            try:  # the lock before the trim: two resumes of one run both trimmed, then both appended
                ppo.run_loop.attach(run_dir, resume_step=ppo.num_timesteps, **ppo._tracker_options())
            except BaseException:
                ppo.close()
                raise
        return ppo

    def get_env(self) -> gym.vector.VectorEnv:
        """The running training vector env (SB3's ``get_env``)."""
        return sb3.get_env(self)

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        """Train on ``env`` from now on (same spaces and number of envs; SB3's ``set_env``); the new envs
        always start with a reset (SB3's ``force_reset=False`` is refused)."""
        if not force_reset:
            raise ConfigError("set_env(force_reset=False) is not supported; ppokit resets the new envs")
        sb3.set_env(self, env)

    def close(self) -> None:
        """Close the environments, the metric writers and the run directory's lock (released also when
        an environment's ``close()`` raises)."""
        try:
            self.venv.close()
        finally:
            self.close_run_dir()


# -- finding and reading saved models and checkpoints ------------------------------------------------
def _policy_name(policy: Any) -> str:
    cls = type(policy)
    return f"{cls.__module__}.{cls.__qualname__}"


def _model_path(path: Path) -> Path:
    """A model directory, or for a run directory its final model, else its newest checkpoint."""
    if not path.exists():
        raise CheckpointError(f"{str(path)!r} does not exist")
    if (path / "manifest.json").exists() or (path / "tensors.safetensors").exists():
        return path
    if (path / "model" / "manifest.json").exists():
        return path / "model"
    newest = latest_checkpoint(path / "checkpoints")
    if newest is None:
        raise CheckpointError(f"{str(path)!r} holds no model and no complete checkpoint")
    return newest


def _training_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """``(checkpoint, run_dir)`` for a run directory (its newest complete checkpoint, and itself) or
    a checkpoint directory (itself, and no run directory: logging is the caller's choice)."""
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r} does not exist or is not a directory")
    if (path / "manifest.json").exists():
        return path, None
    newest = latest_checkpoint(path / "checkpoints")
    if newest is None:
        what = "run directory" if (path / "config.yaml").is_file() else "ppokit run directory or checkpoint"
        raise CheckpointError(f"{str(path)!r} is no {what} with a complete checkpoint to resume from")
    return newest, path


def _read(path: Path, need_training: bool) -> tuple[dict, dict[str, Any]]:
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != MODEL_KIND or (need_training and not meta.get("training")):
        what = "PPO training checkpoint" if need_training else "PPO model"
        raise CheckpointError(f"{str(path)!r} is not a ppokit {what} (kind={meta.get('kind')!r})")
    return tensors, meta


def _require_env(meta: dict[str, Any], env: Any, where: Path, verb: str) -> None:
    """A model trained on an env factory cannot rebuild its env from the id in its config."""
    if env is None and meta.get("env_factory"):
        raise CheckpointError(
            f"model {str(where)!r} was trained on environments from a factory ({meta.get('env')}); "
            f"pass it again: PPO.{verb}(path, env=make_env)"
        )
