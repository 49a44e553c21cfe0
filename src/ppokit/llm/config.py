"""``GRPOConfig`` and the shared language-model sections (generation, optimiser, tiny model, logging).

The sections other than ``GRPOConfig`` itself, and ``check_shared_fields``, serve ``RLHFPPOConfig``
too: generation, the optimiser and the built-in tiny model do not depend on the algorithm.

Defaults and where they come from (see docs/grpo.md for the reasoning):

- DeepSeekMath (Shao et al. 2024, https://arxiv.org/abs/2402.03300): ``beta=0.04`` (the issue asks for
  it; TRL's default is 0.0 today), ``epsilon=0.2``, ``num_generations=8`` (the paper samples 64),
  ``loss_type="grpo"`` (per-sequence token mean, eq. 3), ``scale_rewards="group"``.
- TRL's ``GRPOConfig`` today: ``temperature=1.0``, ``top_p=1.0``, no top-k, ``num_iterations=1``,
  advantage epsilon ``1e-4``, ``learning_rate=1e-6`` for a user's model (pretrained LMs need a small
  step), ``max_grad_norm=1.0``, ``adam_betas=(0.9, 0.999)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ppokit.config import ConfigBase, check, option
from ppokit.functional.reductions import LOSS_TYPES


@dataclass
class GenerationConfig(ConfigBase):
    """How completions are sampled (one batched pass with a KV cache)."""

    max_prompt_length: int = option(512, "Prompts longer than this many tokens keep their last tokens.")
    max_completion_length: int = option(256, "Tokens generated per completion at most.")
    temperature: float = option(1.0, "Sampling temperature; log-probs for the loss use the same temperature.")
    top_p: float = option(1.0, "Nucleus sampling: keep the smallest token set with this probability mass.")
    top_k: int = option(0, "Keep only the k most likely tokens (0: no top-k).")

    def validate(self) -> None:
        super().validate()
        check(self.max_prompt_length >= 1, "max_prompt_length", self.max_prompt_length, "must be >= 1")
        check(
            self.max_completion_length >= 1,
            "max_completion_length",
            self.max_completion_length,
            "must be >= 1",
        )
        check(self.temperature > 0, "temperature", self.temperature, "must be > 0")
        check(0 < self.top_p <= 1, "top_p", self.top_p, "must lie in (0, 1]")
        check(self.top_k >= 0, "top_k", self.top_k, "must be >= 0")


@dataclass
class TinyModelConfig(ConfigBase):
    """The transformer built in code for the built-in tasks (no download)."""

    architecture: str = option("gpt2", "Model class built from a config.", choices=("gpt2", "qwen2"))
    n_layer: int = option(2, "Transformer blocks.")
    n_embd: int = option(128, "Hidden size.")
    n_head: int = option(4, "Attention heads (must divide n_embd).")
    n_positions: int = option(64, "Longest sequence (prompt + completion) the model accepts.")

    def validate(self) -> None:
        super().validate()
        for key in ("n_layer", "n_embd", "n_head", "n_positions"):
            check(getattr(self, key) >= 1, f"tiny_model.{key}", getattr(self, key), "must be >= 1")
        check(
            self.n_embd % self.n_head == 0,
            "tiny_model.n_head",
            self.n_head,
            f"must divide tiny_model.n_embd={self.n_embd}",
        )


@dataclass
class WarmStartConfig(ConfigBase):
    """Optional supervised warm start on the task's reference answers, before GRPO (reported apart)."""

    steps: int = option(0, "Supervised (cross-entropy) steps before GRPO; 0 skips the warm start.")
    batch_size: int = option(64, "Examples per supervised step.")
    learning_rate: float = option(1e-3, "Adam learning rate of the warm start.")

    def validate(self) -> None:
        super().validate()
        check(self.steps >= 0, "warm_start.steps", self.steps, "must be >= 0")
        check(self.batch_size >= 1, "warm_start.batch_size", self.batch_size, "must be >= 1")
        check(self.learning_rate > 0, "warm_start.learning_rate", self.learning_rate, "must be > 0")


def check_shared_fields(cfg: Any) -> None:
    """The checks of the fields every language-model trainer config has (GRPOConfig, RLHFPPOConfig):
    step and prompt counts, logging and checkpoint intervals, optimizer, time limit, device."""
    for key in (
        "max_steps",
        "prompts_per_step",
        "log_every",
        "keep_checkpoints",
        "eval_prompts",
        "task_digits",
    ):
        check(getattr(cfg, key) >= 1, key, getattr(cfg, key), "must be a positive integer")
    for key in (
        "micro_batch_size",
        "warmup_steps",
        "eval_every",
        "checkpoint_every",
        "num_samples",
        "torch_threads",
    ):
        check(getattr(cfg, key) >= 0, key, getattr(cfg, key), "must be >= 0")
    check(cfg.learning_rate > 0, "learning_rate", cfg.learning_rate, "must be > 0")
    check(cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay, "must be >= 0")
    check(cfg.max_seconds >= 0, "max_seconds", cfg.max_seconds, "must be >= 0")
    check(
        cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
        "max_grad_norm",
        cfg.max_grad_norm,
        "must be > 0 or null",
    )
    check(
        len(cfg.adam_betas) == 2 and all(0 <= b < 1 for b in cfg.adam_betas),
        "adam_betas",
        cfg.adam_betas,
        "give two numbers in [0, 1)",
    )
    check(
        cfg.device == "cpu" or cfg.device.startswith("cuda") or cfg.device == "mps",
        "device",
        cfg.device,
        "use cpu, cuda, cuda:N or mps",
    )


