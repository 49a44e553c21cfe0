"""``bf16``: the policy's forward passes run under bfloat16 autocast in the rollout and the loss, the
weights, optimizer state and the loss's arithmetic stay float32, and the fast path is refused."""

from __future__ import annotations

import pytest
import torch
from space_envs import register_all

from ppokit.errors import ConfigError
from ppokit.rl.config import NetworkConfig
from ppokit.rl.networks import MlpActorCritic
from ppokit.rl.ppo import PPO

register_all()
SMALL = dict(num_envs=8, n_steps=32, batch_size=64, seed=0, tensorboard=False, learning_rate=1e-3)


class DtypeSpy(MlpActorCritic):
    """The built-in MLP, recording the dtype its actor head produced on each forward call."""

    def __init__(self, observation_space, action_space):
        super().__init__(observation_space, action_space, NetworkConfig())
        self.seen: list[torch.dtype] = []

    def forward(self, obs):
        out, value = super().forward(obs)
        self.seen.append(out.dtype)
        return out, value


@pytest.mark.parametrize("bf16", [False, True])
def test_forward_passes_run_in_bfloat16_and_the_weights_stay_float32(bf16):
    model = PPO("CartPole-v1", {**SMALL, "bf16": bf16}, policy=DtypeSpy)
    assert model.manual_grad is None  # a custom policy class: autograd either way
    model.learn(256)
    want = torch.bfloat16 if bf16 else torch.float32
    assert model.policy.seen and set(model.policy.seen) == {want}
    assert all(p.dtype == torch.float32 for p in model.policy.parameters())
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    # the rollout buffer holds float32 log-probs and values (the loss's inputs)
    assert model.buffer.logp.dtype == torch.float32 and torch.isfinite(model.buffer.values).all()
    model.close()


def test_bf16_loss_is_close_to_the_float32_loss():
    """Same weights, same minibatch: the bfloat16 forward changes the loss by bfloat16 rounding only."""
    model = PPO("CartPole-v1", {**SMALL, "manual_grad": False})
    model.collector.collect(model.buffer)
    from ppokit.rl.update import rollout_batch

    data = rollout_batch(model.buffer, 0.99, 0.95, model.device)
    loss32, _, _ = model._loss_and_backward(data, 0.2)
    model.config = model.config.replace(bf16=True)
    loss16, _, _ = model._loss_and_backward(data, 0.2)
    assert loss16.dtype == torch.float32
    assert loss16.item() != loss32.item()  # autocast really ran in bfloat16
    assert abs(loss16.item() - loss32.item()) <= 0.02 * abs(loss32.item()) + 1e-3
    model.close()


def test_manual_grad_true_with_bf16_is_a_config_error_naming_why():
    with pytest.raises(ConfigError, match="bf16"):
        PPO("CartPole-v1", {**SMALL, "bf16": True, "manual_grad": True})
    auto = PPO("CartPole-v1", {**SMALL, "bf16": True})
    assert auto.manual_grad is None  # auto falls back to autograd
    auto.close()


def test_pixels_learn_with_bf16():
    """The CNN trains in bfloat16 on the tiny image task as it does in float32 (tests/test_rl_spaces)."""
    model = PPO("ppokit-test/BrightSideEnv-v0", {**SMALL, "bf16": True})
    model.learn(6_000)
    assert model.evaluate(16)["mean_return"] >= 7.0  # random play scores about 4 of 8
    model.close()


@pytest.mark.parametrize("recurrent", ["lstm", "gru"])
def test_recurrent_policy_trains_under_bf16(recurrent):
    cfg = {**SMALL, "bf16": True, "batch_size": 128, "network": {"recurrent": recurrent}}
    model = PPO("CartPole-v1", cfg)
    model.learn(512)
    assert model.num_timesteps == 512
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.policy.parameters())
    model.close()
