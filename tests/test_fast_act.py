"""Issue 33's per-step savings change no behaviour: the numpy act (rl/fast/act.py) samples the actions
and log-probabilities ``MlpActorCritic.act`` samples for the same seed, a rollout with it matches one
through ``policy.act`` (and so do the runs trained from them), and the single-process normaliser and
clip give the values of the general code."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.rl.fast import act as fast_act
from ppokit.rl.networks import MlpActorCritic
from ppokit.rl.normalization import ObsNormalizer, RunningMeanStd, _clip_, merge_moments
from ppokit.rl.ppo import PPO


class SpaceEnv(gym.Env):
    """Random 5-d observations of varying scale (the normaliser has work), the action space under test."""

    def __init__(self, action_space: gym.Space):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float64)
        self.action_space = action_space
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.normal(size=5) * [1, 10, 0.1, 100, 3], {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.normal(size=5) * [1, 10, 0.1, 100, 3] + float(np.sum(action))
        return obs, float(self.np_random.normal()), self.t >= 9 and self.t % 2 == 0, self.t >= 11, {}


SPACES = {"box": gym.spaces.Box(-1.0, 1.0, (3,), np.float32), "discrete": gym.spaces.Discrete(4)}
NETWORKS = [
    {"activation": "tanh"},
    {"activation": "relu", "hidden_sizes": [32, 16], "ortho_init": False, "log_std_init": -1.0},
    {"activation": "elu", "shared_trunk": True},
]
KW = dict(n_steps=64, batch_size=64, n_epochs=2, tensorboard=False, normalize_obs=True, normalize_reward=True)


def _rollout(space: str, network: dict, numpy_act: bool, num_envs: int, learn: int = 0) -> dict:
    model = PPO(lambda: SpaceEnv(SPACES[space]), {**KW, "num_envs": num_envs, "seed": 5, "network": network})
    model.collector.numpy_act = numpy_act
    assert (model.collector._numpy_actor() is not None) == numpy_act  # the path under test is taken
    if learn:
        model.learn(learn)
    model.collector.collect(model.buffer)
    out = {k: v.clone() for k, v in vars(model.buffer).items() if isinstance(v, torch.Tensor)}
    out["params"] = torch.cat([p.detach().reshape(-1) for p in model.policy.parameters()])
    return out


@pytest.mark.parametrize("num_envs", [1, 3])
@pytest.mark.parametrize("network", range(len(NETWORKS)))
@pytest.mark.parametrize("space", sorted(SPACES))
def test_numpy_act_rollout_equals_policy_act(space, network, num_envs):
    ref = _rollout(space, NETWORKS[network], False, num_envs)
    new = _rollout(space, NETWORKS[network], True, num_envs)
    for key in ("actions", "done", "terminated", "valid"):
        torch.testing.assert_close(new[key], ref[key], rtol=1e-5, atol=1e-6)
    for key in ("obs", "logp", "values", "next_values", "rewards"):
        torch.testing.assert_close(new[key], ref[key], rtol=1e-4, atol=1e-5)
    assert ref["done"].any() and ref["logp"].abs().max() > 0  # episodes ended and log-probs are live


def test_trained_runs_agree_with_and_without_the_numpy_act():
    """Three updates in, the parameters and the next rollout still agree (only float32 rounding)."""
    ref = _rollout("box", NETWORKS[0], False, 2, learn=384)
    new = _rollout("box", NETWORKS[0], True, 2, learn=384)
    torch.testing.assert_close(new["params"], ref["params"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(new["actions"], ref["actions"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(new["logp"], ref["logp"], rtol=1e-4, atol=1e-5)


def test_cartpole_default_rollout_is_unchanged():
    """The vector-entry-point CartPole (NEXT_STEP autoreset, the default run's env)."""
    bufs = []
    for numpy_act in (False, True):
        model = PPO("CartPole-v1", num_envs=8, n_steps=32, tensorboard=False, seed=2)
        model.collector.numpy_act = numpy_act
        model.collector.collect(model.buffer)
        bufs.append(model.buffer)
    assert torch.equal(bufs[0].actions, bufs[1].actions) and torch.equal(bufs[0].obs, bufs[1].obs)
    torch.testing.assert_close(bufs[1].logp, bufs[0].logp, rtol=1e-5, atol=1e-6)


def test_numpy_actor_samples_what_the_distribution_samples():
    """Same generator state, same draws: ``NumpyActor`` against ``MlpActorCritic.act`` directly."""
    for space in SPACES.values():
        model = PPO(lambda s=space: SpaceEnv(s), num_envs=2, n_steps=8, batch_size=16, tensorboard=False)
        obs = torch.randn(7, 5)
        torch.manual_seed(11)
        a_ref, logp_ref, _ = model.policy.act(obs)
        torch.manual_seed(11)
        a_new, logp_new = fast_act.NumpyActor(model.policy)(obs.numpy())
        np.testing.assert_allclose(a_new, a_ref.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(logp_new, logp_ref.numpy(), rtol=1e-5, atol=1e-5)


def test_the_numpy_act_is_refused_where_it_would_differ():
    model = PPO(lambda: SpaceEnv(SPACES["box"]), num_envs=2, n_steps=8, batch_size=16, tensorboard=False)
    cpu = torch.device("cpu")
    policy = model.policy
    assert fast_act.unsupported_reason(policy, cpu, False, False, False) is None
    assert "bf16" in fast_act.unsupported_reason(policy, cpu, True, False, False)
    assert "masks" in fast_act.unsupported_reason(policy, cpu, False, True, False)
    assert "cuda" in fast_act.unsupported_reason(policy, torch.device("cuda"), False, False, False)

    class Own(MlpActorCritic):  # a subclass may override act: it keeps its own
        pass

    own = Own(policy.observation_space, policy.action_space, model.config.network)
    assert "Own" in fast_act.unsupported_reason(own, cpu, False, False, False)
    policy.act = lambda obs, deterministic=False: None  # replaced on the instance: that one is called
    assert "replaced" in fast_act.unsupported_reason(policy, cpu, False, False, False)
    del policy.act
    policy.dist.kind = "beta"  # a kind it does not cover (fail closed)
    assert "'beta'" in fast_act.unsupported_reason(policy, cpu, False, False, False)


def test_single_process_moments_equal_the_general_merge_bitwise():
    rng = np.random.default_rng(0)
    fast, general = RunningMeanStd((4,)), RunningMeanStd((4,))
    for _ in range(50):
        x = rng.normal(size=(1, 4)) * [1, 100, 1e-3, 7]
        fast.update(x)  # the one-env, one-process path (_add_one)
        general.mean, general.var, general.count = merge_moments(
            [(general.mean, general.var, general.count), (x[0].copy(), np.zeros(4), 1.0)]
        )
    assert np.array_equal(fast.mean, general.mean) and np.array_equal(fast.var, general.var)
    assert fast.count == general.count and fast.fresh is None  # no cross-rank bookkeeping


def test_clip_equals_numpy_clip():
    x = np.array([-20.0, -10.0, -3.5, 0.0, 2.0, 10.0, 11.0, np.nan])
    np.testing.assert_array_equal(_clip_(x.copy(), 10.0), np.clip(x, -10.0, 10.0))
    norm = ObsNormalizer((8,), clip=5.0)
    out = norm(x[None] * 3, update=False)
    assert out.dtype == np.float32 and np.nanmax(np.abs(out)) == 5.0 and np.isnan(out[0, -1])
