"""The device-resident batched env path (rl/batched/, issue 32): Gymnasium VectorEnvs of tensors and
rsl_rl's VecEnv interface, time-out bootstrapping (both rules against a hand computation), Beta
actions, the asymmetric critic, the KL-adaptive learning rate, exact resume, and the CLI."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from ppokit.errors import ConfigError, EnvStepError
from ppokit.rl.adaptive_lr import AdaptiveLR
from ppokit.rl.batched import AsymmetricActorCritic, BatchedEnv, to_env_actions
from ppokit.rl.distributions import ActionDistribution
from ppokit.rl.policy import Policy
from ppokit.rl.ppo import PPO
from ppokit.rl.torch_envs import PointMassTorch, RslRlVecEnv
from ppokit.rl.update import rollout_batch


# -- a tiny env with known values -----------------------------------------------------------------------
class CountingTorchEnv(gym.vector.VectorEnv):
    """obs = [k], k = steps into the episode; reward 1; truncated after ``limit`` steps (SAME_STEP
    autoreset, the true final observation [limit] in info["final_obs"])."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "torch_tensors": True}

    def __init__(self, num_envs: int = 1, limit: int = 3):
        self.num_envs, self.limit = num_envs, limit
        self.single_observation_space = gym.spaces.Box(0.0, np.inf, (1,), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.k = torch.zeros(num_envs, 1)

    def reset(self, *, seed=None, options=None):
        self.k.zero_()
        return self.k.clone(), {}

    def step(self, actions):
        self.k += 1
        truncated = self.k[:, 0] >= self.limit
        final = self.k.clone()
        self.k[truncated] = 0
        return self.k.clone(), torch.ones(self.num_envs), torch.zeros_like(truncated), truncated, {
            "final_obs": final, "_final_obs": truncated,
        }  # fmt: skip


class CountingRslEnv:
    """The same env behind rsl_rl's VecEnv interface (no final observation, as rsl_rl's envs)."""

    def __init__(self, num_envs: int = 1, limit: int = 3):
        self.inner = CountingTorchEnv(num_envs, limit)
        self.num_envs, self.num_actions = num_envs, 1
        self.obs = self.inner.reset()[0]

    def get_observations(self):
        return {"policy": self.obs}

    def step(self, actions):
        self.obs, reward, terminated, truncated, _ = self.inner.step(actions)
        return {"policy": self.obs}, reward, terminated | truncated, {"time_outs": truncated}


class KnownValues(Policy):
    """V(s) = 10 + s[0]; a uniform policy (its one parameter only feeds the optimizer)."""

    def __init__(self, observation_space, action_space):
        super().__init__(observation_space, action_space)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, obs):
        out = torch.zeros(obs.shape[0], self.dist.out_dim) + 0.0 * self.w
        return out, 10.0 + obs[:, 0]


GAMMA, LAM = 0.9, 0.8


def _advantages(env, rule: str) -> torch.Tensor:
    model = PPO(
        env, n_steps=4, batch_size=4, gamma=GAMMA, gae_lambda=LAM, timeout_bootstrap=rule, policy=KnownValues
    )
    model.collector.collect(model.buffer)
    return rollout_batch(model.buffer, GAMMA, LAM, model.device)["advantages"]


def _hand_gae(rewards, values, next_values, terminal, done=(False, False, True, False)):
    """GAE written out step by step; ``done``: the episode ends after step 2 (the time-out)."""
    adv, last = [0.0] * 4, 0.0
    for t in reversed(range(4)):
        delta = rewards[t] + GAMMA * next_values[t] * (not terminal[t]) - values[t]
        last = delta + GAMMA * LAM * (not done[t]) * last
        adv[t] = last
    return torch.tensor(adv)


def test_time_outs_bootstrap_with_the_value_of_the_true_final_observation():
    # obs 0, 1, 2 | (time-out; final obs 3) 0; V = 10 + obs: V(final) = 13
    hand = _hand_gae([1, 1, 1, 1], [10, 11, 12, 10], [11, 12, 13, 11], [False] * 4)
    assert torch.allclose(_advantages(CountingTorchEnv(), "final_obs"), hand)
    assert torch.allclose(_advantages(CountingTorchEnv(), "auto"), hand)  # the env gives final obs