@dataclass
class GRPOConfig(ConfigBase):
    """Group Relative Policy Optimization for causal LMs. Field names follow TRL's GRPOConfig."""

    task: str = option(
        "addition", "Built-in task (prompts, reward, held-out accuracy) when no prompts are given."
    )
    task_digits: int = option(2, "Digits per operand of the built-in addition task.")
    model: str | None = option(
        None, "Local directory of an HF causal LM (None: build the task's tiny model)."
    )
    seed: int = option(0, "Seed for torch, Python and the prompt order.")
    device: str = option("cpu", "Torch device: cpu, cuda, cuda:N, mps.")
    torch_threads: int = option(0, "torch.set_num_threads (0: leave torch's default).")

    max_steps: int = option(200, "GRPO steps; one step = one generation batch and num_iterations updates.")
    prompts_per_step: int = option(16, "Distinct prompts per generation batch.")
    num_generations: int = option(8, "Completions sampled per prompt (the group size G).")
    share_prompt_prefix: bool = option(
        True,
        "Run each prompt once per group and share its KV cache across the G completions, in sampling "
        "and in the loss (same numbers, fewer FLOPs). Needs a model whose cache supports it.",
    )
    micro_batch_size: int = option(0, "Completions per forward/backward chunk (0: the whole batch at once).")
    generation: GenerationConfig = option(GenerationConfig(), "Sampling.")

    learning_rate: float = option(1e-6, "AdamW learning rate (TRL's default; tiny models need ~1e-3).")
    lr_schedule: str = option(
        "constant", "Learning-rate schedule after warm-up.", choices=("constant", "linear")
    )
    warmup_steps: int = option(0, "Linear learning-rate warm-up steps.")
    adam_betas: list[float] = option([0.9, 0.999], "AdamW (beta1, beta2).")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    max_grad_norm: float | None = option(1.0, "Clip the global gradient norm (null: no clipping).")

    beta: float = option(
        0.04, "KL coefficient to the frozen reference model (0: no reference model is built)."
    )
    epsilon: float = option(0.2, "Lower clip range: the ratio is clipped below at 1 - epsilon.")
    epsilon_high: float | None = option(
        None, "Upper clip range (null: = epsilon; DAPO's clip-higher uses 0.28)."
    )
    num_iterations: int = option(1, "Updates per generation batch (mu); old log-probs are computed once.")
    loss_type: str = option("grpo", "Token-loss aggregation.", choices=LOSS_TYPES)
    scale_rewards: str = option(
        "group",
        "Divide centred rewards by the group's std, the batch's, or nothing.",
        choices=("group", "batch", "none"),
    )
    adv_eps: float = option(1e-4, "Epsilon added to the std when scaling rewards.")
    mask_truncated_completions: bool = option(False, "Leave completions without EOS out of the loss (DAPO).")
    reward_weights: list[float] | None = option(None, "One weight per reward function (null: all 1).")

    warm_start: WarmStartConfig = option(WarmStartConfig(), "Supervised warm start (built-in tasks only).")
    tiny_model: TinyModelConfig = option(TinyModelConfig(), "Built-in tiny model.")

    eval_every: int = option(25, "Measure held-out accuracy every this many steps (0: only before/after).")
    eval_prompts: int = option(200, "Held-out prompts for the accuracy (greedy decoding).")
    log_every: int = option(1, "Write a metrics row every this many steps.")
    checkpoint_every: int = option(0, "Checkpoint every this many steps (0: only at the end).")
    keep_checkpoints: int = option(2, "Keep this many newest checkpoints.")
    num_samples: int = option(16, "Rows of the prompts/completions/rewards table written to samples.md.")
    tensorboard: bool = option(True, "Write TensorBoard events under RUN_DIR/tb.")
    max_seconds: float = option(0.0, "Stop GRPO after this many seconds of training (0: no time limit).")

    @property
    def batch_size(self) -> int:
        """Completions per generation batch: ``prompts_per_step * num_generations``."""
        return self.prompts_per_step * self.num_generations

    def validate(self) -> None:
        super().validate()
        check_shared_fields(self)
        for key in ("num_generations", "num_iterations"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be a positive integer")
        check(
            self.num_generations >= 2 or self.scale_rewards == "none" or self.beta > 0,
            "num_generations",
            self.num_generations,
            "a group of one has no relative advantage; use >= 2",
        )
        check(self.beta >= 0, "beta", self.beta, "must be >= 0")
        check(0 < self.epsilon < 1, "epsilon", self.epsilon, "must lie in (0, 1)")
        check(
            self.epsilon_high is None or self.epsilon_high > 0,
            "epsilon_high",
            self.epsilon_high,
            "must be > 0 or null",
        )
        check(self.adv_eps > 0, "adv_eps", self.adv_eps, "must be > 0")
        if self.micro_batch_size:
            check(
                self.batch_size % self.micro_batch_size == 0,
                "micro_batch_size",
                self.micro_batch_size,
                f"must divide prompts_per_step * num_generations = {self.batch_size}",
            )
            check(
                not self.share_prompt_prefix or self.micro_batch_size % self.num_generations == 0,
                "micro_batch_size",
                self.micro_batch_size,
                f"must be a multiple of num_generations={self.num_generations} with share_prompt_prefix "
                "(a micro-batch holds whole groups)",
            )
        self.generation.validate()
        self.tiny_model.validate()
        self.warm_start.validate()
