"""Invalid-action masking (rl/masking.py): masked actions have probability exactly 0 in sampling,
log-prob and entropy; masks come from the env in three conventions, are stored and reused."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.errors import ConfigError, EnvConfigError, EnvStepError
from ppokit.rl.distributions import ActionDistribution
from ppokit.rl.ppo import PPO
from ppokit.rl.toy_envs import MaskedChoice
from ppokit.rl.update import ppo_loss, rollout_batch

SMALL = dict(num_envs=4, n_steps=32, batch_size=64, n_epochs=2, tensorboard=False)


def _by_hand(logits: list[float], allowed: list[bool]) -> tuple[np.ndarray, float]:
    """Probabilities (0 where masked) and entropy over the allowed actions, in float64 numpy."""
    z = np.array(logits, np.float64)
    a = np.array(allowed)
    p = np.where(a, np.exp(z - z[a].max()), 0.0)
    p /= p.sum()
    return p, float(-(p[a] * np.log(p[a])).sum())


def test_masked_categorical_log_prob_and_entropy_by_hand():
    dist = ActionDistribution(gym.spaces.Discrete(5))
    logits = [[0.3, -1.2, 2.0, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]]
    allowed = [[True, False, False, True, True], [False, True, False, False, True]]
    out, mask = torch.tensor(logits), torch.tensor(allowed)
    for a in range(5):
        actions = torch.full((2,), a)
        logp, entropy = dist.log_prob_entropy(out, actions, mask=mask)
        for row in range(2):
            p, h = _by_hand(logits[row], allowed[row])
            if allowed[row][a]:
                assert logp[row].item() == pytest.approx(np.log(p[a]), abs=1e-6)
            else:
                assert logp[row].item() == -np.inf and torch.exp(logp[row]).item() == 0.0
            assert entropy[row].item() == pytest.approx(h, abs=1e-6)
    # the second row: two equally likely valid actions, entropy log 2
    assert entropy[1].item() == pytest.approx(np.log(2), abs=1e-6)
    # without a mask nothing changes
    plain_logp, plain_h = dist.log_prob_entropy(out, torch.tensor([2, 0]))
    ref = torch.log_softmax(out, -1)
    assert torch.allclose(plain_logp, ref[[0, 1], [2, 0]]) and torch.allclose(
        plain_h, -(ref.exp() * ref).sum(-1)
    )


def test_masked_multidiscrete_log_prob_and_entropy_by_hand():
    dist = ActionDistribution(gym.spaces.MultiDiscrete([3, 4]))
    logits = [0.5, -0.5, 1.5, 0.1, 0.2, -2.0, 3.0]
    allowed = [True, True, False, False, True, True, False]
    out, mask = torch.tensor([logits]), torch.tensor([allowed])
    p0, h0 = _by_hand(logits[:3], allowed[:3])
    p1, h1 = _by_hand(logits[3:], allowed[3:])
    logp, entropy = dist.log_prob_entropy(out, torch.tensor([[1, 2]]), mask=mask)
    assert logp.item() == pytest.approx(np.log(p0[1]) + np.log(p1[2]), abs=1e-6)
    assert entropy.item() == pytest.approx(h0 + h1, abs=1e-6)
    logp, _ = dist.log_prob_entropy(out, torch.tensor([[2, 1]]), mask=mask)
    assert logp.item() == -np.inf


def test_masked_gradients_are_finite_and_zero_for_masked_logits():
    dist = ActionDistribution(gym.spaces.MultiDiscrete([3, 2]))
    out = torch.randn(4, 5, requires_grad=True)
    mask = torch.tensor([[True, False, True, True, False]] * 4)
    logp, entropy = dist.log_prob_entropy(out, torch.tensor([[0, 0], [2, 0], [0, 0], [2, 0]]), mask=mask)
    (logp.sum() + entropy.sum()).backward()
    assert torch.isfinite(out.grad).all()
    assert (out.grad[:, ~mask[0]] == 0).all() and (out.grad[:, mask[0]] != 0).any()


@pytest.mark.parametrize(
    "space", [gym.spaces.Discrete(6), gym.spaces.MultiDiscrete([4, 3, 2])], ids=["discrete", "multidiscrete"]
)
def test_sampling_never_returns_a_masked_action(space):
    torch.manual_seed(0)
    dist = ActionDistribution(space)
    n = 20_000
    mask = torch.rand(n, dist.out_dim) < 0.4
    for start, k in zip(np.cumsum([0] + dist.nvec[:-1]), dist.nvec):
        mask[torch.arange(n), start + torch.randint(k, (n,))] = True  # at least one valid per sub-action
    out = torch.randn(n, dist.out_dim) * 3  # some masked logits are the largest
    for deterministic in (False, True):
        actions, logp = dist.sample(out, deterministic=deterministic, mask=mask)
        actions = actions.reshape(n, -1)
        offsets = torch.tensor(np.cumsum([0] + dist.nvec[:-1]))
        assert mask.gather(1, actions + offsets).all()
        assert torch.isfinite(logp).all()
        assert torch.allclose(logp, dist.log_prob_entropy(out, actions.squeeze(-1), mask=mask)[0], atol=1e-5)


class _EmptyMaskEnv(gym.Env):
    """Env 1 of the vector env gives a mask with no valid action at its third step."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def __init__(self):
        self.t = 0
        self.index = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        if self.index is None:  # the vector env resets env i with seed + i
            self.index = 0 if seed is None else seed % 2
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), 0.0, False, False, {}

    def action_masks(self):
        return np.full(3, not (self.index == 1 and self.t == 2))


