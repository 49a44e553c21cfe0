"""Networks and the loss: distributions, gradient isolation, entropy bonus, first-minibatch ratio."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.functional import adaptive_beta
from ppokit.rl.config import NetworkConfig
from ppokit.rl.networks import MlpActorCritic
from ppokit.rl.ppo import PPO
from ppokit.rl.update import rollout_batch


def ActorCritic(obs_dim: int, action_space: gym.Space, cfg: NetworkConfig) -> MlpActorCritic:
    """The built-in policy on a flat ``obs_dim`` observation."""
    obs_space = gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32)
    return MlpActorCritic(obs_space, action_space, cfg)


def _batch(model: PPO) -> dict:
    cfg = model.config
    return rollout_batch(model.buffer, cfg.gamma, cfg.gae_lambda, model.device)


SPACES = [
    gym.spaces.Discrete(3),
    gym.spaces.MultiDiscrete([2, 4]),
    gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
]


@pytest.mark.parametrize("space", SPACES, ids=["discrete", "multidiscrete", "box"])
def test_log_prob_and_entropy_match_torch_distributions(space):
    torch.manual_seed(0)
    net = ActorCritic(4, space, NetworkConfig(log_std_init=-0.5))
    obs = torch.randn(7, 4)
    out, value = net(obs)
    action, logp = net.dist.sample(out, net.log_std())
    lp, ent = net.dist.log_prob_entropy(out, action, net.log_std())
    if isinstance(space, gym.spaces.Box):
        dist = torch.distributions.Normal(out, torch.exp(net.log_std()))
        ref_lp, ref_ent = dist.log_prob(action).sum(-1), dist.entropy().sum(-1)
    else:
        sizes = [space.n] if isinstance(space, gym.spaces.Discrete) else list(space.nvec)
        acts = action.view(7, -1)
        dists = [torch.distributions.Categorical(logits=chunk) for chunk in torch.split(out, sizes, -1)]
        ref_lp = sum(d.log_prob(acts[:, i]) for i, d in enumerate(dists))
        ref_ent = sum(d.entropy() for d in dists)
    assert torch.allclose(lp, ref_lp, atol=1e-5) and torch.allclose(logp, ref_lp, atol=1e-5)
    assert torch.allclose(ent, ref_ent, atol=1e-5)
    assert value.shape == (7,)


def test_gumbel_sampling_follows_the_softmax():
    torch.manual_seed(0)
    net = ActorCritic(1, gym.spaces.Discrete(3), NetworkConfig())
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(20000, 1)
    action, _ = net.dist.sample(logits)
    freq = torch.bincount(action, minlength=3).float() / 20000
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.015)


def test_critic_loss_reaches_only_critic_parameters():
    net = ActorCritic(4, gym.spaces.Discrete(2), NetworkConfig())
    _, value = net(torch.randn(5, 4))
    value.pow(2).mean().backward()
    for name, p in net.named_parameters():
        has_grad = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert has_grad == name.startswith("critic_"), name


def test_shared_trunk_gets_gradients_from_both_heads():
    net = ActorCritic(4, gym.spaces.Discrete(2), NetworkConfig(shared_trunk=True))
    _, value = net(torch.randn(5, 4))
    value.sum().backward()
    assert all(p.grad is not None for p in net.trunk.parameters())


def _ppo(**kw):
    base = dict(num_envs=4, n_steps=16, batch_size=16, n_epochs=2, tensorboard=False)
    base.update(kw)
    return PPO("CartPole-v1", **base)


def test_entropy_bonus_alone_raises_entropy():
    model = _ppo(ent_coef=1.0, vf_coef=0.0, learning_rate=1e-2)
    with torch.no_grad():  # start from a peaked policy: the uniform initial one is already at maximum entropy
        model.policy.actor_head.bias.copy_(torch.tensor([2.0, -2.0]))
    model.collector.collect(model.buffer)
    data = _batch(model)
    data["advantages"] = torch.zeros_like(data["advantages"])  # only the entropy term remains
    model.config = model.config.replace(normalize_advantage=False)
    loss, before = model.loss(data, 0.2)
    model.guard.step(lambda: (loss.backward(), loss)[1])
    _, after = model.loss(data, 0.2)
    assert after["entropy"] > before["entropy"] + 1e-4


def test_first_minibatch_sees_ratio_one_and_no_clipping():
    model = _ppo()
    model.collector.collect(model.buffer)
    data = _batch(model)
    _, terms = model.loss(data, 0.2)
    logp, _, _ = model.policy.evaluate(data["obs"], data["actions"])
    ratio = torch.exp(logp - data["logp_old"])
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-6)
    assert float(terms["clip_fraction"]) == 0.0


@pytest.mark.parametrize(("kl", "expected"), [(0.001, 0.5), (0.01, 1.0), (0.012, 1.0), (0.02, 2.0)])
def test_adaptive_beta_rule(kl, expected):
    # d_targ = 0.01: below 0.01/1.5 halves, above 0.015 doubles, inside the band keeps beta.
    assert adaptive_beta(1.0, kl, 0.01) == expected


def test_adaptive_beta_applied_once_per_update():
    model = _ppo(objective="kl_adaptive", kl_coef=1.0, adaptive_kl_target=1e-9, learning_rate=1e-2)
    model.learn(64)
    assert model.kl.coef == 2.0  # any real update has KL far above 1.5e-9: doubled exactly once
