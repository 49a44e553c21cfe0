"""Actor-critic networks and their action distributions, written without per-call distribution
objects: sampling and log-probabilities are a few tensor ops (the design notes measured
``torch.distributions.Categorical`` sampling at ~350 us a call on these machines)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.functional.losses import entropy_from_logits
from ppokit.rl.config import NetworkConfig


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1: the same function, but on the torch 2.13 CPU wheel (AVX-512 kernels)
    ``torch.tanh`` measured 71 us on a 2x256x64 float32 tensor against 8 us for ``torch.sigmoid``
    (benchmarks/notes.md), and the actor-critic applies it four times per forward pass."""
    return torch.sigmoid(x * 2.0) * 2.0 - 1.0


class Tanh(nn.Module):
    """``nn.Tanh`` computed by ``tanh`` above (no parameters, so state-dict names are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh(x)


_ACTIVATIONS = {"tanh": Tanh, "relu": nn.ReLU, "elu": nn.ELU}
_MINUS_ONE = torch.tensor(-1.0)
_LOG_2PI = math.log(2 * math.pi)


def mlp(in_dim: int, sizes: list[int], activation: str, ortho: bool) -> nn.Sequential:
    """Hidden layers only (the heads are added by the caller)."""
    layers: list[nn.Module] = []
    for size in sizes:
        layer = nn.Linear(in_dim, size)
        if ortho:  # orthogonal init with gain sqrt(2), as in OpenAI baselines / SB3 / CleanRL
            nn.init.orthogonal_(layer.weight, math.sqrt(2))
            nn.init.zeros_(layer.bias)
        layers += [layer, _ACTIVATIONS[activation]()]
        in_dim = size
    return nn.Sequential(*layers)


def head(in_dim: int, out_dim: int, gain: float, ortho: bool) -> nn.Linear:
    """Output layer; small gain on the policy head makes the initial policy near-uniform."""
    layer = nn.Linear(in_dim, out_dim)
    if ortho:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """Policy (Categorical, MultiDiscrete or diagonal Gaussian) and value function.

    Separate actor and critic MLPs by default; ``shared_trunk`` shares the hidden layers.
    Attribute names say which parameters belong to whom: ``actor_*``, ``critic_*``, ``trunk``.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, cfg: NetworkConfig):
        super().__init__()
        self.cfg = cfg
        if isinstance(action_space, gym.spaces.Discrete):
            self.kind, self.nvec, out = "discrete", [int(action_space.n)], int(action_space.n)
        elif isinstance(action_space, gym.spaces.MultiDiscrete):
            self.nvec = [int(n) for n in np.asarray(action_space.nvec).ravel()]
            self.kind, out = "multidiscrete", sum(self.nvec)
        else:
            self.kind, out = "box", int(action_space.shape[0])
        hidden = cfg.hidden_sizes[-1]
        if cfg.shared_trunk:
            self.trunk = mlp(obs_dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
            self.actor_body = self.critic_body = None
        else:
            self.trunk = None
            self.actor_body = mlp(obs_dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
            self.critic_body = mlp(obs_dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
        self.actor_head = head(hidden, out, 0.01, cfg.ortho_init)
        self.critic_head = head(hidden, 1, 1.0, cfg.ortho_init)
        if self.kind == "box":
            # State-independent log-std (as in the PPO paper's MuJoCo setup), clamped in use.
            self.actor_log_std = nn.Parameter(torch.full((out,), float(cfg.log_std_init)))

    # -- the two heads -------------------------------------------------------------------------
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
        if self.cfg.activation == "tanh":  # 2 sigmoid(2z) - 1, as ``tanh`` above, in two in-place ops
            return torch.add(_MINUS_ONE, z.mul_(2.0).sigmoid_(), alpha=2.0, out=z)
        if self.cfg.activation == "relu":
            return z.relu_()
        return torch.nn.functional.elu_(z)

    def _hidden(self, obs: torch.Tensor, part: str) -> list[torch.Tensor]:
        """Without autograd or module calls: the input of every hidden layer of ``part`` (the trunk's
        when shared) and their output, ``[x, h1, ..., hL]``."""
        hs = [obs.reshape(obs.shape[0], -1)]
        for w, b in self.linears("trunk" if self.trunk is not None else part):
            hs.append(self._activate_(torch.addmm(b, hs[-1], w.t())))
        return hs

    @torch.no_grad()
    def infer(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[torch.Tensor]]]:
        """``forward`` without autograd, for the manual-gradient update (rl/manual_grad.py):
        ``(policy output, value, saved)``, where ``saved`` maps each body (``trunk``, or ``actor`` and
        ``critic``) to its layers' inputs and output, which the hand-written backward needs."""
        parts = ("trunk",) if self.trunk is not None else ("actor", "critic")
        saved = {part: self._hidden(obs, part) for part in parts}
        ha, hc = saved[parts[0]][-1], saved[parts[-1]][-1]
        out = torch.addmm(self.actor_head.bias, ha, self.actor_head.weight.t())
        value = torch.addmm(self.critic_head.bias, hc, self.critic_head.weight.t()).squeeze(-1)
        return out, value, saved

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(policy output [B, out], value [B])``: logits or Gaussian mean, and V(s)."""
        obs = obs.reshape(obs.shape[0], -1)  # multi-dimensional observations enter flattened, as in infer
        if self.trunk is not None:
            h = self.trunk(obs)
            return self.actor_head(h), self.critic_head(h).squeeze(-1)
        return self.actor_head(self.actor_body(obs)), self.critic_head(self.critic_body(obs)).squeeze(-1)

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) ``[B]`` (no gradient: for the rollout's values and bootstraps)."""
        h = self._hidden(obs, "critic")[-1]
        return torch.addmm(self.critic_head.bias, h, self.critic_head.weight.t()).squeeze(-1)

    @torch.no_grad()
    def policy_output(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits or Gaussian mean ``[B, out]`` alone (no gradient: the rollout's per-step pass)."""
        h = self._hidden(obs, "actor")[-1]
        return torch.addmm(self.actor_head.bias, h, self.actor_head.weight.t())

    def log_std(self) -> torch.Tensor:
        """The Gaussian log-std kept in ``[log_std_min, log_std_max]`` (avoids collapse and blow-up)."""
        return self.actor_log_std.clamp(self.cfg.log_std_min, self.cfg.log_std_max)

    # -- distributions -------------------------------------------------------------------------
    def _split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(logits, self.nvec, dim=-1))

    def log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) ``[B]`` and the policy entropy ``[B]`` from the policy output."""
        if self.kind == "box":
            log_std = self.log_std()
            z = (actions - out) * torch.exp(-log_std)
            logp = (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)
            entropy = (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1).expand(out.shape[0])
            return logp, entropy
        actions = actions.long().view(out.shape[0], -1)
        logp = out.new_zeros(out.shape[0])
        entropy = out.new_zeros(out.shape[0])
        for i, logits in enumerate(self._split(out)):
            log_probs = torch.log_softmax(logits, -1)
            logp = logp + log_probs.gather(-1, actions[:, i : i + 1]).squeeze(-1)
            entropy = entropy + entropy_from_logits(logits)
        return logp, entropy

    def sample(self, out: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """An action (``[B]`` discrete, ``[B, k]`` otherwise) and its log-probability ``[B]``."""
        if self.kind == "box":
            action = out if deterministic else out + torch.exp(self.log_std()) * torch.randn_like(out)
            return action, self.log_prob_entropy(out, action)[0]
        parts, logps = [], []
        for logits in self._split(out) if self.kind == "multidiscrete" else [out]:
            log_probs = torch.log_softmax(logits, -1)
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

    def evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logp, entropy, value)`` of stored actions, with gradients (the autograd update,
        ``manual_grad: false``)."""
        out, value = self(obs)
        logp, entropy = self.log_prob_entropy(out, actions)
        return logp, entropy, value

    def actor_parameters(self) -> list[nn.Parameter]:
        """Parameters the policy loss should train (the trunk counts for both when shared)."""
        return [p for n, p in self.named_parameters() if not n.startswith("critic_")]

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters of the critic alone (empty body when the trunk is shared)."""
        return [p for n, p in self.named_parameters() if n.startswith("critic_")]
