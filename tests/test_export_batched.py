"""Export of models trained on batched torch envs (issue 32 item 3): the ONNX graph acts as
``PPO.predict`` (deterministic) with the on-device observation normaliser, Gaussian and Beta actions
with their bounds, and the asymmetric actor-critic's actor alone on the "policy" group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppokit.errors import ConfigError
from ppokit.rl.batched import AsymmetricActorCritic
from ppokit.rl.config import NetworkConfig
from ppokit.rl.export import DeployedActor, export_policy
from ppokit.rl.networks import MlpActorCritic
from ppokit.rl.ppo import PPO
from ppokit.rl.torch_envs import PointMassTorch, RslRlVecEnv

ort = pytest.importorskip("onnxruntime", reason="the export extra: pip install 'ppokit[export]'")

TINY = dict(num_envs=16, n_steps=16, batch_size=128, n_epochs=2, tensorboard=False)


def _obs(width: int, scale: float, n: int = 100) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((n, width)) * scale).astype(np.float32)


def _onnx(path, obs: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(["action"], {"obs": obs})[0]


def _without_normaliser(model: PPO, obs: np.ndarray) -> np.ndarray:
    raw = DeployedActor(model)
    raw.normalize = False
    return raw(torch.as_tensor(obs)).numpy()


def test_cartpole_torch_with_normaliser_equals_predict(tmp_path):
    model = PPO("ppokit/CartPoleTorch-v0", normalize_obs=True, **TINY)
    model.learn(16 * 16 * 3)
    obs = _obs(4, 0.5)
    got = _onnx(export_policy(model, tmp_path / "cartpole.onnx"), obs)
    want, _ = model.predict(obs)
    assert got.shape == want.shape == (100,)
    np.testing.assert_array_equal(got, want)
    # the normaliser matters: CartPole's velocities are far from unit scale, so the raw graph's
    # actor outputs differ (argmax may still agree on some observations)
    raw = DeployedActor(model)
    normed = raw.actor_output(model.obs_norm(torch.as_tensor(obs)))
    assert (raw.actor_output(torch.as_tensor(obs)) - normed).abs().max() > 1e-3
    model.close()


def test_pendulum_torch_gaussian_with_normaliser_equals_predict(tmp_path):
    model = PPO("ppokit/PendulumTorch-v0", normalize_obs=True, obs_clip=2.0, **TINY)
    model.learn(16 * 16 * 3)
    obs = _obs(3, 2.0)  # far enough that the obs clip and the action clip both act
    path = export_policy(model, tmp_path / "pendulum.onnx")
    got = _onnx(path, obs)
    want, _ = model.predict(obs)
    assert got.shape == want.shape == (100, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.abs(_without_normaliser(model, obs) - want).max() > 1e-3
    ts = torch.jit.load(str(export_policy(model, tmp_path / "pendulum.pt", "torchscript")))
    np.testing.assert_allclose(ts(torch.as_tensor(obs)).numpy(), want, atol=1e-5, rtol=0)
    model.close()


def test_pendulum_torch_beta_actions_equal_predict_inside_the_bounds(tmp_path):
    model = PPO("ppokit/PendulumTorch-v0", normalize_obs=True, network={"action_bounds": "beta"}, **TINY)
    model.learn(16 * 16 * 3)
    assert model.policy.dist.kind == "beta"
    obs = _obs(3, 3.0)
    got = _onnx(export_policy(model, tmp_path / "beta.onnx"), obs)
    want, _ = model.predict(obs)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.abs(got).max() <= 2.0 and np.ptp(got) > 0  # Pendulum's torque bounds; not constant
    model.close()


def _asymmetric() -> PPO:
    env = RslRlVecEnv(PointMassTorch(num_envs=16, max_episode_steps=10))
    return PPO(env, normalize_obs=True, n_steps=8, batch_size=64, n_epochs=1, tensorboard=False)


def test_asymmetric_actor_critic_exports_the_actor_on_the_policy_group(tmp_path):
    model = _asymmetric()
    model.learn(16 * 8 * 3)
    assert isinstance(model.policy, AsymmetricActorCritic) and model.policy.actor_dim == 4
    full = _obs(12, 1.0)  # the stored observation [policy (4) | critic (8)]
    path = export_policy(model, tmp_path / "actor.onnx")
    session = ort.InferenceSession(str(path))
    assert session.get_inputs()[0].shape == ["batch", 4]  # the critic group is not an input
    got = session.run(["action"], {"obs": full[:, :4]})[0]
    want, _ = model.predict(full)
    assert got.shape == want.shape == (100, 2)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["observation_group"] == "policy" and meta["normalize_obs"] == "True"
    model.close()


def test_a_custom_policy_on_an_env_with_a_critic_group_is_refused_by_name(tmp_path):
    env = RslRlVecEnv(PointMassTorch(num_envs=16, max_episode_steps=10))
    model = PPO(
        env,
        policy=lambda o, a: MlpActorCritic(o, a, NetworkConfig()),
        n_steps=8,
        batch_size=64,
        tensorboard=False,
    )
    with pytest.raises(ConfigError, match="export of policy MlpActorCritic on an env with a 'critic'"):
        export_policy(model, tmp_path / "x.onnx")
    model.close()


def test_cli_exports_a_torch_env_run(tmp_path):
    from ppokit.cli import main

    run = tmp_path / "run"
    args = ["--set", "num_envs=16", "--set", "n_steps=16", "--set", "batch_size=128", "--set",
            "normalize_obs=true", "--total-timesteps", "512", "--no-progress", "--no-eval"]  # fmt: skip
    assert main(["train", "--env", "ppokit/PendulumTorch-v0", "--run-dir", str(run), *args]) == 0
    assert main(["export", str(run)]) == 0
    model = PPO.load(run, tensorboard=False)
    obs = _obs(3, 1.0)
    np.testing.assert_allclose(_onnx(run / "policy.onnx", obs), model.predict(obs)[0], atol=1e-5, rtol=0)
    model.close()
