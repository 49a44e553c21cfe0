"""Every standard space: observations (images to a CNN stored uint8, one-hot discrete, Dict/Tuple
packed), actions (MultiBinary, n-D Box, tanh squashing), predict on raw observations, save/load/resume."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from space_envs import register_all

from ppokit.errors import ConfigError, EnvConfigError
from ppokit.rl.distributions import ActionDistribution
from ppokit.rl.encoders import EncoderActorCritic, ImageEncoder
from ppokit.rl.networks import MlpActorCritic
from ppokit.rl.ppo import PPO
from ppokit.rl.spaces import ObsLayout

register_all()
SMALL = dict(num_envs=8, n_steps=32, batch_size=64, seed=0, tensorboard=False, learning_rate=1e-3)

# (env id, extra config, learning budget, minimum mean return after it; random play scores about half
# of the 8 a perfect policy scores, FrozenLake's random policy ~0.015 of 1)
LEARNS = {
    "pixels": ("ppokit-test/BrightSideEnv-v0", {}, 6_000, 7.0),
    "dict": ("ppokit-test/DictObsEnv-v0", {}, 15_000, 6.5),
    "frozenlake": ("FrozenLake-v1", {"env_kwargs": {"is_slippery": False}, "ent_coef": 0.01}, 15_000, 0.99),
    "multibinary": ("ppokit-test/CopyBitsEnv-v0", {}, 6_000, 7.0),
    "box2d": ("ppokit-test/MatrixTargetEnv-v0", {}, 15_000, 6.7),
}


@pytest.mark.parametrize("case", list(LEARNS))
def test_each_space_learns_above_a_random_policy(case):
    env_id, extra, budget, target = LEARNS[case]
    model = PPO(env_id, {**SMALL, **extra})
    random_return = _random_return(env_id, extra.get("env_kwargs", {}))
    model.learn(budget)
    result = model.evaluate(16)
    assert result["mean_return"] >= target > random_return, (case, result["mean_return"], random_return)
    model.close()


def _random_return(env_id: str, kwargs: dict, episodes: int = 32) -> float:
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(0)
    total = 0.0
    for i in range(episodes):
        env.reset(seed=i)
        done = False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            total += r
            done = term or trunc
    return total / episodes


def test_images_are_stored_uint8_and_scaled_on_the_device():
    model = PPO("ppokit-test/BrightSideEnv-v0", SMALL)
    assert model.obs_layout.kind == "image" and model.buffer.obs.dtype == torch.uint8
    assert isinstance(model.policy, EncoderActorCritic) and model.manual_grad is None
    model.collector.collect(model.buffer)
    assert model.buffer.obs.dtype == torch.uint8 and int(model.buffer.obs.max()) == 255
    # the encoder reads uint8 and scales by 1/255: the same features as float pixels / 255 fed in float
    enc = model.policy.encoder.encoders[0]
    x = model.buffer.obs[0]
    assert torch.allclose(enc(x), enc(x.float()))
    model.close()


@pytest.mark.parametrize("channels", ["last", "first"])
def test_channels_first_and_last_give_the_same_cnn_output(channels):
    space = gym.spaces.Box(0, 255, (1, 12, 12) if channels == "first" else (12, 12, 1), np.uint8)
    layout = ObsLayout(space)
    assert layout.kind == "image" and layout.leaves[0].channels == channels
    torch.manual_seed(0)
    enc = ImageEncoder(layout.leaves[0], "auto", 32, True)
    assert enc.arch == "small"
    img = torch.randint(0, 256, (2, 12, 12, 1), dtype=torch.uint8)
    x = img if channels == "last" else img.permute(0, 3, 1, 2).contiguous()
    ref = enc.linear(enc.cnn(img.permute(0, 3, 1, 2).float() / 255.0))
    assert torch.allclose(enc(x), ref, atol=1e-6)


def test_nature_cnn_refuses_small_images_and_auto_picks_it_for_atari_sizes():
    big = ObsLayout(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)).leaves[0]
    assert ImageEncoder(big, "auto", 512, True).arch == "nature"
    small = ObsLayout(gym.spaces.Box(0, 255, (12, 12, 3), np.uint8)).leaves[0]
    with pytest.raises(ConfigError, match="network.image_encoder='nature'"):
        ImageEncoder(small, "nature", 512, True)


def test_packed_layout_of_dict_and_tuple_spaces():
    space = gym.spaces.Dict(
        {
            "a": gym.spaces.Discrete(3, start=5),
            "b": gym.spaces.Tuple((gym.spaces.MultiBinary(2), gym.spaces.MultiDiscrete([2, 4]))),
        }
    )
    layout = ObsLayout(space)
    assert layout.kind == "packed" and layout.shape == (5,) and layout.np_dtype == np.uint8
    obs = {"a": 7, "b": (np.array([1, 0], np.int8), np.array([1, 3]))}
    assert layout.is_single(obs)
    assert layout.encode_one(obs).tolist() == [2, 1, 0, 1, 3]  # Discrete stored 0-based
    batch = {"a": np.array([5, 6]), "b": (np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 2]]))}
    assert not layout.is_single(batch)
    assert layout.encode(batch).tolist() == [[0, 0, 1, 0, 0], [1, 1, 1, 1, 2]]
    with_float = ObsLayout(gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (1,)))))
    assert with_float.np_dtype == np.float32


def test_unsupported_observation_spaces_are_refused_naming_the_key():
    space = gym.spaces.Dict(
        {"image": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), "text": gym.spaces.Text(5)}
    )
    with pytest.raises(EnvConfigError, match=r"observation\['text'\].*FilterObservation"):
        ObsLayout(space)


def test_normalize_obs_is_refused_for_non_box_observations():
    with pytest.raises(ConfigError, match="normalize_obs=True is not allowed for image"):
        PPO("ppokit-test/BrightSideEnv-v0", SMALL, normalize_obs=True)


# -- actions -------------------------------------------------------------------------------------------
def test_tanh_squashing_log_prob_against_a_hand_computed_reference():
    space = gym.spaces.Box(np.array([-2.0, 0.0]), np.array([2.0, 1.0]), dtype=np.float32)
    dist = ActionDistribution(space, "tanh")
    assert dist.kind == "squashed_box"
    mean = torch.tensor([[0.3, -1.2], [2.5, 0.1]])
    log_std = torch.tensor([-0.5, 0.2])
    u = torch.tensor([[0.1, -3.0], [4.0, 0.7]])
    logp, _ = dist.log_prob_entropy(mean, u, log_std)
    # by hand: log N(u; mean, std) - sum log |da/du|, a = low + (tanh(u) + 1) (high - low) / 2
    std = log_std.exp().double()
    u64, m64 = u.double(), mean.double()
    log_normal = (-((u64 - m64) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
    half_range = torch.tensor([2.0, 0.5], dtype=torch.float64)
    log_det = torch.log((1 - torch.tanh(u64) ** 2) * half_range).sum(-1)
    assert torch.allclose(logp.double(), log_normal - log_det, atol=1e-5)
    a = dist.to_env(u.numpy())
    expected = np.array([-2.0, 0.0]) + (np.tanh(u.numpy().astype(np.float64)) + 1) * np.array([2.0, 0.5])
    assert np.allclose(a, expected, atol=1e-6) and (a >= space.low).all() and (a <= space.high).all()
    with pytest.raises(EnvConfigError, match="unbounded"):
        ActionDistribution(gym.spaces.Box(-np.inf, np.inf, (2,)), "tanh")


def test_multibinary_log_prob_and_entropy_match_torch_bernoulli():
    dist = ActionDistribution(gym.spaces.MultiBinary([2, 3]))
    assert dist.kind == "multibinary" and dist.action_shape == (6,) and dist.out_dim == 6
    logits = torch.randn(5, 6)
    actions = (torch.rand(5, 6) < 0.5).float()
    logp, entropy = dist.log_prob_entropy(logits, actions)
    ref = torch.distributions.Bernoulli(logits=logits)
    assert torch.allclose(logp, ref.log_prob(actions).sum(-1), atol=1e-6)
    assert torch.allclose(entropy, ref.entropy().sum(-1), atol=1e-6)
    env_actions = dist.to_env(actions.numpy())
    assert env_actions.shape == (5, 2, 3) and env_actions.dtype == np.int8


def test_nd_box_actions_are_stored_flat_and_given_to_the_env_in_shape():
    model = PPO("ppokit-test/MatrixTargetEnv-v0", SMALL)
    assert model.buffer.actions.shape[2:] == (4,) and isinstance(model.policy, MlpActorCritic)
    assert model.manual_grad is not None  # flat n-D Box actions: the same math as a 1-D Box
    action, _ = model.predict(np.zeros((2, 2), np.float32))
    assert action.shape == (2, 2)
    model.learn(model.config.rollout_size)  # the env asserts it gets (2, 2) actions
    model.close()


# -- predict on raw observations --------------------------------------------------------------------------
class _Recorder(gym.Wrapper):
    """Records every observation the agent saw and the action the env then got (None: no action, the
    episode's last observation)."""

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        self.log = getattr(self, "log", [])
        self.log.append([obs, None])
        return obs, info

    def step(self, action):
        self.log[-1][1] = np.array(action, copy=True)
        obs, *rest = self.env.step(action)
        self.log.append([obs, None])
        return (obs, *rest)


RAW = {
    "dict": ("ppokit-test/DictObsEnv-v0", {}),
    "frozenlake": ("FrozenLake-v1", {"env_kwargs": {"is_slippery": False}}),
    "pixels": ("ppokit-test/BrightSideEnv-v0", {}),
    "multibinary": ("ppokit-test/CopyBitsEnv-v0", {}),
    "tuple": ("ppokit-test/TupleObsEnv-v0", {}),
    "squashed": ("Pendulum-v1", {"network": {"action_bounds": "tanh"}}),
    "box2d": ("ppokit-test/MatrixTargetEnv-v0", {}),
}


@pytest.mark.parametrize("case", list(RAW))
def test_predict_on_raw_observations_equals_the_action_used_in_training(case):
    env_id, extra = RAW[case]
    cfg = {**SMALL, **extra, "num_envs": 2, "n_steps": 8, "batch_size": 16, "vectorization": "sync"}
    model = PPO(env_id, {**cfg, "env_wrappers": ["test_rl_spaces._Recorder"]})
    model.learn(16)  # move the parameters away from their initial values
    act = model.policy.act
    model.policy.act = lambda obs, deterministic=False: act(obs, True)  # a deterministic rollout
    start = [
        len(sub.get_wrapper_attr("log")) - 1 for sub in model.venv.envs
    ]  # the observation the rollout starts from
    model.collector.collect(model.buffer)
    del model.policy.act
    pairs = [
        (o, a)
        for sub, i in zip(model.venv.envs, start)
        for o, a in sub.get_wrapper_attr("log")[i:]
        if a is not None
    ]
    assert len(pairs) == 2 * 8
    for obs, env_action in pairs:
        action, _ = model.predict(obs, deterministic=True)
        assert np.asarray(action).dtype == env_action.dtype and action.shape == env_action.shape
        if env_action.dtype.kind == "f":  # a batch of one may round differently in the last bit (BLAS)
            assert np.allclose(action, env_action, rtol=1e-5, atol=1e-6), (case, obs, action, env_action)
        else:
            assert np.array_equal(action, env_action), (case, obs, action, env_action)
    batch = {k: np.stack([o[k] for o, _ in pairs]) for k in pairs[0][0]} if case == "dict" else None
    if batch is not None:  # a batch of raw dict observations, as a vector env gives them
        actions, _ = model.predict(batch, deterministic=True)
        assert np.array_equal(actions, np.stack([a for _, a in pairs]))
    model.close()
