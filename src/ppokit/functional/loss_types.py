"""The GRPO-family loss types in one table: each name -> its per-token objective and its reduction.

Before this table, what ``loss_type`` meant was written in three places (the reduction, the trainer's
objective dispatch, and a hard-coded list of the token-normalised types), so a variant added in one
of them silently mis-scaled in another (issue 29). Now a loss type is one ``register_loss_type`` call:
the reduction, the gradient-accumulation scaling, the entropy bonus's normaliser and the config's
allowed values (``GRPOConfig.loss_type``) all read it.

- ``REDUCTIONS``: name -> ``Reduction``, how a per-token loss ``[B, L]`` becomes one scalar and
  whether that scalar is normalised by the whole optimizer step's token count (``step_normalised``:
  micro-batch losses then add up) or is a micro-batch mean (averaged over the micro-batches).
- ``LOSS_TYPES``: name -> ``LossType``, an objective plus one of the reductions.

Objectives take ``(ratio, advantages, logp, cfg)`` (``cfg``: any object with the GRPO config's
``clip_range``, ``clip_range_high``, ``delta``, ``sapo_temperature_pos/neg`` attributes) and return
``(per_token_loss, is_low_clipped, is_high_clipped)``, the loss negated (minimised) and unreduced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ppokit.functional.losses import cispo_surrogate, clipped_surrogate, sapo_surrogate

Objective = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]
ReduceFn = Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Reduction:
    """``fn(loss [B, L], mask [B, L] float, max_completion_length, step_tokens) -> scalar``.

    ``step_normalised``: ``fn`` divides by ``step_tokens`` (the valid tokens of the whole optimizer
    step), so the micro-batches' losses are summed; otherwise each micro-batch's loss is a mean of its
    own and the trainer divides it by the number of micro-batches."""

    fn: ReduceFn
    step_normalised: bool
    doc: str


@dataclass(frozen=True)
class LossType:
    """A GRPO loss variant: its per-token ``objective`` and the name of its ``reduction``."""

    objective: Objective
    reduction: str
    doc: str


def _sequence_mean(
    loss: torch.Tensor, m: torch.Tensor, length: int, step_tokens: torch.Tensor
) -> torch.Tensor:
    return ((loss * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()


def _token_mean(loss: torch.Tensor, m: torch.Tensor, length: int, step_tokens: torch.Tensor) -> torch.Tensor:
    return (loss * m).sum() / m.sum().clamp(min=1.0)


def _constant_length(
    loss: torch.Tensor, m: torch.Tensor, length: int, step_tokens: torch.Tensor
) -> torch.Tensor:
    return (loss * m).sum() / (loss.shape[0] * length)


def _step_token_mean(
    loss: torch.Tensor, m: torch.Tensor, length: int, step_tokens: torch.Tensor
) -> torch.Tensor:
    return (loss * m).sum() / step_tokens.clamp(min=1.0)


REDUCTIONS: dict[str, Reduction] = {
    "sequence_mean": Reduction(
        _sequence_mean,
        False,
        "mean over each sequence's tokens, then over sequences (DeepSeekMath eq. 3); long sequences get "
        "a smaller per-token weight, the length bias of Liu et al. 2025 (Dr. GRPO)",
    ),
    "token_mean": Reduction(_token_mean, False, "mean over the micro-batch's valid tokens (BNPO)"),
    "constant_length": Reduction(
        _constant_length, False, "sum over tokens / (B * max_completion_length), a constant (Dr. GRPO)"
    ),
    "step_token_mean": Reduction(
        _step_token_mean,
        True,
        "sum over tokens / the valid tokens of the whole optimizer step, so gradient accumulation does "
        "not re-weight (DAPO, Yu et al. 2025)",
    ),
}


def _clip(ratio: torch.Tensor, adv: torch.Tensor, logp: torch.Tensor, cfg: Any) -> tuple:
    """PPO's clipped surrogate with DAPO's clip-higher and INTELLECT-2's ratio cap ``delta``."""
    return clipped_surrogate(ratio, adv, cfg.clip_range, cfg.clip_range_high, cfg.delta)


def _no_clip_masks(ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    none = torch.zeros_like(ratio, dtype=torch.bool)
    return none, none


def _cispo(ratio: torch.Tensor, adv: torch.Tensor, logp: torch.Tensor, cfg: Any) -> tuple:
    """CISPO: the weight is capped at 1 + clip_range_high; no token's gradient is removed."""
    high = cfg.clip_range if cfg.clip_range_high is None else cfg.clip_range_high
    return (cispo_surrogate(ratio, adv, logp, 1.0 + high), *_no_clip_masks(ratio))


def _sapo(ratio: torch.Tensor, adv: torch.Tensor, logp: torch.Tensor, cfg: Any) -> tuple:
    """SAPO's soft gate in place of the clip."""
    loss = sapo_surrogate(ratio, adv, cfg.sapo_temperature_pos, cfg.sapo_temperature_neg)
    return (loss, *_no_clip_masks(ratio))


# cispo reduces as dapo and sapo as grpo: their objectives differ, not the reduction (as TRL does).
LOSS_TYPES: dict[str, LossType] = {}


def register_loss_type(name: str, objective: Objective, reduction: str, doc: str = "") -> LossType:
    """Add (or replace) the loss type ``name``: ``objective`` (see the module docstring) reduced by
    ``REDUCTIONS[reduction]``. The GRPO trainer and ``GRPOConfig.loss_type`` accept it from then on."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; allowed: {sorted(REDUCTIONS)}")
    LOSS_TYPES[name] = LossType(objective, reduction, doc)
    return LOSS_TYPES[name]


register_loss_type("grpo", _clip, "sequence_mean", "PPO's clip, per-sequence token mean (DeepSeekMath)")
register_loss_type("bnpo", _clip, "token_mean", "PPO's clip, token mean of the micro-batch")
register_loss_type("dr_grpo", _clip, "constant_length", "PPO's clip, constant normaliser (Dr. GRPO)")
register_loss_type("dapo", _clip, "step_token_mean", "PPO's clip, step token mean (DAPO)")
register_loss_type("cispo", _cispo, "step_token_mean", "clipped, detached IS weight (MiniMax-M1)")
register_loss_type("sapo", _sapo, "sequence_mean", "soft sigmoid gate (SAPO)")


def get_loss_type(name: str) -> LossType:
    """The registered ``LossType`` called ``name``; a ValueError lists the registered ones."""
    try:
        return LOSS_TYPES[name]
    except KeyError:
        raise ValueError(f"loss_type={name!r}; allowed: {list(LOSS_TYPES)}") from None


def reduction_of(name: str) -> Reduction:
    """The ``Reduction`` the loss type ``name`` uses."""
    return REDUCTIONS[get_loss_type(name).reduction]


def aggregate_token_loss(
    loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss ``[B, L]`` to a scalar the way ``loss_type`` does (``REDUCTIONS``).

    ``max_completion_length`` (default: L) is the constant of ``constant_length``;
    ``num_items_in_batch`` (default: this mask's valid tokens) the step's token count of
    ``step_token_mean``.
    """
    m = mask.to(loss.dtype)
    length = max_completion_length if max_completion_length is not None else loss.shape[-1]
    step_tokens = (
        m.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=loss.dtype)
    )
    return reduction_of(loss_type).fn(loss, m, length, step_tokens)
