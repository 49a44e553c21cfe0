"""The policy interface: what the rollout, the update, evaluation and ``predict`` ask of a policy.

A policy is an ``nn.Module`` subclass of ``Policy``. The smallest one implements ``forward(obs) ->
(out, value)``: ``out`` is the distribution's parameters (logits for Discrete/MultiDiscrete actions,
the Gaussian mean for Box actions, whose state-independent log-std ``actor_log_std`` the base class
owns) and ``value`` is V(s) ``[B]``. The base class derives the three calls PPO makes from it:

- ``act(obs, deterministic=False) -> (actions, logp, values)`` in the rollout, without gradients;
  ``values`` may be None, and then the rollout asks ``value`` for the whole rollout in one batched
  call after it (the built-in MLP does this: the critic costs one pass per rollout, not per step);
- ``evaluate(obs, actions) -> (logp, entropy, values)`` in the update, with gradients (the loss);
- ``value(obs) -> values`` for bootstrapping, without gradients.

``act`` and ``evaluate`` take an optional ``mask`` keyword (``[B, out_dim]`` bool, True = allowed;
rl/masking.py): PPO passes it only when the env gives action masks, so a policy that overrides them
without it keeps working on unmasked envs. A policy with memory subclasses ``RecurrentPolicy``
(rl/recurrent.py), which adds the recurrent state to these calls.

Override any of them for more (e.g. a shared encoder computed once). Shapes: ``obs [B, *obs_shape]``
in the rollout's storage form (``rl/spaces.py``: float32 for a Box, normalised when ``normalize_obs``;
uint8 for images; a packed vector for Discrete/Dict/Tuple observations), ``actions [B]`` (Discrete) or
``[B, k]`` (Box and MultiBinary flat), the rest ``[B]``.
``actor_parameters`` / ``critic_parameters`` split the parameters for ``separate_optimizers``
(by default: names starting with ``critic`` belong to the critic).
"""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn

from ppokit.rl.distributions import ActionDistribution


class Policy(nn.Module):
    """Base class of every ppokit policy (see the module docstring for the contract)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        log_std_init: float = 0.0,
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
        action_bounds: str = "clip",
    ):
        super().__init__()
        self.observation_space, self.action_space = observation_space, action_space
        self.dist = ActionDistribution(action_space, action_bounds)
        self.log_std_bounds = tuple(log_std_bounds)
        if self.dist.gaussian:
            # State-independent log-std (as in the PPO paper's MuJoCo setup), clamped in use.
            self.actor_log_std = nn.Parameter(torch.full((self.dist.out_dim,), float(log_std_init)))

    @property
    def kind(self) -> str:
        """The action distribution, one of ``distributions.KINDS``."""
        return self.dist.kind

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """``(out [B, dist.out_dim], value [B])``: implement in a subclass."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(obs) -> (out, value)")

    def log_std(self) -> torch.Tensor | None:
        """The Gaussian log-std kept in ``log_std_bounds`` (avoids collapse and blow-up); None for
        discrete actions."""
        if not self.dist.gaussian:
            return None
        return self.actor_log_std.clamp(*self.log_std_bounds)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(actions, logp, values)`` for a batch of observations (the rollout; no gradient)."""
        out, value = self(obs)
        action, logp = self.dist.sample(out, self.log_std(), deterministic, mask=mask)
        return action, logp, value

    def evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logp, entropy, values)`` of stored actions, with gradients (the update's loss)."""
        out, value = self(obs)
        logp, entropy = self.dist.log_prob_entropy(out, actions, self.log_std(), mask=mask)
        return logp, entropy, value

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) ``[B]`` (no gradient: the rollout's values and bootstraps)."""
        return self(obs)[1]

    def actor_parameters(self) -> list[nn.Parameter]:
        """Parameters the policy loss trains (everything not named ``critic*``)."""
        return [p for n, p in self.named_parameters() if not n.startswith("critic")]

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters of the critic alone (named ``critic*``)."""
        return [p for n, p in self.named_parameters() if n.startswith("critic")]
