"""The CPU fast path (rl/fast/): the hand-written loss gradient and MLP backward against autograd on
PPO.loss, and its capability check (every choice that exists is either tested equal or refused)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.errors import ConfigError
from ppokit.functional.losses import OBJECTIVES
from ppokit.rl import fast
from ppokit.rl.config import PPOConfig
from ppokit.rl.distributions import KINDS
from ppokit.rl.networks import ACTIVATIONS
from ppokit.rl.ppo import PPO
from ppokit.rl.update import rollout_batch


class SpaceEnv(gym.Env):
    """Random 3-d observations and rewards, with the action space under test."""

    def __init__(self, action_space: gym.Space):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = action_space
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return obs, float(self.np_random.normal()), False, self.t >= 7, {}


SPACES = {
    "discrete": gym.spaces.Discrete(3),
    "multidiscrete": gym.spaces.MultiDiscrete([2, 4]),
    "box": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
    "squashed_box": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),  # with network.action_bounds: tanh
    "multibinary": gym.spaces.MultiBinary(3),
}
VARIANTS = [
    dict(value_loss="mse", ent_coef=0.0, network={"activation": "tanh"}),
    dict(
        value_loss="huber",
        huber_delta=0.3,
        vf_clip_range=0.1,
        ent_coef=0.01,
        network={"activation": "relu", "shared_trunk": True},
    ),
    dict(vf_clip_range=0.2, ent_coef=0.05, network={"activation": "elu", "hidden_sizes": [16, 8, 12]}),
    dict(value_loss="huber", ent_coef=0.01, network={"hidden_sizes": [10], "shared_trunk": True}),
]


def _model(space: str, objective: str, variant: dict) -> PPO:
    kw = dict(num_envs=2, n_steps=8, batch_size=16, tensorboard=False, objective=objective, kl_coef=0.7)
    if space == "squashed_box":
        variant = {**variant, "network": {**variant.get("network", {}), "action_bounds": "tanh"}}
    model = PPO(lambda: SpaceEnv(SPACES[space]), {**kw, **variant})
    assert model.policy.kind == space
    return model


def _minibatch(model: PPO) -> dict[str, torch.Tensor]:
    """A rollout whose old log-probs and values differ from the current ones, so that the policy
    clip and the value clip both engage on some samples."""
    model.collector.collect(model.buffer)
    cfg = model.config
    data = rollout_batch(model.buffer, cfg.gamma, cfg.gae_lambda, model.device)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        logp, _, values = model.policy.evaluate(data["obs"], data["actions"])
    n = logp.shape[0]
    data["logp_old"] = logp + 0.3 * torch.randn(n, generator=g)
    data["values_old"] = values + 0.3 * torch.randn(n, generator=g)
    data["returns"] = values + torch.randn(n, generator=g)
    return data


def _grads(model: PPO, mb: dict, manual: bool) -> tuple[float, dict, torch.Tensor]:
    opt = model.optimizers[0]
    opt.zero_grad()
    if manual:
        loss, terms, backward = model._loss_and_backward(mb, 0.2)
        backward()
    else:
        loss, terms = model.loss(mb, 0.2)
        loss.backward()
    return float(loss.detach()), {k: float(v) for k, v in terms.items()}, opt.flat_grad.clone()


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("objective", OBJECTIVES)  # every objective that exists
@pytest.mark.parametrize("space", sorted(SPACES))
def test_manual_gradient_equals_autograd(space, objective, variant):
    model = _model(space, objective, VARIANTS[variant])
    if space == "box" and variant == 1:  # one log-std above its clamp: its gradient must be zero
        with torch.no_grad():
            model.policy.actor_log_std[0] = model.policy.log_std_bounds[1] + 0.5
    mb = _minibatch(model)
    loss_a, terms_a, grad_a = _grads(model, mb, manual=False)
    loss_m, terms_m, grad_m = _grads(model, mb, manual=True)
    assert loss_m == pytest.approx(loss_a, rel=1e-5, abs=1e-6)
    assert terms_m == pytest.approx(terms_a, rel=1e-5, abs=1e-6)
    assert grad_a.abs().max() > 0
    torch.testing.assert_close(grad_m, grad_a, rtol=1e-4, atol=1e-6)
    if objective == "clip":
        assert 0.0 < terms_a["clip_fraction"] < 1.0  # the clip engaged on some samples, not all
    if VARIANTS[variant].get("vf_clip_range"):
        assert 0.0 < terms_a["value_clipped_fraction"] < 1.0
    if space == "box" and variant == 1:
        assert float(model.policy.actor_log_std.grad[0]) == 0.0


def test_manual_and_autograd_training_agree():
    """Two updates of CartPole PPO either way end at the same parameters (up to rounding)."""
    params = []
    for manual in (True, False):
        model = PPO(
            "CartPole-v1",
            num_envs=4,
            n_steps=16,
            batch_size=32,
            n_epochs=3,
            tensorboard=False,
            manual_grad=manual,
        )
        model.learn(128)
        params.append(torch.cat([p.detach().reshape(-1) for p in model.policy.parameters()]))
    torch.testing.assert_close(params[0], params[1], rtol=1e-4, atol=1e-5)


def test_multidimensional_observations_take_both_paths():
    """A [2, 3] observation is flattened alike by the autograd forward and the hand-written one."""
    from ppokit.rl.config import NetworkConfig
    from ppokit.rl.networks import MlpActorCritic

    obs_space = gym.spaces.Box(-1.0, 1.0, (2, 3), np.float32)
    net = MlpActorCritic(obs_space, gym.spaces.Discrete(3), NetworkConfig())
    obs = torch.randn(5, 2, 3)
    out_a, value_a = net(obs)
    out_m, value_m, _ = net.infer(obs)
    torch.testing.assert_close(out_m, out_a.detach())
    torch.testing.assert_close(value_m, value_a.detach())


def test_a_subclass_that_overrides_the_loss_is_trained_on_its_own_loss():
    """The hand-written gradient is PPO.loss's; an override must not be silently ignored."""

    class NoPolicyLoss(PPO):
        def loss(self, mb, clip_range):
            loss, terms = super().loss(mb, clip_range)
            return loss * 0.0, terms  # a zero loss: Adam must leave every parameter where it was

    model = NoPolicyLoss("CartPole-v1", num_envs=4, n_steps=16, batch_size=32, n_epochs=2, tensorboard=False)
    assert model.manual_grad is None
    before = torch.cat([p.detach().reshape(-1) for p in model.policy.parameters()]).clone()
    model.learn(128)
    after = torch.cat([p.detach().reshape(-1) for p in model.policy.parameters()])
    assert torch.equal(before, after)


