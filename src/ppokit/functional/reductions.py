"""Masked reductions and the token-loss aggregation modes used by the language-model trainers."""

from __future__ import annotations

import torch

# The per-token objectives of GRPO-style trainers and how each reduces; every name is handled below and
# in the trainer's objective dispatch (``ppokit.llm.grpo``), anything else is refused.
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo")


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` where ``mask`` is true (mask is bool or 0/1, same shape as x)."""
    x = x * mask.to(x.dtype)
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is set; 0 where nothing is set (no NaN)."""
    m = mask.to(x.dtype)
    count = m.sum() if dim is None else m.sum(dim)
    return masked_sum(x, m, dim) / count.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance of ``x`` over the masked positions (scalar)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def aggregate_token_loss(
    loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss ``[B, L]`` to a scalar.

    - ``grpo``: mean over each sequence's tokens, then mean over sequences (DeepSeekMath eq. 3).
      Long sequences get smaller per-token weight, a length bias noted by Liu et al. 2025 (Dr. GRPO).
    - ``bnpo``: mean over all valid tokens of this (micro)batch.
    - ``dr_grpo``: sum over tokens / (B * max_completion_length), a constant normaliser (Dr. GRPO).
    - ``dapo``: sum over tokens / number of valid tokens in the whole generation batch
      (``num_items_in_batch``), so gradient accumulation does not re-weight (DAPO, Yu et al. 2025).
    - ``cispo`` reduces as ``dapo`` and ``sapo`` as ``grpo`` (their objectives differ, not the reduction;
      as TRL does).
    """
    m = mask.to(loss.dtype)
    if loss_type in ("grpo", "sapo"):
        per_seq = (loss * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        return per_seq.mean()
    if loss_type == "bnpo":
        return (loss * m).sum() / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = max_completion_length if max_completion_length is not None else loss.shape[-1]
        return (loss * m).sum() / (loss.shape[0] * length)
    if loss_type in ("dapo", "cispo"):
        denom = (
            m.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=loss.dtype)
        )
        return (loss * m).sum() / denom.clamp(min=1.0)
    raise ValueError(f"loss_type={loss_type!r}; allowed: {list(LOSS_TYPES)}")