def test_time_outs_bootstrap_with_rsl_rls_rule_without_a_final_observation():
    # rsl_rl: reward += gamma * V(s_t) at the time-out, then the step counts as terminal
    rewards = [1, 1, 1 + GAMMA * 12, 1]
    hand = _hand_gae(rewards, [10, 11, 12, 10], [11, 12, 0.0, 11], [False, False, True, False])
    assert torch.allclose(_advantages(CountingRslEnv(), "auto"), hand)  # no final obs: gamma * V(s)
    assert torch.allclose(_advantages(CountingTorchEnv(), "value_of_obs"), hand)  # asked for
    with pytest.raises(EnvStepError, match="timeout_bootstrap='final_obs' needs the true final"):
        _advantages(CountingRslEnv(), "final_obs")


class NanAtStep(CountingTorchEnv):
    """Instance 1 returns a NaN observation at its third step."""

    def step(self, actions):
        obs, reward, terminated, truncated, info = super().step(actions)
        if self.steps_taken == 2:
            obs[1, 0] = float("nan")
        self.steps_taken += 1
        return obs, reward, terminated, truncated, info

    steps_taken = 0


def test_a_non_finite_observation_names_the_env_or_is_skipped_and_counted():
    with pytest.raises(
        EnvStepError, match="environment 1 returned a non-finite observation or reward at step 6"
    ):
        PPO(NanAtStep(num_envs=2, limit=10), n_steps=4, batch_size=8).learn(8)
    model = PPO(NanAtStep(num_envs=2, limit=10), n_steps=4, batch_size=8, nan_policy="skip")
    model.learn(8)
    assert model.collector.skipped_nonfinite == 1 and model.buffer.valid.sum() == 7


