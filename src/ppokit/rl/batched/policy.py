"""``AsymmetricActorCritic``: the built-in policy for batched envs with a "critic" observation group
(privileged observations, Pinto et al. 2017, "Asymmetric Actor Critic for Image-Based Robot
Learning", https://arxiv.org/abs/1710.06542; rsl_rl's ``obs_groups``). The stored observation is
``[actor features | critic features]`` (adapter.py): the actor MLP reads the first ``actor_dim``
columns, the critic MLP only the rest."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from ppokit.rl.config import NetworkConfig
from ppokit.rl.networks import head, mlp
from ppokit.rl.policy import Policy, distribution_args


class AsymmetricActorCritic(Policy):
    """Separate MLP actor (on the "policy" group) and critic (on the "critic" group)."""

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig, actor_dim: int
    ):
        super().__init__(observation_space, action_space, *distribution_args(cfg))
        self.actor_dim = int(actor_dim)
        critic_dim = int(np.prod(observation_space.shape)) - self.actor_dim
        sizes, act, ortho = cfg.hidden_sizes, cfg.activation, cfg.ortho_init
        self.actor_body = mlp(self.actor_dim, sizes, act, ortho)
        self.critic_body = mlp(critic_dim, sizes, act, ortho)
        self.actor_head = head(sizes[-1], self.dist.out_dim, 0.01, ortho)
        self.critic_head = head(sizes[-1], 1, 1.0, ortho)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(policy output [B, out], value [B])``: the actor on ``obs[:, :actor_dim]``, the critic on
        the rest."""
        obs = obs.reshape(obs.shape[0], -1)
        out = self.actor_head(self.actor_body(obs[:, : self.actor_dim]))
        return out, self.critic_head(self.critic_body(obs[:, self.actor_dim :])).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None) -> tuple:
        """The actor alone (the rollout asks ``value`` once for all its steps)."""
        out = self.actor_head(self.actor_body(obs.reshape(obs.shape[0], -1)[:, : self.actor_dim]))
        action, logp = self.dist.sample(out, self.log_std(), deterministic, mask=mask)
        return action, logp, None
