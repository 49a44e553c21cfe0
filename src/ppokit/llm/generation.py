"""Batched sampling with a KV cache, and per-token log-probs of completions under a model.

Both GRPO and a PPO-for-RLHF trainer need exactly these two operations: sample completions for a
batch of left-padded prompts, then score ``(prompt, completion)`` pairs token by token. The sampling
loop is written out instead of calling ``model.generate`` because on a CPU the per-step overhead of
``generate`` (logits processors, stopping criteria, cache bookkeeping) is larger than the forward
pass of a small model; here each step is one forward pass and a few tensor ops.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ppokit.errors import ConfigError
from ppokit.functional.losses import entropy_from_logits
from ppokit.functional.tokens import completion_mask, selective_log_softmax

if TYPE_CHECKING:  # types only: the caller brings transformers
    from transformers import PreTrainedTokenizerBase


@dataclass
class Completions:
    """Output of ``generate``: ``tokens [B, L]`` (pad after EOS), ``mask [B, L]`` (true up to and
    including the first EOS), ``ended [B]`` (an EOS was produced; false = truncated)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    ended: torch.Tensor


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[Any], max_prompt_length: int, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise prompts into left-padded ``(ids [B, P], mask [B, P])``.

    A prompt is a string, or a list of chat messages (``[{"role": ..., "content": ...}]``) rendered with
    the tokenizer's chat template and a generation prompt. Prompts longer than ``max_prompt_length``
    keep their *last* tokens: the end of a prompt is what the completion continues.
    """
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        if isinstance(p, list)
        else p
        for p in prompts
    ]
    unique = list(dict.fromkeys(texts))  # GRPO repeats each prompt G times: tokenise it once
    lookup = dict(zip(unique, tokenizer(unique, add_special_tokens=False)["input_ids"]))
    enc = [lookup[t][-max_prompt_length:] for t in texts]
    width = max(len(row) for row in enc)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(row)) + row for row in enc], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in enc], dtype=torch.long)
    return ids.to(device), mask.to(device)


def repeat_cache(past: Any, repeats: int) -> Any:
    """Repeat every row of an HF KV cache ``repeats`` times (rows stay in groups), in place."""
    if not hasattr(past, "batch_repeat_interleave"):
        raise ConfigError(
            f"this model's cache ({type(past).__name__}) cannot be shared across a group; "
            "set share_prompt_prefix=false"
        )
    past.batch_repeat_interleave(repeats)
    return past


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a ``peft.PeftModel`` (the model itself otherwise). LoRA layers are
    injected in place, so calling the unwrapped model still runs the adapters (unless disabled)."""
    inner = getattr(model, "get_base_model", None)
    return inner() if callable(inner) else model


