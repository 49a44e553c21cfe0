"""env_backend: envpool (issue 33): config validation, truncation and return bookkeeping against the
gymnasium backend on the same env, Atari returns of the whole game, seeding and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppokit.errors import ConfigError, EnvConfigError
from ppokit.rl.config import PPOConfig
from ppokit.rl.ppo import PPO
from ppokit.rl.rollout import EpisodeStats
from ppokit.train.checkpoint import load_checkpoint

pytest.importorskip("envpool", reason="the envpool extra is not installed (pip install 'ppokit[envpool]')")
pytest.importorskip("mujoco", reason="the mujoco extra is not installed")

from ppokit.rl.envpool_backend import EnvPoolVectorEnv  # noqa: E402

# a 20-step time limit: every env is truncated several times within a few hundred steps
CHEETAH = dict(
    env_kwargs={"max_episode_steps": 20}, num_envs=2, n_steps=64, batch_size=64, n_epochs=1, tensorboard=False
)


def test_env_backend_choices_are_validated():
    allowed = r"env_backend='ray' is not allowed; choose one of \['gymnasium', 'envpool'\]"
    with pytest.raises(ConfigError, match=allowed):
        PPOConfig.from_dict({"env_backend": "ray"})


NOT_WITH = r"is not allowed with env_backend='envpool'"
REFUSED = [
    (dict(env_id="HalfCheetah-v9"), rf"env_id='HalfCheetah-v9' {NOT_WITH}.*closest: HalfCheetah-v"),
    (dict(env_id="ALE/Pongg-v5"), rf"env_id='ALE/Pongg-v5' {NOT_WITH}.*closest: Pong-v5"),
    (dict(vectorization="async"), rf"vectorization='async' {NOT_WITH}.*use 'auto'"),
    (dict(env_wrappers=["gymnasium.wrappers.ClipReward"]), rf"env_wrappers=.* {NOT_WITH}"),
    (
        dict(env_kwargs={"max_episode_step": 5}),
        r"env_kwargs=\{'max_episode_step': 5\} is not allowed for env_id='CartPole-v1'.*"
        r"keys: .*max_episode_steps",
    ),
    (dict(env_kwargs={"seed": 5}), rf"env_kwargs=\{{'seed': 5\}} {NOT_WITH}: ppokit sets it"),
]


@pytest.mark.parametrize(
    ("overrides", "message"),
    REFUSED,
    ids=["unknown-id", "unknown-atari-id", "vectorization", "wrappers", "unknown-kwarg", "reserved-kwarg"],
)
def test_settings_envpool_cannot_take_are_one_line_errors(overrides, message):
    cfg = dict(env_id="CartPole-v1", env_backend="envpool", num_envs=2, n_steps=8, batch_size=16)
    with pytest.raises(ConfigError, match=message) as e:
        PPO(**{**cfg, **overrides})
    assert "\n" not in str(e.value)
    if "env_id" in overrides:
        assert isinstance(e.value, EnvConfigError)


def test_a_custom_env_is_refused():
    with pytest.raises(ConfigError, match="env_backend='envpool' is not allowed with a function env"):
        PPO(lambda: None, env_backend="envpool", num_envs=2, n_steps=8, batch_size=16)


def _episodes_from_buffer(model):
    """(return, length) of every episode that ended in the last rollout, from the stored transitions."""
    buf = model.buffer
    rewards, done, valid = buf.rewards.numpy(), buf.done.numpy(), buf.valid.numpy()
    out = []
    for i in range(rewards.shape[1]):
        start = 0
        for t in np.flatnonzero(done[:, i]):
            if start > 0:  # an episode that began in this rollout
                seg = slice(start, t + 1)
                out.append((float(rewards[seg, i][valid[seg, i]].sum()), int(valid[seg, i].sum())))
            start = t + 1
    return out


@pytest.mark.parametrize("backend", ["gymnasium", "envpool"])
def test_truncation_and_returns_match_the_gymnasium_backend(backend):
    """Both backends: every episode is truncated at 20 steps (HalfCheetah never terminates), is
    bootstrapped with V(final obs), and is logged with the return of its stored raw rewards."""
    model = PPO("HalfCheetah-v5", env_backend=backend, seed=4, **CHEETAH)
    model.learn(2 * 64 * 2)
    buf = model.buffer
    done, terminated, valid = buf.done.numpy(), buf.terminated.numpy(), buf.valid.numpy()
    assert done.any() and not terminated.any()  # truncations only
    recent = list(model.collector.episodes.recent)
    assert len(recent) >= 8 and all(n == 20 for _, n in recent)
    # the returns logged are the sums of the stored (unnormalised) rewards of each episode
    from_buffer = _episodes_from_buffer(model)
    assert from_buffer and all(n == 20 for _, n in from_buffer)
    assert np.allclose(sorted(r for r, _ in recent[-len(from_buffer) :]), sorted(r for r, _ in from_buffer))
    # bootstrap: next_values at a truncation is V of the episode's final observation (one more
    # rollout without an update, so the policy is the one that filled the buffer)
    model.collector.collect(buf)
    done, valid = buf.done.numpy(), buf.valid.numpy()
    t, i = map(int, np.argwhere(done[:-1])[0])
    if backend == "envpool":  # NEXT_STEP: the next step is the reset step, not a transition
        assert not valid[t + 1, i] and buf.rewards[t + 1, i] == 0
        final_obs = buf.obs[t + 1, i]  # the reset step's input is the final observation
        expected = model.policy.value(final_obs[None])[0]
        assert torch.allclose(buf.next_values[t, i], expected, atol=1e-5)
    else:  # SAME_STEP: the next stored observation is the new episode's; the bootstrap is not V of it
        assert valid.all()
        assert not torch.allclose(buf.next_values[t, i], model.policy.value(buf.obs[t + 1, i][None])[0])
    model.close()


def test_atari_returns_are_the_whole_games_raw_score():
    """Breakout with life-loss episodes and clipped rewards for training: the logged episode is the
    game (all 5 lives) and its return the raw score, as RecordEpisodeStatistics reports them."""
    kwargs = {"episodic_life": True, "reward_clipping": True, "maxpool": True, "frameskip": 4}
    venv = EnvPoolVectorEnv("ALE/Breakout-v5", 2, seed=0, env_kwargs=kwargs)
    venv.reset(seed=0)
    stats, rng = EpisodeStats(2), np.random.default_rng(0)
    prev_done = np.zeros(2, dtype=bool)
    lives_lost = games = 0
    game_return, game_len = np.zeros(2), np.zeros(2, dtype=int)
    expected = []
    for _ in range(600):
        _, reward, terminated, truncated, info = venv.step(rng.integers(0, 4, size=2))
        valid = ~prev_done
        game_return += info["reward"] * valid
        game_len += valid
        ep_reward, ep_done = venv.episode_view(reward, terminated, truncated, info)
        stats.add(ep_reward, ep_done, valid, 0, 0.0)
        lives_lost += int(terminated.sum())
        for i in np.flatnonzero(info["terminated"]):
            games += 1
            expected.append((float(game_return[i]), int(game_len[i])))
            game_return[i], game_len[i] = 0.0, 0
        prev_done = terminated | truncated
    venv.close()
    assert games >= 2 and lives_lost >= 5 * games  # a game is 5 training episodes
    assert list(stats.recent) == expected
    assert all(n > 100 for _, n in expected)  # whole games, not single lives (~25 steps each)


def test_seeding_reproduces_and_resume_reseeds(tmp_path):
    """Same seed, same run; a checkpoint says the envs' state is in C++, and a resumed run re-seeds
    (seed + steps so far) and resets, as the gymnasium backend does for MuJoCo."""
    cfg = dict(CHEETAH, seed=2, checkpoint_every=128, keep_checkpoints=5)
    a = PPO("HalfCheetah-v5", env_backend="envpool", run_dir=tmp_path / "a", **cfg).learn(256)
    b = PPO("HalfCheetah-v5", env_backend="envpool", **cfg).learn(256)
    params = lambda m: torch.cat([p.detach().flatten() for p in m.policy.parameters()])  # noqa: E731
    assert torch.equal(params(a), params(b))
    ckpt = tmp_path / "a" / "checkpoints" / f"step_{128:012d}"
    assert "EnvPool keeps its environments' state in C++" in load_checkpoint(ckpt)[1]["env_state_missing"]
    r1 = PPO.resume(ckpt, run_dir=tmp_path / "r1")
    assert not r1.resume_info["env_state_restored"]
    assert r1.config.env_backend == "envpool" and isinstance(r1.venv, EnvPoolVectorEnv)
    assert r1.venv.pool_seed == 2 + 128  # PPO.resume's re-seed
    fresh = EnvPoolVectorEnv("HalfCheetah-v5", 2, env_kwargs={"max_episode_steps": 20})
    first = fresh.reset(seed=130)[0]
    assert np.array_equal(r1.collector.raw_obs, first.astype(np.float32))
    fresh.step(np.zeros((2, 6)))
    assert np.array_equal(fresh.reset(seed=130)[0], first)  # reset(seed=) starts the same episodes again
    assert not np.array_equal(fresh.reset(seed=131)[0], first)
    r1.learn()
    # resumed twice (one after the other: a resume restores the process-wide RNGs), the same run
    r2 = PPO.resume(ckpt, run_dir=tmp_path / "r2")
    r2.learn()
    assert r1.num_timesteps == 256 and torch.equal(params(r1), params(r2))
    for m in (a, b, r1, r2):
        m.close()
    fresh.close()
