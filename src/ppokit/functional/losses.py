"""Policy objectives and the critic loss. Every function is unreduced: one value per sample/token.

The PPO paper (Schulman et al. 2017, https://arxiv.org/abs/1707.06347) Table 1 compares
no clipping or penalty (``none``), clipping (``clip``), a fixed KL penalty and an adaptive KL penalty.
All objectives are written as losses to *minimise* (the negated surrogate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ppokit.functional.kl import kl_k3

OBJECTIVES = ("clip", "kl_penalty", "kl_adaptive", "none")


def clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    ratio_cap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negated clipped surrogate ``-min(r*A, clip(r, 1-clip_low, 1+clip_high)*A)`` (PPO eq. 7).

    ``clip_high`` defaults to ``clip_low``; a larger value is DAPO's "clip-higher". ``ratio_cap``
    (delta) also caps the unclipped ratio, which bounds the loss of negative-advantage samples whose
    ratio grew large: two-sided clipping (INTELLECT-2, https://arxiv.org/abs/2505.07291).
    Returns ``(loss, is_low_clipped, is_high_clipped)``: the two masks mark samples whose gradient the
    clip removed (ratio below 1-clip_low with A < 0, above 1+clip_high with A > 0), as TRL counts them.
    """
    clip_high = clip_low if clip_high is None else clip_high
    capped = ratio if ratio_cap is None else torch.clamp(ratio, max=ratio_cap)
    unclipped = capped * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.min(unclipped, clipped)
    is_low = (ratio < 1.0 - clip_low) & (advantages < 0)
    is_high = (ratio > 1.0 + clip_high) & (advantages > 0)
    return loss, is_low, is_high


def cispo_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, logp: torch.Tensor, ratio_max: float
) -> torch.Tensor:
    """Negated CISPO objective ``-sg(min(r, ratio_max)) * A * logp`` (MiniMax-M1, section 3.1,
    https://arxiv.org/abs/2506.13585): the importance weight is clipped and detached, so every token
    keeps a gradient (PPO's clip zeroes the gradient of clipped tokens)."""
    return -torch.clamp(ratio, max=ratio_max).detach() * advantages * logp


def sapo_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, tau_pos: float = 1.0, tau_neg: float = 1.05
) -> torch.Tensor:
    """Negated SAPO objective ``-(4 / tau) * sigmoid(tau * (r - 1)) * A`` (Soft Adaptive Policy
    Optimization, https://arxiv.org/abs/2511.20347): a smooth gate in place of the hard clip, with its
    temperature ``tau_pos`` for positive and ``tau_neg`` for non-positive advantages. Its gradient at
    r = 1 equals the policy gradient (d/dr of (4/tau) sigmoid(tau (r-1)) is 1 there)."""
    tau = torch.where(advantages > 0, torch.full_like(ratio, tau_pos), torch.full_like(ratio, tau_neg))
    return -torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau * advantages


def unclipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Negated plain importance-weighted surrogate ``-r*A`` (Table 1, "no clipping or penalty")."""
    return -ratio * advantages


def kl_penalty_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, kl: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Negated KL-penalised surrogate ``-(r*A - kl_coef*KL)`` (PPO eq. 8, where it is beta); ``kl``
    is per sample."""
    return -(ratio * advantages) + kl_coef * kl


def policy_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    objective: str = "clip",
    clip_range: float = 0.2,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample policy loss for one of ``OBJECTIVES``; shapes ``[B]`` (or any equal shape).

    The ratio is ``exp(logp - logp_old)``. For the KL objectives the per-sample KL(pi_old || pi) is the
    k3 estimate from the actions sampled by pi_old (non-negative, unbiased). Returns
    ``(loss, ratio, kl)`` where ratio and kl are detached, for diagnostics.
    """
    log_ratio = logp - logp_old
    ratio = torch.exp(log_ratio)
    kl = kl_k3(logp_old, logp)
    if objective == "clip":
        loss = clipped_surrogate(ratio, advantages, clip_range)[0]
    elif objective in ("kl_penalty", "kl_adaptive"):
        loss = kl_penalty_surrogate(ratio, advantages, kl, kl_coef)
    elif objective == "none":
        loss = unclipped_surrogate(ratio, advantages)
    else:
        raise ValueError(f"objective={objective!r}; allowed: {list(OBJECTIVES)}")
    return loss, ratio.detach(), kl.detach()


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    values_old: torch.Tensor | None = None,
    vf_clip_range: float | None = None,
    loss_type: str = "mse",
    huber_delta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample critic loss and a bool mask of samples where the clipped loss was the larger one.

    ``mse`` is ``0.5 * (V - R)**2`` (the 0.5 as in CleanRL/TRL, so its gradient is the plain error);
    ``huber`` is smooth L1 with threshold ``huber_delta``. With ``vf_clip_range`` the prediction is
    also clipped to ``values_old +- vf_clip_range`` and the element-wise maximum of the two losses is
    taken (PPO2 / "Implementation Matters", Engstrom et al. 2020). Its own range, not the policy's:
    value scales differ from ratio scales.
    """
    if loss_type == "mse":
        fn = lambda v: 0.5 * (v - returns) ** 2
    elif loss_type == "huber":
        fn = lambda v: F.huber_loss(v, returns, reduction="none", delta=huber_delta)
    else:
        raise ValueError(f"loss_type={loss_type!r}; allowed: ['mse', 'huber']")
    loss = fn(values)
    if vf_clip_range is None:
        return loss, torch.zeros_like(loss, dtype=torch.bool)
    if values_old is None:
        raise ValueError("values_old is required when vf_clip_range is set")
    values_clipped = values_old + torch.clamp(values - values_old, -vf_clip_range, vf_clip_range)
    loss_clipped = fn(values_clipped)
    return torch.maximum(loss, loss_clipped), (loss_clipped > loss).detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distributions given by ``logits [..., K]`` (returns ``[...]``)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)