def test_module_colon_class_names_a_batched_env_class(tmp_path, monkeypatch):
    (tmp_path / "my_counting_env.py").write_text(
        "from ppokit.rl.torch_envs import CartPoleTorch\nclass Small(CartPoleTorch):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = PPO("my_counting_env:Small", num_envs=16, n_steps=4, batch_size=64)
    assert isinstance(model.venv, BatchedEnv) and model.venv.num_envs == 16


def test_init_at_random_ep_len_spreads_the_episode_ends():
    model = PPO("ppokit/PendulumTorch-v0", num_envs=64, n_steps=8, batch_size=256, init_at_random_ep_len=True)
    lengths = model.venv.env.episode_length_buf
    assert lengths.min() >= 0 and lengths.max() < 200 and len(set(lengths.tolist())) > 20
    model.collector.collect(model.buffer)
    assert model.buffer.done.any()  # time-outs within the first 8 steps (all would come at step 200)
    with pytest.raises(ConfigError, match="init_at_random_ep_len=True is not allowed with CountingTorchEnv"):
        PPO(CountingTorchEnv(), n_steps=4, batch_size=4, init_at_random_ep_len=True)


def test_value_of_obs_is_refused_for_gymnasium_numpy_envs():
    with pytest.raises(ConfigError, match="timeout_bootstrap='value_of_obs' is not allowed"):
        PPO("CartPole-v1", num_envs=2, n_steps=4, batch_size=8, timeout_bootstrap="value_of_obs")


# -- the rsl_rl interface and the asymmetric critic ----------------------------------------------------
def _point_mass(keep_final_obs: bool = False, n: int = 32) -> RslRlVecEnv:
    return RslRlVecEnv(PointMassTorch(num_envs=n, max_episode_steps=10), keep_final_obs=keep_final_obs)


def test_an_rsl_rl_env_with_a_critic_group_trains_an_asymmetric_actor_critic():
    model = PPO(
        _point_mass(), n_steps=8, batch_size=64, n_epochs=2, total_timesteps=32 * 8 * 3, normalize_obs=True,
        normalize_reward=True,
    )  # fmt: skip
    assert isinstance(model.venv, BatchedEnv) and model.config.num_envs == 32  # num_envs from the env
    policy = model.policy
    assert isinstance(policy, AsymmetricActorCritic) and policy.actor_dim == 4
    assert policy.actor_body[0].in_features == 4 and policy.critic_body[0].in_features == 8
    obs = torch.randn(5, 12)
    changed = obs.clone()
    changed[:, :4] += 1.0  # the actor's columns: the critic does not read them
    assert torch.equal(policy.value(obs), policy.value(changed))
    assert not torch.equal(policy(obs)[0], policy(changed)[0])
    model.learn()
    assert model.num_timesteps == 32 * 8 * 3 and model.collector.timeouts > 0
    assert model.collector.metrics()["rollout/timeout_final_obs_fraction"] == 0.0
    assert model.collector.episodes.recent  # 10-step episodes finished and were counted
    assert model.buffer.obs.device == model.device
    result = model.evaluate(episodes=4)  # on the training env itself (an instance): training goes on
    assert result["episodes"] == 4 and math.isfinite(result["mean_return"])
    assert torch.equal(model.collector.raw_obs, model.venv.reset())
    model.learn(32 * 8)
    assert float(model.reward_scaler.rms.count) > 32 * 8 * 3
    groups = model.venv.env.get_observations()  # predict takes [policy | critic], as stored
    action, _ = model.predict(torch.cat((groups["policy"], groups["critic"]), -1).numpy())
    assert action.shape == (32, 2) and np.abs(action).max() <= 1.0


def test_an_rsl_rl_env_that_keeps_final_observations_bootstraps_with_them():
    model = PPO(
        _point_mass(keep_final_obs=True), n_steps=16, batch_size=128, n_epochs=1, total_timesteps=32 * 16
    )
    model.learn()
    assert model.collector.timeouts > 0
    assert model.collector.metrics()["rollout/timeout_final_obs_fraction"] == 1.0


def test_num_envs_must_match_the_batched_env():
    with pytest.raises(ConfigError, match="num_envs=8 is not allowed with this batched env: it steps 32"):
        PPO(_point_mass(), {"num_envs": 8, "n_steps": 8, "batch_size": 64})


# -- Beta actions -----------------------------------------------------------------------------------------
def test_beta_log_prob_and_entropy_match_torch_distributions_and_actions_stay_in_bounds():
    space = gym.spaces.Box(np.array([-2, 0, 5], np.float32), np.array([2, 1, 6], np.float32))
    dist = ActionDistribution(space, "beta")
    assert dist.kind == "beta" and dist.out_dim == 6 and not dist.gaussian
    out = torch.randn(256, 6) * 3
    x, logp = dist.sample(out)
    alpha, beta = dist.beta_params(out)
    ref = torch.distributions.Beta(alpha, beta)
    lp, ent = dist.log_prob_entropy(out, x)
    assert torch.allclose(lp, ref.log_prob(x).sum(-1), atol=1e-4) and torch.allclose(logp, lp)
    assert torch.allclose(ent, ref.entropy().sum(-1), atol=1e-4)
    for a in (dist.to_env(x.numpy()), to_env_actions(dist, x).numpy()):
        assert (a >= space.low).all() and (a <= space.high).all()
    mode, _ = dist.sample(out, deterministic=True)
    assert torch.allclose(mode, ((alpha - 1) / (alpha + beta - 2)).clamp(1e-6, 1 - 1e-6))


def test_beta_actions_train_on_a_gymnasium_numpy_env_too():
    model = PPO(
        "Pendulum-v1", num_envs=2, n_steps=16, batch_size=32, n_epochs=1, network={"action_bounds": "beta"}
    )
    model.learn(64)
    assert model.policy.kind == "beta" and ((model.buffer.actions > 0) & (model.buffer.actions < 1)).all()


def test_beta_refuses_unbounded_boxes():
    from ppokit.errors import EnvConfigError

    with pytest.raises(EnvConfigError, match="action_bounds='beta' is not allowed for the unbounded"):
        ActionDistribution(gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), "beta")


def test_pendulum_trains_with_beta_actions_inside_the_bounds():
    model = PPO(
        "ppokit/PendulumTorch-v0", num_envs=64, n_steps=8, batch_size=256, n_epochs=2,
        total_timesteps=64 * 8 * 2, network={"action_bounds": "beta"},
    )  # fmt: skip
    assert model.policy.kind == "beta" and model.manual_grad is None  # no hand-written Beta gradient
    model.learn()
    stored = model.buffer.actions
    assert ((stored > 0) & (stored < 1)).all()
    action, _ = model.predict(np.array([1.0, 0.0, 0.0], np.float32), deterministic=False)
    assert -2.0 <= float(action[0]) <= 2.0


# -- the KL-adaptive learning rate and resume ---------------------------------------------------------------
def test_adaptive_lr_follows_rsl_rls_rule():
    rule = AdaptiveLR(1e-3, desired_kl=0.01)
    assert math.isclose(rule.observe(0.03), 1e-3 / 1.5)  # KL > 2 * desired
    assert math.isclose(rule.observe(0.01), 1e-3 / 1.5)  # in between: unchanged
    assert math.isclose(rule.observe(0.001), 1e-3)  # KL < desired / 2
    for _ in range(50):
        rule.observe(0.0)
    assert rule.lr == 1e-2  # clamped above
    for _ in range(50):
        rule.observe(1.0)
    assert rule.lr == 1e-5  # and below


