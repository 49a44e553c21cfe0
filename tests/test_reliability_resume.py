"""Nothing is lost: exact resume, corrupt or foreign checkpoints, no unpickling, one-line CLI errors."""

from __future__ import annotations

import json
import pickle
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import CountingEnv

from ppokit.cli import main
from ppokit.errors import CheckpointError
from ppokit.plotting import read_csv
from ppokit.rl.ppo import PPO
from ppokit.train.checkpoint import MANIFEST, TENSORS, latest_checkpoint, list_checkpoints, load_checkpoint

SMALL = dict(num_envs=4, n_steps=16, batch_size=32, n_epochs=2, tensorboard=False)
ROLLOUT = 64


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


EXACT = [
    # numpy-vectorised CartPole (NEXT_STEP autoreset), both normalisers, linear schedules
    (
        "CartPole-v1",
        dict(normalize_obs=True, normalize_reward=True, lr_schedule="linear", clip_range_schedule="linear"),
    ),
    # classic control under sync vectorization (SAME_STEP autoreset), Box actions, adaptive KL
    ("Pendulum-v1", dict(objective="kl_adaptive", normalize_obs=True, separate_optimizers=True)),
]


@pytest.mark.parametrize(("env_id", "extra"), EXACT, ids=[e for e, _ in EXACT])
def test_resume_at_an_update_boundary_is_exact(tmp_path, env_id, extra):
    cfg = dict(SMALL, seed=11, checkpoint_every=ROLLOUT, keep_checkpoints=10, **extra)
    a = PPO(env_id, run_dir=tmp_path / "a", **cfg).learn(6 * ROLLOUT)
    ckpt = tmp_path / "a" / "checkpoints" / f"step_{2 * ROLLOUT:012d}"
    b = PPO.resume(ckpt, run_dir=tmp_path / "b")
    assert b.resume_info["env_state_restored"], b.resume_info
    assert (b.num_timesteps, b.num_updates, b.target_timesteps) == (2 * ROLLOUT, 2, 6 * ROLLOUT)
    b.learn()  # the run's own total: the linear schedules end where they would have
    assert torch.equal(_params(a), _params(b))
    for opt_a, opt_b in zip(a.optimizers, b.optimizers):
        assert opt_a.steps == opt_b.steps > 0
        assert torch.equal(opt_a.exp_avg, opt_b.exp_avg) and torch.equal(opt_a.exp_avg_sq, opt_b.exp_avg_sq)
    assert np.array_equal(a.obs_norm.rms.mean, b.obs_norm.rms.mean)
    assert a.kl.coef == b.kl.coef and a.num_updates == b.num_updates
    assert list(a.collector.episodes.recent) == list(b.collector.episodes.recent)
    assert torch.equal(a.collector.obs, b.collector.obs)
    a.close()
    b.close()


class OpaqueStateEnv(CountingEnv):
    """An env whose state lives in an object ppokit cannot save (like a simulator handle)."""

    def __init__(self):
        super().__init__(terminate_at=7)
        self.simulator = object()


def test_envs_that_cannot_be_saved_are_reset_and_the_run_goes_on(tmp_path):
    cfg = dict(SMALL, seed=3, checkpoint_every=ROLLOUT, keep_checkpoints=10, vectorization="sync")
    factory = lambda: gym.wrappers.TimeLimit(OpaqueStateEnv(), 5)  # noqa: E731
    a = PPO(factory, run_dir=tmp_path / "a", **cfg).learn(4 * ROLLOUT)
    ckpt = tmp_path / "a" / "checkpoints" / f"step_{2 * ROLLOUT:012d}"
    meta = load_checkpoint(ckpt)[1]
    assert meta["env_state_missing"] == "OpaqueStateEnv.simulator holds a builtins.object"
    b = PPO.resume(ckpt, env=factory)
    assert not b.resume_info["env_state_restored"]
    assert "OpaqueStateEnv.simulator holds a builtins.object" in b.resume_info["env_state_missing"]
    before = _params(b).clone()
    assert torch.equal(before, _params(PPO.load(ckpt, env=factory)))  # networks restored
    b.learn(4 * ROLLOUT - b.num_timesteps, reset_num_timesteps=False)
    assert b.num_timesteps == 4 * ROLLOUT and torch.isfinite(_params(b)).all()
    # Fresh episodes: the resumed run sees other transitions, so it is not bit-identical (this is
    # also what makes the exactness test above meaningful: without the env state it would fail).
    assert not torch.equal(_params(a), _params(b))


def test_resume_trims_logs_written_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    a = PPO("CartPole-v1", run_dir=run, **SMALL, checkpoint_every=2 * ROLLOUT).learn(3 * ROLLOUT)
    a.close()
    assert read_csv(run / "metrics.csv")["time/total_timesteps"] == [64, 128, 192]
    # As if the process had died before its final checkpoint (step 192): back to step 128.
    shutil.rmtree(run / "checkpoints" / f"step_{3 * ROLLOUT:012d}")
    b = PPO.resume(run)
    assert b.num_timesteps == 128
    b.learn(4 * ROLLOUT - b.num_timesteps, reset_num_timesteps=False)
    b.close()
    assert read_csv(run / "metrics.csv")["time/total_timesteps"] == [64, 128, 192, 256]


