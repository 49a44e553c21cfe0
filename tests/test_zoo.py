"""rl-baselines3-zoo hyperparameter files (rl/zoo.py): the zoo's format, written here in the tests (the
zoo's own files are not vendored), loads into PPOConfig and trains at small budgets; what cannot map
is refused by name (issue 30)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ppokit.errors import ConfigError
from ppokit.rl.config import PPOConfig
from ppokit.rl.ppo import PPO
from ppokit.rl.zoo import Name, is_zoo_mapping, load_zoo, parse_literal, schedule, zoo_data

# The zoo's conventions: !!float budgets, lin_ schedules, policy_kwargs and normalize as Python strings,
# an `atari` entry with AtariWrapper and frame_stack. The values are small so that each trains in seconds.
ZOO = """
atari:
  env_wrapper:
    - stable_baselines3.common.atari_wrappers.AtariWrapper
  frame_stack: 4
  policy: 'CnnPolicy'
  n_envs: 2
  n_steps: 32
  n_epochs: 1
  batch_size: 32
  n_timesteps: !!float 64
  learning_rate: lin_2.5e-4
  clip_range: lin_0.1
  vf_coef: 0.5
  ent_coef: 0.01

CartPole-v1:
  n_envs: 8
  n_timesteps: !!float 2048
  policy: 'MlpPolicy'
  n_steps: 32
  batch_size: 256
  gae_lambda: 0.8
  gamma: 0.98
  n_epochs: 20
  ent_coef: 0.0
  learning_rate: lin_0.001
  clip_range: lin_0.2

Pendulum-v1:
  normalize: "{'norm_obs': True, 'norm_reward': False}"
  n_envs: 4
  n_timesteps: 1e3
  policy: 'MlpPolicy'
  n_steps: 128
  gae_lambda: 0.95
  gamma: 0.9
  n_epochs: 2
  ent_coef: 0.0
  learning_rate: !!float 1e-3
  clip_range: 0.2
  use_sde: False
  policy_kwargs: "dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU,
                      net_arch=dict(pi=[32, 32], vf=[32, 32]))"
"""


@pytest.fixture
def zoo_file(tmp_path) -> Path:
    path = tmp_path / "ppo.yml"
    path.write_text(ZOO)
    return path


def test_cartpole_entry_maps_sb3_names_and_lin_schedules_and_trains(zoo_file):
    cfg = load_zoo(zoo_file, "CartPole-v1")
    assert (cfg.env_id, cfg.num_envs, cfg.total_timesteps, cfg.n_steps, cfg.batch_size) == (
        "CartPole-v1",
        8,
        2048,
        32,
        256,
    )
    assert (cfg.gamma, cfg.gae_lambda, cfg.n_epochs, cfg.ent_coef) == (0.98, 0.8, 20, 0.0)
    assert (cfg.learning_rate, cfg.lr_schedule) == (0.001, "linear")  # lin_0.001: linear to 0
    assert (cfg.clip_range, cfg.clip_range_schedule) == (0.2, "linear")
    model = PPO(cfg.env_id, cfg.replace(n_epochs=2, tensorboard=False)).learn()
    assert model.num_timesteps == 2048
    model.close()


def test_pendulum_entry_maps_normalize_and_policy_kwargs_and_trains(zoo_file):
    with _no_warning():
        cfg = load_zoo(zoo_file, "Pendulum-v1")
    assert (cfg.normalize_obs, cfg.normalize_reward) == (True, False)  # the string dict, parsed
    net = cfg.network
    assert (net.hidden_sizes, net.activation, net.ortho_init, net.log_std_init) == (
        [32, 32],
        "relu",
        False,
        -2.0,
    )
    assert (cfg.total_timesteps, cfg.learning_rate, cfg.lr_schedule) == (1000, 1e-3, "constant")
    model = PPO(cfg.env_id, cfg.replace(tensorboard=False)).learn()
    assert model.num_timesteps >= 1000
    model.close()


class _no_warning:
    """``pytest.warns``'s opposite: the block must not warn (use_sde: False is simply SB3's default)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self.caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        assert not self.caught, [str(w.message) for w in self.caught]


