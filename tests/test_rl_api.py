"""SB3 habits on the Python API: learn(n) trains n more steps, instances and factories are handled
with clear messages, and a run directory gets checkpoints by time with no option set."""

from __future__ import annotations

import gymnasium as gym
import pytest

from ppokit.errors import CheckpointError, ConfigError
from ppokit.rl.ppo import PPO
from ppokit.train.checkpoint import list_checkpoints

SMALL = dict(num_envs=2, n_steps=8, batch_size=16, n_epochs=1, tensorboard=False)


def test_a_second_learn_trains_that_many_more_steps():
    model = PPO("CartPole-v1", **SMALL)
    model.learn(32)
    assert model.num_timesteps == 32
    model.learn(32)  # SB3: reset_num_timesteps=True restarts the counter and trains 32 steps
    assert model.num_timesteps == 32 and model.num_updates == 4
    model.learn(48, reset_num_timesteps=False)
    assert model.num_timesteps == 80 and model.num_updates == 7


@pytest.mark.parametrize("bad", [-5, 1.5, "10"])
def test_a_negative_or_non_integer_budget_is_refused(bad):
    with pytest.raises(ConfigError, match=r"total_timesteps=.* is not allowed; give a whole number"):
        PPO("CartPole-v1", **SMALL).learn(bad)


def test_an_env_instance_trains_as_one_env_like_sb3():
    # issue 30: an instance was refused; SB3 wraps one instance in a vector env of 1, and so does ppokit
    env = gym.make("CartPole-v1")
    model = PPO(env, **{**SMALL, "num_envs": 1, "batch_size": 8}).learn(16)
    assert model.num_timesteps == 16 and model.get_env().num_envs == 1
    assert model.get_env().envs[0].unwrapped is env.unwrapped  # the instance itself is stepped


def test_loading_a_factory_trained_model_without_env_says_what_to_pass(tmp_path):
    make = lambda: gym.make("Acrobot-v1")  # noqa: E731
    model = PPO(make, **SMALL).learn(16)
    model.save(tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"trained on environments from a factory .*env=make_env"):
        PPO.load(tmp_path / "m")
    assert PPO.load(tmp_path / "m", env=make).action_space.n == 3


def test_checkpoints_come_by_wall_clock_with_no_option_set(tmp_path, monkeypatch):
    model = PPO("CartPole-v1", run_dir=tmp_path, **SMALL)
    assert model.config.checkpoint_every == 0 and model.config.checkpoint_every_seconds == 300
    clock = iter(range(0, 10**6, 200))  # each reading of the loop's clock moves 200 s on
    monkeypatch.setattr("ppokit.train.loop._clock", lambda: float(next(clock)))
    model.run_loop.cadence.last_time = 0.0
    model.learn(64)  # 4 updates, one check each: 200 s, 400 s, ... since the last checkpoint
    steps = [int(p.name.split("_")[1]) for p in list_checkpoints(tmp_path / "checkpoints")]
    assert steps[-1] == 64 and len(steps) >= 2
