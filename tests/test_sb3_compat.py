"""Stable-Baselines3 scripts run on ppokit with only their import lines changed (issue 30), SB3's
constructor arguments map or are refused by name, and SB3-style callbacks drive the run loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit import (
    PPO,
    BaseCallback,
    CallbackList,
    EvalCallback,
    StopTrainingOnNoModelImprovement,
    evaluate_policy,
)
from ppokit.errors import ConfigError, EnvError

SB3_IMPORTS = {
    "from stable_baselines3 import PPO": "from ppokit import PPO",
    "from stable_baselines3.common.evaluation import evaluate_policy": "from ppokit import evaluate_policy",
    "from stable_baselines3.common.env_util import make_vec_env": "from ppokit import make_vec_env",
    "from stable_baselines3.common.vec_env import VecNormalize": "from ppokit import VecNormalize",
    "from stable_baselines3.common.callbacks import (": "from ppokit import (",
}


def run_ported(script: str, tmp_path, monkeypatch) -> dict:
    """Execute an SB3 script with its import lines (and nothing else) replaced; return its globals."""
    ported = textwrap.dedent(script)
    for sb3_line, ppokit_line in SB3_IMPORTS.items():
        ported = ported.replace(sb3_line, ppokit_line)
    assert "stable_baselines3" not in ported
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__sb3_script__"}
    exec(compile(ported, "sb3_script.py", "exec"), namespace)
    return namespace


SCRIPT_CARTPOLE = """
import gymnasium as gym

from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy

env = gym.make("CartPole-v1")
model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=4, seed=0, verbose=1)
model.learn(total_timesteps=1e3)
mean_reward, std_reward = evaluate_policy(model, model.get_env(), n_eval_episodes=5)
print(f"mean_reward={mean_reward:.2f} +/- {std_reward:.2f}")
episode_rewards, episode_lengths = evaluate_policy(model, env, n_eval_episodes=3, return_episode_rewards=True)
obs, info = env.reset(seed=0)
action, _states = model.predict(obs, deterministic=True)
"""


def test_sb3_cartpole_script_with_evaluate_policy(tmp_path, monkeypatch, capsys):
    g = run_ported(SCRIPT_CARTPOLE, tmp_path, monkeypatch)
    model = g["model"]
    assert model.num_timesteps == 1024 and model.config.num_envs == 1  # SB3: one env for one instance
    assert isinstance(g["mean_reward"], float) and isinstance(g["std_reward"], float)
    assert g["mean_reward"] >= 8.0 and g["std_reward"] >= 0.0  # CartPole lasts at least 8 steps
    assert len(g["episode_rewards"]) == 3 and len(g["episode_lengths"]) == 3
    assert g["episode_rewards"] == [float(n) for n in g["episode_lengths"]]  # CartPole: reward 1 per step
    assert g["env"].action_space.contains(g["action"])
    out = capsys.readouterr().out
    assert "Using cpu device" in out and "| rollout/" in out and "total_timesteps" in out


SCRIPT_CUSTOM_ENV = """
import gymnasium as gym
import numpy as np
from gymnasium import spaces

from stable_baselines3 import PPO


class GoLeftEnv(gym.Env):
    \"\"\"Walk left to cell 0 on a line of cells.\"\"\"

    def __init__(self, grid_size=8):
        super().__init__()
        self.grid_size = grid_size
        self.agent_pos = grid_size - 1
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(low=0, high=grid_size, shape=(1,), dtype=np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed, options=options)
        self.agent_pos = self.grid_size - 1
        return np.array([self.agent_pos], dtype=np.float32), {}

    def step(self, action):
        self.agent_pos += -1 if action == 0 else 1
        self.agent_pos = int(np.clip(self.agent_pos, 0, self.grid_size))
        terminated = self.agent_pos == 0
        reward = 1.0 if terminated else -0.1
        return np.array([self.agent_pos], dtype=np.float32), reward, terminated, False, {}


env = gym.wrappers.TimeLimit(GoLeftEnv(grid_size=8), max_episode_steps=40)
model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, learning_rate=1e-3, seed=0).learn(4096)
model.save("ppo_goleft")
del model
model = PPO.load("ppo_goleft", env=env)
obs, _ = env.reset()
steps = 0
while True:
    action, _ = model.predict(obs, deterministic=True)
    obs, reward, terminated, truncated, info = env.step(action)
    steps += 1
    if terminated or truncated:
        break
"""


def test_sb3_custom_env_class_script(tmp_path, monkeypatch):
    g = run_ported(SCRIPT_CUSTOM_ENV, tmp_path, monkeypatch)
    assert (tmp_path / "ppo_goleft").is_dir()
    assert g["terminated"] and g["steps"] == 7  # the loaded model walks straight to cell 0


SCRIPT_PENDULUM = """
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
from stable_baselines3.common.callbacks import (
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)

