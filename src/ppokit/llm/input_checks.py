"""Checks on what a language-model run is given, before any work: prompt rows, the tokenizer, and
prompt lengths against the model's positions. Issue 16 found each of these ending in a traceback
from deep inside tokenisation, generation or the position embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ppokit.config import short
from ppokit.errors import ConfigError


def check_prompt_rows(rows: Sequence[dict[str, Any]], what: str = "train_prompts") -> None:
    """Every ``prompt`` is a non-empty string or a non-empty list of chat messages (dicts)."""
    for i, row in enumerate(rows):
        p = row["prompt"]
        if isinstance(p, str):
            if not p:
                raise ConfigError(
                    f"{what} row {i}: the prompt is empty; a completion needs something to continue"
                )
            continue
        if isinstance(p, list) and p and all(isinstance(m, dict) for m in p):
            continue
        raise ConfigError(
            f"{what} row {i}: prompt={short(p)} ({type(p).__name__}) is not allowed; give a non-empty "
            "string or a list of chat messages ({'role': ..., 'content': ...})"
        )


def check_tokenizer(tokenizer: Any) -> None:
    """Batched generation pads on the left: the tokenizer needs a pad token (its EOS serves)."""
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ConfigError(
            f"the tokenizer ({type(tokenizer).__name__}) has neither a pad token nor an EOS token; set "
            "tokenizer.pad_token (or eos_token) before training, or add one to the model directory's "
            "tokenizer files"
        )


def check_tokenizes(tokenizer: Any, rows: Sequence[dict[str, Any]], what: str, first: int = 256) -> None:
    """The first ``first`` string prompts each give at least one token (an empty vocabulary or a prompt
    of characters the tokenizer drops would give an empty row, which fails deep in generation)."""
    texts = [r["prompt"] for r in rows[:first] if isinstance(r["prompt"], str)]
    if not texts:
        return
    for i, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        if not ids:
            raise ConfigError(
                f"{what} row {i}: prompt {short(texts[i])} gives no tokens with this tokenizer "
                f"({type(tokenizer).__name__}, vocabulary of {len(tokenizer)})"
            )


def model_positions(model: Any) -> int | None:
    """The longest sequence the model's position embeddings accept, when its config says."""
    cfg = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_lengths(
    model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], generation: Any, what: str
) -> None:
    """Each prompt (cut to ``max_prompt_length`` tokens, as generation does) plus
    ``max_completion_length`` fits the model's positions; the first row that does not is named."""
    positions = model_positions(model)
    room = generation.max_prompt_length + generation.max_completion_length
    if positions is None or room <= positions or not rows:
        return
    if generation.max_completion_length >= positions:
        raise ConfigError(
            f"generation.max_completion_length={generation.max_completion_length} is not allowed; the model "
            f"has {positions} positions for prompt and completion together"
        )
    texts = [r["prompt"] for r in rows]
    if not all(isinstance(t, str) for t in texts):  # chat prompts: rendered as generation renders them
        texts = [
            tokenizer.apply_chat_template(t, tokenize=False, add_generation_prompt=True)
            if isinstance(t, list)
            else t
            for t in texts
        ]
    unique = list(dict.fromkeys(texts))
    lengths = dict(
        zip(unique, (len(ids) for ids in tokenizer(unique, add_special_tokens=False)["input_ids"]))
    )
    for i, text in enumerate(texts):
        n = min(lengths[text], generation.max_prompt_length)
        if n + generation.max_completion_length > positions:
            raise ConfigError(
                f"{what} row {i} has {lengths[text]} tokens; {n} of them plus generation."
                f"max_completion_length={generation.max_completion_length} exceed the model's {positions} "
                f"positions: lower generation.max_prompt_length to at most "
                f"{positions - generation.max_completion_length} (a prompt keeps its last tokens) or "
                "shorten the prompt"
            )


__all__ = ["check_lengths", "check_prompt_rows", "check_tokenizer", "check_tokenizes", "model_positions"]