def cache_argument(model: nn.Module) -> str:
    """The keyword that passes a KV cache into ``model``'s forward: ``cache`` (transformers 5.x, where
    ``past_key_values`` is deprecated and removed in 5.40) or ``past_key_values`` (earlier versions)."""
    fwd = unwrap_peft(model).forward
    try:
        params = inspect.signature(fwd).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward pass returned: ``out.cache`` (transformers 5.x) or ``out.past_key_values``
    (earlier versions). Read so that neither spelling triggers a deprecation warning."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding gets 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    min_p: float = 0.0,
) -> torch.Tensor:
    """Sample one token per row from ``logits [B, V]`` with temperature, top-k, nucleus and min-p
    filtering (in that order, as transformers' logits warpers)."""
    if greedy:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        # Holtzman et al. 2020: drop tokens outside the smallest set whose mass reaches top_p; the
        # first token is always kept (its "mass before" is 0).
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    if min_p > 0:  # Nguyen et al. 2024: keep tokens with at least min_p x the top token's probability
        probs = probs.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), 0.0)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def repetition_penalty_(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019, https://arxiv.org/abs/1909.05858), as
    transformers applies it: the logits of tokens already in the prompt or completion (``seen [B, V]``)
    are divided by ``penalty`` when positive and multiplied by it when negative."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    num_return_sequences: int = 1,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
) -> Completions:
    """Sample completions for left-padded prompts ``[N, P]`` in one batched pass with a KV cache.

    With ``num_return_sequences = G`` each prompt is run through the model once and its KV cache is
    repeated G times, so a group of G completions pays for its prompt once; rows come back in
    groups of G consecutive rows, ``[N * G, L]``. Each step feeds only the newest token; the loop
    stops as soon as every row has produced an EOS (so a batch of short answers costs a few forward
    passes, not ``max_new_tokens``). Tokens after a row's EOS are ``pad_id``. ``min_p`` and
    ``repetition_penalty`` shape the sampling distribution only (TRL's ``generation_kwargs``); the
    log-probs of the loss are the model's at ``temperature``, as in TRL.
    """
    was_training = model.training
    model.eval()
    cache_kw = cache_argument(model)
    attn = prompt_mask.long()
    pos = positions_from_mask(attn)
    out = model(input_ids=prompt_ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
    past, logits = output_cache(out), out.logits[:, -1]
    if num_return_sequences > 1:
        g = num_return_sequences
        past = repeat_cache(past, g)
        logits, attn, pos = (t.repeat_interleave(g, dim=0) for t in (logits, attn, pos))
    batch = logits.shape[0]
    seen = None
    if repetition_penalty != 1.0:  # which tokens each row has seen (prompt, without its padding)
        counts = torch.zeros(logits.shape, dtype=torch.long, device=logits.device)
        ids = prompt_ids.repeat_interleave(num_return_sequences, dim=0)
        seen = counts.scatter_add_(1, ids, attn.long()[:, : ids.shape[1]]) > 0
    next_pos = pos[:, -1:] + 1
    eos = torch.tensor(eos_ids, device=prompt_ids.device)
    done = torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
    tokens = []
    for step in range(max_new_tokens):
        scores = logits.float()
        if seen is not None:
            scores = repetition_penalty_(scores, seen, repetition_penalty)
        tok = sample_next(scores, temperature, top_k, top_p, greedy, generator, min_p)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        if seen is not None:
            seen[torch.arange(batch, device=tok.device), tok] = True
        tokens.append(tok)
        done |= torch.isin(tok, eos)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        out = model(
            input_ids=tok[:, None],
            attention_mask=attn,
            position_ids=next_pos,
            use_cache=True,
            **{cache_kw: past},
        )
        past, logits = output_cache(out), out.logits[:, -1]
        next_pos = next_pos + 1
    model.train(was_training)
    ids = torch.stack(tokens, dim=1)
    mask, ended = completion_mask(ids, eos_ids)
    return Completions(tokens=ids, mask=mask, ended=ended)


# ---------------------------------------------------------------------- per-token log-probs, in chunks
def split_lm(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(trunk, head)`` of a transformers causal LM: the module that gives the final (normed) hidden
    states and the output projection, so log-probs can be computed from hidden states chunk by chunk.

    ``None`` when the model has no such split, or post-processes its logits after the head (Gemma's
    ``final_logit_softcapping``, Cohere's ``logit_scale``): then the caller uses the model's logits.
    """
    lm = unwrap_peft(model)
    cfg = getattr(lm, "config", None)
    if cfg is None or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    get_head = getattr(lm, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    trunk = getattr(lm, "base_model", None)
    if head is None or trunk is None or trunk is lm:
        return None
    return trunk, head


def _chunk_logprobs(
    head: nn.Module, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float, entropy: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs ``[n]`` of ``tokens [n]`` from hidden states ``[n, d]``, and entropies ``[n]`` (empty
    when ``entropy == "none"``; without a graph when ``"detached"``). The ``[n, V]`` float32 logits
    live only inside this function."""
    logits = head(hidden).float() / temperature
    logp = selective_log_softmax(logits, tokens)
    if entropy == "none":
        return logp, logp.new_zeros(0)
    if entropy == "detached":
        with torch.no_grad():
            return logp, entropy_from_logits(logits)
    return logp, entropy_from_logits(logits)


def head_logprobs(
    head: nn.Module,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    entropy: str = "none",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs ``[B, L]`` (and entropies) of ``tokens [B, L]`` from hidden states
    ``[B, L, d]``, computed only where ``mask`` is true and ``chunk_size`` tokens at a time.

    A chunk projects its hidden states to ``[chunk_size, V]`` logits, upcasts them to float32 and takes
    ``logit[token] - logsumexp`` (the selective log-softmax); with gradients on, each chunk runs under
    ``torch.utils.checkpoint``, so its logits are recomputed in the backward pass instead of being
    kept. The ``[B, L, V]`` float32 tensor of the plain computation never exists: at a 151k vocabulary
    that is ~20 GB for 128 completions of 256 tokens. Positions outside ``mask`` get 0.
    ``entropy``: ``"none"``, ``"detached"`` (a diagnostic) or ``"grad"`` (an entropy bonus).
    """
    rows, cols = mask.nonzero(as_tuple=True)
    h, t = hidden[rows, cols], tokens[rows, cols]
    n = h.shape[0]
    size = chunk_size if chunk_size > 0 else max(n, 1)
    grad = torch.is_grad_enabled() and h.requires_grad
    # one chunk: its logits are at most [chunk_size, V] anyway, so keep them for the backward pass
    # instead of recomputing them (the small-batch case pays nothing for chunking)
    recompute = grad and n > size
    logps, ents = [], []
    for i in range(0, n, size):
        args = (head, h[i : i + size], t[i : i + size], temperature, entropy)
        lp, en = (
            checkpoint(_chunk_logprobs, *args, use_reentrant=False) if recompute else _chunk_logprobs(*args)
        )
        logps.append(lp)
        ents.append(en)
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    if n == 0:  # nothing to score: keep the graph so that backward still runs (and gives zero gradients)
        anchor = hidden.sum() * 0.0 if grad else 0.0
        return zeros + anchor, (zeros if entropy != "none" else None)
    logp = zeros.index_put((rows, cols), torch.cat(logps))
    ent = zeros.index_put((rows, cols), torch.cat(ents)) if entropy != "none" else None
    return logp, ent


def _hidden_states(
    trunk: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    attn: torch.Tensor,
    pos: torch.Tensor,
    group_size: int,
) -> torch.Tensor:
    """Final hidden states ``[B, L, d]`` at the positions that predict the completion tokens."""
    width, length = prompt_ids.shape[1], completion_ids.shape[1]
    if group_size > 1:
        g = group_size
        head = trunk(
            input_ids=prompt_ids[::g], attention_mask=prompt_mask[::g].long(), position_ids=pos[::g, :width],
            use_cache=True,
        )  # fmt: skip
        hidden = head.last_hidden_state[:, -1:].repeat_interleave(g, dim=0)  # predicts each first token
        if length > 1:
            past = repeat_cache(output_cache(head), g)
            tail = trunk(
                input_ids=completion_ids[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, width:-1],
                use_cache=True, **{cache_argument(trunk): past},
            )  # fmt: skip
            hidden = torch.cat([hidden, tail.last_hidden_state], dim=1)
        return hidden
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    out = trunk(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False)
    return out.last_hidden_state[:, width - 1 : width + length - 1]


def completion_logprobs(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask_: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    group_size: int = 1,
    chunk_size: int = 1024,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs ``[B, L]`` of the completion tokens under ``model`` (and entropies if asked).

    The logits are divided by the sampling ``temperature`` first, so the log-probs are those of the
    distribution the tokens were drawn from (as TRL does). Gradients flow unless the caller wraps this
    in ``torch.no_grad()``; entropies carry a gradient only with ``entropy_grad`` (an entropy bonus).

    ``chunk_size > 0`` (the default): the model's trunk gives hidden states and ``head_logprobs``
    projects them to the vocabulary ``chunk_size`` tokens at a time. ``chunk_size = 0``, or a model
    without a trunk/head split (``split_lm``), computes the full ``[B, L, V]`` logits (only the
    completion positions').

    ``group_size = G > 1`` says rows come in groups of G with the same prompt: each prompt then goes
    through the model once, its KV cache (with its autograd graph) is repeated G times and only the
    completions are run on top. Same log-probs and gradients as the plain pass, computed on
    ``N * P + B * L`` tokens instead of ``B * (P + L)``.
    """
    length = completion_ids.shape[1]
    attn = torch.cat([prompt_mask.long(), completion_mask_.long()], dim=1)
    pos = positions_from_mask(attn)
    split = split_lm(model) if chunk_size > 0 else None
    if split is not None:
        trunk, head = split
        hidden = _hidden_states(trunk, prompt_ids, prompt_mask, completion_ids, attn, pos, group_size)
        mode = ("grad" if entropy_grad else "detached") if with_entropy else "none"
        # every position, padding too (as the plain path): callers mask, and the values stay identical
        every = torch.ones_like(completion_ids, dtype=torch.bool)
        return head_logprobs(head, hidden, completion_ids, every, temperature, chunk_size, mode)
    if group_size > 1:
        g, width = group_size, prompt_ids.shape[1]
        head = model(
            input_ids=prompt_ids[::g],
            attention_mask=prompt_mask[::g].long(),
            position_ids=pos[::g, :width],
            use_cache=True,
            logits_to_keep=1,
        )
        logits = head.logits[:, -1:].repeat_interleave(g, dim=0)  # predicts each row's first token
        if length > 1:  # the last completion token predicts nothing we need
            past = repeat_cache(output_cache(head), g)
            tail = model(
                input_ids=completion_ids[:, :-1],
                attention_mask=attn[:, :-1],
                position_ids=pos[:, width:-1],
                use_cache=True,
                **{cache_argument(model): past},
            )
            logits = torch.cat([logits, tail.logits], dim=1)
    else:
        ids = torch.cat([prompt_ids, completion_ids], dim=1)
        logits = model(
            input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, logits_to_keep=length + 1
        ).logits[:, :-1]  # position t predicts token t + 1
    logits = logits.float() / temperature
    logp = selective_log_softmax(logits, completion_ids)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits)
    return logp, entropy