CARTPOLE = dict(
    num_envs=64, n_steps=16, batch_size=256, n_epochs=2, normalize_obs=True, lr_schedule="adaptive",
    desired_kl=0.001, total_timesteps=64 * 16 * 4, checkpoint_every=64 * 16 * 2, checkpoint_every_seconds=0,
)  # fmt: skip


def test_resume_restores_the_env_normalisers_and_adapted_lr_exactly(tmp_path):
    whole = PPO("ppokit/CartPoleTorch-v0", CARTPOLE)
    whole.learn()
    lrs = [whole.optimizers[0].param_groups[0]["lr"]]
    assert lrs[0] != CARTPOLE.get("learning_rate", 3e-4)  # the rule moved it
    part = PPO("ppokit/CartPoleTorch-v0", CARTPOLE, run_dir=tmp_path / "run")
    part.learn(callback=lambda m, _: m.num_updates < 2)  # "interrupted" after 2 updates (a checkpoint)
    part.close()
    resumed = PPO.resume(tmp_path / "run")
    assert resumed.resume_info["env_state_restored"] is True
    assert resumed.adaptive_lr.lr == part.adaptive_lr.lr
    assert torch.equal(resumed.obs_norm.rms.mean.cpu(), part.obs_norm.rms.mean.cpu())
    resumed.learn()
    assert resumed.num_timesteps == whole.num_timesteps
    for a, b in zip(whole.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(whole.obs_norm.rms.var, resumed.obs_norm.rms.var)
    assert resumed.optimizers[0].param_groups[0]["lr"] == lrs[0]
    resumed.close()


# -- learning, from Python and from the CLI ------------------------------------------------------------
def test_cartpole_torch_learns_from_python():
    model = PPO("ppokit/CartPoleTorch-v0", num_envs=128, n_steps=32, batch_size=1024, n_epochs=5,
                learning_rate=1e-3, total_timesteps=128 * 32 * 15)  # fmt: skip
    model.learn()
    assert model.collector.episodes.mean_return() > 100  # a random policy averages ~22


def test_the_cli_trains_a_registered_torch_env_and_a_module_factory(tmp_path, monkeypatch, capsys):
    from ppokit.cli import main

    monkeypatch.chdir(tmp_path)
    tiny = ["--set", "num_envs=32", "--set", "n_steps=8", "--set", "batch_size=128",
            "--total-timesteps", "512", "--no-progress"]  # fmt: skip
    assert main(["train", "--env", "ppokit/CartPoleTorch-v0", "--run-dir", "a", *tiny]) == 0
    (tmp_path / "my_batched_env.py").write_text(
        "from ppokit.rl.torch_envs import PointMassTorch, RslRlVecEnv\n"
        "def make_env(num_envs, device):\n"
        "    return RslRlVecEnv(PointMassTorch(num_envs=num_envs, device=device, max_episode_steps=8))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["train", "--env", "my_batched_env:make_env", "--run-dir", "b", *tiny]) == 0
    assert (tmp_path / "b" / "metrics.csv").exists()
    assert "mean return" in capsys.readouterr().out
    assert main(["resume", "b", "--total-timesteps", "1024", "--no-eval", "--no-progress"]) == 0


def test_the_docs_page_snippets_run(tmp_path, monkeypatch, capsys):
    """Every code block of docs/batched-envs.md: Python blocks executed, `ppokit train` lines run."""
    import re
    import shlex
    from pathlib import Path

    from ppokit.cli import main

    text = (Path(__file__).resolve().parents[1] / "docs" / "batched-envs.md").read_text()
    blocks = re.findall(r"```(\w+)\n(.*?)```", text, re.S)
    assert [kind for kind, _ in blocks].count("python") == 4 and any(k == "bash" for k, _ in blocks)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for kind, code in blocks:
        if kind == "python":
            exec(compile(code, "docs/batched-envs.md", "exec"), {})
            if "def make_env" in code:
                (tmp_path / "my_envs.py").write_text(code)
    for kind, code in blocks:
        if kind == "bash":
            for line in code.strip().splitlines():
                argv = shlex.split(line)
                assert argv[0] == "ppokit"
                assert main(argv[1:]) == 0
    assert "AsymmetricActorCritic" in capsys.readouterr().out
