"""Recurrent PPO (rl/recurrent.py): the update re-runs the rollout's sequences exactly, the state is
reset at episode starts in both autoreset modes, it is saved and resumed, and memory is learnt."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import counting_env

from ppokit.errors import ConfigError
from ppokit.rl.config import NetworkConfig, PPOConfig
from ppokit.rl.ppo import PPO
from ppokit.rl.recurrent import RecurrentActorCritic, RecurrentPolicy, evaluate_batch, sequence_batch
from ppokit.rl.toy_envs import RememberFirst
from ppokit.rl.update import ppo_loss

SMALL = dict(num_envs=4, n_steps=32, batch_size=64, n_epochs=2, tensorboard=False)
# SAME_STEP (a sync vector env of a factory: episodes of 3 steps) and NEXT_STEP (numpy CartPole)
ENVS = {"same_step": counting_env(max_steps=5, terminate_at=3), "next_step": "ppokit/CartPoleNoVel-v1"}
NETS = [
    dict(recurrent="lstm"),
    dict(recurrent="gru"),
    dict(recurrent="lstm", recurrent_shared=True),
    dict(recurrent="gru", shared_trunk=True),
]


def _model(env, net, **kw):
    return PPO(env, **{**SMALL, **kw}, network={"recurrent_hidden_size": 16, **net})


@pytest.mark.parametrize("net", NETS, ids=lambda n: "-".join(f"{v}" for v in n.values()))
@pytest.mark.parametrize("mode", list(ENVS))
def test_sequence_rerun_reproduces_the_rollout_with_episode_boundaries_inside(mode, net):
    torch.manual_seed(0)
    model = _model(ENVS[mode], net, seed=3)
    assert model.collector.same_step == (mode == "same_step")
    buf = model.buffer
    for i in range(10):  # later rollouts start mid-episode, from stored non-zero states
        model.collector.collect(buf)
        if i >= 1 and buf.episode_start[1:].any(0).all():
            break
    assert buf.episode_start[1:].any(0).all(), "every env sequence holds an episode boundary"
    assert buf.initial_state.abs().sum() > 0
    data = sequence_batch(buf, 0.99, 0.95, model.device)
    logp, _, values, ref = evaluate_batch(model.policy, data)
    assert torch.allclose(logp, ref["logp_old"], atol=1e-5, rtol=0)
    assert torch.allclose(values, ref["values_old"], atol=1e-5, rtol=0)
    _, terms = ppo_loss(model.policy, data, 0.2, 1.0, model.config)
    assert abs(float(terms["ratio_mean"]) - 1.0) < 1e-5 and float(terms["clip_fraction"]) == 0.0
    # the resets matter: re-running without them (or from zero states) does not reproduce the rollout
    no_reset = dict(data, episode_start=torch.zeros_like(data["episode_start"]))
    off = lambda mb: float((evaluate_batch(model.policy, mb)[2].detach() - ref["values_old"]).abs().max())
    assert off(no_reset) > 1e-4
    zero_start = dict(data, initial_state=torch.zeros_like(data["initial_state"]))
    assert off(zero_start) > 1e-4
    model.close()


@pytest.mark.parametrize("mode", list(ENVS))
def test_episode_start_marks_the_first_observation_of_every_episode(mode):
    model = _model(ENVS[mode], dict(recurrent="gru"), seed=1)
    model.collector.collect(model.buffer)
    buf = model.buffer
    start, done = buf.episode_start, buf.done
    assert start[0].all()  # the very first observations follow the reset
    if mode == "same_step":  # the ending step returns the reset observation
        assert torch.equal(start[1:], done[:-1])
    else:  # the ending step returns the last observation; the (invalid) reset step the first one
        assert torch.equal(start[2:], done[:-2]) and not start[1].any()
        assert torch.equal(~buf.valid[1:], done[:-1])
    model.close()


def test_the_state_is_reset_before_an_episode_start():
    space = gym.spaces.Box(-1, 1, (3,), np.float32)
    policy = RecurrentActorCritic(space, gym.spaces.Discrete(2), NetworkConfig(recurrent="lstm"))
    obs = torch.randn(4, 3)
    state = torch.randn(4, policy.state_size)
    start = torch.tensor([True, False, True, False])
    out, value, _ = policy.step(obs, policy.reset_state(state, start, 4))
    fresh, fresh_value, _ = policy.step(obs, policy.initial_state(4))
    kept, kept_value, _ = policy.step(obs, state)
    assert torch.equal(out[start], fresh[start]) and torch.equal(value[start], fresh_value[start])
    assert torch.equal(out[~start], kept[~start]) and torch.equal(value[~start], kept_value[~start])
    assert not torch.allclose(value[~start], fresh_value[~start])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("shared", [False, True])
def test_the_cells_compute_pytorchs_lstm_and_gru(kind, shared):
    space = gym.spaces.Box(-1, 1, (3,), np.float32)
    cfg = NetworkConfig(recurrent=kind, recurrent_shared=shared, hidden_sizes=[5], recurrent_hidden_size=8)
    policy = RecurrentActorCritic(space, gym.spaces.Discrete(2), cfg)
    for p in policy.parameters():
        torch.nn.init.normal_(p)
    obs, state = torch.randn(6, 3), torch.randn(6, policy.state_size)
    _, value, new_state = policy.step(obs, state)
    cores = [(policy.core, policy.encoder)] + (
        [] if shared else [(policy.critic_core, policy.critic_encoder)]
    )
    for k, (core, encoder) in enumerate(cores):
        s = state[:, k * policy.part : (k + 1) * policy.part]
        x = encoder(obs)
        ref = torch.cat(core(x, tuple(s.chunk(2, -1))), -1) if kind == "lstm" else core(x, s)
        assert torch.allclose(new_state[:, k * policy.part : (k + 1) * policy.part], ref, atol=1e-5)
    h_critic = new_state[:, (len(cores) - 1) * policy.part :][:, : policy.hidden]
    assert torch.allclose(value, policy.critic_head(h_critic).squeeze(-1), atol=1e-6)


def test_recurrent_policies_take_every_action_space_and_refuse_the_fast_path():
    for env in ("Pendulum-v1", "CartPole-v1"):
        model = _model(env, dict(recurrent="lstm"), n_epochs=1)
        assert model.manual_grad is None and isinstance(model.policy, RecurrentPolicy)
        model.learn(256)
        action, state = model.predict(np.zeros(model.observation_space.shape, np.float32))
        assert model.action_space.contains(np.asarray(action, dtype=model.action_space.dtype))
        assert state.shape == (1, model.policy.state_size)
        model.close()
    multi = lambda: gym.wrappers.TimeLimit(_MultiDiscreteEnv(), max_episode_steps=6)
    model = _model(multi, dict(recurrent="gru"), n_epochs=1)
    metrics = model.update(0.2) if model.collector.collect(model.buffer) is None else None
    assert np.isfinite(metrics["train/loss"])
    with pytest.raises(ConfigError, match="manual_grad=True is not allowed here: the policy is Recurrent"):
        _model("CartPole-v1", dict(recurrent="lstm"), manual_grad=True)


class _MultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([3, 2])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), float(action[0] == 1), False, False, {}


def test_recurrent_batch_size_must_hold_whole_sequences():
    with pytest.raises(ConfigError, match=r"batch_size=16 is not allowed.*multiple of n_steps=32"):
        PPOConfig.from_dict(dict(SMALL, batch_size=16, network={"recurrent": "lstm"}))
    with pytest.raises(
        ConfigError, match="recurrent='rnn' is not allowed; choose one of \\['none', 'lstm', 'gru'\\]"
    ):
        PPOConfig.from_dict({"network": {"recurrent": "rnn"}})


def test_predict_carries_the_state_like_sb3_contrib():
    model = _model("ppokit/RememberFirst-v0", dict(recurrent="lstm"))
    obs = np.zeros((2, 5), np.float32)
    obs[:, 0] = 1.0
    action, state = model.predict(obs, state=None, episode_start=np.ones(2, bool))
    assert action.shape == (2,) and state.shape == (2, model.policy.state_size)
    _, state2 = model.predict(np.zeros((2, 5), np.float32), state, np.zeros(2, bool))
    _, fresh = model.predict(np.zeros((2, 5), np.float32), state, np.ones(2, bool))
    _, none = model.predict(np.zeros((2, 5), np.float32))
    assert not np.allclose(state2, fresh) and np.array_equal(fresh, none)
    model.close()


def test_save_load_keeps_the_policy_and_resume_is_exact_with_the_state(tmp_path):
    cfg = dict(SMALL, seed=5, checkpoint_every=128, keep_checkpoints=10, network={"recurrent": "lstm"})
    a = PPO("ppokit/CartPoleNoVel-v1", run_dir=tmp_path / "a", **cfg).learn(6 * 128)
    b = PPO.resume(tmp_path / "a" / "checkpoints" / f"step_{2 * 128:012d}", run_dir=tmp_path / "b")
    assert b.resume_info["env_state_restored"], b.resume_info
    assert b.collector.state.abs().sum() > 0  # the mid-episode state came back with the envs
    b.learn()
    params = lambda m: torch.cat([p.detach().flatten() for p in m.policy.parameters()])
    assert torch.equal(params(a), params(b))
    assert torch.equal(a.collector.state, b.collector.state)
    a.save(tmp_path / "model")
    loaded = PPO.load(tmp_path / "model")
    obs = np.random.default_rng(0).normal(size=(5, 3, 2)).astype(np.float32)
    sa = sb = None
    for t in range(5):
        start = np.array([t == 0, False, t == 3])
        xa, sa = a.predict(obs[t], sa, start)
        xb, sb = loaded.predict(obs[t], sb, start)
        assert np.array_equal(xa, xb) and np.array_equal(sa, sb)
    a.close()
    b.close()
    loaded.close()


# The memory task: a cue at the first step, four blank steps, then the query. Chance is 1/3.
MEMORY = dict(
    num_envs=8,
    n_steps=32,
    batch_size=128,
    n_epochs=10,
    learning_rate=2e-3,
    lr_schedule="linear",
    ent_coef=0.01,
    tensorboard=False,
)


def _memory_model(net: dict, seed: int) -> PPO:
    env = lambda: RememberFirst(n_cues=3, delay=4)
    return PPO(env, seed=seed, **MEMORY, network={"hidden_sizes": [32], "recurrent_hidden_size": 32, **net})


def test_the_memory_task_is_learnt_by_an_lstm_and_not_by_an_mlp():
    torch.manual_seed(0)
    lstm = _memory_model({"recurrent": "lstm"}, seed=0).learn(12_000)
    assert lstm.evaluate(episodes=60)["mean_return"] >= 0.9
    mlp = _memory_model({}, seed=0).learn(12_000)
    assert mlp.evaluate(episodes=60)["mean_return"] <= 0.6  # chance: 1/3
    lstm.close()
    mlp.close()


def test_cli_trains_and_evaluates_a_recurrent_policy(tmp_path):
    run_dir = tmp_path / "run"
    common = dict(capture_output=True, text=True, timeout=300)
    out = subprocess.run(
        [sys.executable, "-m", "ppokit", "train", "--env", "ppokit/RememberFirst-v0"]
        + ["--total-timesteps", "256", "--num-envs", "4", "--run-dir", str(run_dir), "--no-progress"]
        + ["--set", "network.recurrent=lstm", "--set", "n_steps=32", "--set", "batch_size=64"]
        + ["--set", "eval_episodes=4"],
        **common,
    )
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "ppokit", "eval", str(run_dir), "--episodes", "5", "--json"], **common
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["episodes"] == 5


class _UserGru(RecurrentPolicy):
    """A user's recurrent policy: only ``step`` written; ``act``, ``value`` and ``evaluate_sequences``
    come from the base class."""

    def __init__(self, observation_space, action_space, width=16):
        super().__init__(observation_space, action_space)
        self.cell = torch.nn.GRUCell(observation_space.shape[0], width)
        self.pi = torch.nn.Linear(width, self.dist.out_dim)
        self.critic_v = torch.nn.Linear(width, 1)
        self.state_size = width

    def step(self, obs, state):
        h = self.cell(obs, state)
        return self.pi(h), self.critic_v(h).squeeze(-1), h


def test_a_user_recurrent_policy_needs_only_step():
    model = PPO(ENVS["same_step"], policy=_UserGru, seed=0, **SMALL)
    assert model.recurrent and model.manual_grad is None
    model.collector.collect(model.buffer)
    model.collector.collect(model.buffer)
    data = sequence_batch(model.buffer, 0.99, 0.95, model.device)
    logp, _, values, ref = evaluate_batch(model.policy, data)
    assert torch.allclose(logp, ref["logp_old"], atol=1e-5) and torch.allclose(
        values, ref["values_old"], atol=1e-5
    )
    model.learn(256)
    assert np.isfinite(model.evaluate(episodes=2)["mean_return"])
    with pytest.raises(TypeError, match="is recurrent.*evaluate_sequences"):
        model.policy.evaluate(data["obs"][:, 0], data["actions"][:, 0])
    model.close()


@pytest.mark.parametrize(
    "env_cls", ["BrightSideEnv", "DictObsEnv", "TupleObsEnv", "CopyBitsEnv", "MatrixTargetEnv"]
)
def test_recurrent_policies_take_every_observation_encoder_and_action_space(env_cls):
    import space_envs

    env = getattr(space_envs, env_cls)
    image = env_cls == "BrightSideEnv"
    net = dict(recurrent="gru", image_encoder="small") if image else dict(recurrent="lstm")
    model = _model(env, net, seed=0, n_epochs=1)
    assert (model.policy.obs_encoder is not None) == (env_cls not in ("MatrixTargetEnv",))
    for _ in range(2):
        model.collector.collect(model.buffer)
    data = sequence_batch(model.buffer, 0.99, 0.95, model.device)
    logp, _, values, ref = evaluate_batch(model.policy, data)
    assert torch.allclose(logp, ref["logp_old"], atol=1e-5) and torch.allclose(
        values, ref["values_old"], atol=1e-5
    )
    model.learn(128)
    assert np.isfinite(model.evaluate(episodes=2)["mean_return"])
    model.close()
