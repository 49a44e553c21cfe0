"""Detached training diagnostics: clip fraction, explained variance, approximate KL."""

from __future__ import annotations

import torch

from ppokit.functional.kl import kl_k3
from ppokit.functional.reductions import masked_mean


@torch.no_grad()
def clip_fraction(ratio: torch.Tensor, clip_range: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of samples whose ratio left ``[1 - clip_range, 1 + clip_range]`` (SB3's clip_fraction)."""
    clipped = ((ratio - 1.0).abs() > clip_range).to(ratio.dtype)
    return clipped.mean() if mask is None else masked_mean(clipped, mask)


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
