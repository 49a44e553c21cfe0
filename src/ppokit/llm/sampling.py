"""Completions from a policy, and their rewards: what both algorithms' rollouts begin with (``sample``,
then ``score``) and the greedy held-out evaluation (``evaluate``).

Functions of explicit inputs: a ``Sampler`` (the model, its tokenizer, the generation settings, the
EOS ids, the device, the random generator and the autocast context), the reward functions and their
weights, the ``TrainerState`` reward functions receive. They used to read the trainer that called
them (issue 29); ``LMTrainer.sample`` / ``score`` / ``evaluate`` now pass what they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ppokit.config import is_number
from ppokit.errors import ConfigError
from ppokit.llm.config import GenerationConfig
from ppokit.llm.generation import Completions, encode_prompts, generate
from ppokit.llm.rewards import RewardFn, repeat_columns, score_completions
from ppokit.llm.trl_compat import TrainerState, trl_completion

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# (rows, texts) -> one verdict per row: the built-in tasks' held-out accuracy
AccuracyFn = Callable[[list[dict[str, Any]], list[str]], Sequence[bool]]
# (rows, texts) -> (total [B], per_function [B, F]): the trainer's scoring of completions
ScoreFn = Callable[[list[dict[str, Any]], list[str]], tuple[torch.Tensor, torch.Tensor]]


class RewardLogs:
    """What reward functions log through TRL's keywords during a step: ``log_metric`` scalars
    (averaged into the step's metrics row) and ``log_extra`` columns (added to its completions table)."""

    def __init__(self) -> None:
        self.metrics: dict[str, list[float]] = {}
        self.columns: dict[str, list[Any]] = {}

    def log_metric(self, name: str, value: float) -> None:
        """``log_metric`` of TRL's reward signature: a scalar averaged into this step's metrics row."""
        if not is_number(value, finite=True):
            raise ConfigError(f"log_metric({name!r}, {value!r}): the value must be a finite number")
        self.metrics.setdefault(name, []).append(float(value.item() if hasattr(value, "item") else value))

    def log_extra(self, column: str, values: list[Any]) -> None:
        """``log_extra`` of TRL's reward signature: a column added to this step's completions table."""
        self.columns.setdefault(column, []).extend(values)

    def pop(self) -> tuple[dict[str, float], dict[str, list[Any]]]:
        """The metrics and columns logged since the last call."""
        metrics = {k: sum(v) / len(v) for k, v in self.metrics.items()}
        columns, self.metrics, self.columns = self.columns, {}, {}
        return metrics, columns


@dataclass
class Sampler:
    """What sampling reads: the policy ``model`` and its ``tokenizer`` (left padding, a pad token),
    the ``generation`` settings, the ``eos_ids`` that end a completion, the ``device`` prompts go to,
    the ``generator`` completions are sampled with and the ``autocast`` context factory of the
    forward passes (bf16/fp16; ``nullcontext`` for float32)."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    generation: GenerationConfig
    eos_ids: list[int]
    device: torch.device
    generator: torch.Generator | None = None
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext


@torch.no_grad()
def sample(
    sampler: Sampler, rows: list[dict[str, Any]], group: int = 1, greedy: bool = False
) -> tuple[torch.Tensor, torch.Tensor, Completions, list[str]]:
    """One completion per row with the sampler's generation settings: ``(prompt_ids [B, P], prompt_mask
    [B, P], completions, texts)``, prompts left-padded, texts decoded up to EOS.

    ``group`` consecutive rows hold one prompt, which runs once with its KV cache shared by the group
    (``generate``'s ``num_return_sequences``). Sampled with the sampler's generator; ``greedy`` takes
    each most likely token instead, with no repetition penalty (the model's own argmax).
    """
    gen, tokenizer = sampler.generation, sampler.tokenizer
    pad = tokenizer.pad_token_id
    prompt_ids, prompt_mask = encode_prompts(
        tokenizer, [r["prompt"] for r in rows], gen.max_prompt_length, str(sampler.device)
    )
    with sampler.autocast():
        out = generate(
            sampler.model,
            prompt_ids[::group],
            prompt_mask[::group],
            gen.max_completion_length,
            sampler.eos_ids,
            pad,
            gen.temperature,
            gen.top_k,
            gen.top_p,
            greedy=greedy,
            generator=sampler.generator,
            num_return_sequences=group,
            min_p=gen.min_p,
            repetition_penalty=1.0 if greedy else gen.repetition_penalty,
        )
    texts = tokenizer.batch_decode(out.tokens.masked_fill(~out.mask, pad), skip_special_tokens=True)
    return prompt_ids, prompt_mask, out, texts


def completion_token_ids(out: Completions) -> list[list[int]]:
    """Each completion's token ids up to and including EOS (TRL's ``completion_ids``)."""
    return [row[m].tolist() for row, m in zip(out.tokens, out.mask)]


def score(
    reward_funcs: Sequence[RewardFn],
    weights: Sequence[float] | None,
    rows: list[dict[str, Any]],
    texts: list[str],
    completion_ids: list[list[int]] | None,
    state: TrainerState,
    logs: RewardLogs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Call ``reward_funcs`` with every keyword TRL passes: ``prompts``, ``completions`` (for
    conversational prompts ``[{"role": "assistant", "content": text}]``, as TRL), ``completion_ids``
    (token ids up to and including EOS), ``trainer_state`` (``state``), ``log_extra`` and
    ``log_metric`` (into ``logs``) and the rows' other columns. A function receives only the keywords
    its signature names (all of them when it takes ``**kwargs``), so ppokit-style functions keep
    working. Returns ``score_completions``' ``(total [B], per_function [B, F])``, weighted by
    ``weights`` (None: all 1)."""
    prompts = [r["prompt"] for r in rows]
    completions = [trl_completion(p, t) for p, t in zip(prompts, texts)]
    extra = {
        "completion_ids": completion_ids if completion_ids is not None else [[] for _ in texts],
        "trainer_state": state,
        "log_extra": logs.log_extra,
        "log_metric": logs.log_metric,
    }
    columns = {**repeat_columns(rows, 1), **extra}
    return score_completions(reward_funcs, weights, prompts, completions, columns)


@torch.no_grad()
def evaluate(
    sampler: Sampler,
    score_fn: ScoreFn,
    accuracy_fn: AccuracyFn | None,
    rows: Sequence[dict[str, Any]],
    batch_size: int,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy completions for held-out ``rows``, ``batch_size`` at a time, scored by ``score_fn``:
    ``({"eval/accuracy", "eval/reward"}, per-row records)`` (no accuracy without ``accuracy_fn``)."""
    rows = list(rows)
    if not rows:
        return {}, []
    texts: list[str] = []
    for i in range(0, len(rows), batch_size):
        texts += sample(sampler, rows[i : i + batch_size], greedy=True)[3]
    rewards, _ = score_fn(rows, texts)
    result = {"eval/reward": float(rewards.nanmean())}
    records = [
        {"prompt": r["prompt"], "completion": t, "reward": float(x)} for r, t, x in zip(rows, texts, rewards)
    ]
    if accuracy_fn is not None:
        correct = [bool(c) for c in accuracy_fn(rows, texts)]
        result["eval/accuracy"] = sum(correct) / len(correct)
        for rec, c in zip(records, correct):
            rec["correct"] = c
    return result, records


__all__ = [
    "AccuracyFn",
    "RewardLogs",
    "Sampler",
    "ScoreFn",
    "completion_token_ids",
    "evaluate",
    "sample",
    "score",
]
