"""Checks on what a language-model run is given, before any work: prompt rows, the tokenizer, and
prompt lengths against the model's positions. Issue 16 found each of these ending in a traceback
from deep inside tokenisation, generation or the position embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ppokit.config import short
from ppokit.errors import ConfigError
from ppokit.llm.config import LMConfig
from ppokit.llm.models import check_causal_lm
from ppokit.llm.rewards import RewardFn

if TYPE_CHECKING:  # types only: transformers is imported inside the functions that need it
    import torch
    from transformers import PreTrainedTokenizerBase


def check_prompt_rows(rows: Sequence[dict[str, Any]], what: str = "train_prompts") -> None:
    """Every ``prompt`` is a non-empty string or a non-empty list of chat messages (dicts), and its
    text is valid Unicode (no lone surrogate)."""
    for i, row in enumerate(rows):
        p = row["prompt"]
        if isinstance(p, str):
            if not p:
                raise ConfigError(
                    f"{what} row {i}: the prompt is empty; a completion needs something to continue"
                )
            check_encodable(p, f"{what} row {i}")
            continue
        if isinstance(p, list) and p and all(isinstance(m, dict) for m in p):
            for m in p:
                if isinstance(m.get("content"), str):
                    check_encodable(m["content"], f"{what} row {i}")
            continue
        raise ConfigError(
            f"{what} row {i}: prompt={short(p)} ({type(p).__name__}) is not allowed; give a non-empty "
            "string or a list of chat messages ({'role': ..., 'content': ...})"
        )


def check_encodable(text: str, where: str) -> None:
    """ConfigError naming ``where`` when ``text`` is not valid Unicode: a lone surrogate (JSON's
    ``"\\ud800"`` escape reads as one) reached the tokenizer as a traceback (issue 34)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConfigError(
            f"{where}: the prompt holds {text[e.start : e.end]!r} at character {e.start}, a lone UTF-16 "
            "surrogate that is not valid Unicode text (a broken \\uXXXX escape?); fix or drop the row"
        ) from None


def check_batch_fits(n_rows: int, prompts_per_step: int, world_size: int = 1) -> None:
    """One step's prompts (``prompts_per_step`` on each of ``world_size`` ranks) must not exceed the
    rows: more would repeat prompts within a batch (issue 34: 100,000 per step from 40 rows trained
    without a word). TRL's sampler drops a batch it cannot fill, so there it would train on nothing."""
    wanted = prompts_per_step * world_size
    if wanted > n_rows:
        ranks = f" x {world_size} ranks = {wanted}" if world_size > 1 else ""
        raise ConfigError(
            f"prompts_per_step={prompts_per_step}{ranks} is not allowed; the training prompts have only "
            f"{n_rows} rows: use at most {n_rows // world_size} (a step would repeat prompts)"
        )


def check_vocabulary(model: nn.Module, tokenizer: Any) -> None:
    """The tokenizer's ids must fit the model's input embedding: an id beyond it was an IndexError deep
    in the forward pass (issue 34)."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    rows = getattr(embedding, "num_embeddings", None)
    if not isinstance(rows, int):
        return
    n = len(tokenizer)
    if n > rows:
        raise ConfigError(
            f"the tokenizer has {n} tokens but the model's embedding has {rows} rows, so ids {rows}..{n - 1} "
            "have no embedding: use the tokenizer saved with this model, or call "
            "model.resize_token_embeddings(len(tokenizer)) before training"
        )


def check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
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


def model_positions(model: nn.Module) -> int | None:
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


__all__ = [
    "check_batch_fits",
    "check_encodable",
    "check_lengths",
    "check_prompt_rows",
    "check_tokenizer",
    "check_tokenizes",
    "check_vocabulary",
    "model_positions",
]


# -- what the trainers' constructors accept, turned into what they use (moved out of trainer.py) --
def is_tokenizer(x: object) -> bool:
    """Whether ``x`` looks like an HF tokenizer or processor (not a reward function)."""
    return hasattr(x, "pad_token_id") or hasattr(x, "apply_chat_template") or hasattr(x, "tokenizer")


def tokenizer_of(model: nn.Module) -> PreTrainedTokenizerBase:
    """The tokenizer saved next to a model loaded from a local directory (TRL loads it from the hub
    name; ppokit only from a directory); ConfigError when there is none."""
    from ppokit.llm.models import load_tokenizer

    path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if path and Path(path).is_dir():
        return load_tokenizer(path)
    raise ConfigError(
        "no tokenizer: pass processing_class= (or tokenizer), or a model directory that has one"
    )


def as_reward_function(spec: RewardFn | str | Path, device: str | torch.device) -> RewardFn:
    """A reward function from what ``reward_funcs`` may hold: a callable, a ``module:function`` or
    ``file.py:function`` spec, or the directory of a sequence-classification reward model."""
    if callable(spec):
        return spec
    if isinstance(spec, (str, Path)):
        if Path(spec).is_dir():
            from ppokit.llm.reward_model import RewardModel

            return RewardModel(spec, device)
        from ppokit.llm.rewards import load_reward_function

        return load_reward_function(str(spec))
    raise ConfigError(f"reward function {spec!r} is not callable, a module:function spec or a directory")


def check_chat_template(tokenizer: Any, rows: list[dict[str, Any]]) -> None:
    """Conversational prompts (lists of messages) need the tokenizer's chat template."""
    if any(isinstance(r.get("prompt"), list) for r in rows) and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the prompts are conversations (lists of messages) but the tokenizer has no chat template; "
            "set tokenizer.chat_template or give the prompts as text"
        )


def as_rows(prompts: Sequence[Any]) -> list[dict[str, Any]]:
    """Prompt rows: strings become ``{"prompt": s}``; dicts must have a ``prompt`` key."""
    rows = [p if isinstance(p, dict) else {"prompt": p} for p in prompts]
    if not rows or any("prompt" not in r for r in rows):
        raise ConfigError("train_prompts must be a non-empty list of strings or of dicts with a 'prompt' key")
    return rows


def check_inputs(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    cfg: LMConfig,
    world_size: int = 1,
) -> None:
    """Prompts, tokenizer and lengths (``cfg.generation``) checked before any work: the model is a
    causal LM, its embedding holds every token id, and ``cfg.prompts_per_step`` on each of
    ``world_size`` ranks fits the training rows."""
    check_causal_lm(model)
    check_tokenizer(tokenizer)
    check_vocabulary(model, tokenizer)
    for what, rs in (("train_prompts", rows), ("eval_prompts", eval_rows)):
        check_prompt_rows(rs, what)
        check_chat_template(tokenizer, rs)
        check_tokenizes(tokenizer, rs, what)
        check_lengths(model, tokenizer, rs, cfg.generation, what)
    check_batch_fits(len(rows), cfg.prompts_per_step, world_size)
