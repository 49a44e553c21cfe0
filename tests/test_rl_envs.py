"""Finding a user's environment (module:Id, gym_packages, known namespaces), wrappers from the config,
one-line errors for missing packages, no run directory left by a failed start, save/load/resume for
every new space, and an ALE id from the command line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from space_envs import register_all

from ppokit.cli import main
from ppokit.config import ConfigError
from ppokit.errors import EnvError, MissingDependencyError
from ppokit.rl.envfind import find_spec
from ppokit.rl.ppo import PPO

register_all()
SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--total-timesteps", "256", "--num-envs", "2", "--no-progress", "--set", "n_steps=64"]
TINY += ["--set", "batch_size=64", "--set", "n_epochs=1", "--set", "tensorboard=false"]

CORRIDOR = """
import gymnasium as gym


class Corridor(gym.Env):
    observation_space = gym.spaces.Discrete(4)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self.pos, {}

    def step(self, action):
        self.pos = max(0, min(3, self.pos + (1 if action == 1 else -1)))
        return self.pos, float(self.pos == 3), self.pos == 3, False, {}


gym.register("{name}-v0", entry_point=Corridor, max_episode_steps=20)
"""


def _main(argv: list[str]) -> int:
    """``ppokit.cli.main``'s exit code (its error boundary exits with 2)."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def _user_module(tmp_path: Path, monkeypatch, name: str) -> str:
    (tmp_path / f"{name}.py").write_text(CORRIDOR.replace("{name}", name.capitalize()))
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name.capitalize()}-v0"


