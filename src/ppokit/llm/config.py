"""The configuration both language-model trainers share: ``LMConfig`` and its sections (generation, the
built-in tiny model, the supervised warm start).

``GRPOConfig`` (``grpo_config.py``) and ``RLHFPPOConfig`` (``rlhf_ppo_config.py``) extend ``LMConfig``
with their algorithm's keys; a field both need is declared here once (a subclass may change its
default). Names are ppokit's one vocabulary (``clip_range``, ``kl_coef``, ``n_epochs``, ...); TRL's
spellings (``epsilon``, ``beta``, ``num_iterations``, ``max_completion_length`` at the top level, ...)
are accepted through ``ppokit.config.ALIASES``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ppokit.config import (
    DEVICE_SPEC,
    DEVICES,
    ConfigBase,
    check,
    check_adam_betas,
    checkpoint_every_seconds_option,
    option,
    step_timeout_option,
)
from ppokit.errors import ConfigError
from ppokit.llm.trl_compat import notice_trl_defaults, translate_trl_config, uses_trl_spelling

C = TypeVar("C", bound=ConfigBase)


def accepts_other_names(cls: type[C]) -> type[C]:
    """Let the dataclass constructor take what ``from_dict`` takes: TRL's names (``beta=0.04``,
    ``max_completion_length=256``, ``per_device_train_batch_size=8``, ...) and section dicts, so that
    ``GRPOConfig(output_dir=..., beta=...)`` in a TRL script works with its import changed. Keyword
    arguments that are all canonical fields go straight to the dataclass ``__init__`` as before."""
    init = cls.__init__
    names = {f.name for f in dataclasses.fields(cls)}

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        canonical = all(k in names and not isinstance(v, dict) for k, v in kwargs.items())
        # key by key: a canonical key whose TRL value needs translating (scale_rewards=True,
        # report_to="wandb") goes through from_dict too; it used to only when another TRL-spelled key
        # happened to be given (issue 34)
        if args or (canonical and translate_trl_config(kwargs) == kwargs):
            init(self, *args, **kwargs)
            return
        built = cls.from_dict(kwargs)
        init(self, **{name: getattr(built, name) for name in names})

    cls.__init__ = __init__
    return cls


@dataclass
class GenerationConfig(ConfigBase):
    """How completions are sampled (one batched pass with a KV cache)."""

    max_prompt_length: int = option(512, "Prompts longer than this many tokens keep their last tokens.")
    max_completion_length: int = option(256, "Tokens generated per completion at most.")
    temperature: float = option(1.0, "Sampling temperature; log-probs for the loss use the same temperature.")
    top_p: float = option(1.0, "Nucleus sampling: keep the smallest token set with this probability mass.")
    top_k: int = option(0, "Keep only the k most likely tokens (0: no top-k).")
    min_p: float = option(
        0.0, "Drop tokens whose probability is below min_p times the most likely token's (0: off)."
    )
    repetition_penalty: float = option(
        1.0,
        "Divide the positive logits (multiply the negative ones) of tokens already in the prompt or "
        "completion by this (CTRL, Keskar et al. 2019; 1: off).",
    )

    def validate(self) -> None:
        super().validate()
        check(0 <= self.min_p < 1, "min_p", self.min_p, "must lie in [0, 1)")
        check(self.repetition_penalty > 0, "repetition_penalty", self.repetition_penalty, "must be > 0")
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
    """Optional supervised warm start on the task's reference answers, before RL training (reported apart)."""

    steps: int = option(0, "Supervised (cross-entropy) steps before RL training; 0 skips the warm start.")
    batch_size: int = option(64, "Examples per supervised step.")
    learning_rate: float = option(1e-3, "Adam learning rate of the warm start.")

    def validate(self) -> None:
        super().validate()
        check(self.steps >= 0, "warm_start.steps", self.steps, "must be >= 0")
        check(self.batch_size >= 1, "warm_start.batch_size", self.batch_size, "must be >= 1")
        check(self.learning_rate > 0, "warm_start.learning_rate", self.learning_rate, "must be > 0")


