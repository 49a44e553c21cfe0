"""Honest evaluation (issue 30): Atari reports the full game's raw score (all lives, unclipped rewards)
and says so; a deterministic score far below training's comes with a measured hint to use --stochastic;
``--video`` writes mp4 files and ``--render`` is refused clearly without a display."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.cli import main
from ppokit.rl.envs import RAW_SCORE, make_vec_env
from ppokit.rl.ppo import PPO

# configs/ALE/*.yaml's preprocessing: training sees one life at a time, rewards clipped to their sign
ATARI_KWARGS = dict(
    repeat_action_probability=0.0, frameskip=4, maxpool=True, img_height=84, img_width=84, grayscale=True,
    stack_num=4, noop_max=30, use_fire_reset=True, episodic_life=True, reward_clipping=True,
)  # fmt: skip
ATARI_TINY = dict(
    env_kwargs=ATARI_KWARGS, num_envs=2, n_steps=16, batch_size=32, n_epochs=1, total_timesteps=32,
    tensorboard=False, network={"image_encoder": "nature", "cnn_features": 64},
)  # fmt: skip


def _atari(game: str) -> PPO:
    pytest.importorskip("ale_py")
    model = PPO(game, ATARI_TINY)
    model.learn(32)
    return model


def test_atari_eval_is_the_whole_game_unclipped():
    """SpaceInvaders' invaders are worth 5 to 30 points: a clipped return would count kills (and one
    life would end the episode); the reported return is the game's score at game over."""
    model = _atari("ALE/SpaceInvaders-v5")
    result = model.evaluate(2, deterministic=False)
    model.close()
    assert result["score"] == RAW_SCORE
    assert result["final_lives"] == [0, 0]  # every episode ran to game over, over all 3 lives
    returns = np.array(result["returns"])
    assert np.all(returns % 5 == 0) and returns.max() > 30, returns  # raw points, not a count of kills


def test_atari_eval_equals_a_manual_raw_rollout():
    """The same deterministic policy played by hand in the raw game (no episodic life, no clipping,
    FIRE after each lost life as FireResetEnv does) scores exactly what ``evaluate`` reports."""
    model = _atari("ALE/Breakout-v5")
    result = model.evaluate(1, deterministic=True, seed=123)
    raw = make_vec_env(
        "ALE/Breakout-v5", 1, "auto", {**ATARI_KWARGS, "episodic_life": False, "reward_clipping": False}
    )
    obs, info = raw.reset(seed=123)
    lives, total, steps, done, fire_next = info["lives"], 0.0, 0, False, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        if fire_next:
            action = np.array([1])  # Breakout's FIRE
        obs, reward, terminated, truncated, info = raw.step(action)
        total, steps, done = total + float(reward[0]), steps + 1, bool(terminated[0] or truncated[0])
        fire_next, lives = bool(info["lives"][0] < lives[0]), info["lives"]
    raw.close()
    model.close()
    assert result["returns"] == [round(total, 4)] and result["mean_length"] == steps
    assert lives[0] == 0 and steps > 5 * 20  # five lives, not one


def test_atari_cli_says_what_the_score_is(tmp_path, capsys):
    model = _atari("ALE/Breakout-v5")
    model.save(tmp_path / "run" / "model")
    model.close()
    assert main(["eval", str(tmp_path / "run"), "--episodes", "1"]) == 0
    assert "score counted over the full game: all lives, unclipped rewards" in capsys.readouterr().out


# -- deterministic far below stochastic ------------------------------------------------------------------
class FindTheExit(gym.Env):
    """One blank observation; action 1 leaves with reward 1, action 0 stays (truncated at 20 steps)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), float(action == 1), bool(action == 1), False, {}


gym.register("PPOKitTest/FindTheExit-v0", entry_point=FindTheExit, max_episode_steps=20)


def _argmax_loops(run_dir):
    """A trained run whose policy prefers 'stay' (p = 0.73): its argmax never leaves, sampling does."""
    model = PPO("PPOKitTest/FindTheExit-v0", num_envs=2, n_steps=32, batch_size=64, tensorboard=False)
    model.set_run_dir(run_dir)
    model.learn(128)
    with torch.no_grad():
        model.policy.actor_head.weight.zero_()
        model.policy.actor_head.bias.copy_(torch.tensor([1.0, 0.0]))
    model.save(run_dir / "model")
    model.close()


def test_deterministic_far_below_training_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    _argmax_loops(run)
    assert main(["eval", str(run), "--episodes", "4", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)  # still exactly one JSON object on stdout
    assert result["mean_return"] == 0.0 and result["hint"]["stochastic_mean"] > 0.5
    assert "--stochastic" in err and "far below the last training return" in err
    assert main(["eval", str(run), "--episodes", "4", "--stochastic"]) == 0
    out, err = capsys.readouterr()
    assert "(stochastic)" in out and "--stochastic" not in err  # sampling asked for: no hint


# -- video and render ---------------------------------------------------------------------------------
def test_eval_video_writes_mp4(tmp_path, monkeypatch, capsys):
    pytest.importorskip("moviepy", reason="the video extra: pip install 'ppokit[video]'")
    monkeypatch.chdir(tmp_path)
    tiny = [
        "--total-timesteps",
        "128",
        "--num-envs",
        "2",
        "--no-progress",
        "--no-eval",
        "--set",
        "n_steps=64",
    ]
    assert main(["train", "--env", "CartPole-v1", "--run-dir", "run", *tiny, "--set", "batch_size=64"]) == 0
    assert main(["eval", "run", "--episodes", "2", "--video", "videos"]) == 0
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == [
        "CartPole-v1-seed10000-episode-0.mp4",
        "CartPole-v1-seed10001-episode-0.mp4",
    ]
    assert all(v.stat().st_size > 1000 for v in videos)
    assert "videos: videos" in capsys.readouterr().out
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "run", "--render"])
    assert exit_info.value.code == 2
    assert "--render needs a display" in capsys.readouterr().err
