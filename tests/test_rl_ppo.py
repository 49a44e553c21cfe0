"""PPO end to end: learning, seeding, save/load, config validation, every switchable part runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import counting_env

from ppokit import ConfigError, PPOConfig
from ppokit.errors import CheckpointError, EnvError
from ppokit.rl.ppo import PPO

SMALL = dict(num_envs=4, n_steps=16, batch_size=32, n_epochs=2, tensorboard=False)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def test_cartpole_learns_on_a_small_budget():
    # The CartPole preset's hyperparameters (rl-zoo) on 40k steps: a few seconds on 2 cores.
    model = PPO(
        "CartPole-v1",
        num_envs=8,
        n_steps=32,
        batch_size=256,
        n_epochs=20,
        gamma=0.98,
        gae_lambda=0.8,
        learning_rate=1e-3,
        lr_schedule="linear",
        clip_range_schedule="linear",
        tensorboard=False,
        seed=1,
    )
    model.learn(40_000)
    result = model.evaluate(10)
    assert result["mean_return"] >= 195, result


def test_same_seed_gives_same_parameters_and_other_seed_differs():
    a = PPO("CartPole-v1", seed=3, **SMALL).learn(256)
    b = PPO("CartPole-v1", seed=3, **SMALL).learn(256)
    c = PPO("CartPole-v1", seed=4, **SMALL).learn(256)
    assert torch.equal(_params(a), _params(b))
    assert not torch.equal(_params(a), _params(c))


def test_save_load_round_trip_predicts_identically(tmp_path):
    model = PPO("Pendulum-v1", normalize_obs=True, normalize_reward=True, **SMALL).learn(128)
    model.save(tmp_path / "m")
    loaded = PPO.load(tmp_path / "m")
    obs = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    a1, _ = model.predict(obs)
    a2, _ = loaded.predict(obs)
    assert np.array_equal(a1, a2)
    assert np.array_equal(model.obs_norm.rms.mean, loaded.obs_norm.rms.mean)
    single, state = loaded.predict(obs[0])
    assert single.shape == (1,) and state is None


def test_load_refuses_other_spaces_and_foreign_files(tmp_path):
    PPO("CartPole-v1", **SMALL).save(tmp_path / "cp")
    with pytest.raises(CheckpointError, match="trained on spaces"):
        PPO.load(tmp_path / "cp", env="Acrobot-v1")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "tensors.safetensors").write_bytes(b"\x80\x04not a tensor file")
    with pytest.raises(CheckpointError):
        PPO.load(tmp_path / "junk")


@pytest.mark.parametrize(
    "overrides",
    [
        {"objective": "kl_penalty"},
        {"objective": "kl_adaptive"},
        {"objective": "none"},
        {"value_loss": "huber", "vf_clip_range": 0.2},
        {"separate_optimizers": True, "critic_learning_rate": 1e-3},
        {"network": {"shared_trunk": True}},
        {"normalize_obs": True, "normalize_reward": True},
        {"lr_schedule": "linear", "clip_range_schedule": "linear"},
        {"vectorization": "sync"},
    ],
    ids=lambda o: ",".join(o),
)
def test_every_switch_trains_with_finite_losses(overrides):
    metrics = []
    PPO("CartPole-v1", **{**SMALL, **overrides}).learn(128, callback=lambda m, x: metrics.append(x))
    last = metrics[-1]
    for key in ("train/policy_loss", "train/value_loss", "train/entropy", "train/approx_kl"):
        assert np.isfinite(last[key]), key
    if "vf_clip_range" in overrides:
        assert "train/value_clipped_fraction" in last


def test_value_clipping_reports_a_clip_fraction():
    metrics = []
    PPO("CartPole-v1", **{**SMALL, "vf_clip_range": 1e-4, "n_epochs": 4}).learn(
        128, callback=lambda m, x: metrics.append(x)
    )
    assert metrics[-1]["train/value_clipped_fraction"] > 0


def test_box_and_multidiscrete_and_factory_envs():
    PPO("Pendulum-v1", **SMALL).learn(64)
    import gymnasium as gym

    def md_env():
        env = gym.make("CartPole-v1")
        return gym.wrappers.TransformAction(env, lambda a: int(a[0]), gym.spaces.MultiDiscrete([2, 3]))

    model = PPO(md_env, **SMALL).learn(64)
    action, _ = model.predict(np.zeros(4, np.float32))
    assert action.shape == (2,)
    PPO(counting_env(), **SMALL).learn(64)


def test_target_kl_stops_epochs_early():
    metrics = []
    PPO("CartPole-v1", **{**SMALL, "target_kl": 1e-6, "n_epochs": 10, "learning_rate": 1e-2}).learn(
        128, callback=lambda m, x: metrics.append(x)
    )
    full = 10 * (64 // 32)
    assert any(m["train/early_stopped"] == 1.0 for m in metrics)
    assert all(m["train/minibatch_steps"] < full for m in metrics if m["train/early_stopped"])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"learning_rate": -1.0}, "learning_rate=-1.0"),
        ({"clip_range": 0.0}, "clip_range=0.0"),
        ({"batch_size": 4096}, "batch_size=4096.*must be <="),
        ({"batch_size": 48}, "must divide"),
        ({"learnig_rate": 1e-3}, "did you mean 'learning_rate'"),
        ({"n_epochs": "ten"}, "n_epochs='ten' has type str; expected int"),
        ({"objective": "ppo"}, "objective='ppo'.*clip"),
        ({"network": {"hidden_sizes": []}}, "network.hidden_sizes"),
        ({"network": {"width": 3}}, "unknown config key 'network.width'"),
    ],
)
def test_config_errors_name_key_value_and_rule(data, match):
    with pytest.raises(ConfigError, match=match):
        PPOConfig.from_dict(data)


def test_unknown_env_id_is_a_clear_error():
    with pytest.raises(EnvError, match="CartPole-v1"):
        PPO("CartPol-v1", **SMALL)


def test_config_yaml_round_trip(tmp_path):
    cfg = PPOConfig.from_dict({"learning_rate": 1e-3, "network": {"hidden_sizes": [32]}, "target_kl": 0.02})
    cfg.save_yaml(tmp_path / "c.yaml")
    assert PPOConfig.load_yaml(tmp_path / "c.yaml") == cfg
    assert PPOConfig.load_yaml(tmp_path / "c.yaml", ["network.hidden_sizes=[8,8]"]).network.hidden_sizes == [
        8,
        8,
    ]


def test_running_statistics_of_single_rows_and_batches_match_numpy():
    # one env feeds one row a step (the shortcut in RunningMeanStd.update), vector envs a batch
    from ppokit.rl.normalization import RunningMeanStd

    data = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 4))
    rows, batches = RunningMeanStd((4,), epsilon=0.0), RunningMeanStd((4,), epsilon=0.0)
    rows.update(data[:1])  # the first merge into a zero count
    for row in data[1:]:
        rows.update(row[None])
    for chunk in np.split(data, 50):
        batches.update(chunk)
    for rms in (rows, batches):
        assert np.allclose(rms.mean, data.mean(0), rtol=1e-12) and np.allclose(
            rms.var, data.var(0), rtol=1e-10
        )
        assert rms.count == 500.0
        assert rms.fresh is None  # the moments since the last cross-rank sync: only with several ranks


def test_flat_adam_only_where_the_fast_path_runs():
    from ppokit.rl.fast.optim import FlatAdam

    fast = PPO("CartPole-v1", **SMALL)
    assert fast.manual_grad is not None and all(isinstance(o, FlatAdam) for o in fast.optimizers)
    autograd = PPO("CartPole-v1", manual_grad=False, separate_optimizers=True, **SMALL)
    assert autograd.manual_grad is None and len(autograd.optimizers) == 2
    assert all(isinstance(o, torch.optim.Adam) for o in autograd.optimizers)
    fast.close()
    autograd.close()


def test_an_autograd_policy_resumes_exactly_with_torch_adam(tmp_path):
    cfg = dict(SMALL, seed=5, manual_grad=False, checkpoint_every=64, keep_checkpoints=10)
    a = PPO("CartPole-v1", run_dir=tmp_path / "a", **cfg).learn(4 * 64)
    b = PPO.resume(tmp_path / "a" / "checkpoints" / f"step_{2 * 64:012d}", run_dir=tmp_path / "b")
    assert b.manual_grad is None and isinstance(b.optimizers[0], torch.optim.Adam)
    b.learn()
    assert torch.equal(_params(a), _params(b))
    state_a, state_b = a.optimizers[0].state_dict()["state"], b.optimizers[0].state_dict()["state"]
    assert state_a.keys() == state_b.keys() and len(state_a) > 0
    for k in state_a:
        assert torch.equal(state_a[k]["exp_avg_sq"], state_b[k]["exp_avg_sq"])
        assert (
            float(state_a[k]["step"]) == float(state_b[k]["step"]) == 16
        )  # 4 updates of 2 epochs x 2 minibatches
    a.close()
    b.close()


def test_a_training_state_from_flat_adam_loads_into_an_autograd_run():
    """A checkpoint written when FlatAdam trained every classic policy (its flat layout) still loads
    into an autograd run's torch.optim.Adam, moments and step count intact."""
    old = PPO("CartPole-v1", seed=3, **SMALL).learn(64)  # the fast path: FlatAdam's layout
    sd = old.state_dict()
    new = PPO("CartPole-v1", seed=3, manual_grad=False, **SMALL)
    new.load_state_dict(sd)
    adam = new.optimizers[0]
    moments = torch.cat([adam.state[p]["exp_avg"].flatten() for p in new.policy.parameters()])
    assert torch.equal(moments, old.optimizers[0].exp_avg)
    assert all(float(adam.state[p]["step"]) == old.optimizers[0].steps > 0 for p in new.policy.parameters())
    new.learn(64, reset_num_timesteps=False)  # and trains on
    assert torch.isfinite(_params(new)).all()
    old.close()
    new.close()
