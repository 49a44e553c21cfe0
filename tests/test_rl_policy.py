"""The policy interface (rl/policy.py): a user's own policy module trains, saves and loads."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
import torch
from torch import nn

from ppokit import Policy
from ppokit.errors import CheckpointError, ConfigError
from ppokit.rl.config import PPOConfig
from ppokit.rl.ppo import PPO


class SmallPolicy(Policy):
    """A user's policy: one shared ReLU trunk and two heads, written as a user would."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, width: int = 64):
        super().__init__(observation_space, action_space)
        n_in = observation_space.shape[0]
        self.trunk = nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.pi = nn.Linear(width, self.dist.out_dim)
        self.critic_v = nn.Linear(width, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        return self.pi(h), self.critic_v(h).squeeze(-1)


# rl-zoo's CartPole settings: the project's own preset (configs/CartPole-v1.yaml), not a copy of it
PRESET = Path(__file__).resolve().parents[1] / "configs" / "CartPole-v1.yaml"


def test_a_user_policy_trains_cartpole_to_195_with_autograd():
    torch.manual_seed(0)
    cfg = PPOConfig.load_yaml(PRESET).replace(seed=1, tensorboard=False)
    model = PPO("CartPole-v1", cfg, policy=SmallPolicy)
    assert model.manual_grad is None  # auto: the fast path is only for the built-in MLP
    model.learn(60_000)
    result = model.evaluate(episodes=10)
    assert result["mean_return"] >= 195, result


def test_a_policy_instance_is_accepted_and_saved_with_its_class(tmp_path):
    env = gym.make("CartPole-v1")
    policy = SmallPolicy(env.observation_space, env.action_space, width=16)
    model = PPO("CartPole-v1", policy=policy, num_envs=2, n_steps=8, batch_size=16, tensorboard=False)
    assert model.policy is policy
    model.learn(32)
    model.save(tmp_path / "m")
    loaded = PPO.load(tmp_path / "m", policy=lambda o, a: SmallPolicy(o, a, width=16))
    for p, q in zip(model.policy.parameters(), loaded.policy.parameters()):
        assert torch.equal(p, q)
    obs, _ = env.reset(seed=0)
    assert model.predict(obs)[0] == loaded.predict(obs)[0]
    with pytest.raises(CheckpointError, match=r"trained with policy .*SmallPolicy.*pass the same policy"):
        PPO.load(tmp_path / "m")


def test_a_module_that_is_not_a_policy_is_refused():
    with pytest.raises(ConfigError, match="policy=Linear is not allowed; pass a ppokit.Policy subclass"):
        PPO("CartPole-v1", policy=nn.Linear(4, 2), num_envs=2, n_steps=8, batch_size=16, tensorboard=False)


def test_a_box_action_user_policy_gets_the_log_std_of_the_base_class():
    class Linear(Policy):
        def __init__(self, o, a):
            super().__init__(o, a, log_std_init=-1.0)
            self.mean = nn.Linear(o.shape[0], self.dist.out_dim)
            self.critic = nn.Linear(o.shape[0], 1)

        def forward(self, obs):
            return self.mean(obs), self.critic(obs).squeeze(-1)

    model = PPO("Pendulum-v1", policy=Linear, num_envs=2, n_steps=16, batch_size=32, tensorboard=False)
    assert torch.equal(model.policy.log_std(), torch.full((1,), -1.0))
    before = model.policy.actor_log_std.detach().clone()
    model.learn(64)
    assert not torch.equal(before, model.policy.actor_log_std.detach())
    assert [n for n, _ in model.policy.named_parameters() if n.startswith("critic")] == [
        "critic.weight",
        "critic.bias",
    ]