def test_an_all_masked_row_names_the_env_and_the_step():
    model = PPO(_EmptyMaskEnv, num_envs=2, n_steps=8, batch_size=16, seed=0, tensorboard=False)
    assert model.masked
    with pytest.raises(
        EnvStepError, match=r"environment 1 gave an action mask with no valid action at step 4"
    ):
        model.learn(16)
    with pytest.raises(EnvStepError, match="observation 0 gave an action mask with no valid action"):
        model.predict(np.zeros(2, np.float32), action_masks=np.zeros(3, bool))
    model.close()


@pytest.mark.parametrize("via", ["method", "info", "dict"])
def test_each_mask_convention_is_used_stored_and_reused_by_the_update(via):
    model = PPO(functools.partial(MaskedChoice, mask_via=via), seed=2, **SMALL)
    assert model.masked and model.manual_grad is None  # the fast path has no masked softmax
    assert model.observation_space.shape == (32,)  # a Dict's action_mask key is not shown to the network
    model.collector.collect(model.buffer)
    buf = model.buffer
    assert buf.masks.shape == (32, 4, 16) and buf.masks.sum(-1).eq(3).all()
    assert buf.masks.gather(-1, buf.actions.long()[..., None]).all()  # only valid actions were taken
    assert (buf.rewards > 0).all()  # no invalid action ended an episode
    data = rollout_batch(buf, 0.99, 0.95, model.device)
    _, terms = ppo_loss(model.policy, data, 0.2, 1.0, model.config)
    assert abs(float(terms["ratio_mean"]) - 1.0) < 1e-6  # the stored masks reproduce the rollout's logp
    unmasked = {k: v for k, v in data.items() if k != "masks"}
    _, terms = ppo_loss(model.policy, unmasked, 0.2, 1.0, model.config)
    assert abs(float(terms["ratio_mean"]) - 1.0) > 1e-3
    model.close()


def test_masking_can_be_required_or_switched_off():
    off = PPO(MaskedChoice, action_masking=False, seed=0, **SMALL)
    assert not off.masked and off.buffer.masks is None and off.manual_grad is not None
    off.collector.collect(off.buffer)
    assert (off.buffer.rewards < 0).any()  # without masks invalid actions are taken
    off.close()
    with pytest.raises(EnvConfigError, match="action_masking=true is not allowed for .*no action masks"):
        PPO("CartPole-v1", action_masking=True, **SMALL)
    with pytest.raises(ConfigError, match="manual_grad=True is not allowed here: the env gives action masks"):
        PPO(MaskedChoice, manual_grad=True, **SMALL)


def test_predict_and_evaluate_take_the_mask():
    model = PPO(MaskedChoice, seed=0, **SMALL)
    obs = np.zeros((3, 32), np.float32)
    only = np.zeros((3, 16), bool)
    only[[0, 1, 2], [3, 7, 15]] = True
    for deterministic in (True, False):
        action, state = model.predict(obs, deterministic=deterministic, action_masks=only)
        assert action.tolist() == [3, 7, 15] and state is None
    result = model.evaluate(episodes=4)  # masks from the evaluation envs: never an invalid action
    assert min(result["returns"]) >= 16 * 0.1 - 1e-9
    model.close()


