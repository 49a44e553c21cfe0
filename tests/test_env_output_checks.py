"""Issue 34: environment outputs that were silently wrong or ended in a traceback are refused with an
``EnvStepError`` naming the environment and its step (``rl/checked_env.py``), and ``sys.exit()``
inside an environment is the environment's failure, not a clean exit of ppokit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from ppokit.errors import EnvStepError
from ppokit.rl.ppo import PPO

SMALL = dict(num_envs=2, n_steps=8, batch_size=8, n_epochs=1, tensorboard=False, vectorization="sync")
TESTS = Path(__file__).resolve().parent


class OddEnv(gym.Env):
    """obs [2] float32, 2 actions; at its 3rd step it returns what ``mode`` says."""

    def __init__(self, mode: str):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.mode, self.t = mode, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        obs, reward, terminated, truncated = np.zeros(2, np.float32), 1.0, False, self.t >= 20
        if self.t == 3:
            if self.mode == "terminated_str":
                terminated = "no"
            elif self.mode == "terminated_array":
                terminated = np.array([False, True])
            elif self.mode == "truncated_float":
                truncated = 0.5
            elif self.mode == "complex_reward":
                reward = 1 + 2j
            elif self.mode == "str_obs":
                obs = np.array(["a", "b"])
            elif self.mode == "object_obs":
                obs = np.array([object(), object()], dtype=object)
            elif self.mode == "action_space_changes":
                self.action_space = gym.spaces.Discrete(3)
            elif self.mode == "exit":
                sys.exit(3)
        return obs, reward, terminated, truncated, {}


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("terminated_str", r"terminated='no' \(str\); it must be a bool"),
        ("terminated_array", r"terminated=.* \(ndarray\); it must be a bool"),
        ("truncated_float", r"truncated=0.5 \(float\); it must be a bool"),
        ("complex_reward", r"reward \(1\+2j\); it must be one real number"),
        ("str_obs", r"observation of dtype <U1 .*real numbers"),
        ("object_obs", r"observation of dtype object .*real numbers"),
        ("action_space_changes", r"changed its action_space from Discrete\(2\) to Discrete\(3\)"),
        ("exit", r"raised SystemExit: 3"),
    ],
)
def test_bad_env_output_names_env_and_step(mode, match):
    model = PPO(lambda: OddEnv(mode), **SMALL)
    with pytest.raises(EnvStepError, match=r"environment \d at its step 3: .*" + match):
        model.learn(32)
    model.close()


def test_bool_like_flags_still_train():
    """numpy bools, 0-d bool arrays and 0/1 ints are what many envs return: all accepted."""

    class Flags(OddEnv):
        def step(self, action):
            obs, reward, _, truncated, info = super().step(action)
            return obs, reward, np.array(self.t >= 7), int(bool(truncated)), info

    model = PPO(lambda: Flags("none"), **SMALL)
    model.learn(32)
    assert model.num_timesteps == 32
    model.close()


def test_sys_exit_in_env_is_an_error_not_a_clean_exit(tmp_path):
    """Before issue 34 this exited 0 with no message: a scheduler saw success."""
    code = (
        "import sys, gymnasium as gym, test_env_output_checks as t; "
        "gym.register('PPOKitTest/Exit-v0', entry_point=lambda: t.OddEnv('exit')); "
        "from ppokit.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["train", "--env", "PPOKitTest/Exit-v0", "--num-envs", "1", "--run-dir", str(tmp_path / "run")]
    args += ["--no-progress", "--no-eval", "--total-timesteps", "64", "--set", "vectorization=sync"]
    args += ["--set", "n_steps=16", "--set", "batch_size=16"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    assert "environment 0 at its step 3: raised SystemExit: 3" in proc.stderr


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("terminated_str", r"environment \d at its step 3: returned terminated='no'"),
        ("complex_reward", r"environment \d at its step 3: returned reward \(1\+2j\)"),
        ("exit", r"environment \d at its step 3: raised SystemExit: 3"),  # was: a dead worker
    ],
)
def test_async_workers_check_the_same(mode, match):
    model = PPO(lambda: OddEnv(mode), **{**SMALL, "vectorization": "async"})
    with pytest.raises(EnvStepError, match=match + ".* in its worker process"):
        model.learn(32)
    model.close()


def test_a_rollout_larger_than_memory_is_a_config_error():
    """n_steps=1e9 ended in a raw allocator error (issue 34): the config names what to lower."""
    from ppokit import ConfigError

    with pytest.raises(
        ConfigError, match=r"n_steps \* num_envs = 1,000,000,000 \* 2 transitions need .* GiB"
    ):
        PPO(lambda: OddEnv("none"), **{**SMALL, "n_steps": 1_000_000_000, "batch_size": 64})


def test_a_network_larger_than_memory_is_a_config_error():
    """hidden_sizes=[1e9] hung initialising the weights or ended in an allocator error (issue 34)."""
    from ppokit import ConfigError

    with pytest.raises(ConfigError, match=r"network.hidden_sizes=\[1000000000\] needs about .* GiB"):
        PPO(lambda: OddEnv("none"), **SMALL, network={"hidden_sizes": [1_000_000_000]})


def test_an_env_whose_close_raises_does_not_lose_the_evaluation():
    """``ppokit eval`` ended in a traceback (and lost the result) when the env's close() raised."""

    class CloseRaises(OddEnv):
        def close(self):
            raise RuntimeError("close failed")

    model = PPO(lambda: CloseRaises("none"), **SMALL)
    with pytest.warns(
        UserWarning, match="raised .*close failed.* when closed; the evaluation itself finished"
    ):
        result = model.evaluate(episodes=2)
    assert result["episodes"] == 2 and result["mean_length"] == 20
    with pytest.raises(Exception, match="close failed"):  # the training envs' close still reports it
        model.close()
