"""ppokit's batched torch envs (rl/torch_envs/): Gymnasium's dynamics to 1e-5, per-instance time-outs,
SAME_STEP autoreset keeping the true final observation, registration, exact state save/restore, and
rsl_rl's VecEnv view."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.rl.torch_envs import CartPoleTorch, PendulumTorch, PointMassTorch, RslRlVecEnv


def _states(rng: np.random.Generator, n: int, scale: list[float]) -> np.ndarray:
    return rng.uniform(-1, 1, (n, len(scale))) * np.asarray(scale)


def test_cartpole_steps_as_gymnasiums_cartpole():
    rng = np.random.default_rng(0)
    states = _states(rng, 64, [2.0, 2.0, 0.2, 2.0])
    actions = rng.integers(0, 2, 64)
    env = CartPoleTorch(num_envs=64)
    env.reset(seed=0)
    env.state = torch.as_tensor(states, dtype=torch.float32)
    obs, reward, terminated, truncated, _ = env.step(torch.as_tensor(actions))
    ref = gym.make("CartPole-v1").unwrapped
    ref.reset(seed=0)
    for i in range(64):
        ref.state = states[i].astype(np.float32).astype(np.float64)
        ref.steps_beyond_terminated = None
        o, r, term, _, _ = ref.step(int(actions[i]))
        if term:  # the torch env reset this instance in the same step: compare its kept final state
            assert bool(terminated[i])
        else:
            np.testing.assert_allclose(obs[i].numpy(), o, atol=1e-5)
            assert not bool(terminated[i])
        assert float(reward[i]) == r
    assert terminated.any() and not truncated.any()  # some states were beyond the thresholds


def test_cartpole_final_observation_of_a_termination_matches_gymnasium():
    env = CartPoleTorch(num_envs=2)
    env.reset(seed=0)
    env.state = torch.tensor([[2.39, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    obs, _, terminated, _, info = env.step(torch.tensor([1, 1]))
    ref = gym.make("CartPole-v1").unwrapped
    ref.reset(seed=0)
    ref.state = np.array([2.39, 1.0, 0.0, 0.0], dtype=np.float32).astype(np.float64)
    o, _, term, _, _ = ref.step(1)
    assert term and terminated.tolist() == [True, False]
    np.testing.assert_allclose(info["final_obs"][0].numpy(), o, atol=1e-5)
    assert info["_final_obs"].tolist() == [True, False]
    assert abs(float(obs[0, 0])) <= 0.05  # the instance was reset in the same step


def test_pendulum_steps_as_gymnasiums_pendulum():
    rng = np.random.default_rng(1)
    states = _states(rng, 32, [np.pi, 8.0])
    actions = rng.uniform(-3, 3, (32, 1))  # beyond the bounds too: both clip to +-2
    env = PendulumTorch(num_envs=32)
    env.reset(seed=0)
    env.state = torch.as_tensor(states, dtype=torch.float32)
    obs, reward, terminated, truncated, _ = env.step(torch.as_tensor(actions, dtype=torch.float32))
    ref = gym.make("Pendulum-v1").unwrapped
    ref.reset(seed=0)
    for i in range(32):
        ref.state = states[i].astype(np.float32).astype(np.float64)
        o, r, _, _, _ = ref.step(actions[i].astype(np.float32))
        np.testing.assert_allclose(obs[i].numpy(), o, atol=1e-5)
        np.testing.assert_allclose(float(reward[i]), r, atol=1e-5)
    assert not terminated.any() and not truncated.any()


def test_each_instance_is_truncated_at_its_own_time_limit_and_keeps_its_final_observation():
    env = PendulumTorch(num_envs=3, max_episode_steps=5)
    env.reset(seed=3)
    env.episode_length_buf[:] = torch.tensor([0, 3, 4])  # writable, as rsl_rl expects
    for step in range(1, 3):
        before = env._obs().clone()
        obs, _, terminated, truncated, info = env.step(torch.zeros(3, 1))
        expect = [False, step == 2, step == 1]
        assert truncated.tolist() == expect and not terminated.any()
        if any(expect):
            i = expect.index(True)
            # the true last observation continues the old state; the returned one is a fresh episode
            assert info["_final_obs"].tolist() == expect
            assert not torch.equal(info["final_obs"][i], obs[i])
            assert abs(float(info["final_obs"][i, 2] - before[i, 2])) < 1.0  # one step of |dthdot| < 1
            assert int(env.episode_length_buf[i]) == 0


@pytest.mark.parametrize(
    "env_id", ["ppokit/CartPoleTorch-v0", "ppokit/PendulumTorch-v0", "ppokit/PointMassTorch-v0"]
)
def test_registered_ids_make_vector_envs_and_their_state_restores_exactly(env_id):
    from ppokit.rl.envfind import find_spec

    assert find_spec(env_id).vector_entry_point  # the known-package table imports ppokit.rl.torch_envs
    env = gym.make_vec(env_id, num_envs=16, vectorization_mode="vector_entry_point")
    assert env.num_envs == 16 and env.metadata["torch_tensors"]
    env.reset(seed=5)
    sample = lambda: torch.as_tensor(np.stack([env.single_action_space.sample() for _ in range(16)]))  # noqa: E731
    env.single_action_space.seed(0)
    actions = [sample() for _ in range(40)]
    for a in actions[:10]:
        env.step(a)
    saved = env.state_dict()
    first = [env.step(a)[:4] for a in actions[10:]]
    env.load_state_dict(saved)
    again = [env.step(a)[:4] for a in actions[10:]]
    for x, y in zip(first, again):
        for u, v in zip(x, y):
            assert torch.equal(u, v)


def test_point_mass_gives_a_privileged_critic_group_through_rsl_rl_interface():
    env = RslRlVecEnv(PointMassTorch(num_envs=8, max_episode_steps=3))
    assert env.num_envs == 8 and env.num_actions == 2 and env.max_episode_length == 3
    obs = env.get_observations()
    assert obs["policy"].shape == (8, 4) and obs["critic"].shape == (8, 8)
    assert torch.equal(obs["critic"][:, :4], obs["policy"])
    for step in range(3):
        obs, rewards, dones, extras = env.step(torch.zeros(8, 2))
        assert rewards.shape == (8,) and dones.shape == (8,)
        assert extras["time_outs"].tolist() == [step == 2] * 8
        assert "final_obs" not in extras  # like rsl_rl's envs: the final observation is dropped
    assert dones.all() and int(env.episode_length_buf.max()) == 0


def test_point_mass_is_reachable_and_rewards_reaching():
    env = PointMassTorch(num_envs=1)
    env.reset(seed=0)
    env.state = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.5, 0.51]])
    _, reward, terminated, _, info = env.step(torch.zeros(1, 2))
    assert terminated.tolist() == [True] and float(reward) > 9.0
    assert info["final_critic_obs"].shape == (1, 8)