@dataclass
class DistributedConfig(ConfigBase):
    """How the trainer spreads over the ranks of a torchrun job (docs/scaling-out.md)."""

    strategy: str = option(
        "ddp",
        "ddp: every rank holds the whole policy, reference, critic and optimizer state, gradients are "
        "averaged; fsdp: each of them is sharded per transformer block over the ranks (FSDP2), the "
        "checkpoints are sharded too (torch.distributed.checkpoint).",
        choices=("ddp", "fsdp"),
    )
    cpu_offload: bool = option(False, "fsdp: keep the parameter shards and optimizer state in CPU memory.")
    reshard_after_forward: bool = option(
        True,
        "fsdp: free a block's gathered parameters after its forward (gathered again for backward); "
        "false keeps them until the backward: less communication, more memory.",
    )


@accepts_other_names
@dataclass
class LMConfig(ConfigBase):
    """The keys every language-model trainer has: task and model, steps and batches, the optimizer,
    the KL anchor, the clip range, the built-in tiny model and warm start, logging and checkpoints."""

    task: str = option(
        "addition", "Built-in task (prompts, reward, held-out accuracy) when no prompts are given."
    )
    task_digits: int = option(2, "Digits per operand of the built-in addition task.")
    model: str | None = option(
        None, "Local directory of an HF causal LM (None: build the task's tiny model)."
    )
    seed: int = option(0, "Seed for torch, Python and the prompt order.")
    device: str = option(
        "auto",
        "Torch device: auto (cuda:LOCAL_RANK when CUDA is present, each torchrun rank on its own GPU; "
        "else cpu), cpu, cuda (the rank's own GPU), cuda:N, mps. Saved as given, so a run resumes on "
        "whatever the next machine has.",
    )
    torch_threads: int = option(0, "torch.set_num_threads (0: leave torch's default).")

    max_steps: int = option(
        200, "Training steps; one step = one batch of completions and n_epochs passes over it."
    )
    prompts_per_step: int = option(16, "Distinct prompts per batch of completions.")
    n_epochs: int = option(
        1, "Passes over each batch of completions; the old log-probs are computed once per batch."
    )
    micro_batch_size: int = option(0, "Completions per forward/backward chunk (0: the whole batch at once).")
    generation: GenerationConfig = option(GenerationConfig(), "Sampling.")

    learning_rate: float = option(1e-6, "AdamW learning rate (TRL's default; tiny models need ~1e-3).")
    lr_schedule: str = option(
        "constant", "Learning-rate schedule after warm-up.", choices=("constant", "linear")
    )
    warmup_steps: float = option(
        0.0,
        "Linear learning-rate warm-up: a whole number of steps, or below 1 a fraction of max_steps "
        "(rounded up; TRL/transformers' rule, so 0.1 warms up over the first 10%).",
    )
    adam_betas: list[float] = option([0.9, 0.999], "AdamW (beta1, beta2).")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    max_grad_norm: float | None = option(1.0, "Clip the global gradient norm (null: no clipping).")

    clip_range: float = option(
        0.2, "Clip range epsilon of the policy ratio: clipped to [1 - clip_range, 1 + clip_range]."
    )
    kl_coef: float = option(
        0.04, "Weight of the KL penalty to the frozen reference model (0: no reference model is built)."
    )
    reward_weights: list[float] | None = option(None, "One weight per reward function (null: all 1).")

    warm_start: WarmStartConfig = option(WarmStartConfig(), "Supervised warm start (built-in tasks only).")
    tiny_model: TinyModelConfig = option(TinyModelConfig(), "Built-in tiny model.")
    distributed: DistributedConfig = option(
        DistributedConfig(), "Several processes (torchrun): data parallel or sharded (FSDP2)."
    )

    eval_every: int = option(25, "Measure held-out accuracy every this many steps (0: only before/after).")
    eval_prompts: int = option(200, "Held-out prompts for the accuracy (greedy decoding).")
    log_every: int = option(1, "Write a metrics row every this many steps.")
    checkpoint_every: int = option(0, "Checkpoint every this many steps (0: by time and at the end).")
    checkpoint_every_seconds: float = checkpoint_every_seconds_option()
    step_timeout: float = step_timeout_option()
    keep_checkpoints: int = option(2, "Keep this many newest checkpoints.")
    num_samples: int = option(16, "Rows of the prompts/completions/rewards table written to samples.md.")
    tensorboard: bool = option(True, "Write TensorBoard events under RUN_DIR/tb.")
    report_to: list[str] | None = option(
        None,
        "Where metrics go besides metrics.csv: any of tensorboard, wandb (null: tensorboard when "
        "`tensorboard` is true). wandb honours WANDB_MODE=offline.",
    )
    output_dir: str | None = option(
        None,
        "Run directory (TRL's output_dir): of a Python run when run_dir is not passed, of a command-line "
        "run when --run-dir is not given (null: a new runs/<name>-<algo>-<stamp>).",
    )
    max_seconds: float = option(0.0, "Stop training after this many seconds (0: no time limit).")
    nonfinite_stop_after: int = option(
        10,
        "Optimizer steps with a non-finite loss or gradient are skipped and counted; after this many in "
        "a row the run stops (NonFiniteError) with an emergency checkpoint.",
    )

    # ---- precision and memory (TRL's / transformers' TrainingArguments names)
    bf16: bool = option(
        False,
        "Mixed precision: bfloat16 autocast for the forward passes, float32 master weights and optimizer "
        "state (TRL/accelerate's bf16; works on CPU and CUDA).",
    )
    fp16: bool = option(
        False,
        "Mixed precision: float16 autocast, float32 master weights, dynamic loss scaling (a step whose "
        "gradients overflow is skipped and the scale halves).",
    )
    torch_dtype: str = option(
        "float32",
        "dtype the model's weights are loaded in from a directory (auto: as saved, e.g. bfloat16). "
        "Trainable weights in half precision need bf16 or fp16 (they are then upcast to float32).",
        choices=("float32", "bfloat16", "float16", "auto"),
    )
    gradient_checkpointing: bool = option(
        False,
        "Recompute the model's activations in the backward pass instead of keeping them (less memory, "
        "~30% more compute). The loss passes then run each row's prompt (prefix sharing stays for sampling).",
    )
    disable_dropout: bool = option(
        False,
        "Set every dropout probability of the policy to 0 (and so of its reference copy and a separate "
        "value trunk), as TRL's disable_dropout: with dropout the policy ratio is not 1 before an update.",
    )
    logprob_chunk_size: int = option(
        1024,
        "Tokens whose logits are computed at once for log-probs and entropies (the [B, L, V] float32 "
        "logits never exist whole); 0: all at once.",
    )
    # ---- LoRA through peft (TRL's ModelConfig names and defaults)
    use_peft: bool = option(False, "Train LoRA adapters (peft) instead of the model's weights.")
    lora_r: int = option(16, "LoRA rank.")
    lora_alpha: int = option(32, "LoRA alpha (the adapter's output is scaled by alpha / r).")
    lora_dropout: float = option(0.05, "Dropout on the LoRA path.")
    lora_target_modules: list[str] | None = option(
        None, "Module names that get adapters (null: peft's default for the architecture)."
    )

    def validate(self) -> None:
        super().validate()
        check(not (self.bf16 and self.fp16), "fp16", self.fp16, "bf16 and fp16 exclude each other")
        bad = [r for r in self.report_to or [] if r not in ("tensorboard", "wandb")]
        check(not bad, "report_to", self.report_to, "use a list of tensorboard, wandb (or none)")
        check(self.logprob_chunk_size >= 0, "logprob_chunk_size", self.logprob_chunk_size, "must be >= 0")
        check(self.lora_r >= 1, "lora_r", self.lora_r, "must be >= 1")
        check(0 <= self.lora_dropout < 1, "lora_dropout", self.lora_dropout, "must lie in [0, 1)")
        positive = ("max_steps", "prompts_per_step", "n_epochs", "log_every", "keep_checkpoints")
        positive += ("eval_prompts", "task_digits", "nonfinite_stop_after")
        self.check_each(positive, lambda v: v >= 1, "must be a positive integer")
        check(
            self.warmup_steps < 1 or float(self.warmup_steps).is_integer(),
            "warmup_steps",
            self.warmup_steps,
            "give a whole number of steps, or a fraction of max_steps below 1",
        )
        non_negative = ("micro_batch_size", "warmup_steps", "eval_every", "checkpoint_every")
        non_negative += ("num_samples", "torch_threads")
        self.check_each(non_negative, lambda v: v >= 0, "must be >= 0")
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be > 0")
        non_negative = ("weight_decay", "max_seconds", "checkpoint_every_seconds", "step_timeout")
        self.check_each(non_negative, lambda v: v >= 0, "must be >= 0")
        check(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            "max_grad_norm",
            self.max_grad_norm,
            "must be > 0 or null",
        )
        check_adam_betas(self.adam_betas)
        # the spelling only: whether the device exists here is resolve_device's question, asked where
        # the trainer runs (a config may be written on one machine and trained on another)
        check(DEVICE_SPEC.fullmatch(self.device) is not None, "device", self.device, f"use {DEVICES}")
        check(0 < self.clip_range < 1, "clip_range", self.clip_range, "must lie in (0, 1)")
        check(
            not (self.distributed.cpu_offload and self.device in ("cpu", "mps")),
            "distributed.cpu_offload",
            self.distributed.cpu_offload,
            f"offloads shards from a GPU to CPU memory; with device={self.device} set it false",
        )
        check(self.kl_coef >= 0, "kl_coef", self.kl_coef, "must be >= 0")

    def run_dir_for(self, cli_run_dir: str | Path | None) -> Path | None:
        """The run directory of a command-line run: ``--run-dir``, else ``output_dir`` (TRL's name for
        it; issue 34: the command line accepted output_dir and wrote to runs/... instead), else None (a
        new runs/<name>-<algo>-<stamp>). Both given and different is a ConfigError."""
        if cli_run_dir and self.output_dir and Path(cli_run_dir) != Path(self.output_dir):
            raise ConfigError(
                f"--run-dir {str(cli_run_dir)!r} and output_dir={self.output_dir!r} name different run "
                "directories; give one of them"
            )
        chosen = cli_run_dir or self.output_dir
        return Path(chosen) if chosen else None

    @property
    def num_warmup_steps(self) -> int:
        """Warm-up length in steps: ``warmup_steps`` itself, or below 1 that fraction of ``max_steps``
        rounded up (transformers' ``get_warmup_steps``; issue 34: 0.1 ran step 1 at 10x the rate)."""
        if self.warmup_steps < 1:
            return math.ceil(self.warmup_steps * self.max_steps)
        return int(self.warmup_steps)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, _prefix: str = "") -> Any:
        """``ConfigBase.from_dict`` after TRL's rule-based keys are translated (``trl_compat``)."""
        given = data if not _prefix and isinstance(data, dict) else {}
        if not _prefix and isinstance(data, dict):
            data = translate_trl_config(data)
            extra = data.pop("generation_kwargs", None)
            if extra:  # TRL's generation_kwargs: the sampling keys ppokit has, others refused by name
                section = dict(data.get("generation") or {})
                known = {f.name for f in dataclasses.fields(GenerationConfig)}
                unknown = sorted(set(extra) - known)
                if unknown:
                    raise ConfigError(
                        f"generation_kwargs {unknown} are not supported; known: {sorted(known)}"
                    )
                data["generation"] = {**section, **extra}
        built = super().from_dict(data, _prefix)
        if uses_trl_spelling(given):
            notice_trl_defaults(given, built)
        return built

    def trl_defaults(self) -> dict[str, tuple[Any, str]]:
        """The keys whose ppokit default differs from TRL's: ``{key: (TRL's value, how TRL says it)}``
        (``notice_trl_defaults`` names those a TRL-spelled config leaves unset; docs/grpo.md lists them)."""
        return {"lr_schedule": ("linear", "lr_scheduler_type='linear'")}


# What the built-in addition task's presets for GRPO and PPO share: the tiny model, its warm start,
# the sampling lengths and the weights of the task's two rewards, so the two algorithms start from the
# same policy (each preset adds its algorithm's keys; see docs/grpo.md and docs/rlhf_ppo.md).
ADDITION_BASE_PRESET: dict[str, Any] = {
    # One thread: this model's matrices are too small to split, and with a second thread torch's
    # workers spin-wait; on a shared 2-core machine that made steps 6x slower (docs/grpo.md).
    "torch_threads": 1,
    "learning_rate": 1e-4,
    "max_steps": 2000,
    "max_seconds": 480.0,
    "reward_weights": [1.0, 0.5],
    "eval_every": 25,
    "generation": {"max_prompt_length": 16, "max_completion_length": 8},
    "warm_start": {"steps": 300, "batch_size": 64, "learning_rate": 1e-3},
    "tiny_model": {"architecture": "gpt2", "n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 32},
}

__all__ = ["ADDITION_BASE_PRESET", "GenerationConfig", "LMConfig", "TinyModelConfig", "WarmStartConfig"]