def test_masking_with_a_recurrent_policy():
    model = PPO(MaskedChoice, seed=0, **SMALL, network={"recurrent": "gru"})
    model.learn(256)
    assert model.buffer.masks.gather(-1, model.buffer.actions.long()[..., None]).all()
    assert (model.buffer.rewards > 0).all()
    model.close()


def test_with_masks_no_invalid_action_is_taken_and_it_learns():
    masked = PPO(MaskedChoice, seed=0, **dict(SMALL, n_epochs=4, learning_rate=3e-3))
    rewards = []
    masked.learn(4096, callback=lambda m, _: rewards.append(m.buffer.rewards.clone()))
    rewards = torch.stack(rewards)
    assert (rewards > 0).all()
    # the best of the valid actions pays 1, another 0.1: the share of 1s grows from ~1/3
    assert (rewards[-4:] == 1).float().mean() > (rewards[:2] == 1).float().mean() + 0.2
    masked.close()


class _NextStepMaskedVectorEnv(gym.vector.VectorEnv):
    """A NEXT_STEP vector env whose masks allow nothing on an episode's last observation (a finished
    game): the env ignores the action of the reset step after it, so that is no error."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 3, length: int = 3):
        self.num_envs, self.length = num_envs, length
        self.single_observation_space = gym.spaces.Box(0, 10, (1,), np.float32)
        self.single_action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.t = np.arange(num_envs) % length  # staggered episodes
        self.reset_next = np.zeros(num_envs, bool)

    def reset(self, *, seed=None, options=None):
        self.t[:] = 0
        return self.t[:, None].astype(np.float32), {}

    def step(self, actions):
        reward = np.where(self.reset_next, 0.0, 1.0)
        self.t = np.where(self.reset_next, 0, self.t + 1)
        terminated = (self.t == self.length) & ~self.reset_next
        self.reset_next = terminated
        return self.t[:, None].astype(np.float32), reward, terminated, np.zeros_like(terminated), {}

    def action_masks(self):
        masks = np.ones((self.num_envs, 3), bool)
        masks[self.t == self.length] = False  # the finished episodes' last observation
        masks[self.t != self.length, 2] = False
        return masks


def test_next_step_envs_may_allow_nothing_on_the_ignored_reset_step():
    from ppokit.rl.config import NetworkConfig
    from ppokit.rl.networks import MlpActorCritic
    from ppokit.rl.rollout import Collector, RolloutBuffer

    venv = _NextStepMaskedVectorEnv()
    policy = MlpActorCritic(venv.single_observation_space, venv.single_action_space, NetworkConfig())
    collector = Collector(venv, policy, torch.device("cpu"), 0, None, None)
    assert collector.mask_source is not None and not collector.same_step
    buf = RolloutBuffer.allocate(12, 3, (1,), (), torch.long, mask_dim=3)
    collector.collect(buf)
    assert (~buf.valid).any()  # reset steps happened
    assert (buf.actions[buf.valid] != 2).all()  # action 2 is masked on every real step


def test_masks_survive_save_load_and_exact_resume(tmp_path):
    cfg = dict(SMALL, seed=4, checkpoint_every=128, keep_checkpoints=10)
    a = PPO("ppokit/MaskedChoice-v0", run_dir=tmp_path / "a", **cfg).learn(4 * 128)
    b = PPO.resume(tmp_path / "a" / "checkpoints" / f"step_{2 * 128:012d}", run_dir=tmp_path / "b")
    assert b.resume_info["env_state_restored"], b.resume_info
    b.learn()
    params = lambda m: torch.cat([p.detach().flatten() for p in m.policy.parameters()])
    assert torch.equal(params(a), params(b)) and torch.equal(a.collector.mask, b.collector.mask)
    a.save(tmp_path / "model")
    loaded = PPO.load(tmp_path / "model")
    assert loaded.masked and loaded.manual_grad is None
    result = loaded.evaluate(episodes=4)
    assert min(result["returns"]) >= 16 * 0.1 - 1e-9  # never an invalid action
    for m in (a, b, loaded):
        m.close()


def test_masked_multibinary_by_hand():
    from ppokit.rl.masking import mask_dim, masked_binary

    assert mask_dim(gym.spaces.MultiBinary(3)) == 6
    out = torch.tensor([[0.7, -1.3, 2.0]])
    free = torch.ones(1, 6, dtype=torch.bool)
    forced = torch.tensor([[True, True, False, True, True, False]])  # bit 1 must be 1, bit 2 must be 0
    p = torch.sigmoid(out)[0].double()
    bern = lambda q: float(-(q * q.log() + (1 - q) * (1 - q).log()))
    actions = torch.tensor([[1.0, 1.0, 0.0]])
    _, logp, entropy = masked_binary(out, free, actions)
    assert logp.item() == pytest.approx(float(p[0].log() + p[1].log() + (1 - p[2]).log()), abs=1e-6)
    assert entropy.item() == pytest.approx(sum(bern(q) for q in p), abs=1e-6)
    _, logp, entropy = masked_binary(out, forced, actions)
    assert logp.item() == pytest.approx(float(p[0].log()), abs=1e-6)  # the forced bits have p = 1
    assert entropy.item() == pytest.approx(bern(p[0]), abs=1e-6)
    _, logp, _ = masked_binary(out, forced, torch.tensor([[1.0, 0.0, 0.0]]))
    assert logp.item() == -np.inf
    many = forced.expand(5000, 6)
    sampled, logp, _ = masked_binary(out.expand(5000, 3), many)
    assert (sampled[:, 1] == 1).all() and (sampled[:, 2] == 0).all() and torch.isfinite(logp).all()
    assert abs(sampled[:, 0].mean().item() - p[0].item()) < 0.03


class _MaskedBits(gym.Env):
    """MultiBinary(3) actions; bit 0 must be 1 and bit 2 must be 0 (``info["action_mask"]``)."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.MultiBinary(3)
    MASK = np.array([False, True, True, True, True, False])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {"action_mask": self.MASK}

    def step(self, action):
        ok = action[0] == 1 and action[2] == 0
        return np.zeros(2, np.float32), float(action[1]), not ok, False, {"action_mask": self.MASK}


