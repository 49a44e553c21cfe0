"""The rollout's buffer contents on a counting environment, in both Gymnasium autoreset modes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from conftest import CountingEnv, counting_env
from gymnasium.vector import AutoresetMode

from ppokit.rl.config import NetworkConfig
from ppokit.rl.networks import MlpActorCritic
from ppokit.rl.rollout import Collector, RolloutBuffer


def _collect(mode, T=8, max_steps=3, terminate_at=None):
    venv = gym.vector.SyncVectorEnv([counting_env(max_steps, terminate_at)] * 2, autoreset_mode=mode)
    torch.manual_seed(0)
    policy = MlpActorCritic(venv.single_observation_space, venv.single_action_space, NetworkConfig())
    col = Collector(venv, policy, torch.device("cpu"), 0, None, None)
    buf = RolloutBuffer.allocate(T, 2, (1,), (), torch.long)
    col.collect(buf)
    return buf, policy, col


def V(policy, x):
    with torch.no_grad():
        return float(policy.value(torch.tensor([[float(x)]])))


def test_same_step_truncation_bootstraps_with_the_real_final_observation():
    buf, policy, col = _collect(AutoresetMode.SAME_STEP)
    # episodes of 3 steps: obs 0,1,2 | 0,1,2 | 0,1 ; truncated after the step from obs 2
    assert buf.obs[:, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert buf.rewards[:, 0].tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert buf.done[:, 0].tolist() == [False, False, True, False, False, True, False, False]
    assert not buf.terminated.any() and buf.valid.all()
    # at the truncation, next value is V(final obs = 3), not V(reset obs = 0)
    assert abs(float(buf.next_values[2, 0]) - V(policy, 3)) < 1e-6
    assert abs(float(buf.next_values[2, 0]) - V(policy, 0)) > 1e-6
    assert abs(float(buf.next_values[0, 0]) - V(policy, 1)) < 1e-6
    assert abs(float(buf.next_values[7, 0]) - V(policy, 2)) < 1e-6
    assert [r for r, _ in col.episodes.recent] == [6.0, 6.0, 6.0, 6.0]  # 2 envs x 2 full episodes


def test_next_step_mode_marks_reset_steps_invalid_and_bootstraps_correctly():
    buf, policy, _ = _collect(AutoresetMode.NEXT_STEP)
    # obs 0,1,2 then the ending step returns obs 3; the next step is the env's reset step (invalid)
    assert buf.obs[:, 0, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert buf.valid[:, 0].tolist() == [True, True, True, False, True, True, True, False]
    assert buf.done[:, 0].tolist() == [False, False, True, False, False, False, True, False]
    assert abs(float(buf.next_values[2, 0]) - V(policy, 3)) < 1e-6


def test_termination_is_not_bootstrapped_in_gae():
    from ppokit.functional import gae

    buf, policy, _ = _collect(AutoresetMode.SAME_STEP, T=4, max_steps=10, terminate_at=2)
    assert buf.terminated[:, 0].tolist() == [False, True, False, True]
    adv, _ = gae(
        buf.rewards, buf.values, buf.next_values, buf.terminated, buf.done, gamma=0.9, gae_lambda=1.0
    )
    # at the terminal step the advantage is just r - V(s)
    assert abs(float(adv[1, 0]) - (2.0 - V(policy, 1))) < 1e-5


def test_nonfinite_observation_names_env_step_and_field():
    import pytest

    from ppokit.errors import EnvStepError

    class NaNEnv(CountingEnv):
        def step(self, action):
            obs, r, term, trunc, info = super().step(action)
            return (np.array([np.nan], np.float32) if self.t == 2 else obs), r, term, trunc, info

    venv = gym.vector.SyncVectorEnv([CountingEnv, NaNEnv], autoreset_mode=AutoresetMode.SAME_STEP)
    policy = MlpActorCritic(venv.single_observation_space, venv.single_action_space, NetworkConfig())
    col = Collector(venv, policy, torch.device("cpu"), 0, None, None)
    buf = RolloutBuffer.allocate(4, 2, (1,), (), torch.long)
    with pytest.raises(EnvStepError, match="environment 1 returned a non-finite observation at step 4"):
        col.collect(buf)
