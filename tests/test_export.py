"""``ppokit export`` / ``ppokit.rl.export``: the exported graph acts exactly as ``PPO.predict``
(deterministic), normaliser and action post-processing included; what it cannot represent is refused."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.errors import ConfigError
from ppokit.rl.export import DeployedActor, export_onnx, export_policy
from ppokit.rl.ppo import PPO
from ppokit.rl.toy_envs import MaskedChoice

ort = pytest.importorskip("onnxruntime", reason="the export extra: pip install 'ppokit[export]'")

TINY = dict(num_envs=2, n_steps=64, batch_size=64, n_epochs=2, total_timesteps=256)


def _obs(model: PPO, n: int = 100, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    space = model.observation_space
    if np.isfinite(space.low).all():  # spread over (and a bit past) the bounds
        low, high = space.low * scale, space.high * scale
        return rng.uniform(low, high, (n, *space.shape)).astype(np.float32)
    return (rng.standard_normal((n, *space.shape)) * scale).astype(np.float32)


def _onnx_actions(path, obs: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(["action"], {"obs": obs})[0]


def test_onnx_cartpole_discrete_equals_predict(tmp_path):
    model = PPO("CartPole-v1", TINY)
    model.learn(256)
    obs = _obs(model, scale=0.3)
    path = export_onnx(model, tmp_path / "cartpole.onnx")
    got = _onnx_actions(path, obs)
    want, _ = model.predict(obs, deterministic=True)
    assert got.shape == want.shape == (100,)
    np.testing.assert_array_equal(got, want)
    # the check can fail: the policy's actions on these observations are not all the same
    assert len(set(want.tolist())) == 2
    model.close()


def test_onnx_pendulum_box_with_normaliser_equals_predict(tmp_path):
    model = PPO("Pendulum-v1", {**TINY, "normalize_obs": True, "obs_clip": 2.0})
    model.learn(256)
    obs = _obs(model, scale=1.5)  # beyond the bounds too: the action clip and the obs clip both act
    path = export_onnx(model, tmp_path / "pendulum.onnx")
    got = _onnx_actions(path, obs)
    want, _ = model.predict(obs, deterministic=True)
    assert got.shape == want.shape == (100, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # A graph without the normaliser acts differently: the normaliser is what the test checks.
    raw = DeployedActor(model)
    raw.normalize = False
    without = raw(torch.as_tensor(obs)).numpy()
    assert np.abs(without - want).max() > 1e-3
    # the metadata says what the graph is
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["env_id"] == "Pendulum-v1" and meta["normalize_obs"] == "True"
    model.close()


def test_torchscript_and_multidiscrete_and_squashed(tmp_path):
    class MD(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
        action_space = gym.spaces.MultiDiscrete([3, 4], start=[1, -2])

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, True, {}

    model = PPO(MD, {**TINY, "normalize_obs": True})
    obs = _obs(model)
    want, _ = model.predict(obs, deterministic=True)
    got = _onnx_actions(export_onnx(model, tmp_path / "md.onnx"), obs)
    np.testing.assert_array_equal(got, want)
    assert want.shape == (100, 2) and want[:, 1].min() >= -2  # the space's start is applied
    ts = torch.jit.load(str(export_policy(model, tmp_path / "md.pt", "torchscript")))
    np.testing.assert_array_equal(ts(torch.as_tensor(obs)).numpy(), want)
    model.close()

    squashed = PPO("Pendulum-v1", {**TINY, "network": {"action_bounds": "tanh"}})
    obs = _obs(squashed)
    want, _ = squashed.predict(obs, deterministic=True)
    got = _onnx_actions(export_onnx(squashed, tmp_path / "sq.onnx"), obs)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    squashed.close()


def test_refused_by_name(tmp_path):
    rec = PPO("CartPole-v1", {**TINY, "network": {"recurrent": "lstm"}})
    with pytest.raises(ConfigError, match="recurrent"):
        export_onnx(rec, tmp_path / "r.onnx")
    rec.close()
    masked = PPO(MaskedChoice, {**TINY, "num_envs": 2})
    assert masked.masked
    with pytest.raises(ConfigError, match="trained with action masks"):
        export_onnx(masked, tmp_path / "m.onnx")
    masked.close()
    model = PPO("CartPole-v1", TINY)
    with pytest.raises(ConfigError, match="format='tflite' is not allowed"):
        export_policy(model, tmp_path / "x", "tflite")
    model.close()


def test_refuses_dict_observations(tmp_path):
    class DictEnv(gym.Env):
        observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,), np.float32)})
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, True, {}

    model = PPO(DictEnv, TINY)
    with pytest.raises(ConfigError, match="packed observations"):
        export_onnx(model, tmp_path / "d.onnx")
    model.close()


def test_cli_export(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ppokit"]
    train = subprocess.run(
        [*cmd, "train", "--env", "CartPole-v1", "--total-timesteps", "512", "--run-dir", str(run),
         "--no-eval", "--no-progress", "--set", "normalize_obs=true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    out = subprocess.run([*cmd, "export", str(run)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "with its observation normaliser" in out.stdout
    model = PPO.load(run, tensorboard=False)
    obs = _obs(model, scale=0.3)
    np.testing.assert_array_equal(_onnx_actions(run / "policy.onnx", obs), model.predict(obs)[0])
    model.close()
    bad = subprocess.run([*cmd, "export", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_onnx_atari_cnn_takes_uint8_frames(tmp_path):
    pytest.importorskip("ale_py")
    model = PPO(
        "ALE/Breakout-v5",
        {**TINY, "num_envs": 2, "n_steps": 16, "batch_size": 32, "total_timesteps": 32,
         "env_kwargs": {"frameskip": 4, "stack_num": 4, "episodic_life": True, "reward_clipping": True},
         "network": {"image_encoder": "nature", "cnn_features": 64}},
    )  # fmt: skip
    model.learn(32)
    obs = np.random.default_rng(0).integers(0, 256, (50, *model.observation_space.shape), dtype=np.uint8)
    got = _onnx_actions(export_onnx(model, tmp_path / "breakout.onnx"), obs)
    np.testing.assert_array_equal(got, model.predict(obs, deterministic=True)[0])
    model.close()