def test_atari_entry_serves_a_noframeskip_id_on_ales_vector_env_and_trains_from_the_cli(zoo_file, tmp_path):
    cfg = load_zoo(zoo_file, "BreakoutNoFrameskip-v4")
    # AtariWrapper + frame_stack 4 -> ALE's own vector env with the same preprocessing, on the v5 id
    # with sticky actions off (as the NoFrameskip-v4 ids have them)
    assert cfg.env_id == "ALE/Breakout-v5" and cfg.env_wrappers == []
    kw = cfg.env_kwargs
    assert (kw["stack_num"], kw["frameskip"], kw["noop_max"], kw["img_height"], kw["img_width"]) == (
        4,
        4,
        30,
        84,
        84,
    )
    assert kw["episodic_life"] and kw["reward_clipping"] and kw["repeat_action_probability"] == 0.0
    assert (cfg.learning_rate, cfg.lr_schedule, cfg.clip_range, cfg.clip_range_schedule) == (
        2.5e-4,
        "linear",
        0.1,
        "linear",
    )
    # an ALE/ id keeps its own sticky actions unless the AtariWrapper entry says otherwise
    assert "repeat_action_probability" not in load_zoo(zoo_file, "ALE/Pong-v5").env_kwargs
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ppokit", "train", "--zoo", str(zoo_file), "--env", "BreakoutNoFrameskip-v4"]
    r = subprocess.run(
        [*cmd, "--no-eval", "--no-progress", "--run-dir", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert r.returncode == 0, r.stderr
    assert f"zoo hyperparameters: {zoo_file} for ALE/Breakout-v5" in r.stdout
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["env_kwargs"]["stack_num"] == 4 and saved["total_timesteps"] == 64


def test_config_flag_recognises_a_zoo_file_and_flags_still_win(zoo_file, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ppokit", "train", "--config", str(zoo_file), "--env", "CartPole-v1"]
    cmd += [
        "--total-timesteps",
        "512",
        "--set",
        "n_epochs=1",
        "--no-eval",
        "--no-progress",
        "--run-dir",
        str(run),
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"}
    )
    assert r.returncode == 0, r.stderr  # before issue 30: unknown config key 'CartPole-v1'
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["total_timesteps"], saved["n_epochs"], saved["gamma"]) == (512, 1, 0.98)


def test_a_file_of_several_envs_needs_env_and_a_missing_entry_is_named(zoo_file):
    with pytest.raises(ConfigError, match="holds 2 envs .*choose one with --env"):
        load_zoo(zoo_file)
    with pytest.raises(ConfigError, match="no entry for env 'Acrobot-v1'"):
        load_zoo(zoo_file, "Acrobot-v1")


def test_zoo_keys_in_a_plain_config_get_advice_not_a_wrong_guess():
    # difflib guessed n_steps for n_timesteps and env_kwargs for policy_kwargs (issue 30)
    with pytest.raises(ConfigError, match="'n_timesteps': rl-zoo's training budget is total_timesteps"):
        PPOConfig.from_dict({"n_timesteps": 1000})
    with pytest.raises(ConfigError, match="'policy_kwargs': network sizes and activation are keys"):
        PPOConfig.from_dict({"policy_kwargs": "dict(net_arch=[64])"})
    with pytest.raises(ConfigError, match="'CartPole-v1': it looks like an rl-zoo hyperparameter file"):
        PPOConfig.from_dict({"CartPole-v1": {"n_timesteps": 1000, "policy": "MlpPolicy"}})
    assert is_zoo_mapping({"CartPole-v1": {"n_steps": 32}})
    assert not is_zoo_mapping({"network": {"hidden_sizes": [8]}})  # a ppokit section, not an env


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"use_sde": True}, r"use_sde=True is not supported: ppokit has no generalised State-Dependent"),
        ({"policy": "MlpLstmPolicy"}, r"policy='MlpLstmPolicy' is not supported"),
        (
            {"policy_kwargs": "dict(net_arch=dict(pi=[64], vf=[32]))"},
            r"policy_kwargs.net_arch=.* actor and critic have the same widths",
        ),
        ({"policy_kwargs": "dict(activation_fn=nn.GELU)"}, r"activation_fn=.*nn.Tanh, nn.ReLU and nn.ELU"),
        ({"policy_kwargs": "dict(squash_output=True)"}, r"policy_kwargs.squash_output=True is not supported"),
        ({"vec_env_wrapper": "x.Y"}, r"vec_env_wrapper='x.Y' is not supported: ppokit builds its own"),
        ({"frame_stack": 2}, r"frame_stack=2 is not supported for 'CartPole-v1'"),
        (
            {"learning_rate": "cosine_0.1"},
            r"learning_rate='cosine_0.1' is not allowed; give a number or lin_",
        ),
        ({"normalize": "{'norm_obs': True, 'gamma': 0.5}"}, r"normalize.gamma=0.5 is not supported"),
        ({"n_timesteps": 1.5}, r"n_timesteps=1.5 is not allowed; give a whole number"),
        ({"learning_rat": 0.1}, r"learning_rat=0.1 is not a zoo PPO hyperparameter"),
    ],
)
def test_what_cannot_map_is_refused_by_name(entry, message):
    with pytest.raises(ConfigError, match=message):
        zoo_data({"CartPole-v1": entry}, "CartPole-v1", "f.yml")


