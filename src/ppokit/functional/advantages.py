"""Advantage estimation and normalisation, with termination kept apart from truncation."""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    *,  # keyword-only: gamma and gae_lambda are both floats in [0, 1], easily swapped by position
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016, https://arxiv.org/abs/1506.02438).

    Shapes ``[T, ...]``, time first. ``next_values[t]`` is V of the observation that *followed* step t:
    for a time-limit truncation that is the real final observation, not the auto-reset one, so a
    truncated episode is bootstrapped (Pardo et al. 2018, "Time Limits in RL"). ``terminated[t]``
    zeroes the bootstrap (a true end, no future reward); ``done[t] = terminated | truncated`` cuts the
    recursion so no advantage leaks across episodes.

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * gae_lambda * (1 - done_t) * A_{t+1}

    Returns ``(advantages, returns)`` with ``returns = advantages + values`` (the critic's target).
    """
    not_term = 1.0 - terminated.to(rewards.dtype)
    not_done = 1.0 - done.to(rewards.dtype)
    deltas = rewards + gamma * not_term * next_values - values
    advantages = torch.empty_like(rewards)
    last = torch.zeros_like(rewards[0])
    decay = gamma * gae_lambda
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = deltas[t] + decay * not_done[t] * last
        advantages[t] = last
    return advantages, advantages + values


def discounted_returns(
    rewards: torch.Tensor, done: torch.Tensor, gamma: float, last_value: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Monte-Carlo discounted returns ``G_t = r_t + gamma * (1 - done_t) * G_{t+1}``, time first."""
    not_done = 1.0 - done.to(rewards.dtype)
    out = torch.empty_like(rewards)
    running = torch.as_tensor(last_value, dtype=rewards.dtype).expand_as(rewards[0]).clone()
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * not_done[t] * running
        out[t] = running
    return out


def normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero-mean, unit-std normalisation. A tensor of one element is returned unchanged (no NaN),
    as SB3 skips normalisation for minibatches of size 1."""
    if x.numel() <= 1:
        return x
    return (x - x.mean()) / (x.std() + eps)


def group_normalize(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantages for GRPO (DeepSeekMath, Shao et al. 2024, section 4.1.2).

    ``rewards [B]`` holds consecutive groups of ``group_size`` completions of one prompt.
    ``A = (r - mean_group) / (std + eps)`` where std is the group's (``scale="group"``), the whole
    batch's (``"batch"``, as recommended by Liu et al. 2025), or 1 (``"none"``, Dr. GRPO).
    A group whose rewards are all equal gets zero advantage. Returns ``(advantages [B],
    zero_std [B] bool)`` where ``zero_std`` marks completions in groups of equal rewards.
    """
    if rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    centred = (grouped - mean).reshape(-1)
    zero_std = (std.expand_as(grouped) < 1e-12).reshape(-1)
    if scale == "group":
        adv = centred / (std.expand_as(grouped).reshape(-1) + eps)
        adv = torch.where(zero_std, torch.zeros_like(adv), adv)  # stays 0 (not 0/0) even with eps=0
    elif scale == "batch":
        adv = centred / (rewards.std() + eps) if rewards.numel() > 1 else centred
    elif scale == "none":
        adv = centred
    else:
        raise ValueError(f"scale_rewards={scale!r}; allowed: ['group', 'batch', 'none']")
    return adv, zero_std
