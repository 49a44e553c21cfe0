"""Bad input gets a clear error: every config value is validated, and random configs either train
one update with finite losses or raise ConfigError (a property-based test)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppokit import ConfigError, PPOConfig
from ppokit.rl.ppo import PPO

SMALL = dict(num_envs=2, n_steps=8, batch_size=8, n_epochs=1, tensorboard=False)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"learning_rate": -1e-3}, r"learning_rate=-0.001 is not allowed; must be > 0"),
        ({"learning_rate": math.inf}, r"learning_rate=inf is not allowed; must be a finite number"),
        ({"clip_range": math.nan}, r"clip_range=nan is not allowed; must be a finite number"),
        ({"clip_range": -0.1}, r"clip_range=-0.1 is not allowed; must be > 0"),
        (
            {"batch_size": 64, "n_steps": 8, "num_envs": 2},
            r"batch_size=64 is not allowed; must be <= .* = 16",
        ),
        ({"batch_size": 6, "n_steps": 8, "num_envs": 2}, r"batch_size=6 is not allowed; must divide .* = 16"),
        ({"clip_rang": 0.1}, r"unknown config key 'clip_rang'; did you mean 'clip_range'\?"),
        ({"network": {"activaton": "relu"}}, r"did you mean 'network.activation'"),
        # a nested section's choices rule names the section (it read "activation='gelu'" before)
        ({"network": {"activation": "gelu"}}, r"^network\.activation='gelu' is not allowed; choose one of"),
        ({"gamma": "high"}, r"gamma='high' has type str; expected float"),
        ({"network": [64, 64]}, r"network=\[64, 64\] has type list; expected NetworkConfig"),
        ({"nan_policy": "ignore"}, r"nan_policy='ignore' is not allowed; choose one of \['raise', 'skip'\]"),
        ({"nonfinite_stop_after": 0}, r"nonfinite_stop_after=0 is not allowed; must be a positive integer"),
        ({"seed": -1}, r"seed=-1 is not allowed"),
        ({"device": "mps"}, r"device='mps' is not allowed; use auto, cpu, cuda or cuda:N"),
        ({"gae_lambda": 1.5}, r"gae_lambda=1.5 is not allowed; must lie in \[0, 1\]"),
    ],
)
def test_config_error_names_key_value_and_rule(data, match):
    with pytest.raises(ConfigError, match=match):
        PPOConfig.from_dict(data)


def test_yaml_wrong_type_and_yaml_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("n_epochs: ten\n")
    with pytest.raises(ConfigError, match="n_epochs='ten' has type str; expected int"):
        PPOConfig.load_yaml(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        PPOConfig.load_yaml(path)
    path.write_text("learning_rate: [1, 2]\n")
    with pytest.raises(ConfigError, match="learning_rate=\\[1, 2\\] has type list; expected float"):
        PPOConfig.load_yaml(path)
    # PyYAML reads `3e-4` as a string (YAML 1.1); it is accepted as the number the user meant.
    path.write_text("learning_rate: 3e-4\n")
    assert PPOConfig.load_yaml(path).learning_rate == 3e-4
    # a YAML `true` for a float field is a mistake, not 1.0 (ppokit.config.is_number, issue 29)
    path.write_text("learning_rate: true\n")
    with pytest.raises(ConfigError, match="learning_rate=True has type bool; expected float"):
        PPOConfig.load_yaml(path)


@pytest.mark.parametrize(
    ("value", "number", "finite"),
    [
        (1, True, True),
        (2.5, True, True),
        (math.inf, True, False),
        (math.nan, True, False),
        (np.float32(0.5), True, True),
        (np.int64(3), True, True),
        (np.float64("inf"), True, False),
        (torch.tensor(1.5), True, True),
        (torch.tensor([2]), True, True),
        (np.array([0.25]), True, True),
        (torch.tensor(float("nan")), True, False),
        # bool is not a number, in whatever wrapping
        (True, False, False),
        (False, False, False),
        (np.bool_(True), False, False),
        (torch.tensor(True), False, False),
        # nor a string, a container, a complex number, a tensor of several numbers, None
        ("1.0", False, False),
        ([1.0], False, False),
        (1 + 2j, False, False),
        (torch.tensor([1.0, 2.0]), False, False),
        (np.array([1, 2]), False, False),
        (None, False, False),
    ],
)
def test_is_number_is_the_one_number_check(value, number, finite):
    from ppokit.config import is_number

    assert is_number(value) is number
    assert is_number(value, finite=True) is finite


def test_every_number_check_refuses_bool():
    """The reward checks (``reward_checks``, ``rewards.score_completions``), a reward's ``log_metric``
    and config float fields all ask ``is_number``: a bool is refused by each with its own message."""
    from ppokit.llm.reward_checks import CheckedReward, RewardFunctionError
    from ppokit.llm.rewards import score_completions
    from ppokit.llm.sampling import RewardLogs

    def flag(prompts, completions, **_):
        return [True for _ in completions]

    with pytest.raises(RewardFunctionError, match=r"returned True \(bool\) for completion 0"):
        CheckedReward(flag)(["p"], ["c"])
    with pytest.raises(ConfigError, match=r"returned True \(bool\); each value must be a number"):
        score_completions([flag], None, ["p"], ["c"], {})
    with pytest.raises(ConfigError, match=r"log_metric\('x', True\)"):
        RewardLogs().log_metric("x", True)
    with pytest.raises(ConfigError, match="clip_range=False has type bool"):
        PPOConfig.from_dict({"clip_range": False})
    assert CheckedReward(lambda prompts, completions, **_: [np.float32(0.5)])(["p"], ["c"]) == [0.5]


class DictObsEnv(gym.Env):  # Dict observations are supported; a Text entry in one is not
    observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,)), "text": gym.spaces.Text(4)})
    action_space = gym.spaces.Discrete(2)


class TupleActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))


@pytest.mark.parametrize(
    ("env", "overrides", "match"),
    [
        ("CartPol-v1", {}, r"env_id='CartPol-v1' is not allowed.*did you mean CartPole-v1"),
        ("Pendulum-v1", {"vectorization": "vector_entry_point"}, r"vectorization='vector_entry_point'"),
        ("CartPole-v1", {"env_kwargs": {"bogus": 1}}, r"env_kwargs=\{'bogus': 1\} is not allowed"),
        (DictObsEnv, {}, r"observation\['text'\] space Text.* is not supported"),
        (
            TupleActionEnv,
            {},
            r"action space Tuple.* is not supported; supported: Discrete, MultiDiscrete, MultiBinary, Box",
        ),
    ],
)
def test_environment_problems_are_config_errors(env, overrides, match):
    with pytest.raises(ConfigError, match=match):
        PPO(env, **SMALL, **overrides)


# -- the property-based test ----------------------------------------------------------------------

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


BAD = st.one_of(
    FLOATS, st.integers(-10, 10), st.text(max_size=4), st.none(), st.lists(st.integers(), max_size=2)
)

GOOD = {
    "env_id": st.sampled_from(["CartPole-v1", "Pendulum-v1"]),
    "num_envs": st.integers(1, 3),
    "vectorization": st.sampled_from(["auto", "sync", "vector_entry_point"]),
    "n_steps": st.integers(1, 8),
    "batch_size": st.sampled_from([1, 2, 4, 8]),
    "n_epochs": st.integers(1, 2),
    "learning_rate": st.floats(1e-5, 1e-2),
    "lr_schedule": st.sampled_from(["constant", "linear"]),
    "adam_betas": st.lists(st.floats(0, 0.999), min_size=2, max_size=2),
    "max_grad_norm": st.one_of(st.none(), st.floats(0.1, 10)),
    "gamma": st.floats(0, 1),
    "gae_lambda": st.floats(0, 1),
    "normalize_advantage": st.booleans(),
    "objective": st.sampled_from(["clip", "kl_penalty", "kl_adaptive", "none"]),
    "clip_range": st.floats(0.01, 1),
    "clip_range_schedule": st.sampled_from(["constant", "linear"]),
    "kl_coef": st.floats(0, 10),
    "target_kl": st.one_of(st.none(), st.floats(1e-4, 1)),
    "ent_coef": st.floats(0, 0.1),
    "vf_coef": st.floats(0, 2),
    "value_loss": st.sampled_from(["mse", "huber"]),
    "vf_clip_range": st.one_of(st.none(), st.floats(0.01, 10)),
    "normalize_obs": st.booleans(),
    "normalize_reward": st.booleans(),
    "nan_policy": st.sampled_from(["raise", "skip"]),
    "seed": st.integers(0, 2**40),
    "network": st.fixed_dictionaries(
        {},
        optional={
            "hidden_sizes": st.lists(st.integers(1, 16), min_size=1, max_size=2),
            "activation": st.sampled_from(["tanh", "relu", "elu"]),
            "shared_trunk": st.booleans(),
            "log_std_init": st.floats(-2, 1),
        },
    ),
}


def one_bad(draw_key: str) -> st.SearchStrategy:
    """A config of good values with one key given something else: a wrong type, range, NaN..."""
    bad = BAD if draw_key != "env_id" else st.sampled_from(["CartPol-v1", 7, "NoSuchEnv-v0"])
    others = {k: v for k, v in GOOD.items() if k != draw_key}
    return st.fixed_dictionaries({draw_key: bad}, optional=others)


random_configs = st.one_of(
    st.fixed_dictionaries({}, optional=GOOD),
    st.sampled_from(sorted(GOOD)).flatmap(one_bad),
    st.fixed_dictionaries({"learnig_rate": st.floats(1e-4, 1e-3)}, optional=GOOD),  # a typo'd key
)
outcomes: dict[str, int] = {}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=random_configs)
def test_random_configs_train_or_raise_config_error(data):
    try:
        # Keys the example leaves out take small values, so that an update stays cheap.
        cfg = PPOConfig.from_dict({**SMALL, **data})
        model = PPO(cfg.env_id, cfg)
    except ConfigError:
        outcomes["config_error"] = outcomes.get("config_error", 0) + 1
        return
    outcomes["trained"] = outcomes.get("trained", 0) + 1
    metrics = []
    try:
        model.learn(cfg.rollout_size, callback=lambda m, x: metrics.append(x))
    finally:
        model.close()
    assert len(metrics) == 1 and model.num_updates == 1
    for key in ("train/policy_loss", "train/value_loss", "train/entropy", "train/loss"):
        assert np.isfinite(metrics[0][key]), (key, metrics[0])
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


def test_the_random_configs_exercise_both_outcomes():
    # Runs after the property test (file order): both branches must have been taken, or the
    # property test above proved little.
    assert outcomes.get("trained", 0) >= 5 and outcomes.get("config_error", 0) >= 5, outcomes