def test_bookkeeping_keys_are_warned_about_and_ignored():
    with pytest.warns(UserWarning, match=r"f.yml \[CartPole-v1\]: callback is ignored"):
        data = zoo_data({"CartPole-v1": {"callback": "a.B", "n_envs": 2}}, "CartPole-v1", "f.yml")
    assert data == {"env_id": "CartPole-v1", "num_envs": 2}


def test_policy_kwargs_are_parsed_never_run(tmp_path):
    marker = tmp_path / "ran"
    evil = f"dict(net_arch=[64], activation_fn=__import__('os').system('touch {marker}'))"
    with pytest.raises(ConfigError, match="is not a literal, dict"):
        parse_literal(evil)
    assert not marker.exists()
    for text in (
        "dict(x=open('/etc/passwd'))",
        "[i for i in range(3)]",
        "nn.Module.__subclasses__",
        "lambda: 1",
    ):
        with pytest.raises(ConfigError):
            parse_literal(text)
    value = parse_literal("dict(net_arch=[dict(pi=[8], vf=[8])], activation_fn=th.nn.Tanh, ortho_init=False)")
    assert value == {
        "net_arch": [{"pi": [8], "vf": [8]}],
        "activation_fn": Name("th.nn.Tanh"),
        "ortho_init": False,
    }
    assert parse_literal("{'norm_obs': True, 'clip_obs': -1e1}") == {"norm_obs": True, "clip_obs": -10.0}


def test_schedules():
    assert schedule("lin_2.5e-4", "k") == (2.5e-4, "linear")
    assert schedule(0.001, "k") == (0.001, "constant")
    assert schedule("3e-4", "k") == (3e-4, "constant")  # YAML 1.1 reads 3e-4 as a string
    with pytest.raises(ConfigError, match="k=True"):
        schedule(True, "k")


def test_every_block_of_the_presets_and_zoo_page_runs(tmp_path):
    doc = Path(__file__).resolve().parents[1] / "docs" / "presets-and-zoo.md"
    blocks = re.findall(r"```(python|bash)\n(.*?)```", doc.read_text(), re.S)
    assert [lang for lang, _ in blocks] == ["bash", "python", "python", "bash", "bash", "bash"]
    shim = tmp_path / "bin" / "ppokit"  # `ppokit` in the blocks: this checkout's (PYTHONPATH) ppokit
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ppokit "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    work = tmp_path / "work"
    work.mkdir()
    out = []
    for i, (lang, code) in enumerate(blocks):
        cmd = ["bash", "-e", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"block {i} ({lang}) failed:\n{code}\n{r.stderr[-3000:]}"
        out.append(r.stdout)
    assert "CartPole-v1-fast" in out[0] and "preset: " in out[0]
    assert "Breakout-v5.yaml 0.00025 4" in out[1] and "True relu [64, 64]" in out[2]
    assert "resuming study" in out[4] and (work / "tune-cartpole" / "best.yaml").is_file()
    assert (work / "best-run" / "model").is_dir()