env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=4, seed=0), norm_obs=True, norm_reward=True, gamma=0.9)
eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=1), training=False, norm_reward=False)
# any evaluation reaches this threshold: the first one stops training
stop = StopTrainingOnRewardThreshold(reward_threshold=-1e6, verbose=1)
eval_callback = EvalCallback(
    eval_env,
    callback_on_new_best=stop,
    n_eval_episodes=2,
    eval_freq=128,
    best_model_save_path="./logs/best",
    log_path="./logs/eval",
    deterministic=True,
)
checkpoint_callback = CheckpointCallback(save_freq=64, save_path="./logs/checkpoints", name_prefix="pendulum")
model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, gamma=0.9, use_sde=False, verbose=0)
model.learn(total_timesteps=1e5, callback=CallbackList([checkpoint_callback, eval_callback]))
"""


def test_sb3_pendulum_script_with_normalisation_and_callbacks(tmp_path, monkeypatch):
    g = run_ported(SCRIPT_PENDULUM, tmp_path, monkeypatch)
    model = g["model"]
    cfg = model.config
    assert (cfg.num_envs, cfg.normalize_obs, cfg.normalize_reward, cfg.gamma) == (4, True, True, 0.9)
    # eval_freq=128 calls x 4 envs = 512 env steps = 2 updates of 64 x 4: the stop comes there
    assert model.num_timesteps == 512
    logs = tmp_path / "logs"
    assert sorted(p.name for p in (logs / "checkpoints").iterdir()) == [
        "pendulum_256_steps",
        "pendulum_512_steps",
    ]
    with np.load(logs / "eval" / "evaluations.npz") as log:
        assert log["timesteps"].tolist() == [512]
        assert log["results"].shape == (1, 2) and log["ep_lengths"].tolist() == [[200, 200]]
    best = PPO.load(logs / "best" / "best_model")
    assert (
        best.obs_norm is not None and best.obs_norm.rms.count == model.obs_norm.rms.count > 500
    )  # its normaliser
    obs = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -2.0]], dtype=np.float32)
    np.testing.assert_allclose(best.predict(obs)[0], model.predict(obs)[0], rtol=1e-6)
    assert g["eval_callback"].best_mean_reward == pytest.approx(float(np.mean(log_results(logs))))


def log_results(logs) -> np.ndarray:
    with np.load(logs / "eval" / "evaluations.npz") as log:
        return log["results"][0]


# -- the constructor ---------------------------------------------------------------------------------------
TINY = dict(n_steps=32, batch_size=32, n_epochs=1)


def test_sb3_keywords_map_to_the_config():
    model = PPO(
        policy="MlpPolicy",
        env="CartPole-v1",
        learning_rate=lambda progress: 1e-3 * progress,
        clip_range=0.1,
        clip_range_vf=0.3,
        ent_coef=0.01,
        target_kl=0.05,
        device="auto",
        seed=3,
        policy_kwargs=dict(net_arch=[dict(pi=[32], vf=[32])], activation_fn=torch.nn.ELU, ortho_init=False,
                           log_std_init=-0.5, optimizer_kwargs=dict(eps=1e-7)),
        **TINY,
    )  # fmt: skip
    cfg = model.config
    assert (cfg.learning_rate, cfg.lr_schedule, cfg.clip_range, cfg.vf_clip_range) == (
        1e-3,
        "linear",
        0.1,
        0.3,
    )
    assert (cfg.ent_coef, cfg.target_kl, cfg.seed, cfg.adam_eps) == (0.01, 0.05, 3, 1e-7)
    assert cfg.device == ("cuda" if torch.cuda.is_available() else "cpu")
    net = cfg.network
    assert (net.hidden_sizes, net.activation, net.ortho_init, net.log_std_init) == ([32], "elu", False, -0.5)
    assert PPO("MlpPolicy", "CartPole-v1").config.n_steps == 2048  # SB3's defaults in SB3's form
    windowed = PPO("MlpPolicy", "CartPole-v1", stats_window_size=5, **TINY).learn(32)
    assert windowed.collector.episodes.recent.maxlen == 5  # the window of rollout/ep_rew_mean


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(use_sde=True), r"use_sde=True is not supported: ppokit has no generalized State-Dependent"),
        (dict(sde_sample_freq=4), r"sde_sample_freq=4 is not supported"),
        (
            dict(rollout_buffer_class=dict),
            r"rollout_buffer_class=.* is not supported: ppokit's rollout buffer",
        ),
        (
            dict(policy_kwargs=dict(net_arch=dict(pi=[64], vf=[32]))),
            r"net_arch.* actor and critic MLPs have the same",
        ),
        (
            dict(policy_kwargs=dict(activation_fn=torch.nn.Sigmoid)),
            r"activation_fn.*Sigmoid.* use one of nn.Tanh",
        ),
        (
            dict(policy_kwargs=dict(features_extractor_class=object)),
            r"features_extractor_class.*ppokit.Policy",
        ),
        (dict(learning_rate=lambda p: 1e-3 * p * p), r"learning_rate=.* constant and linear to 0"),
        (dict(verbose=3), r"verbose=3 is not allowed; use one of \[0, 1, 2\]"),
    ],
)
def test_what_cannot_map_is_refused_by_name(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        PPO("MlpPolicy", "CartPole-v1", **kwargs)


def test_an_unknown_policy_name_is_refused_with_the_known_ones():
    with pytest.raises(
        ConfigError, match=r"policy='MlpLstmPolicy' is not supported; use one of \['MlpPolicy'"
    ):
        PPO("MlpLstmPolicy", "CartPole-v1")


@pytest.mark.parametrize(
    "policy, make, encoder",
    [
        ("CnnPolicy", "BrightSideEnv", "EncoderActorCritic"),
        ("MultiInputPolicy", "DictObsEnv", "EncoderActorCritic"),
    ],
)
def test_cnn_and_multi_input_policies_train_on_their_spaces(policy, make, encoder):
    import space_envs

    env = getattr(space_envs, make)()
    model = PPO(policy, env, n_steps=16, batch_size=16, n_epochs=1).learn(16)
    assert type(model.policy).__name__ == encoder and model.num_timesteps == 16
    rewards, lengths = evaluate_policy(model, env, n_eval_episodes=2, return_episode_rewards=True)
    assert lengths == [8, 8] and all(0.0 <= r <= 8.0 for r in rewards)


def test_the_migration_page_names_every_sb3_argument():
    from pathlib import Path

    from ppokit.rl.sb3 import SB3_ARGUMENTS

    page = (Path(__file__).resolve().parents[1] / "docs" / "migrating-from-sb3.md").read_text()
    missing = [a for a in SB3_ARGUMENTS if f"`{a}" not in page]
    assert not missing and len(SB3_ARGUMENTS) == 26


def test_sb3_spellings_in_ppokits_own_form_keep_ppokits_defaults():
    from ppokit import NetworkConfig, PPOConfig

    config = PPOConfig(n_steps=16, batch_size=32, network=NetworkConfig(hidden_sizes=[16], activation="relu"))
    model = PPO("CartPole-v1", config, verbose=1, device="auto", policy_kwargs=dict(ortho_init=False))
    cfg = model.config
    assert (cfg.num_envs, cfg.n_steps, model.sb3.verbose) == (8, 16, 1)  # ppokit's num_envs, not SB3's 1
    assert (cfg.network.hidden_sizes, cfg.network.activation, cfg.network.ortho_init) == ([16], "relu", False)


def test_a_running_vector_env_is_refused_with_what_to_pass():
    venv = gym.make_vec("CartPole-v1", num_envs=2)
    with pytest.raises(ConfigError, match=r"running vector env.* n_envs=8"):
        PPO("MlpPolicy", venv)
    venv.close()


def test_a_policy_class_is_accepted_in_first_position():
    from ppokit.rl.config import NetworkConfig
    from ppokit.rl.networks import MlpActorCritic

    class Small(MlpActorCritic):
        def __init__(self, observation_space, action_space):
            super().__init__(observation_space, action_space, NetworkConfig(hidden_sizes=[8]))

    model = PPO(Small, "CartPole-v1", **TINY).learn(32)
    assert isinstance(model.policy, Small) and model.num_timesteps == 32


def test_learn_takes_a_whole_float_and_sb3_learn_arguments(tmp_path):
    model = PPO("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), **TINY)
    model.learn(6.4e1, log_interval=2, tb_log_name="cartpole")
    assert model.num_timesteps == 64
    assert (tmp_path / "cartpole_1" / "metrics.csv").exists()
    with pytest.raises(ConfigError, match=r"learn\(\) got unknown arguments \['eval_env'\]"):
        model.learn(32, eval_env="CartPole-v1")
    model.close()


def test_get_env_and_set_env():
    model = PPO("MlpPolicy", gym.make("CartPole-v1"), **TINY)
    assert isinstance(model.get_env(), gym.vector.VectorEnv) and model.get_env().num_envs == 1
    model.learn(32)
    norm = model.obs_norm
    model.set_env(gym.make("CartPole-v1", max_episode_steps=20))
    model.learn(64, reset_num_timesteps=False)
    assert model.num_timesteps == 96 and model.obs_norm is norm
    venv = model.get_env()
    assert model.collector.venv is venv and venv.envs[0].spec.max_episode_steps == 20  # the new env trains
    with pytest.raises(ConfigError, match=r"set_env: env with spaces .* is not allowed; the model has"):
        model.set_env(gym.make("Acrobot-v1"))


def test_ppokit_form_accepts_an_instance_as_one_env():
    env = gym.make("CartPole-v1")
    model = PPO(env, n_steps=16, batch_size=16, n_epochs=1).learn(16)
    assert model.config.num_envs == 1 and model.num_timesteps == 16
    assert evaluate_policy(model, env, n_eval_episodes=2)[0] >= 8.0  # the instance itself still works


# -- callbacks -----------------------------------------------------------------------------------------------
class Recorder(BaseCallback):
    def __init__(self, stop_after: int):
        super().__init__()
        self.stop_after, self.events = stop_after, []

    def _on_training_start(self):
        self.events.append(("start", self.model.num_timesteps))

    def _on_rollout_end(self):
        self.events.append(("rollout_end", self.num_timesteps))

    def _on_step(self):
        self.events.append(("step", self.n_calls, sorted(self.locals)))
        return self.n_calls < self.stop_after

    def _on_training_end(self):
        self.events.append(("end", self.num_timesteps))


def test_base_callback_hooks_and_stop():
    rec = Recorder(stop_after=2)
    model = PPO("MlpPolicy", "CartPole-v1", **TINY).learn(320, callback=rec)
    assert model.num_timesteps == 64 and rec.model is model
    assert rec.events == [
        ("start", 0),
        ("rollout_end", 32),
        ("step", 1, ["metrics", "self"]),
        ("rollout_end", 64),
        ("step", 2, ["metrics", "self"]),
        ("end", 64),
    ]


def test_functions_objects_and_lists_all_work_as_callbacks():
    seen = []

    class Hooks:
        def on_start(self, model):
            seen.append("start")

        def on_end(self, model):
            seen.append("end")

    def fn(model, metrics):
        seen.append(metrics["time/total_timesteps"])
        return model.num_timesteps < 64

    PPO("MlpPolicy", "CartPole-v1", **TINY).learn(320, callback=[Hooks(), fn, CallbackList([Recorder(9)])])
    assert seen == ["start", 32, 64, "end"]
    with pytest.raises(ConfigError, match=r"callback=42 is not allowed"):
        PPO("MlpPolicy", "CartPole-v1", **TINY).learn(32, callback=42)


def test_stop_on_no_model_improvement_counts_evaluations_without_progress():
    parent = EvalCallback("CartPole-v1", callback_after_eval=StopTrainingOnNoModelImprovement(2, min_evals=1))
    stop = parent.callback
    results = []
    for best in (-5.0, -3.0, -3.0, -3.0, -3.0):
        parent.best_mean_reward = best
        results.append(stop.on_step())
    assert results == [True, True, True, True, False]  # 3 evaluations in a row without improvement


# -- small traps of issue 30 ------------------------------------------------------------------------------
def test_ppokit_env_ids_exist_right_after_import():
    code = "import ppokit, gymnasium as gym; print(gym.make('ppokit/RememberFirst-v0').action_space)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "Discrete(4)"


def test_predict_with_the_wrong_shape_names_the_expected_one():
    model = PPO("CartPole-v1", num_envs=2, n_steps=8, batch_size=16)
    with pytest.raises(EnvError, match=r"observation of shape \(5,\); the model expects \(4,\)"):
        model.predict(np.zeros(5))


def test_module_id_is_found_in_the_working_directory(tmp_path, monkeypatch):
    from ppokit.rl.envfind import find_spec

    (tmp_path / "my_cwd_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('CwdCart-v0', entry_point='gymnasium.envs.classic_control.cartpole:CartPoleEnv')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert find_spec("my_cwd_envs:CwdCart-v0").id == "CwdCart-v0"


def test_every_n_timesteps_triggers_its_child_per_crossed_multiple():
    from ppokit import EveryNTimesteps

    class Count(BaseCallback):
        def _on_step(self):
            self.steps_seen = [*getattr(self, "steps_seen", []), self.num_timesteps]
            return True

    child = Count()
    PPO("MlpPolicy", "CartPole-v1", **TINY).learn(160, callback=EveryNTimesteps(n_steps=64, callback=child))
    assert child.steps_seen == [64, 128]  # updates end at 32, 64, ..., 160; multiples of 64 at 64, 128


def test_make_vec_env_passes_env_kwargs_to_a_callable_and_refuses_wrapper_class():
    from ppokit import make_vec_env

    made = []

    def make(length=500):
        made.append(length)
        return gym.make("CartPole-v1", max_episode_steps=length)

    model = PPO("MlpPolicy", make_vec_env(make, n_envs=2, env_kwargs={"length": 7}), **TINY)
    assert made == [7, 7] and model.config.num_envs == 2
    with pytest.raises(
        ConfigError, match=r"make_vec_env\(wrapper_class\)=.* is not supported: set env_wrappers"
    ):
        make_vec_env("CartPole-v1", wrapper_class=gym.wrappers.ClipAction)
