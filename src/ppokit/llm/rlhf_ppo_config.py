"""``RLHFPPOConfig``: PPO for language models with a learned critic (RLHF) on top of ``LMConfig``, and
its built-in preset.

Names are ppokit's vocabulary; TRL's ``PPOConfig`` spellings (``num_ppo_epochs``, ``cliprange``,
``cliprange_value``, ``lam``, ``response_length``, ...) and ppokit's earlier ``adaptive_kl`` are
accepted through ``ppokit.config.ALIASES``.
Defaults and where they come from:

- TRL's PPOConfig today: ``n_epochs=4`` (TRL's ``num_ppo_epochs``), ``num_mini_batches=1``,
  ``clip_range=0.2``, ``vf_clip_range=0.2``, ``vf_coef=0.1``, ``kl_coef=0.05``, ``kl_estimator="k1"``,
  ``gamma=1``, ``gae_lambda=0.95`` (the issue asks for gamma = 1 and lambda = 0.95 as well).
- Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593), section 2.2: the adaptive KL controller with
  a target KL and a horizon; ``adaptive_kl_target=6`` and ``kl_horizon=10000`` are the values of
  OpenAI's lm-human-preferences code that paper released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ppokit.config import check, option
from ppokit.llm.config import ADDITION_BASE_PRESET, LMConfig, accepts_other_names


@accepts_other_names
@dataclass
class RLHFPPOConfig(LMConfig):
    """PPO for causal LMs: value head, per-token KL-penalised rewards, token-level GAE."""

    reward_model: str | None = option(
        None,
        "Local directory of an HF sequence-classification reward model (num_labels=1) that scores "
        "prompt + completion, read by `ppokit rlhf-ppo` (in Python, pass RewardModel(dir) among "
        "reward_funcs); with it the task's own reward functions are not used (null: none).",
    )
    # LMConfig's keys with PPO's defaults (TRL's PPOConfig)
    prompts_per_step: int = option(64, "Prompts per rollout batch (one completion each).")
    n_epochs: int = option(4, "Passes over each rollout batch (TRL's num_ppo_epochs).")
    learning_rate: float = option(3e-6, "AdamW learning rate of the policy (TRL's default).")
    kl_coef: float = option(
        0.05, "KL penalty coefficient in the per-token reward (initial value when adaptive; 0: no reference)."
    )

    num_mini_batches: int = option(1, "Minibatches per pass (one optimizer step each).")
    critic_learning_rate: float | None = option(
        None, "AdamW learning rate of the value head (and separate critic trunk); null: learning_rate."
    )
    value_model: str = option(
        "shared",
        "Where the value head sits: on the policy's trunk (shared), or on a separate copy of the "
        "initial model's trunk (separate: no value gradient reaches the policy).",
        choices=("shared", "separate"),
    )
    vf_coef: float = option(0.1, "Value loss coefficient: loss = policy loss + vf_coef * value loss.")
    vf_clip_range: float | None = option(
        0.2, "Clip the value prediction to old value +- this (its own range; null: no value clipping)."
    )
    gamma: float = option(1.0, "Discount over completion tokens.")
    gae_lambda: float = option(0.95, "GAE lambda over completion tokens.")
    normalize_advantage: bool = option(True, "Whiten advantages over the batch's valid tokens.")
    whiten_rewards: bool = option(False, "Whiten the per-token rewards before GAE (TRL's option).")

    kl_estimator: str = option(
        "k1", "Per-token KL(pi || pi_ref) estimate in the reward.", choices=("k1", "k3")
    )
    kl_adaptive: bool = option(
        False,
        "Adapt kl_coef towards adaptive_kl_target (Ziegler et al. 2019); PPOConfig's objective: "
        "kl_adaptive is the classic side's switch of the same name.",
    )
    adaptive_kl_target: float = option(
        6.0,
        "Target of the adaptive KL rule: the KL per completion, summed over its tokens (Ziegler et al.; "
        "not the per-sample mean of PPOConfig's target).",
    )
    kl_horizon: int = option(10000, "Horizon of the adaptive rule, in completions.")
    missing_eos_penalty: float | None = option(
        None, "Subtract this from the score of a completion that never produced EOS (null: none)."
    )

    @property
    def mini_batch_size(self) -> int:
        """Completions per optimizer step: ``prompts_per_step / num_mini_batches``."""
        return self.prompts_per_step // self.num_mini_batches

    def validate(self) -> None:
        super().validate()
        self.check_each(("num_mini_batches", "kl_horizon"), lambda v: v >= 1, "must be a positive integer")
        check(
            self.critic_learning_rate is None or self.critic_learning_rate > 0,
            "critic_learning_rate",
            self.critic_learning_rate,
            "must be > 0 or null",
        )
        check(
            self.vf_clip_range is None or self.vf_clip_range > 0,
            "vf_clip_range",
            self.vf_clip_range,
            "must be > 0 or null",
        )
        check(self.vf_coef >= 0, "vf_coef", self.vf_coef, "must be >= 0")
        check(0 <= self.gamma <= 1, "gamma", self.gamma, "must lie in [0, 1]")
        check(0 <= self.gae_lambda <= 1, "gae_lambda", self.gae_lambda, "must lie in [0, 1]")
        check(self.adaptive_kl_target > 0, "adaptive_kl_target", self.adaptive_kl_target, "must be > 0")
        check(
            not self.kl_adaptive or self.kl_coef > 0,
            "kl_coef",
            self.kl_coef,
            "the adaptive rule multiplies kl_coef, so it must start > 0",
        )
        self.check_divides("num_mini_batches", self.prompts_per_step, "prompts_per_step=")
        if self.micro_batch_size:
            mini = "prompts_per_step / num_mini_batches = "
            self.check_divides("micro_batch_size", self.mini_batch_size, mini)


# The built-in addition task's settings for PPO: ADDITION_BASE_PRESET (the model, warm start and
# rewards GRPO's preset uses too, so the two algorithms start from the same policy) plus PPO's keys;
# how the PPO numbers were chosen is in docs/rlhf_ppo.md.
ADDITION_PRESET: dict[str, Any] = {
    **ADDITION_BASE_PRESET,
    "critic_learning_rate": 1e-3,
    "prompts_per_step": 64,
    "n_epochs": 4,
    "num_mini_batches": 2,
    "kl_coef": 0.05,
}
RLHF_PRESETS = {"addition": ADDITION_PRESET}

__all__ = ["RLHF_PRESETS", "RLHFPPOConfig"]
