"""The token-level pieces of PPO for RLHF, as pure torch functions (no model, no tokenizer).

A completion of ``n`` tokens is an episode of ``n`` steps: the state is the prompt plus the tokens so
far, the action the next token. Masks are ``[B, L]`` and true on a prefix of each row (the tokens up
to and including the first EOS); every tensor is zero where the mask is false. The GAE recursion
itself is ``ppokit.functional.gae`` (the one classic PPO uses); this file only lays token sequences
out for it.
"""

from __future__ import annotations

import torch

from ppokit.functional import gae, masked_mean, masked_var


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
    lam: float = 0.95,
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
    adv, ret = gae((rewards * m).T, values.T, next_values.T, ends.T, ends.T, gamma, lam)  # time first
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


class AdaptiveKLController:
    """Ziegler et al. 2019, section 2.2: ``beta <- beta * (1 + K_beta * e_t)`` after every batch, with
    ``e_t = clip(KL_t / KL_target - 1, -0.2, 0.2)`` and ``K_beta = n_completions / horizon``.

    ``KL_t`` is the batch's mean KL per completion (summed over its tokens). The proportional error is
    clipped so one odd batch moves beta by at most ``20% * n / horizon``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_completions: int) -> float:
        """Move the coefficient after a batch of ``n_completions``; returns the new value."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_completions / self.horizon
        return self.value


__all__ = ["AdaptiveKLController", "last_token_index", "masked_whiten", "per_token_rewards", "token_gae"]
