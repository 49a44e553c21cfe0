"""Token-level helpers for language-model trainers: log-probs of chosen tokens, completion masks, and
the token layout of PPO for RLHF (per-token rewards, GAE over padded completions, whitening).

Pure torch, like the rest of ``ppokit.functional``. For RLHF a completion of ``n`` tokens is an
episode of ``n`` steps: the state is the prompt plus the tokens so far, the action the next token.
Masks are ``[B, L]`` and true on a prefix of each row (the tokens up to and including the first EOS);
every tensor is zero where the mask is false. The GAE recursion itself is ``functional.gae`` (the one
classic PPO uses); ``token_gae`` only lays token sequences out for it.
"""

from __future__ import annotations

import torch

from ppokit.functional.advantages import gae
from ppokit.functional.reductions import masked_mean, masked_var


def selective_log_softmax(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., tokens]`` without materialising the full log-softmax.

    ``logits [B, L, V]``, ``tokens [B, L]`` -> ``[B, L]``. Written as ``logit[token] - logsumexp``:
    for a real vocabulary (V ~ 10^5) this avoids a second ``[B, L, V]`` tensor, which is where most
    of the memory of the loss goes.
    """
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_mask(tokens: torch.Tensor, eos_id: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``[B, L]`` (bool) that is true up to and including the first end-of-sequence token.

    Returns ``(mask, ended [B])``; a row without any EOS is all true and ``ended`` is false for it
    (a *truncated* completion). Tokens after the first EOS are padding and never enter a loss.
    """
    eos_ids = torch.as_tensor(eos_id if isinstance(eos_id, (list, tuple)) else [eos_id], device=tokens.device)
    is_eos = torch.isin(tokens, eos_ids)
    # cumsum counts EOS tokens seen so far; a position is kept while none came *before* it.
    before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    return before == 0, is_eos.any(dim=1)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index ``[B]`` of each row's last valid token (``-1`` for a row with no valid token)."""
    return mask.long().sum(dim=1) - 1


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """``r_t = -kl_coef * KL_t`` on every valid token, plus the sequence's score on its last token.

    Ziegler et al. 2019, eq. 2 (https://arxiv.org/abs/1909.08593): the reward model scores the whole
    completion, so its score arrives once, at the final token; the KL penalty to the reference
    policy is spread over every token. ``scores [B]``, ``kl [B, L]`` (per-token estimate),
    ``mask [B, L]``. A row with no valid token gets no reward at all. Returns ``[B, L]``.
    """
    m = mask.to(kl.dtype)
    rewards = -kl_coef * kl * m
    last = last_token_index(mask)
    rows = torch.nonzero(last >= 0).squeeze(-1)
    rewards[rows, last[rows]] += scores[rows].to(rewards.dtype)
    return rewards


def token_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    gae_lambda: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the tokens of padded completions of different lengths: ``(advantages, returns)`` [B, L].

    ``values[b, t]`` is V of the state that produced token t. The last valid token ends the episode
    (terminated: nothing follows, not even for a completion cut at the length limit, since no more
    tokens will ever be generated for it), so its bootstrap is 0; padding positions are marked
    terminated too, so nothing leaks into or out of them, and their outputs are zeroed.
    """
    m = mask.to(rewards.dtype)
    values = values * m
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    positions = torch.arange(rewards.shape[1], device=rewards.device)
    ends = positions[None, :] >= last_token_index(mask)[:, None]  # [B, L]: last valid token or padding
    adv, ret = gae(
        (rewards * m).T, values.T, next_values.T, ends.T, ends.T, gamma=gamma, gae_lambda=gae_lambda
    )  # time first
    return adv.T * m, ret.T * m


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise ``x`` by the mean and std of its masked entries; zero outside the mask.

    ``shift_mean=False`` only rescales (used for rewards, whose mean carries the signal; TRL does the
    same). With fewer than two valid entries ``x`` is returned masked but unscaled (no NaN).
    """
    m = mask.to(x.dtype)
    if m.sum() < 2:
        return x * m
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m
