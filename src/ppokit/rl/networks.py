"""The built-in policy: separate (or shared-trunk) MLP actor and critic, ``MlpActorCritic``.

Besides the autograd ``forward`` every policy has, it offers no-autograd passes without module calls
(``infer``, ``policy_output``, ``value``): the rollout's per-step actor pass and the CPU fast path's
hand-written backward (rl/fast/) use them, because with small MLPs on a CPU each module call and
autograd node costs more than its arithmetic (docs/benchmarks_presets.md).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.rl.config import NetworkConfig
from ppokit.rl.policy import Policy, distribution_args


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1: the same function, but on the torch 2.13 CPU wheel (AVX-512 kernels)
    ``torch.tanh`` measured 71 us on a 2x256x64 float32 tensor against 8 us for ``torch.sigmoid``
    (docs/benchmarks_presets.md), and the actor-critic applies it four times per forward pass."""
    return torch.sigmoid(x * 2.0) * 2.0 - 1.0


class Tanh(nn.Module):
    """``nn.Tanh`` computed by ``tanh`` above (no parameters, so state-dict names are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh(x)


ACTIVATIONS = {"tanh": Tanh, "relu": nn.ReLU, "elu": nn.ELU}
_MINUS_ONE = torch.tensor(-1.0)


def mlp(in_dim: int, sizes: list[int], activation: str, ortho: bool) -> nn.Sequential:
    """Hidden layers only (the heads are added by the caller)."""
    layers: list[nn.Module] = []
    for size in sizes:
        layer = nn.Linear(in_dim, size)
        if ortho:  # orthogonal init with gain sqrt(2), as in OpenAI baselines / SB3 / CleanRL
            nn.init.orthogonal_(layer.weight, math.sqrt(2))
            nn.init.zeros_(layer.bias)
        layers += [layer, ACTIVATIONS[activation]()]
        in_dim = size
    return nn.Sequential(*layers)


def head(in_dim: int, out_dim: int, gain: float, ortho: bool) -> nn.Linear:
    """Output layer; small gain on the policy head makes the initial policy near-uniform."""
    layer = nn.Linear(in_dim, out_dim)
    if ortho:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


class MlpActorCritic(Policy):
    """Policy (Categorical, MultiDiscrete or diagonal Gaussian) and value function on MLPs.

    Separate actor and critic MLPs by default; ``shared_trunk`` shares the hidden layers.
    Attribute names say which parameters belong to whom: ``actor_*``, ``critic_*``, ``trunk``.
    Observations of any shape enter flattened.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig):
        super().__init__(observation_space, action_space, *distribution_args(cfg))
        if cfg.activation not in ACTIVATIONS:
            raise ValueError(f"activation {cfg.activation!r} is not one of {sorted(ACTIVATIONS)}")
        self.cfg = cfg
        obs_dim = int(np.prod(observation_space.shape))
        hidden = cfg.hidden_sizes[-1]
        if cfg.shared_trunk:
            self.trunk = mlp(obs_dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
            self.actor_body = self.critic_body = None
        else:
            self.trunk = None
            self.actor_body = mlp(obs_dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
            self.critic_body = mlp(obs_dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
        self.actor_head = head(hidden, self.dist.out_dim, 0.01, cfg.ortho_init)
        self.critic_head = head(hidden, 1, 1.0, cfg.ortho_init)

    # -- autograd (the update's loss) ------------------------------------------------------------
    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(policy output [B, out], value [B])``: logits or Gaussian mean, and V(s)."""
        obs = obs.reshape(obs.shape[0], -1)
        if self.trunk is not None:
            h = self.trunk(obs)
            return self.actor_head(h), self.critic_head(h).squeeze(-1)
        return self.actor_head(self.actor_body(obs)), self.critic_head(self.critic_body(obs)).squeeze(-1)

    # -- no autograd, no module calls (the rollout and the fast path) ----------------------------
    def linears(self, part: str) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """``(weight, bias)`` of the hidden layers of ``"trunk"``, ``"actor"`` or ``"critic"``."""
        if "_linears" not in self.__dict__:  # cached: module attribute lookups cost ~1 us each
            seqs = {"trunk": self.trunk, "actor": self.actor_body, "critic": self.critic_body}
            self.__dict__["_linears"] = {
                k: [(m.weight, m.bias) for m in seq if isinstance(m, nn.Linear)] if seq is not None else []
                for k, seq in seqs.items()
            }
        return self.__dict__["_linears"][part]

    def _activate_(self, z: torch.Tensor) -> torch.Tensor:
        """The activation in place on a fresh pre-activation (same values as the modules)."""
        act = self.cfg.activation
        if act == "tanh":  # 2 sigmoid(2z) - 1, as ``tanh`` above, in two in-place ops
            return torch.add(_MINUS_ONE, z.mul_(2.0).sigmoid_(), alpha=2.0, out=z)
        if act == "relu":
            return z.relu_()
        if act == "elu":
            return torch.nn.functional.elu_(z)
        raise AssertionError(f"unreachable: activation {act!r} was refused in __init__")

    def _hidden(self, obs: torch.Tensor, part: str) -> list[torch.Tensor]:
        """The input of every hidden layer of ``part`` (the trunk's when shared) and their output,
        ``[x, h1, ..., hL]``."""
        hs = [obs.reshape(obs.shape[0], -1)]
        for w, b in self.linears("trunk" if self.trunk is not None else part):
            hs.append(self._activate_(torch.addmm(b, hs[-1], w.t())))
        return hs

    @torch.no_grad()
    def infer(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[torch.Tensor]]]:
        """``forward`` without autograd, for the fast path's hand-written backward (rl/fast/):
        ``(policy output, value, saved)``, where ``saved`` maps each body (``trunk``, or ``actor`` and
        ``critic``) to its layers' inputs and output, which the backward needs."""
        parts = ("trunk",) if self.trunk is not None else ("actor", "critic")
        saved = {part: self._hidden(obs, part) for part in parts}
        ha, hc = saved[parts[0]][-1], saved[parts[-1]][-1]
        out = torch.addmm(self.actor_head.bias, ha, self.actor_head.weight.t())
        value = torch.addmm(self.critic_head.bias, hc, self.critic_head.weight.t()).squeeze(-1)
        return out, value, saved

    @torch.no_grad()
    def policy_output(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits or Gaussian mean ``[B, out]`` alone (the rollout's per-step pass)."""
        h = self._hidden(obs, "actor")[-1]
        return torch.addmm(self.actor_head.bias, h, self.actor_head.weight.t())

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) ``[B]`` (the rollout's values and bootstraps)."""
        h = self._hidden(obs, "critic")[-1]
        return torch.addmm(self.critic_head.bias, h, self.critic_head.weight.t()).squeeze(-1)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """The actor alone per step; values None: the rollout asks ``value`` once for all its steps."""
        action, logp = self.dist.sample(self.policy_output(obs), self.log_std(), deterministic, mask=mask)
        return action, logp, None
