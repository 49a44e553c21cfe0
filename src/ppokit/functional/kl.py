"""Sample-based estimators of KL(p || q) from log-probabilities of samples drawn from p.

Following John Schulman, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html):
with ``log_r = logq - logp`` for x ~ p,

- k1 = -log_r                     unbiased, high variance, can be negative per sample
- k2 = 0.5 * log_r**2             biased, low variance, always >= 0
- k3 = exp(log_r) - 1 - log_r     unbiased, low variance, always >= 0 (used by GRPO, DeepSeekMath eq. 4)

Argument order: ``logp`` are the log-probs under the sampling distribution p, ``logq`` under q.
For GRPO's KL(pi || pi_ref) with completions sampled from pi: ``kl_k3(logp, logp_ref)``.
For PPO's KL(pi_old || pi) with actions sampled from pi_old: ``kl_k3(logp_old, logp)``.
All functions are elementwise and return the input's shape.
"""

from __future__ import annotations

import torch


def kl_k1(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """k1 estimator of KL(p || q): ``logp - logq``."""
    return logp - logq


def kl_k2(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """k2 estimator of KL(p || q): ``0.5 * (logq - logp) ** 2``."""
    return 0.5 * (logq - logp) ** 2


def kl_k3(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(p || q): ``exp(logq - logp) - (logq - logp) - 1`` (>= 0, zero when equal)."""
    log_r = logq - logp
    # expm1 keeps the result >= 0 when the log-probs are nearly equal (exp(x) - 1 would round below 0)
    return torch.expm1(log_r) - log_r


_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimate(logp: torch.Tensor, logq: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Dispatch to ``kl_k1``, ``kl_k2`` or ``kl_k3`` by name."""
    try:
        fn = _ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(f"estimator={estimator!r}; allowed: {sorted(_ESTIMATORS)}") from None
    return fn(logp, logq)


def adaptive_beta(beta: float, kl: float, kl_target: float) -> float:
    """The PPO paper's adaptive KL-penalty rule (Schulman et al. 2017, section 4), applied once per
    policy update: halve beta when KL < d_targ / 1.5, double it when KL > 1.5 * d_targ, else keep it."""
    if kl < kl_target / 1.5:
        return beta / 2.0
    if kl > kl_target * 1.5:
        return beta * 2.0
    return beta


def adaptive_kl_coef(kl_coef: float, kl: float, target: float, n_completions: int, horizon: int) -> float:
    """Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593), section 2.2, the adaptive rule of PPO for
    RLHF, applied after every batch: ``kl_coef * (1 + K * e)`` with ``e = clip(kl / target - 1, -0.2,
    0.2)`` and ``K = n_completions / horizon``.

    ``kl`` is the batch's mean KL per completion (summed over its tokens). The proportional error is
    clipped so one odd batch moves the coefficient by at most ``20% * n / horizon``. (Classic PPO's
    halve-or-double rule is ``adaptive_beta``.)
    """
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_completions / horizon)