def test_multibinary_masks_through_ppo():
    model = PPO(lambda: gym.wrappers.TimeLimit(_MaskedBits(), 8), seed=0, **SMALL)
    assert model.masked and model.buffer.masks.shape[-1] == 6
    model.learn(256)
    acts = model.buffer.actions
    assert (acts[..., 0] == 1).all() and (acts[..., 2] == 0).all() and (model.buffer.terminated == 0).all()
    data = rollout_batch(model.buffer, 0.99, 0.95, model.device)
    logp, _ = model.policy.dist.log_prob_entropy(
        model.policy(data["obs"])[0], data["actions"], mask=data["masks"]
    )
    assert torch.isfinite(logp).all()
    action, _ = model.predict(np.zeros(2, np.float32), action_masks=_MaskedBits.MASK)
    assert action[0] == 1 and action[2] == 0
    model.close()


class _DictWithMask(gym.Env):
    """A Dict observation with other keys besides action_mask (a board and a turn flag)."""

    observation_space = gym.spaces.Dict(
        {
            "board": gym.spaces.Box(0, 1, (4,), np.float32),
            "turn": gym.spaces.Discrete(2),
            "action_mask": gym.spaces.MultiBinary(4),
        }
    )
    action_space = gym.spaces.Discrete(4)

    def _obs(self):
        self.mask = np.zeros(4, np.int8)
        self.mask[self.np_random.choice(4, 2, replace=False)] = 1
        return {"board": self.mask.astype(np.float32), "turn": int(self.t % 2), "action_mask": self.mask}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        ok = bool(self.mask[int(action)])
        self.t += 1
        return self._obs(), 1.0 if ok else -1.0, not ok, self.t >= 8, {}


def test_a_dict_observation_keeps_its_other_keys_without_the_mask():
    model = PPO(_DictWithMask, seed=0, **SMALL)
    assert model.masked and set(model.observation_space.spaces) == {"board", "turn"}
    model.learn(256)
    assert (model.buffer.rewards > 0).all()
    action, _ = model.predict({"board": np.ones(4, np.float32), "turn": 0}, action_masks=[0, 0, 1, 0])
    assert action == 2
    model.close()
