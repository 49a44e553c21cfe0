"""``GRPOConfig``: the keys of Group Relative Policy Optimization on top of ``LMConfig``, and the
built-in task's GRPO preset.

Defaults and where they come from (see docs/grpo.md for the reasoning):

- DeepSeekMath (Shao et al. 2024, https://arxiv.org/abs/2402.03300): ``kl_coef=0.04`` (TRL's ``beta``;
  TRL's default is 0.0 today), ``clip_range=0.2``, ``num_generations=8`` (the paper samples 64),
  ``loss_type="grpo"`` (per-sequence token mean, eq. 3), ``scale_rewards="group"``.
- TRL's ``GRPOConfig`` today: ``temperature=1.0``, ``top_p=1.0``, no top-k, ``n_epochs=1`` (TRL's
  ``num_iterations``), advantage epsilon ``1e-4``, ``learning_rate=1e-6`` for a user's model
  (pretrained LMs need a small step), ``max_grad_norm=1.0``, ``adam_betas=(0.9, 0.999)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ppokit.config import check, option
from ppokit.functional.loss_types import LOSS_TYPES
from ppokit.llm.config import ADDITION_BASE_PRESET, LMConfig, accepts_other_names


@accepts_other_names
@dataclass
class GRPOConfig(LMConfig):
    """Group Relative Policy Optimization for causal LMs (TRL's names are accepted as aliases)."""

    num_generations: int = option(8, "Completions sampled per prompt (the group size G).")
    share_prompt_prefix: bool = option(
        True,
        "Run each prompt once per group and share its KV cache across the G completions, in sampling "
        "and in the loss (same numbers, fewer FLOPs). Needs a model whose cache supports it.",
    )
    clip_range_high: float | None = option(
        None,
        "Upper clip range: the ratio is clipped above at 1 + this (null: = clip_range; DAPO's "
        "clip-higher uses 0.28).",
    )
    loss_type: str = option("grpo", "Token-loss aggregation.", choices=LOSS_TYPES)
    scale_rewards: str = option(
        "group",
        "Divide centred rewards by the group's std, the batch's, or nothing.",
        choices=("group", "batch", "none"),
    )
    adv_eps: float = option(1e-4, "Epsilon added to the std when scaling rewards.")
    mask_truncated_completions: bool = option(False, "Leave completions without EOS out of the loss (DAPO).")
    steps_per_generation: int = option(
        1,
        "Optimizer steps per generation batch: the batch is split into this many parts (whole groups), one "
        "step each; the old log-probs are computed once (TRL's steps_per_generation / "
        "gradient_accumulation_steps).",
    )
    importance_sampling_level: str = option(
        "token",
        "Importance ratio per token, or one per sequence from the mean log-ratio of its tokens "
        "(sequence: GSPO, Zheng et al. 2025).",
        choices=("token", "sequence"),
    )
    ent_coef: float = option(
        0.0, "Entropy bonus: loss -= ent_coef * mean token entropy (raises entropy; 0: off)."
    )
    sapo_temperature_pos: float = option(
        1.0, "SAPO's gate temperature for positive advantages (loss_type=sapo)."
    )
    sapo_temperature_neg: float = option(
        1.05, "SAPO's gate temperature for non-positive advantages (loss_type=sapo)."
    )
    delta: float | None = option(
        None,
        "Two-sided clipping: the ratio of negative-advantage tokens is also capped at delta (INTELLECT-2; "
        "null: off; use > 1 + clip_range).",
    )

    @property
    def batch_size(self) -> int:
        """Completions per generation batch: ``prompts_per_step * num_generations``."""
        return self.prompts_per_step * self.num_generations

    def trl_defaults(self) -> dict[str, tuple[Any, str]]:
        """``LMConfig.trl_defaults`` plus GRPO's: TRL's ``beta`` is 0.0, and its default batch
        (``per_device_train_batch_size=8``, one micro-step per generation) holds 8 completions, i.e.
        ``8 // num_generations`` prompts."""
        trl_prompts = max(1, 8 // self.num_generations)
        return {
            **super().trl_defaults(),
            "kl_coef": (0.0, "beta=0.0"),
            "prompts_per_step": (
                trl_prompts,
                f"per_device_train_batch_size=8, i.e. 8 completions per generation batch = "
                f"prompts_per_step={trl_prompts} at num_generations={self.num_generations}",
            ),
        }

    def validate(self) -> None:
        super().validate()
        check(
            self.num_generations >= 1, "num_generations", self.num_generations, "must be a positive integer"
        )
        # A group of one has advantage r - mean(r) = 0 whatever the scaling, so only the KL term
        # would move the policy: such a run learns nothing (issue 16 found it accepted with beta > 0).
        check(
            self.num_generations >= 2,
            "num_generations",
            self.num_generations,
            "a group of one has no relative advantage (r - mean = 0), so nothing is learned; use >= 2",
        )
        check(
            self.clip_range_high is None or self.clip_range_high > 0,
            "clip_range_high",
            self.clip_range_high,
            "must be > 0 or null",
        )
        check(self.adv_eps > 0, "adv_eps", self.adv_eps, "must be > 0")
        check(
            self.steps_per_generation >= 1, "steps_per_generation", self.steps_per_generation, "must be >= 1"
        )
        check(self.ent_coef >= 0, "ent_coef", self.ent_coef, "must be >= 0")
        check(self.delta is None or self.delta > 1, "delta", self.delta, "must be > 1 or null")
        self.check_each(("sapo_temperature_pos", "sapo_temperature_neg"), lambda v: v > 0, "must be > 0")
        why = " (each step takes whole groups)"
        self.check_divides("steps_per_generation", self.prompts_per_step, "prompts_per_step=", why)
        if self.micro_batch_size:
            part = self.batch_size // self.steps_per_generation
            step = "the completions of one optimizer step: prompts_per_step * num_generations / "
            self.check_divides("micro_batch_size", part, step + "steps_per_generation = ")
            check(
                not self.share_prompt_prefix or self.micro_batch_size % self.num_generations == 0,
                "micro_batch_size",
                self.micro_batch_size,
                f"must be a multiple of num_generations={self.num_generations} with share_prompt_prefix "
                "(a micro-batch holds whole groups)",
            )


# The built-in addition task's settings; a user's --config / --set still override them (see
# docs/grpo.md for how they were chosen on a 2-core CPU).
ADDITION_PRESET: dict[str, Any] = {
    **ADDITION_BASE_PRESET,
    "prompts_per_step": 16,
    "num_generations": 8,
    "kl_coef": 0.04,
}
GRPO_PRESETS = {"addition": ADDITION_PRESET}

__all__ = ["GRPO_PRESETS", "GRPOConfig"]
