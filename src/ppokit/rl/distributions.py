"""Action distributions as a few tensor ops, without per-call ``torch.distributions`` objects (the
design notes measured ``Categorical`` sampling at ~350 us a call on these machines).

``ActionDistribution(action_space)`` turns a policy's output (logits, or a Gaussian mean plus a
log-std) into samples, log-probabilities and entropies. Every supported space is listed in
``KINDS``; any other space is refused with an error naming it (fail closed).

Box actions of any shape are handled flat (``[B, prod(shape)]``: the rollout stores them so, and
``to_env`` gives them the env's shape). ``squashed_box`` is a bounded Box under
``network.action_bounds: tanh``: the Gaussian sample ``u`` is stored and the env gets
``low + (tanh(u) + 1) (high - low) / 2``; its log-probability carries the change-of-variables
correction (SAC, Haarnoja et al. 2018, appendix C, https://arxiv.org/abs/1801.01290).

``beta`` is a bounded Box under ``network.action_bounds: beta`` (issue 32): each action dimension is
``low + x (high - low)`` with ``x ~ Beta(alpha, beta)`` on (0, 1), so actions never leave the bounds
and no probability mass piles up at a clip (Chou et al. 2017, "Improving Stochastic Policy Gradients
in Continuous Control with Deep Reinforcement Learning using the Beta Distribution",
http://proceedings.mlr.press/v70/chou17a.html). The policy outputs ``[B, 2k]``; ``alpha = 1 +
softplus(out[:, :k])``, ``beta = 1 + softplus(out[:, k:])``: both above 1, so the density is unimodal
and finite at the bounds. The rollout stores ``x``.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from ppokit.errors import EnvConfigError
from ppokit.functional.losses import entropy_from_logits
from ppokit.rl.masking import masked_binary, masked_entropy, masked_log_softmax

_LOG_2PI = math.log(2 * math.pi)
KINDS = ("discrete", "multidiscrete", "multibinary", "box", "squashed_box", "beta")
BETA_EPS = 1e-6  # stored Beta samples are kept in [eps, 1 - eps]: float32 can round a sample to 0 or 1
_LOG_2 = math.log(2.0)


def action_kind(space: gym.Space, bounds: str = "clip") -> str:
    """The ``KINDS`` entry of ``space`` (``bounds``: ``clip`` or ``tanh`` for a bounded Box), or
    EnvConfigError naming the space and what is supported."""
    if isinstance(space, gym.spaces.Discrete):
        return "discrete"
    if isinstance(space, gym.spaces.MultiDiscrete):
        return "multidiscrete"
    if isinstance(space, gym.spaces.MultiBinary):
        return "multibinary"
    if isinstance(space, gym.spaces.Box) and len(space.shape) >= 1:
        if bounds == "tanh":
            if not space.is_bounded("both"):
                raise EnvConfigError(
                    f"network.action_bounds='tanh' is not allowed for the unbounded action space {space}; "
                    "use clip"
                )
            return "squashed_box"
        if bounds == "beta":  # issue 32: Beta actions for bounded Boxes
            if not space.is_bounded("both"):
                raise EnvConfigError(
                    f"network.action_bounds='beta' is not allowed for the unbounded action space {space}; "
                    "use clip"
                )
            return "beta"
        if bounds != "clip":
            raise EnvConfigError(f"network.action_bounds={bounds!r} is not allowed; use clip, tanh or beta")
        return "box"
    raise EnvConfigError(
        f"action space {space} is not supported; supported: Discrete, MultiDiscrete, MultiBinary, Box"
    )


class ActionDistribution:
    """Categorical (Discrete), independent Categoricals (MultiDiscrete) or diagonal Gaussian (Box).

    ``out_dim`` is the width of the policy output it reads: logits (summed over the sub-actions of a
    MultiDiscrete) or the Gaussian mean. Gaussian methods take the (already clamped) log-std.
    ``mask`` (optional, ``[B, out_dim]`` bool, True = allowed; rl/masking.py) gives masked actions
    probability exactly 0 in sampling, log-probability and entropy.
    """

    def __init__(self, action_space: gym.Space, bounds: str = "clip"):
        self.kind = action_kind(action_space, bounds)
        self.space = action_space
        self.start = None
        if self.kind == "discrete":
            self.nvec = [int(action_space.n)]
            self.start = int(action_space.start)
        elif self.kind == "multidiscrete":
            self.nvec = [int(n) for n in np.asarray(action_space.nvec).ravel()]
            self.start = np.asarray(action_space.start)
        else:
            self.nvec = []
        self.gaussian = self.kind in ("box", "squashed_box")
        self.env_shape: tuple[int, ...] = tuple(action_space.shape)
        flat = int(np.prod(self.env_shape)) if self.env_shape else 1
        self.out_dim = sum(self.nvec) if self.nvec else flat
        if self.kind == "beta":  # alpha and beta per action dimension
            self.out_dim = 2 * flat
        # How the rollout stores actions: indices as in the space, Box/MultiBinary values flat.
        self.action_shape: tuple[int, ...] = {"discrete": (), "multidiscrete": self.env_shape}.get(
            self.kind, (flat,)
        )
        self.action_dtype = torch.long if self.kind in ("discrete", "multidiscrete") else torch.float32
        if self.gaussian or self.kind == "beta":
            self.low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
            self.high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)
        if self.kind == "squashed_box":
            self._scale = torch.as_tensor((self.high - self.low) / 2.0, dtype=torch.float32)
            self._log_scale_sum = float(np.log((self.high - self.low) / 2.0).sum())

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Stored actions ``[B, *action_shape]`` -> what the env takes: clipped (box) or squashed to
        the bounds, in the space's shape and dtype (categories shifted by the space's ``start``)."""
        B = actions.shape[0]
        if self.kind == "box":  # a Gaussian sample is stored unclipped (its logp is exact), clipped here
            # np.clip's values by two ufuncs: np.clip's Python wrapper cost ~10 us a step (issue 33)
            a = np.minimum(np.maximum(actions, self.low), self.high)
            return a.reshape(B, *self.env_shape).astype(self.space.dtype)
        if self.kind == "squashed_box":
            a = self.low + (np.tanh(actions.astype(np.float64)) + 1.0) * (self.high - self.low) / 2.0
            return np.clip(a, self.low, self.high).reshape(B, *self.env_shape).astype(self.space.dtype)
        if self.kind == "multibinary":
            return actions.reshape(B, *self.env_shape).astype(self.space.dtype)
        if self.kind == "beta":
            a = self.low + actions.astype(np.float64) * (self.high - self.low)
            return np.clip(a, self.low, self.high).reshape(B, *self.env_shape).astype(self.space.dtype)
        if self.start is not None and np.any(self.start != 0):
            return actions + self.start
        return actions

    def _squash_correction(self, u: torch.Tensor) -> torch.Tensor:
        """sum log |d a / d u| of a = low + (tanh(u) + 1) (high - low) / 2, ``[B]``: log(1 - tanh(u)^2)
        written as 2 (log 2 - u - softplus(-2u)), stable for large |u| (as in SB3's and CleanRL's SAC)."""
        log_dtanh = 2.0 * (_LOG_2 - u - torch.nn.functional.softplus(-2.0 * u))
        return log_dtanh.sum(-1) + self._log_scale_sum

    def beta_params(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)`` ``[B, k]`` of a Beta policy's output ``[B, 2k]`` (both > 1)."""
        k = self.out_dim // 2
        sp = torch.nn.functional.softplus
        return 1.0 + sp(out[:, :k]), 1.0 + sp(out[:, k:])

    def _split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(logits, self.nvec, dim=-1))

    def _masks(self, mask: torch.Tensor | None) -> list[torch.Tensor | None]:
        """``mask`` split like the logits (one None per sub-action without a mask)."""
        if mask is None:
            return [None] * len(self.nvec)
        if self.kind not in ("discrete", "multidiscrete"):
            raise ValueError(f"action masks apply to discrete actions, not to {self.kind} actions")
        return self._split(mask.bool())

    def log_prob_entropy(
        self,
        out: torch.Tensor,
        actions: torch.Tensor,
        log_std: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) ``[B]`` and the entropy ``[B]`` of the distribution ``out`` ``[B, out_dim]``
        (over the allowed actions only, given a ``mask``)."""
        out = out.float()  # a bfloat16 network output (bf16 autocast): the log-probs in float32
        if self.kind == "beta":
            return beta_log_prob_entropy(*self.beta_params(out), actions)
        if self.gaussian:
            z = (actions - out) * torch.exp(-log_std)
            logp = (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)
            # squashed: the entropy of the pre-squash Gaussian (the squashed one has no closed form)
            entropy = (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1).expand(out.shape[0])
            if self.kind == "squashed_box":
                logp = logp - self._squash_correction(actions)
            return logp, entropy
        if self.kind == "multibinary" and mask is not None:  # rl/masking.py: each bit a 2-way categorical
            return masked_binary(out, mask, actions)[1:]
        if self.kind == "multibinary":  # independent Bernoullis with logits ``out``
            logp = (actions * out - torch.nn.functional.softplus(out)).sum(-1)
            p = torch.sigmoid(out)
            sp_pos, sp_neg = torch.nn.functional.softplus(out), torch.nn.functional.softplus(-out)
            return logp, (p * sp_neg + (1.0 - p) * sp_pos).sum(-1)
        actions = actions.long().view(out.shape[0], -1)
        logp = out.new_zeros(out.shape[0])
        entropy = out.new_zeros(out.shape[0])
        for i, (logits, m) in enumerate(zip(self._split(out), self._masks(mask))):
            if m is None:
                log_probs = torch.log_softmax(logits, -1)
                entropy = entropy + entropy_from_logits(logits)
            else:
                log_probs = masked_log_softmax(logits, m)
                entropy = entropy + masked_entropy(log_probs, m)
            logp = logp + log_probs.gather(-1, actions[:, i : i + 1]).squeeze(-1)
        return logp, entropy

    def sample(
        self,
        out: torch.Tensor,
        log_std: torch.Tensor | None = None,
        deterministic: bool = False,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An action (``[B]`` discrete, ``[B, k]`` otherwise) and its log-probability ``[B]``;
        ``deterministic`` takes the mode; a ``mask`` restricts both to the allowed actions."""
        out = out.float()  # as in log_prob_entropy
        if self.kind == "beta":
            alpha, beta = self.beta_params(out)
            if deterministic:  # the mode of a Beta with alpha, beta > 1
                x = (alpha - 1.0) / (alpha + beta - 2.0)
            else:
                x = torch.distributions.Beta(alpha, beta).sample()
            x = x.clamp(BETA_EPS, 1.0 - BETA_EPS)
            return x, beta_log_prob_entropy(alpha, beta, x)[0]
        if self.gaussian:
            action = out if deterministic else out + torch.exp(log_std) * torch.randn_like(out)
            return action, self.log_prob_entropy(out, action, log_std)[0]
        if self.kind == "multibinary" and mask is not None:
            return masked_binary(out, mask, None, deterministic)[:2]
        if self.kind == "multibinary":
            action = (
                (out > 0).float() if deterministic else (torch.rand_like(out) < torch.sigmoid(out)).float()
            )
            return action, self.log_prob_entropy(out, action)[0]
        parts, logps = [], []
        splits = self._split(out) if self.kind == "multidiscrete" else [out]
        for logits, m in zip(splits, self._masks(mask)):
            # a masked entry is -inf, so it loses every argmax below (it is never sampled)
            log_probs = masked_log_softmax(logits, m)
            if deterministic:
                a = log_probs.argmax(-1)
            else:  # Gumbel-max: argmax(logits + g) with g = -log(-log(u)) ~ Gumbel is ~ Categorical(logits)
                minus_g = torch.rand_like(log_probs).clamp_(1e-20, 1.0).log_().neg_().log_()
                a = (log_probs - minus_g).argmax(-1)
            parts.append(a)
            logps.append(log_probs.gather(-1, a.unsqueeze(-1)).squeeze(-1))
        if self.kind == "discrete":
            return parts[0], logps[0]
        return torch.stack(parts, dim=-1), torch.stack(logps).sum(0)


def beta_log_prob_entropy(
    alpha: torch.Tensor, beta: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log-density of ``x`` in (0, 1) ``[B, k]`` under independent Beta(alpha, beta), summed over k,
    and the entropy ``[B]``: log B(a, b) - (a-1) psi(a) - (b-1) psi(b) + (a+b-2) psi(a+b)."""
    x = x.clamp(BETA_EPS, 1.0 - BETA_EPS)
    log_norm = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)  # log B(a, b)
    logp = (alpha - 1.0) * torch.log(x) + (beta - 1.0) * torch.log1p(-x) - log_norm
    dg = torch.digamma
    entropy = (
        log_norm
        - (alpha - 1.0) * dg(alpha)
        - (beta - 1.0) * dg(beta)
        + (alpha + beta - 2.0) * dg(alpha + beta)
    )
    return logp.sum(-1), entropy.sum(-1)