def test_module_colon_id_from_a_users_file(tmp_path, monkeypatch, capsys):
    env = _user_module(tmp_path, monkeypatch, "corridor_a")
    monkeypatch.chdir(tmp_path)
    assert (
        main(["train", "--env", f"corridor_a:{env}", "--run-dir", "run", "--set", "eval_episodes=2", *TINY])
        == 0
    )
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["env_id"] == f"corridor_a:{env}"
    assert main(["eval", "run", "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 2


def test_gym_packages_option_imports_before_the_lookup(tmp_path, monkeypatch, capsys):
    env = _user_module(tmp_path, monkeypatch, "corridor_b")
    monkeypatch.chdir(tmp_path)
    assert _main(["train", "--env", env, "--no-eval", "--run-dir", "without", *TINY]) == 2
    err = capsys.readouterr().err
    assert (
        "not a registered Gymnasium environment" in err
        and "gym_packages" in err
        and len(err.splitlines()) == 1
    )
    assert not (tmp_path / "without").exists()  # a failed start leaves no run directory
    assert (
        main(["train", "--env", env, "--gym-packages", "corridor_b", "--no-eval", "--run-dir", "r", *TINY])
        == 0
    )
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["gym_packages"] == ["corridor_b"]
    assert main(["resume", "r", "--total-timesteps", "512", "--no-eval", "--no-progress"]) == 0


def _cli(tmp_path: Path, *argv: str, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (pythonpath, str(SRC)) if p))
    cmd = [sys.executable, "-m", "ppokit", *argv]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_missing_optional_dependency_is_one_line_with_exit_2(tmp_path):
    # Box2D made unimportable, as on a machine without it: LunarLander's module raises DependencyNotInstalled
    fake = tmp_path / "fake"
    (fake / "Box2D").mkdir(parents=True)
    (fake / "Box2D" / "__init__.py").write_text("raise ImportError('No module named Box2D')\n")
    r = _cli(tmp_path, "train", "--env", "LunarLander-v3", "--no-progress", pythonpath=str(fake))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "pip install" in r.stderr and "box2d" in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(importlib.util.find_spec("highway_env") is not None, reason="highway-env is installed")
def test_a_known_namespace_whose_package_is_missing_names_the_install_command():
    with pytest.raises(
        MissingDependencyError, match=r"package 'highway-env' provides this id .* pip install"
    ):
        find_spec("highway-v0")


def test_a_missing_module_of_module_colon_id_is_one_line():
    with pytest.raises(MissingDependencyError, match="'no_such_module_xyz', which is not installed"):
        find_spec("no_such_module_xyz:Env-v0")


# -- wrappers from the config ------------------------------------------------------------------------------
def test_wrappers_from_set_are_saved_and_reapplied_by_eval_load_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flatten = "gymnasium.wrappers.FlattenObservation"
    wrappers = f"env_wrappers=[{flatten}, {{gymnasium.wrappers.TimeLimit: {{max_episode_steps: 3}}}}]"
    argv = ["train", "--env", "ppokit-test/DictObsEnv-v0", "--run-dir", "run", "--set", wrappers, *TINY]
    assert main([*argv, "--set", "eval_episodes=2"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["env_wrappers"]
    assert saved == [flatten, {"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 3}}]
    assert main(["eval", "run", "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mean_length"] == 3
    model = PPO.load(tmp_path / "run")
    assert isinstance(model.observation_space, gym.spaces.Box) and model.observation_space.shape == (105,)
    raw, _ = gym.make("ppokit-test/DictObsEnv-v0").reset(seed=0)  # the unwrapped env's dict
    with pytest.raises(
        EnvError, match=r"(?s)does not fit the model's observation space Box.*FlattenObservation"
    ):
        model.predict(raw)
    model.close()
    resumed = PPO.resume(tmp_path / "run")
    assert resumed.config.env_wrappers == saved and resumed.observation_space.shape == (105,)
    resumed.close()


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (["NoDots"], "env_wrappers\\[0\\]"),
        ([{"a.B": 3}], "env_wrappers\\[0\\]"),
        (["gymnasium.wrappers.NoSuchWrapper"], "has no 'NoSuchWrapper'"),
        (["no_such_pkg_abc.Wrapper"], "no_such_pkg_abc"),
        ([{"gymnasium.wrappers.TimeLimit": {"bogus": 1}}], "TimeLimit"),
    ],
)
def test_bad_wrapper_entries_are_refused_naming_the_entry(entry, match):
    with pytest.raises(ConfigError, match=match):
        PPO("CartPole-v1", num_envs=2, env_wrappers=entry, tensorboard=False)


def test_wrappers_turn_off_the_vector_entry_point():
    model = PPO(
        "CartPole-v1",
        num_envs=2,
        tensorboard=False,
        env_wrappers=["gymnasium.wrappers.RecordEpisodeStatistics"],
    )
    assert isinstance(model.venv, gym.vector.SyncVectorEnv)
    model.close()


def test_minigrid_trains_from_the_cli_with_its_default_wrapper(tmp_path, monkeypatch):
    pytest.importorskip("minigrid")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--env", "MiniGrid-Empty-5x5-v0", "--run-dir", "run", "--no-eval", *TINY]) == 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["env_wrappers"] == ["minigrid.wrappers.ImgObsWrapper"]


# -- save / load / resume for every new space ------------------------------------------------------------
ROUND_TRIPS = {
    "pixels": ("ppokit-test/BrightSideEnv-v0", {}),
    "dict": ("ppokit-test/DictObsEnv-v0", {}),
    "tuple": ("ppokit-test/TupleObsEnv-v0", {}),
    "frozenlake": ("FrozenLake-v1", {}),  # its state holds a bytes array: resumed with fresh episodes
    "multibinary": ("ppokit-test/CopyBitsEnv-v0", {}),
    "box2d": ("ppokit-test/MatrixTargetEnv-v0", {}),
    "squashed": ("Pendulum-v1", {"network": {"action_bounds": "tanh"}}),
}


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_save_load_and_exact_resume_for_each_space(tmp_path, case):
    env_id, extra = ROUND_TRIPS[case]
    rollout = 2 * 16
    cfg = dict(num_envs=2, n_steps=16, batch_size=16, n_epochs=2, seed=3, tensorboard=False)
    cfg.update(checkpoint_every=rollout, keep_checkpoints=10, vectorization="sync", **extra)
    a = PPO(env_id, run_dir=tmp_path / "a", **cfg).learn(4 * rollout)
    a.save(tmp_path / "model")
    loaded = PPO.load(tmp_path / "model")
    assert torch.equal(_params(a), _params(loaded))
    env = gym.make(env_id)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        act_a, act_b = a.predict(obs)[0], loaded.predict(obs)[0]
        assert np.array_equal(act_a, act_b)
    loaded.close()
    b = PPO.resume(tmp_path / "a" / "checkpoints" / f"step_{2 * rollout:012d}", run_dir=tmp_path / "b")
    b.learn()
    assert b.num_timesteps == a.num_timesteps
    if case == "frozenlake":  # exact where the env allows it: FrozenLake's state cannot be saved
        assert "FrozenLakeEnv.desc" in b.resume_info["env_state_missing"]
        a.close(), b.close()
        return
    assert b.resume_info["env_state_restored"], b.resume_info
    assert torch.equal(_params(a), _params(b))
    assert torch.equal(a.collector.obs, b.collector.obs) and a.collector.obs.dtype == a.obs_layout.dtype
    a.close()
    b.close()


# -- Atari ------------------------------------------------------------------------------------------------
def test_an_ale_id_trains_from_the_cli(tmp_path):
    pytest.importorskip("ale_py", reason="the atari extra (ale-py) is not installed")
    argv = ["train", "--env", "ALE/Pong-v5", "--total-timesteps", "2048", "--num-envs", "4", "--no-progress"]
    argv += ["--run-dir", "run", "--set", "n_steps=128", "--set", "batch_size=256", "--set", "n_epochs=1"]
    argv += ["--set", "eval_episodes=1", "--set", "env_kwargs.max_num_frames_per_episode=400"]
    r = _cli(tmp_path, *argv)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["network"]["image_encoder"] == "nature" and cfg["env_kwargs"]["episodic_life"] is True
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["episodes"] == 1
    model = PPO.load(tmp_path / "run")
    assert model.buffer.obs.dtype == torch.uint8 and model.obs_layout.shape == (4, 84, 84)
    assert type(model.venv).__name__ == "AtariVectorEnv"
    model.close()


def test_user_env_file_runs_in_a_fresh_process(tmp_path):
    (tmp_path / "corridor_c.py").write_text(textwrap.dedent(CORRIDOR.replace("{name}", "Corridorc")))
    r = _cli(
        tmp_path, "train", "--env", "corridor_c:Corridorc-v0", "--no-eval", *TINY, pythonpath=str(tmp_path)
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("game", ["Pong", "Breakout"])
def test_atari_presets_hold_cleanrl_hyperparameters(game):
    from ppokit.rl.config import PPOConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "ALE" / f"{game}-v5.yaml"
    cfg = PPOConfig.load_yaml(path)
    assert cfg.env_id == f"ALE/{game}-v5" and (cfg.num_envs, cfg.n_steps, cfg.batch_size) == (8, 128, 256)
    assert (cfg.n_epochs, cfg.learning_rate, cfg.lr_schedule, cfg.clip_range) == (4, 2.5e-4, "linear", 0.1)
    assert (cfg.vf_clip_range, cfg.ent_coef, cfg.vf_coef, cfg.max_grad_norm) == (0.1, 0.01, 0.5, 0.5)
    kw = cfg.env_kwargs
    assert (kw["frameskip"], kw["stack_num"], kw["img_height"], kw["noop_max"]) == (4, 4, 84, 30)
    assert kw["episodic_life"] and kw["reward_clipping"] and kw["repeat_action_probability"] == 0.0
