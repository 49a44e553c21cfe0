"""``PPOConfig``: every knob of Gymnasium PPO, with its documentation and its validation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ppokit.config import (
    REPORT_TO,
    ConfigBase,
    check,
    check_adam_betas,
    checkpoint_every_seconds_option,
    option,
    report_to_option,
    step_timeout_option,
)
from ppokit.functional.losses import OBJECTIVES


@dataclass
class NetworkConfig(ConfigBase):
    """Actor and critic networks."""

    hidden_sizes: list[int] = option([64, 64], "Hidden layer widths of the actor and of the critic MLPs.")
    activation: str = option("tanh", "Hidden activation.", choices=("tanh", "relu", "elu"))
    shared_trunk: bool = option(False, "Share one MLP trunk between actor and critic (default: separate).")
    ortho_init: bool = option(True, "Orthogonal init (gain sqrt(2) hidden, 0.01 policy head, 1 value head).")
    log_std_init: float = option(0.0, "Initial log standard deviation of the Gaussian policy (Box actions).")
    log_std_min: float = option(-5.0, "Lower bound the Gaussian log-std is clamped to.")
    log_std_max: float = option(2.0, "Upper bound the Gaussian log-std is clamped to.")
    action_bounds: str = option(
        "clip",
        "Bounded Box actions: clip the Gaussian sample at the env (SB3's default), or tanh-squash it to "
        "the bounds with the log-prob corrected, or beta: a Beta distribution scaled to the bounds "
        "(rl/distributions.py; issue 32).",
        choices=("clip", "tanh", "beta"),
    )
    image_encoder: str = option(
        "auto",
        "CNN for image observations (uint8 Box, channels first or last): nature (Atari DQN, images "
        ">= 36x36), small (3x3 convs, small images); auto picks nature when it fits.",
        choices=("auto", "nature", "small"),
    )
    cnn_features: int = option(512, "Width of the CNN's final linear layer (its feature vector).")
    mlp_after_cnn: bool = option(
        False,
        "Image-only observations: put the hidden_sizes MLP(s) after the CNN (default: the heads read "
        "the CNN features directly, as SB3's CnnPolicy and CleanRL's Atari agent).",
    )
    recurrent: str = option(
        "none",
        "A recurrent layer after the observation encoder (rl/recurrent.py): the policy keeps a state "
        "across the steps of an episode. The update re-runs whole env sequences from the rollout's "
        "stored initial states (batch_size must then be a multiple of n_steps).",
        choices=("none", "lstm", "gru"),
    )
    recurrent_hidden_size: int = option(64, "Width of the recurrent layer's state (network.recurrent).")
    recurrent_shared: bool = option(
        False, "Actor and critic share one recurrent layer (default: each has its own encoder and layer)."
    )

    def validate(self) -> None:
        super().validate()
        check(
            len(self.hidden_sizes) > 0 and all(h > 0 for h in self.hidden_sizes),
            "network.hidden_sizes",
            self.hidden_sizes,
            "give one or more positive widths",
        )
        check(
            self.recurrent_hidden_size > 0,
            "network.recurrent_hidden_size",
            self.recurrent_hidden_size,
            "must be a positive integer",
        )
        check(
            self.log_std_min < self.log_std_max,
            "network.log_std_min",
            self.log_std_min,
            f"must be below network.log_std_max={self.log_std_max}",
        )
        check(
            self.log_std_min <= self.log_std_init <= self.log_std_max,
            "network.log_std_init",
            self.log_std_init,
            f"must lie in [{self.log_std_min}, {self.log_std_max}]",
        )
        check(self.cnn_features >= 1, "network.cnn_features", self.cnn_features, "must be a positive integer")


@dataclass
class PPOConfig(ConfigBase):
    """Proximal Policy Optimization on Gymnasium environments. Defaults follow SB3's PPO."""

    env_id: str = option("CartPole-v1", "Gymnasium environment id.")
    env_kwargs: dict = option({}, "Keyword arguments passed to gymnasium.make / make_vec.")
    gym_packages: list[str] = option(
        [],
        "Python modules to import before looking the env id up (they register their envs), as rl-zoo's "
        "--gym-packages. Ids of common packages (ALE/, MiniGrid-, ...) import theirs automatically.",
    )
    env_wrappers: list = option(
        [],
        "Gymnasium wrappers applied to each env in order: dotted names, or {dotted.Name: {kwargs}}; "
        "saved with the run and re-applied by eval, resume and PPO.load.",
    )
    num_envs: int = option(8, "Environments stepped in parallel (per process).")
    vectorization: str = option(
        "auto",
        "Vector env kind: auto picks the env's numpy vector entry point when it has one, else sync.",
        choices=("auto", "vector_entry_point", "sync", "async"),
    )
    env_backend: str = option(
        "gymnasium",
        "Who steps the environments: gymnasium (Gymnasium's vector envs, as vectorization says) or "
        "envpool (EnvPool's C++ thread pool, issue 33: MuJoCo, Atari, classic control; the id must be "
        "one EnvPool has; pip install 'ppokit[envpool]'; rl/envpool_backend.py).",
        choices=("gymnasium", "envpool"),
    )
    total_timesteps: int = option(100_000, "Environment steps to train for (all envs together).")
    seed: int = option(0, "Seed for torch, numpy and the environments.")
    device: str = option(
        "cpu", "Torch device for the networks: auto (cuda when available), cpu, cuda, cuda:N."
    )
    bf16: bool = option(
        False,
        "Mixed precision: the policy's forward passes (rollout and loss) under bfloat16 autocast, weights, "
        "optimizer state and the loss's arithmetic in float32 (train/precision.py). Pays for CNNs on "
        "GPUs and on CPUs with AMX/AVX512-BF16; turns the CPU fast path off (manual_grad).",
    )
    torch_threads: int = option(
        0,
        "torch.set_num_threads; 0 (auto): one thread, two when the minibatch is large (batch_size x "
        "widest layer >= 65536) and a second core is free, re-checked every second (train/threads.py).",
    )
    manual_grad: bool | str = option(
        "auto",
        "The CPU fast path (rl/fast/): gradients of the built-in loss by hand-derived formulas (same values, "
        "tested; ~2x faster on CPU). auto: use it wherever it is exactly right (the built-in MLP policy "
        "and loss on CPU); true: require it (an error says why it cannot be used); false: autograd on "
        "PPO.loss always. The path taken is logged as train/manual_grad (1 or 0).",
    )

    n_steps: int = option(128, "Steps per environment per rollout; rollout size = n_steps * num_envs.")
    batch_size: int = option(256, "Minibatch size (SB3 meaning); must divide n_steps * num_envs.")
    n_epochs: int = option(10, "Passes over the rollout per update.")
    learning_rate: float = option(3e-4, "Adam learning rate (initial value when annealed).")
    lr_schedule: str = option(
        "constant",
        "Learning-rate schedule over training; adaptive: rsl_rl's KL rule (desired_kl, rl/adaptive_lr.py).",
        choices=("constant", "linear", "adaptive"),
    )
    adam_betas: list[float] = option([0.9, 0.999], "Adam (beta1, beta2).")
    adam_eps: float = option(1e-5, "Adam epsilon (1e-5 as in the OpenAI baselines PPO).")
    separate_optimizers: bool = option(False, "One Adam for the actor and one for the critic.")
    critic_learning_rate: float | None = option(None, "Critic lr with separate optimizers (None: same).")
    max_grad_norm: float | None = option(0.5, "Clip the global gradient norm (None: no clipping).")

    gamma: float = option(0.99, "Discount factor.")
    gae_lambda: float = option(0.95, "GAE lambda (1 = Monte-Carlo, 0 = one-step TD).")
    normalize_advantage: bool = option(True, "Normalise advantages per minibatch.")

    objective: str = option("clip", "Policy objective (PPO paper Table 1 rows).", choices=OBJECTIVES)
    clip_range: float = option(0.2, "Clip range epsilon of the clipped objective.")
    clip_range_schedule: str = option("constant", "Clip-range schedule.", choices=("constant", "linear"))
    kl_coef: float = option(1.0, "KL penalty coefficient beta (kl_penalty; initial value for kl_adaptive).")
    adaptive_kl_target: float = option(
        0.01, "d_targ of the adaptive KL rule (kl_adaptive): the target mean KL per sample, per update."
    )
    target_kl: float | None = option(
        None,
        "Stop the update's epochs once a minibatch's approx KL "
        "exceeds 1.5 * target_kl (SB3's rule), before that step.",
    )

    ent_coef: float = option(0.0, "Entropy bonus coefficient: loss = pg - ent_coef*entropy + vf_coef*vf.")
    vf_coef: float = option(0.5, "Value loss coefficient.")
    value_loss: str = option("mse", "Critic loss.", choices=("mse", "huber"))
    huber_delta: float = option(1.0, "Threshold of the Huber critic loss.")
    vf_clip_range: float | None = option(None, "Clip the value prediction to old value +- this (None: off).")

    normalize_obs: bool = option(
        False, "Normalise observations with running mean/std (saved with the model)."
    )
    normalize_reward: bool = option(False, "Scale rewards by the running std of the discounted return.")
    obs_clip: float = option(10.0, "Clip normalised observations to +- this.")
    reward_clip: float = option(10.0, "Clip scaled rewards to +- this.")

    network: NetworkConfig = option(NetworkConfig(), "Actor and critic networks.")
    action_masking: bool | str = option(
        "auto",
        "Invalid-action masking (rl/masking.py): auto uses the env's masks when it gives them (an "
        "action_masks() method, info['action_mask'] or a Dict observation key action_mask); true requires "
        "them; false ignores them. Masked actions get probability 0 in sampling, log-prob and entropy.",
    )

    nan_policy: str = option(
        "raise",
        "What a NaN/Inf observation or reward does: raise stops the run naming the env index, step and "
        "field; skip drops that transition from the update and counts it (rollout/nonfinite_skipped).",
        choices=("raise", "skip"),
    )
    nonfinite_stop_after: int = option(
        10,
        "Optimizer steps with a non-finite loss or gradient are skipped and counted; after this many in "
        "a row the run stops (NonFiniteError) with an emergency checkpoint.",
    )

    eval_episodes: int = option(20, "Episodes of the deterministic evaluation at the end of `ppokit train`.")
    checkpoint_every: int = option(
        0, "Write a checkpoint every this many steps (0: by time only, see checkpoint_every_seconds)."
    )
    checkpoint_every_seconds: float = checkpoint_every_seconds_option()
    step_timeout: float = step_timeout_option()
    keep_checkpoints: int = option(3, "Keep this many newest checkpoints.")
    log_every: int = option(1, "Write a metrics row every this many updates.")
    tensorboard: bool = option(True, "Write TensorBoard events under RUN_DIR/tb.")
    report_to: list[str] | None = report_to_option()

    # -- issue 32: device-resident batched envs (rl/batched/) and what rsl_rl users expect ----------
    timeout_bootstrap: str = option(
        "auto",
        "Batched envs: how a time-out (truncated episode) is bootstrapped. final_obs: with V(true final "
        "observation) (the env must give it); value_of_obs: with V of the observation the last action was "
        "taken in (rsl_rl's rule, reward += gamma * V(s)); auto: final_obs where the env gives it, else "
        "value_of_obs. Gymnasium numpy envs always use final_obs.",
        choices=("auto", "final_obs", "value_of_obs"),
    )
    desired_kl: float = option(
        0.01,
        "lr_schedule=adaptive: per minibatch, lr /= 1.5 when approx KL > 2 * desired_kl and lr *= 1.5 when "
        "it is < desired_kl / 2, kept in [1e-5, 1e-2] (rsl_rl's rule).",
    )
    init_at_random_ep_len: bool = option(
        False,
        "Batched envs with a writable episode_length_buf (Isaac Lab's, ppokit's torch envs): start each "
        "instance at a random step of its time limit, so thousands of episodes do not all end together "
        "(rsl_rl's OnPolicyRunner.learn option). Fresh runs only; a resumed run restores the envs.",
    )

    @property
    def rollout_size(self) -> int:
        """Transitions per update: ``n_steps * num_envs``."""
        return self.n_steps * self.num_envs

    def validate(self) -> None:
        super().validate()
        self._check_counts()
        self._check_optimization()
        self._check_switches()
        self.check_each(
            ("target_kl", "vf_clip_range", "max_grad_norm"),
            lambda v: v is None or v > 0,
            "must be > 0 or null",
        )
        if self.device == "auto":  # SB3's device="auto": CUDA when there is one; saved resolved
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        check(
            self.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", self.device) is not None,
            "device",
            self.device,
            "use auto, cpu, cuda or cuda:N",
        )
        bad = [r for r in self.report_to or [] if r not in REPORT_TO]
        check(not bad, "report_to", self.report_to, f"use a list of {', '.join(REPORT_TO)} (or null)")
        self._check_env_sources()
        self.network.validate()

    def _check_counts(self) -> None:
        """Counts, the seed, the checkpoint cadence, and the rollout's split into minibatches."""
        positive = ("num_envs", "total_timesteps", "n_steps", "batch_size", "n_epochs", "eval_episodes")
        positive += ("keep_checkpoints", "log_every", "nonfinite_stop_after")
        self.check_each(positive, lambda v: v >= 1, "must be a positive integer")
        check(self.torch_threads >= 0, "torch_threads", self.torch_threads, "must be >= 0 (0: auto)")
        check(0 <= self.seed < 2**63, "seed", self.seed, "must lie in [0, 2**63)")
        self.check_each(
            ("checkpoint_every", "checkpoint_every_seconds", "step_timeout"), lambda v: v >= 0, "must be >= 0"
        )
        check(
            self.batch_size <= self.rollout_size,
            "batch_size",
            self.batch_size,
            f"must be <= n_steps * num_envs = {self.rollout_size}",
        )
        self.check_divides("batch_size", self.rollout_size, "n_steps * num_envs = ")

    def _check_optimization(self) -> None:
        """The optimizer, the returns and the loss terms."""
        positive = ("learning_rate", "clip_range", "adam_eps", "obs_clip", "reward_clip", "huber_delta")
        self.check_each(positive, lambda v: v > 0, "must be > 0")
        self.check_each(("critic_learning_rate",), lambda v: v is None or v > 0, "must be > 0")
        check_adam_betas(self.adam_betas)
        check(0 <= self.gamma <= 1, "gamma", self.gamma, "must lie in [0, 1]")
        check(0 <= self.gae_lambda <= 1, "gae_lambda", self.gae_lambda, "must lie in [0, 1]")
        self.check_each(("kl_coef", "ent_coef", "vf_coef"), lambda v: v >= 0, "must be >= 0")
        check(self.adaptive_kl_target > 0, "adaptive_kl_target", self.adaptive_kl_target, "must be > 0")
        check(self.desired_kl > 0, "desired_kl", self.desired_kl, "must be > 0")  # issue 32

    def _check_switches(self) -> None:
        """The auto/true/false switches, and the minibatch size a recurrent network needs."""
        auto_or_bool = lambda v: v in (True, False, "auto")
        self.check_each(("action_masking",), auto_or_bool, "use auto, true or false")
        if self.network.recurrent != "none":  # minibatches are whole env sequences (rl/recurrent.py)
            check(
                self.batch_size % self.n_steps == 0,
                "batch_size",
                self.batch_size,
                f"must be a multiple of n_steps={self.n_steps} with network.recurrent="
                f"{self.network.recurrent} (each minibatch holds whole env sequences)",
            )
        self.check_each(("manual_grad",), auto_or_bool, "use auto, true or false")

    def _check_env_sources(self) -> None:
        """The wrappers and the packages that register env ids are well-formed."""
        from ppokit.rl.wrappers import parse_wrappers

        parse_wrappers(self.env_wrappers)
        for module in self.gym_packages:
            check(
                bool(re.fullmatch(r"[A-Za-z_][\w.]*", module)),
                "gym_packages",
                self.gym_packages,
                "give importable module names",
            )


def resolve_config(config: PPOConfig | dict | None, env: Any, overrides: dict[str, Any]) -> PPOConfig:
    """The config of a ``PPO(env, config, **overrides)`` call: ``config`` (a PPOConfig, a dict, or None
    for the defaults) with ``overrides`` applied, and ``env_id`` set when ``env`` is a Gymnasium id."""
    if isinstance(config, dict) or config is None:
        config = PPOConfig.from_dict({**(config or {}), **overrides})
    elif overrides:
        config = config.replace(**overrides)
    return config.replace(env_id=env) if isinstance(env, str) else config