# -- checkpoints that are incomplete, corrupt, foreign or carry a pickle ----------------------------


def _three_checkpoints(tmp_path):
    model = PPO("CartPole-v1", run_dir=tmp_path, **SMALL, checkpoint_every=ROLLOUT).learn(3 * ROLLOUT)
    model.close()
    return list_checkpoints(tmp_path / "checkpoints")


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "no_manifest", "empty_meta"])
def test_a_damaged_newest_checkpoint_is_ignored_for_the_previous_one(tmp_path, damage):
    ckpts = _three_checkpoints(tmp_path)
    newest = ckpts[-1]
    if damage == "truncate":
        data = (newest / TENSORS).read_bytes()
        (newest / TENSORS).write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        data = bytearray((newest / TENSORS).read_bytes())
        data[-1] ^= 0xFF
        (newest / TENSORS).write_bytes(bytes(data))
    elif damage == "no_manifest":
        (newest / MANIFEST).unlink()
    else:
        (newest / "meta.json").write_text("")
    assert latest_checkpoint(tmp_path / "checkpoints") == ckpts[-2]
    with pytest.raises(CheckpointError, match="incomplete, corrupt or not a ppokit checkpoint"):
        load_checkpoint(newest)
    assert PPO.resume(tmp_path).num_timesteps == 2 * ROLLOUT


def test_checkpoints_every_n_steps_and_at_the_end(tmp_path):
    PPO("CartPole-v1", run_dir=tmp_path, **SMALL, checkpoint_every=2 * ROLLOUT, keep_checkpoints=5).learn(
        5 * ROLLOUT
    )
    steps = [load_checkpoint(p)[1]["num_timesteps"] for p in list_checkpoints(tmp_path / "checkpoints")]
    assert steps == [2 * ROLLOUT, 4 * ROLLOUT, 5 * ROLLOUT]


def test_keep_k_and_leftovers_of_killed_writers(tmp_path):
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / ".tmp-step_000000000999-999999999").mkdir()  # a writer that died mid-write
    model = PPO("CartPole-v1", run_dir=tmp_path, **SMALL, checkpoint_every=ROLLOUT, keep_checkpoints=2)
    model.learn(4 * ROLLOUT)
    assert [p.name for p in sorted(root.iterdir())] == ["step_000000000192", "step_000000000256"]


class _Boom:
    """Unpickling this runs ``open(marker, 'w')``: proof of execution if the file appears."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_payload_is_refused_not_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Boom(marker))
    for name in ("pickle.load", "pickle.loads", "torch.load"):  # loading must never reach these
        monkeypatch.setattr(name, lambda *a, **k: pytest.fail("a checkpoint was unpickled"))
    ckpts = _three_checkpoints(tmp_path / "run")
    bad = tmp_path / "bad"
    shutil.copytree(ckpts[-1], bad)
    (bad / TENSORS).write_bytes(payload)
    (bad / "meta.json").write_bytes(payload)
    manifest = json.loads((bad / MANIFEST).read_text())
    import hashlib

    for fname in (TENSORS, "meta.json"):  # a manifest that matches, as an attacker would write it
        data = (bad / fname).read_bytes()
        manifest["files"][fname] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (bad / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError):
        PPO.load(bad)
    torch_file = tmp_path / "model.pt"  # a PyTorch pickle given where a model is expected
    torch_file.write_bytes(payload)
    with pytest.raises(CheckpointError):
        PPO.load(torch_file)
    assert not marker.exists()


# -- the command line: one-line errors with exit code 2 -------------------------------------------


def _cli_error(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert "does not exist" in _cli_error(capsys, "eval", str(missing))
    assert "does not exist or is not a directory" in _cli_error(capsys, "resume", str(missing))
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"\x80\x04not a model")
    assert "holds no model" in _cli_error(capsys, "eval", str(junk))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / TENSORS).write_bytes(b"junk")
    assert "incomplete, corrupt or not a ppokit checkpoint" in _cli_error(capsys, "eval", str(foreign))
    run = tmp_path / "run"
    PPO("CartPole-v1", run_dir=run, **SMALL).learn(ROLLOUT).save(run / "model")
    err = _cli_error(capsys, "eval", str(run), "--env", "Acrobot-v1")  # 6-d observations, 3 actions
    assert "was trained on spaces" in err
    fresh = tmp_path / "fresh"  # a run that died before its first checkpoint
    fresh.mkdir()
    (fresh / "config.yaml").write_text("n_steps: 16\n")
    assert "no run directory with a complete checkpoint" in _cli_error(capsys, "resume", str(fresh))
    with pytest.raises(CheckpointError):  # --debug shows the traceback instead
        main(["--debug", "eval", str(missing)])
