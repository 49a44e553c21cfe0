"""Pure tensor functions shared by the Gymnasium PPO and the language-model trainers.

This package imports torch only (a test enforces it): losses are unreduced, the caller reduces.
"""

from ppokit.functional.advantages import discounted_returns, gae, group_normalize, normalize
from ppokit.functional.diagnostics import (
    approx_kl,
    clip_fraction,
    clipped_fractions,
    explained_variance,
    outside_clip,
)
from ppokit.functional.kl import adaptive_beta, adaptive_kl_coef, kl_estimate, kl_k1, kl_k2, kl_k3
from ppokit.functional.loss_types import (
    LOSS_TYPES,
    REDUCTIONS,
    LossType,
    Reduction,
    aggregate_token_loss,
    get_loss_type,
    reduction_of,
    register_loss_type,
)
from ppokit.functional.losses import (
    cispo_surrogate,
    clipped_surrogate,
    entropy_from_logits,
    kl_penalty_surrogate,
    policy_loss,
    sapo_surrogate,
    unclipped_surrogate,
    value_loss,
)
from ppokit.functional.reductions import masked_mean, masked_sum, masked_var
from ppokit.functional.tokens import last_token_index, masked_whiten, per_token_rewards, token_gae

__all__ = [
    "LOSS_TYPES",
    "REDUCTIONS",
    "LossType",
    "Reduction",
    "adaptive_beta",
    "adaptive_kl_coef",
    "aggregate_token_loss",
    "approx_kl",
    "clip_fraction",
    "clipped_fractions",
    "cispo_surrogate",
    "clipped_surrogate",
    "discounted_returns",
    "entropy_from_logits",
    "explained_variance",
    "gae",
    "get_loss_type",
    "group_normalize",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_penalty_surrogate",
    "last_token_index",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "normalize",
    "outside_clip",
    "per_token_rewards",
    "policy_loss",
    "reduction_of",
    "register_loss_type",
    "token_gae",
    "sapo_surrogate",
    "unclipped_surrogate",
    "value_loss",
]
