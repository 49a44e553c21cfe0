"""Completions from an ``LMTrainer``'s policy, and their rewards: what both algorithms' rollouts begin
with (``sample``, then ``score_samples``) and the greedy held-out evaluation (``evaluate``).

Functions of a trainer (its model, tokenizer, generation settings and reward functions), kept apart
from ``trainer.py`` so that file holds the trainer's state and each algorithm file its steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ppokit.config import is_number
from ppokit.errors import ConfigError
from ppokit.llm.generation import Completions, encode_prompts, generate
from ppokit.llm.reward_checks import require_scored
from ppokit.llm.rewards import repeat_columns, score_completions
from ppokit.llm.trl_compat import trl_completion


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


@torch.no_grad()
def sample(
    trainer: Any, rows: list[dict[str, Any]], group: int = 1, greedy: bool = False
) -> tuple[torch.Tensor, torch.Tensor, Completions, list[str]]:
    """One completion per row with the config's generation settings: ``(prompt_ids [B, P], prompt_mask
    [B, P], completions, texts)``, prompts left-padded, texts decoded up to EOS.

    ``group`` consecutive rows hold one prompt, which runs once with its KV cache shared by the group
    (``generate``'s ``num_return_sequences``). Sampled with the trainer's generator; ``greedy`` takes
    each most likely token instead, with no repetition penalty (the model's own argmax).
    """
    gen, pad = trainer.config.generation, trainer.tokenizer.pad_token_id
    prompt_ids, prompt_mask = encode_prompts(
        trainer.tokenizer, [r["prompt"] for r in rows], gen.max_prompt_length, str(trainer.device)
    )
    with trainer.autocast():
        out = generate(
            trainer.model,
            prompt_ids[::group],
            prompt_mask[::group],
            gen.max_completion_length,
            trainer.eos_ids,
            pad,
            gen.temperature,
            gen.top_k,
            gen.top_p,
            greedy=greedy,
            generator=trainer.generator,
            num_return_sequences=group,
            min_p=gen.min_p,
            repetition_penalty=1.0 if greedy else gen.repetition_penalty,
        )
    texts = trainer.tokenizer.batch_decode(out.tokens.masked_fill(~out.mask, pad), skip_special_tokens=True)
    return prompt_ids, prompt_mask, out, texts


def completion_token_ids(out: Completions) -> list[list[int]]:
    """Each completion's token ids up to and including EOS (TRL's ``completion_ids``)."""
    return [row[m].tolist() for row, m in zip(out.tokens, out.mask)]


def score_samples(
    trainer: Any, rows: list[dict[str, Any]], out: Completions, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``trainer.score`` of a step's sampled completions, given their token ids; a step in which no
    function scored any completion stops the run (``require_scored``: there is no signal to learn)."""
    rewards, per_fn = trainer.score(rows, texts, completion_token_ids(out))
    require_scored(rewards, trainer.reward_names, trainer.step + 1)
    return rewards, per_fn


def score(
    trainer: Any, rows: list[dict[str, Any]], texts: list[str], completion_ids: list[list[int]] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Call the trainer's reward functions with every keyword TRL passes: ``prompts``, ``completions``
    (for conversational prompts ``[{"role": "assistant", "content": text}]``, as TRL),
    ``completion_ids`` (token ids up to and including EOS), ``trainer_state``, ``log_extra``,
    ``log_metric`` and the rows' other columns. A function receives only the keywords its signature
    names (all of them when it takes ``**kwargs``), so ppokit-style functions keep working. Returns
    ``score_completions``' ``(total [B], per_function [B, F])``."""
    prompts = [r["prompt"] for r in rows]
    completions = [trl_completion(p, t) for p, t in zip(prompts, texts)]
    extra = {
        "completion_ids": completion_ids if completion_ids is not None else [[] for _ in texts],
        "trainer_state": trainer.state,
        "log_extra": trainer.reward_logs.log_extra,
        "log_metric": trainer.reward_logs.log_metric,
    }
    columns = {**repeat_columns(rows, 1), **extra}
    weights = trainer.config.reward_weights
    return score_completions(trainer.reward_funcs, weights, prompts, completions, columns)


@torch.no_grad()
def evaluate(
    trainer: Any, rows: Sequence[dict[str, Any]], batch_size: int
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy completions for held-out ``rows``: ``({"eval/accuracy", "eval/reward"}, per-row records)``
    (no accuracy without the trainer's ``accuracy_fn``)."""
    rows = list(rows)
    if not rows:
        return {}, []
    texts: list[str] = []
    for i in range(0, len(rows), batch_size):
        texts += sample(trainer, rows[i : i + batch_size], greedy=True)[3]
    rewards, _ = trainer.score(rows, texts)
    trainer.pop_reward_logs()  # what the rewards log during evaluation is not a training step's
    result = {"eval/reward": float(rewards.nanmean())}
    records = [
        {"prompt": r["prompt"], "completion": t, "reward": float(x)} for r, t, x in zip(rows, texts, rewards)
    ]
    if trainer.accuracy_fn is not None:
        correct = [bool(c) for c in trainer.accuracy_fn(rows, texts)]
        result["eval/accuracy"] = sum(correct) / len(correct)
        for rec, c in zip(records, correct):
            rec["correct"] = c
    return result, records


__all__ = ["RewardLogs", "completion_token_ids", "evaluate", "sample", "score", "score_samples"]
