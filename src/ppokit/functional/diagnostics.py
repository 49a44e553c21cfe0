"""Detached training diagnostics: the two clip fractions, explained variance, approximate KL.

Two different quantities are both called "clip fraction" in the libraries ppokit follows; ppokit keeps
one definition and one metric name for each, on both sides:

- ``clip_fraction``: the fraction of samples whose ratio lies outside the clip interval,
  ``|r - 1| > clip_range`` (Stable-Baselines3's ``train/clip_fraction``, CleanRL's ``clipfrac``). It
  measures how far the policy moved, whatever the sign of the advantage.
- ``clipped_fraction`` (``_low``, ``_high``): the fraction of samples where the clip is *active*: the
  ratio left the interval on the side the advantage pushes it (``r < 1 - eps_low`` with A < 0,
  ``r > 1 + eps_high`` with A > 0), so ``min`` picked the clipped term and the sample's policy
  gradient is zero (TRL's GRPO ``clip_ratio/*``, TRL's PPO ``policy/clipfrac_avg``). It measures
  how much of the batch no longer teaches anything. Always <= ``clip_fraction``.

The value clip's counterpart is ``value_clipped_fraction``: samples where the clipped value loss was
the larger one (its gradient is zero there), from the mask ``functional.value_loss`` returns.
"""

from __future__ import annotations

import torch

from ppokit.functional.kl import kl_k3
from ppokit.functional.reductions import masked_mean

# The metric names of the quantities above, the same on the classic and the language-model side.
CLIP_FRACTION = "clip_fraction"
CLIPPED_FRACTION = "clipped_fraction"
CLIPPED_FRACTION_LOW = "clipped_fraction_low"
CLIPPED_FRACTION_HIGH = "clipped_fraction_high"
VALUE_CLIPPED_FRACTION = "value_clipped_fraction"


def _fraction(flags: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    flags = flags.float()
    return flags.mean() if mask is None else masked_mean(flags, mask)


def outside_clip(
    ratio: torch.Tensor, clip_range: float, clip_range_high: float | None = None
) -> torch.Tensor:
    """Bool mask of samples whose ratio lies outside ``[1 - clip_range, 1 + clip_range_high]``
    (``clip_range_high`` defaults to ``clip_range``): the event ``clip_fraction`` counts."""
    high = clip_range if clip_range_high is None else clip_range_high
    return (ratio < 1.0 - clip_range) | (ratio > 1.0 + high)


@torch.no_grad()
def clip_fraction(
    ratio: torch.Tensor,
    clip_range: float,
    mask: torch.Tensor | None = None,
    clip_range_high: float | None = None,
) -> torch.Tensor:
    """Fraction of samples outside the clip interval (SB3's ``clip_fraction``); ``mask``: valid samples."""
    return _fraction(outside_clip(ratio, clip_range, clip_range_high), mask)


@torch.no_grad()
def clipped_fractions(
    is_low: torch.Tensor, is_high: torch.Tensor, mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """``{clipped_fraction, clipped_fraction_low, clipped_fraction_high}`` from the two masks
    ``functional.clipped_surrogate`` returns (so the metric and the loss agree on what was clipped):
    the fractions of samples whose gradient the clip removed, in all and on each side."""
    return {
        CLIPPED_FRACTION: _fraction(is_low | is_high, mask),
        CLIPPED_FRACTION_LOW: _fraction(is_low, mask),
        CLIPPED_FRACTION_HIGH: _fraction(is_high, mask),
    }


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """``1 - Var[returns - values] / Var[returns]``: 1 is perfect, 0 is no better than a constant.

    Returns NaN when the returns have zero variance (the quantity is undefined then), as SB3 does.
    """
    var_returns = returns.var(unbiased=False)
    if var_returns == 0:
        return torch.tensor(float("nan"))
    return 1.0 - (returns - values).var(unbiased=False) / var_returns


@torch.no_grad()
def approx_kl(logp: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean k3 estimate of KL(pi_old || pi) from actions sampled by pi_old (as SB3 and CleanRL log it)."""
    kl = kl_k3(logp_old, logp)
    return kl.mean() if mask is None else masked_mean(kl, mask)