def _choices(cls, name):
    import dataclasses

    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"]


def test_every_choice_is_covered_by_the_equivalence_test_or_refused():
    """A new objective, activation, value loss or action space must either be in the hand-written
    gradient's supported sets AND in the equivalence test above, or be refused by the capability check."""
    from ppokit.rl.config import NetworkConfig

    tested = {
        "objective": set(OBJECTIVES),
        "activation": {v.get("network", {}).get("activation", "tanh") for v in VARIANTS},
        "value_loss": {v.get("value_loss", "mse") for v in VARIANTS},
        "kind": set(SPACES),
    }
    existing = {
        "objective": set(_choices(PPOConfig, "objective")),
        "activation": set(_choices(NetworkConfig, "activation")) | set(ACTIVATIONS),
        "value_loss": set(_choices(PPOConfig, "value_loss")),
        "kind": set(KINDS),
    }
    supported = {
        "objective": fast.OBJECTIVES,
        "activation": fast.ACTIVATIONS,
        "value_loss": fast.VALUE_LOSSES,
        "kind": fast.ACTION_KINDS,
    }
    for key in existing:
        assert supported[key] <= tested[key], f"{key}: supported but untested {supported[key] - tested[key]}"
        for choice in existing[key] - supported[key]:  # exists but unsupported: must be refused
            policy = _model("discrete", "clip", {}).policy
            cfg = type("Cfg", (), {"objective": "clip", "value_loss": "mse", "bf16": False})()
            cfg.network = type("Net", (), {"activation": "tanh"})()
            if key == "kind":
                policy.dist.kind = choice
            elif key == "activation":
                cfg.network.activation = choice
            else:
                setattr(cfg, key, choice)
            assert fast.unsupported_reason(policy, cfg, True, torch.device("cpu")) is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("objective", "trust_region"),
        ("network.activation", "gelu"),
        ("value_loss", "log_cosh"),
        ("kind", "tuple"),
    ],
)
def test_the_capability_check_refuses_a_choice_it_does_not_know(field, value):
    """Fail closed: a choice added later without a hand-written gradient gets autograd, not another
    choice's gradient."""
    model = _model("discrete", "clip", {})
    cfg = model.config
    stub = type("Cfg", (), {"objective": cfg.objective, "value_loss": cfg.value_loss, "bf16": False})()
    stub.network = type("Net", (), {"activation": cfg.network.activation})()
    policy = model.policy
    if field == "kind":
        policy.dist.kind = value
    elif field == "network.activation":
        stub.network.activation = value
    else:
        setattr(stub, field, value)
    reason = fast.unsupported_reason(policy, stub, True, torch.device("cpu"))
    assert reason is not None and repr(value) in reason


def test_manual_grad_true_where_it_cannot_be_used_is_a_config_error():
    class OwnLoss(PPO):
        def loss(self, mb, clip_range):
            return super().loss(mb, clip_range)

    kw = dict(num_envs=2, n_steps=8, batch_size=16, tensorboard=False, manual_grad=True)
    with pytest.raises(ConfigError, match=r"manual_grad=True is not allowed here: PPO.loss is overridden"):
        OwnLoss("CartPole-v1", **kw)
    auto = OwnLoss("CartPole-v1", **{**kw, "manual_grad": "auto"})
    assert auto.manual_grad is None
    assert PPO("CartPole-v1", **{**kw, "manual_grad": "auto"}).manual_grad is not None
    assert PPO("CartPole-v1", **{**kw, "manual_grad": False}).manual_grad is None


def test_the_path_taken_is_logged():
    rows = []
    for setting in ("auto", False):
        PPO(
            "CartPole-v1", num_envs=2, n_steps=8, batch_size=16, tensorboard=False, manual_grad=setting
        ).learn(16, callback=lambda m, x: rows.append(x["train/manual_grad"]))
    assert rows == [1.0, 0.0]


def test_unknown_choices_reaching_the_gradient_raise_instead_of_falling_through():
    model = _model("discrete", "clip", {})
    mb = _minibatch(model)
    out, values, _ = model.policy.infer(mb["obs"])
    bad = model.config
    object.__setattr__(bad, "objective", "trust_region")  # bypassing validation on purpose
    with pytest.raises(AssertionError, match="unreachable: objective 'trust_region'"):
        fast.loss_and_grads(model.policy, bad, mb, mb["advantages"], out, values, 0.2, 0.5)
